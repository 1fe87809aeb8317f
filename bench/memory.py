"""Worker memory with 1,000 sagas in flight: the engine against the hand-written baseline.

An engine worker (store on) and a hand-written worker (``bench.handwritten``) run side by side
on one embedded dev server. Each gets N sagas that run a first step and then wait for a decision
(``bench_waiting`` / ``handwritten_waiting``), so all N stay in flight and in the workers' caches.
Reported: resident memory of each worker idle and with N in flight, the growth per saga, and
the engine's growth over the baseline's.

    python -m bench.memory --sagas 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import uuid
from pathlib import Path
from typing import Any

from bench.api_start import bench_env, cpu_seconds, spawn, start_dev_server, tear_down, wait_ready
from bench.baseline import start_handwritten
from bench.sagas import Trip
from engine import SagaClient, SagaStatus
from engine.worker import load_modules


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def settle(pids: list[int], quiet_cpu_seconds: float = 0.05) -> None:
    """Wait until the workers have finished the work they were given (their CPU goes quiet)."""
    while True:
        before = sum(cpu_seconds(p) for p in pids)
        await asyncio.sleep(2)
        if sum(cpu_seconds(p) for p in pids) - before < quiet_cpu_seconds:
            return


async def main(count: int, concurrency: int) -> dict[str, Any]:
    load_modules(["bench.sagas"])
    folder = Path(tempfile.mkdtemp(prefix="sagas-bench-memory-"))
    server = await start_dev_server()
    address = server.client.service_client.config.target_host
    env = bench_env(
        folder,
        server,
        SAGAS_TASK_QUEUE="bench-engine",
        SAGAS_MAX_CACHED_WORKFLOWS=str(max(1000, count)),
    )
    hand = start_handwritten(address, env, folder / "handwritten.log")
    engine = spawn(["worker"], env, folder / "engine.log")
    sagas = SagaClient(server.client, task_queue="bench-engine")
    gate = asyncio.Semaphore(concurrency)

    async def start_engine(n: int) -> str:
        async with gate:
            return await sagas.start("bench_waiting", {"trip_id": f"m-{n}"})

    async def start_hand(n: int) -> None:
        async with gate:
            await server.client.start_workflow(
                "handwritten_waiting", Trip(trip_id=f"h-{n}"), id=f"hand-{uuid.uuid4()}",
                task_queue="bench-handwritten",
            )  # fmt: skip

    try:
        await wait_ready(folder / "handwritten.log", hand)
        await wait_ready(folder / "engine.log", engine)
        await settle([hand.pid, engine.pid])
        idle = {"handwritten": rss_mib(hand.pid), "engine": rss_mib(engine.pid)}
        ids = await asyncio.gather(*(start_engine(n) for n in range(count)))
        await asyncio.gather(*(start_hand(n) for n in range(count)))
        await settle([hand.pid, engine.pid])
        waiting = [await sagas.state(i) for i in ids[:: max(1, count // 20)]]
        assert all(s.status is SagaStatus.AWAITING_APPROVAL for s in waiting), "not in flight"
        loaded = {"handwritten": rss_mib(hand.pid), "engine": rss_mib(engine.pid)}
    finally:
        await tear_down((hand, engine), server, folder)

    per_saga = {m: (loaded[m] - idle[m]) * 1024 / count for m in idle}
    return {
        "sagas_in_flight": count,
        "rss_idle_mib": {m: round(v, 1) for m, v in idle.items()},
        "rss_in_flight_mib": {m: round(v, 1) for m, v in loaded.items()},
        "growth_kib_per_saga": {m: round(v, 1) for m, v in per_saga.items()},
        "engine_over_handwritten_growth": round(per_saga["engine"] / per_saga["handwritten"], 2),
        "engine_over_handwritten_rss": round(loaded["engine"] / loaded["handwritten"], 2),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sagas", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    options = parser.parse_args()
    print(json.dumps(asyncio.run(main(options.sagas, options.concurrency)), indent=2))
