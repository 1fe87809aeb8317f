"""The stack's capacity: trip sagas over REST at rising open-loop rates, real processes.

An embedded dev server, the demo participants, a worker for the shipped sagas and the API,
each its own process, as ``make dev`` runs them. For each rate, trips (examples/demo/trip.json)
are started over REST on a fixed schedule for ``--seconds`` (open loop: a slow answer does not
delay the next start), and each saga is followed to its end through Temporal (the workflow's
result, a long poll: no polling adds load). Per rate: start latency p50/p99, start-to-completed
p50/p95, errors (a start not answered 202, or a saga that did not complete in time), and the
rate achieved. The capacity is the highest rate whose start-to-completed p95 stays under 2 s;
the rates stop rising once p95 passes ``--give-up`` seconds.

    python -m bench.capacity --rates 5,10,15,20,25,30 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.api_start import bench_env, cpu_seconds, spawn, start_dev_server, tear_down, wait_ready
from engine import SagaClient, SagaStatus
from tests.support.processes import ROOT, free_port

TRIP = json.loads((ROOT / "examples" / "demo" / "trip.json").read_text())
TARGET_P95 = 2.0


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(value: float | None) -> float | None:
    return None if value is None else round(1000 * value, 1)


async def one_rate(
    http: httpx.AsyncClient, sagas: SagaClient, rate: float, seconds: float, patience: float
) -> dict[str, Any]:
    """Start ``rate`` trips a second for ``seconds``; follow each to its end."""
    starts: list[float] = []
    ends: list[float] = []
    errors: dict[str, int] = {}

    def error(kind: str) -> None:
        errors[kind] = errors.get(kind, 0) + 1

    async def one() -> None:
        began = time.perf_counter()
        try:
            answer = await http.post("/sagas/trip_booking", json=TRIP)
        except httpx.HTTPError as exc:
            error(type(exc).__name__)
            return
        starts.append(time.perf_counter() - began)
        if answer.status_code != 202:
            error(f"start {answer.status_code}")
            return
        try:
            state = await asyncio.wait_for(sagas.result(answer.json()["id"]), patience)
        except TimeoutError:
            error("not finished in time")
            return
        if state.status is not SagaStatus.COMPLETED:
            error(f"saga {state.status.value}")
            return
        ends.append(time.perf_counter() - began)

    count = max(1, round(rate * seconds))
    tasks = []
    t0 = time.perf_counter()
    for n in range(count):
        delay = t0 + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    sent_in = time.perf_counter() - t0
    await asyncio.gather(*tasks)
    return {
        "rate": rate,
        "sagas": count,
        "achieved_start_rate": round((count - 1) / max(sent_in, 1e-9), 1) if count > 1 else None,
        "start_p50_ms": ms(percentile(starts, 0.50)),
        "start_p99_ms": ms(percentile(starts, 0.99)),
        "start_to_completed_p50_ms": ms(percentile(ends, 0.50)),
        "start_to_completed_p95_ms": ms(percentile(ends, 0.95)),
        "completed": len(ends),
        "errors": errors,
    }


async def main(rates: list[float], seconds: float, give_up: float) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="sagas-bench-capacity-"))
    server = await start_dev_server()
    api_port, participants_port = free_port(), free_port()
    env = bench_env(
        folder, server,
        SAGAS_MODULES="workflows", SAGAS_TASK_QUEUE="capacity",
        SAGAS_API_PORT=str(api_port), SAGAS_PARTICIPANTS_PORT=str(participants_port),
        SAGAS_PARTICIPANTS_URL=f"http://127.0.0.1:{participants_port}",
    )  # fmt: skip
    procs: dict[str, subprocess.Popen[bytes]] = {}
    results = []
    try:
        for name, args in (("participants", ["participants"]), ("worker", ["worker"]),
                           ("api", ["api"])):  # fmt: skip
            procs[name] = spawn(args, env, folder / f"{name}.log")
            await wait_ready(folder / f"{name}.log", procs[name])
        sagas = SagaClient(server.client, task_queue="capacity")
        limits = httpx.Limits(max_connections=500, max_keepalive_connections=100)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{api_port}", limits=limits, timeout=60
        ) as http:
            await one_rate(http, sagas, 5, 2, 60)  # warm-up
            for rate in rates:
                before = {n: cpu_seconds(p.pid) for n, p in procs.items()}
                found = await one_rate(http, sagas, rate, seconds, max(60.0, 3 * seconds))
                found["cpu_ms_per_saga"] = {
                    n: round(1000 * (cpu_seconds(p.pid) - before[n]) / found["sagas"], 1)
                    for n, p in procs.items()
                }
                results.append(found)
                print(json.dumps(found), flush=True)
                p95 = found["start_to_completed_p95_ms"]
                if p95 is None or p95 > 1000 * give_up:
                    break
    finally:
        await tear_down(procs.values(), server, folder)
    within = [
        r["rate"]
        for r in results
        if r["start_to_completed_p95_ms"] is not None
        and r["start_to_completed_p95_ms"] < 1000 * TARGET_P95
        and not r["errors"]
    ]
    return {
        "seconds_per_rate": seconds,
        "rates": results,
        "capacity_sagas_per_second": max(within) if within else None,
        "capacity_rule": f"highest rate with start-to-completed p95 < {TARGET_P95:g} s, no errors",
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="5,10,15,20,25,30", help="sagas/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=20.0, help="per rate")
    parser.add_argument("--give-up", type=float, default=10.0, help="stop past this p95 (s)")
    options = parser.parse_args()
    chosen = [float(r) for r in options.rates.split(",")]
    report = asyncio.run(main(chosen, options.seconds, options.give_up))
    print(json.dumps(report, indent=2))
