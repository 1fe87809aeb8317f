"""What a waiting request costs the API: process CPU while requests wait on running sagas.

Real processes (dev server, worker, API). Sagas are started whose first step takes longer
than the wait, so every ``GET /sagas/{id}?wait=N`` waits its N seconds in full. Measured:
the API process's CPU time over the wait, for ``--waiters`` concurrent requests spread over
``--sagas`` sagas (one saga per request by default, the worst case: one poller each), and
the same span with no request at all (the idle floor). Reported: CPU ms per waiting request
per second above the floor, and per request in all.

    python -m bench.api_wait --waiters 50 --seconds 5
    python -m bench.api_wait --waiters 50 --sagas 1 --seconds 5   # fifty waiters, one saga
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench.api_start import bench_env, cpu_seconds, spawn, start_dev_server, tear_down, wait_ready
from engine.worker import load_modules
from tests.support.processes import free_port


async def main(waiters: int, sagas: int, seconds: float) -> dict[str, Any]:
    load_modules(["bench.sagas"])
    folder = Path(tempfile.mkdtemp(prefix="sagas-bench-wait-"))
    server = await start_dev_server()
    port = free_port()
    env = bench_env(
        folder, server, SAGAS_TASK_QUEUE="bench", SAGAS_API_PORT=str(port),
        SAGAS_API_WAIT_MAX_SECONDS=str(max(seconds, 1)),
    )  # fmt: skip
    worker = spawn(["worker"], env, folder / "worker.log")
    api = spawn(["api"], env, folder / "api.log")
    try:
        await wait_ready(folder / "worker.log", worker)
        await wait_ready(folder / "api.log", api)
        limits = httpx.Limits(max_connections=waiters + 10)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=seconds + 30
        ) as http:
            ids = []
            for _ in range(sagas):
                trip = {"trip_id": uuid.uuid4().hex[:8], "hold_seconds": seconds * 3 + 10}
                answer = await http.post("/sagas/bench_trip", json=trip)
                answer.raise_for_status()
                ids.append(answer.json()["id"])
            await asyncio.sleep(1)  # let the starts settle

            before = cpu_seconds(api.pid)
            await asyncio.sleep(seconds)
            idle = cpu_seconds(api.pid) - before

            async def wait(saga_id: str) -> tuple[int, str]:
                answer = await http.get(f"/sagas/{saga_id}", params={"wait": seconds})
                return answer.status_code, answer.json().get("status", "?")

            before, began = cpu_seconds(api.pid), time.perf_counter()
            answers = await asyncio.gather(*(wait(ids[n % sagas]) for n in range(waiters)))
            waited, took = cpu_seconds(api.pid) - before, time.perf_counter() - began
    finally:
        await tear_down((api, worker), server, folder)
    extra = max(waited - idle * took / seconds, 0.0)
    return {
        "waiters": waiters,
        "sagas": sagas,
        "wait_seconds": seconds,
        "answered_in_seconds": round(took, 2),
        "answers": sorted({f"{code} {status}" for code, status in answers}),
        "api_cpu_ms_idle": round(1000 * idle, 1),
        "api_cpu_ms_waiting": round(1000 * waited, 1),
        "api_cpu_ms_per_waiting_request": round(1000 * extra / waiters, 2),
        "api_cpu_ms_per_waiting_request_per_second": round(1000 * extra / waiters / took, 3),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waiters", type=int, default=50)
    parser.add_argument("--sagas", type=int, default=None, help="default: one per waiter")
    parser.add_argument("--seconds", type=float, default=5.0)
    options = parser.parse_args()
    report = asyncio.run(main(options.waiters, options.sagas or options.waiters, options.seconds))
    print(json.dumps(report, indent=2))
