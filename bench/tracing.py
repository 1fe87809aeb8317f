"""Saga throughput with tracing on against off, and Temporal's plugin against its interceptor.

Three ``sagas worker`` processes run side by side on one embedded dev server, each on its own
task queue: tracing off; tracing on with Temporal's OpenTelemetry plugin (what the engine
uses); tracing on with Temporal's older TracingInterceptor (``SAGAS_TRACING_INTEGRATION``).
Traced workers export over OTLP http/protobuf with the default batch processor to a receiver
in this process that reads and discards the requests (a collector's cost is not the engine's).
Rounds rotate the order of the modes so that the server's drift hits each alike. Reported:
completed sagas per second per mode, CPU per saga of each worker, and ratios against off.

    python -m bench.tracing --sagas 150 --rounds 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.api_start import (
    Round,
    bench_env,
    cpu_seconds,
    run_round,
    spawn,
    start_dev_server,
    tear_down,
    wait_ready,
)
from engine import SagaClient
from engine.worker import load_modules

MODES = {
    "off": {},
    "plugin": {"SAGAS_TRACING_INTEGRATION": "plugin"},
    "interceptor": {"SAGAS_TRACING_INTEGRATION": "interceptor"},
}


class Discard(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # the name http.server dispatches to
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


async def main(count: int, concurrency: int, rounds: int) -> dict[str, object]:
    load_modules(["bench.sagas"])
    folder = Path(tempfile.mkdtemp(prefix="sagas-bench-tracing-"))
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Discard)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    server = await start_dev_server()
    base = bench_env(folder, server)
    workers = {}
    for mode, extra in MODES.items():
        env = {**base, **extra, "SAGAS_TASK_QUEUE": f"bench-{mode}"}
        if mode != "off":
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{receiver.server_port}"
        workers[mode] = spawn(["worker"], env, folder / f"{mode}.log")
    results: list[Round] = []
    try:
        for mode, proc in workers.items():
            await wait_ready(folder / f"{mode}.log", proc)
        clients = {m: SagaClient(server.client, task_queue=f"bench-{m}") for m in MODES}

        def starter(mode: str) -> Any:
            async def start(trip_id: str) -> str:
                return await clients[mode].start("bench_trip", {"trip_id": trip_id})

            return start

        for mode in MODES:  # warm-up
            await run_round(mode, 20, concurrency, starter(mode), clients[mode])
        order = list(MODES)
        for number in range(rounds):
            rotated = order[number % len(order) :] + order[: number % len(order)]
            for mode in rotated if number % 2 == 0 else rotated[::-1]:
                before = cpu_seconds(workers[mode].pid)
                done = await run_round(mode, count, concurrency, starter(mode), clients[mode])
                done.cpu = {"worker": cpu_seconds(workers[mode].pid) - before}
                results.append(done)
    finally:
        await tear_down(workers.values(), server, folder)
        receiver.shutdown()

    def summary(mode: str) -> dict[str, Any]:
        mine = [r for r in results if r.mode == mode]
        sagas, seconds = sum(r.sagas for r in mine), sum(r.seconds for r in mine)
        return {
            "sagas_per_second": round(sagas / seconds, 1),
            "rounds": [round(r.throughput, 1) for r in mine],
            "worker_cpu_ms_per_saga": round(
                1000 * sum((r.cpu or {})["worker"] for r in mine) / sagas, 2
            ),
        }

    modes = {mode: summary(mode) for mode in MODES}

    def ratio(mode: str) -> float:
        on: float = modes[mode]["sagas_per_second"]
        off: float = modes["off"]["sagas_per_second"]
        return round(on / off, 3)

    def median_ratio(mode: str) -> float:
        off = [r.throughput for r in results if r.mode == "off"]
        on = [r.throughput for r in results if r.mode == mode]
        return round(statistics.median(b / a for a, b in zip(off, on, strict=True)), 3)

    return {
        "sagas_per_round": count,
        "concurrency": concurrency,
        "modes": modes,
        "plugin_over_off": ratio("plugin"),
        "interceptor_over_off": ratio("interceptor"),
        "median_round_ratio": {m: median_ratio(m) for m in ("plugin", "interceptor")},
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sagas", type=int, default=150)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=4)
    options = parser.parse_args()
    print(
        json.dumps(asyncio.run(main(options.sagas, options.concurrency, options.rounds)), indent=2)
    )
