"""The engine against the same saga hand-written as a plain Temporal workflow.

Three workers side by side on one embedded dev server, each on its own task queue, with the
same activities and the same limits (100 activities, 100 workflow tasks): the hand-written
workflow (``bench.handwritten``), the engine with its saga store off, and the engine with the
store on (as deployed). Rounds rotate the order of the modes. Reported: completed sagas per
second per mode, worker CPU per saga, and ratios against the hand-written baseline.

    python -m bench.baseline --sagas 150 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from temporalio.client import Client

from bench.api_start import bench_env, cpu_seconds, spawn, start_dev_server, wait_ready
from bench.sagas import Trip
from engine import SagaClient
from engine.worker import load_modules
from tests.support.processes import ROOT

MODES = ("handwritten", "engine", "engine+store")


async def one_round(count: int, concurrency: int, start: Callable[[str], Awaitable[Any]]) -> float:
    """Start ``count`` sagas (``concurrency`` at a time) and wait for all; sagas per second."""
    gate = asyncio.Semaphore(concurrency)
    began = time.perf_counter()

    waits: list[Any] = []

    async def started(n: int) -> None:
        async with gate:
            waits.append(await start(f"{uuid.uuid4().hex[:8]}-{n}"))

    await asyncio.gather(*(started(n) for n in range(count)))
    await asyncio.gather(*(w() for w in waits))
    return count / (time.perf_counter() - began)


def start_handwritten(address: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "bench.handwritten", "--address", address,
             "--task-queue", "bench-handwritten"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


async def main(count: int, concurrency: int, rounds: int) -> dict[str, Any]:
    load_modules(["bench.sagas"])
    folder = Path(tempfile.mkdtemp(prefix="sagas-bench-baseline-"))
    server = await start_dev_server()
    address = server.client.service_client.config.target_host
    env = bench_env(folder, server)
    handwritten = start_handwritten(address, env, folder / "handwritten.log")
    workers = {
        "handwritten": handwritten,
        "engine": spawn(
            ["worker"],
            {**env, "SAGAS_TASK_QUEUE": "bench-engine", "SAGAS_STORE_ENABLED": "false"},
            folder / "engine.log",
        ),
        "engine+store": spawn(
            ["worker"], {**env, "SAGAS_TASK_QUEUE": "bench-store"}, folder / "store.log"
        ),
    }
    logs = {"handwritten": "handwritten", "engine": "engine", "engine+store": "store"}
    client: Client = server.client
    engine_clients = {
        "engine": SagaClient(client, task_queue="bench-engine"),
        "engine+store": SagaClient(client, task_queue="bench-store"),
    }

    def starter(mode: str) -> Callable[[str], Awaitable[Any]]:
        async def start(trip_id: str) -> Any:
            if mode == "handwritten":
                handle = await client.start_workflow(
                    "handwritten_trip",
                    Trip(trip_id=trip_id),
                    id=f"hand-{trip_id}",
                    task_queue="bench-handwritten",
                )
                return handle.result
            sagas = engine_clients[mode]
            saga_id = await sagas.start("bench_trip", {"trip_id": trip_id})
            return lambda: sagas.result(saga_id)

        return start

    throughput: dict[str, list[float]] = {m: [] for m in MODES}
    cpu: dict[str, float] = dict.fromkeys(MODES, 0.0)
    try:
        for mode in MODES:
            await wait_ready(folder / f"{logs[mode]}.log", workers[mode])
            await one_round(20, concurrency, starter(mode))  # warm-up
        for number in range(rounds):
            order = list(MODES[number % 3 :] + MODES[: number % 3])
            for mode in order if number % 2 == 0 else order[::-1]:
                before = cpu_seconds(workers[mode].pid)
                throughput[mode].append(await one_round(count, concurrency, starter(mode)))
                cpu[mode] += cpu_seconds(workers[mode].pid) - before
    finally:
        for proc in workers.values():
            proc.terminate()
            proc.wait(timeout=30)
        await server.shutdown()
        shutil.rmtree(folder, ignore_errors=True)

    def mean(mode: str) -> float:
        return statistics.fmean(throughput[mode])

    return {
        "sagas_per_round": count,
        "concurrency": concurrency,
        "sagas_per_second": {m: round(mean(m), 1) for m in MODES},
        "rounds": {m: [round(x, 1) for x in throughput[m]] for m in MODES},
        "worker_cpu_ms_per_saga": {m: round(1000 * cpu[m] / (count * rounds), 2) for m in MODES},
        "engine_over_handwritten": round(mean("engine") / mean("handwritten"), 3),
        "engine_with_store_over_handwritten": round(mean("engine+store") / mean("handwritten"), 3),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sagas", type=int, default=150)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    report = asyncio.run(main(options.sagas, options.concurrency, options.rounds))
    print(json.dumps(report, indent=2))
