"""The engine against the same saga hand-written as a plain Temporal workflow.

Workers on one embedded dev server, each on its own task queue, with the same activities and
the same limits (100 activities, 100 workflow tasks): the hand-written workflow
(``bench.handwritten``), the engine with its saga store off, and the engine with the store on
(as deployed). With ``--local``, also the engine's fast path (``bench_trip_local``: every step
a local activity, on the store-off worker) and the hand-written workflow with local activities
(Temporal's own fast path, for reference). ``--failures`` makes a quarter of the sagas refuse
at each step (flight, hotel, charge) and compensate; the rest complete. Every worker runs its
workflows in Temporal's sandbox, as deployed; ``--unsandboxed`` runs them all outside it (the
engine's ``SAGAS_WORKFLOW_SANDBOX=false``), to show what the sandbox costs each. The
activities refuse with a plain non-retryable ``ApplicationError``, which the engine marks
BENIGN and the hand-written workflow's SDK logs as a failed activity with its traceback;
``--benign-refusals`` has them raise it BENIGN, so that neither does.

Two set-ups:

* side by side (default): every worker runs the whole time; rounds rotate the order of the
  modes;
* ``--alternate``: one worker active at a time (the others are paused with SIGSTOP, so they
  take no CPU at all), rounds alternating between the modes.

Reported per mode: completed sagas per second (mean, median, min-max over rounds), worker CPU
per saga, and ratios against the hand-written baseline (of medians, and the spread of the
per-round ratios).

    python -m bench.baseline --sagas 150 --rounds 3
    python -m bench.baseline --modes handwritten,engine --alternate --failures \
        --sagas 200 --rounds 12
    python -m bench.baseline --modes handwritten,engine-local --alternate --failures \
        --sagas 200 --rounds 12
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from temporalio.client import Client

from bench.api_start import bench_env, cpu_seconds, spawn, start_dev_server, tear_down, wait_ready
from bench.sagas import Trip
from engine import SagaClient
from engine.worker import load_modules
from tests.support.processes import ROOT, free_port

MODES = ("handwritten", "engine", "engine+store")
LOCAL_MODES = ("engine-local", "handwritten-local")
#: Which worker process runs each mode, and the workflow / saga type it runs.
WORKER = {
    "handwritten": "handwritten",
    "handwritten-local": "handwritten",
    "engine": "engine",
    "engine-local": "engine",
    "engine+store": "engine+store",
}
TYPE = {
    "handwritten": "handwritten_trip",
    "handwritten-local": "handwritten_trip_local",
    "engine": "bench_trip",
    "engine-local": "bench_trip_local",
    "engine+store": "bench_trip",
}
QUEUE = {
    "handwritten": "bench-handwritten",
    "engine": "bench-engine",
    "engine+store": "bench-store",
}
FAIL_AT = (None, "flight", "hotel", "charge")


async def one_round(
    count: int, concurrency: int, start: Callable[[str, int], Awaitable[Any]]
) -> float:
    """Start ``count`` sagas (``concurrency`` at a time) and wait for all; sagas per second."""
    gate = asyncio.Semaphore(concurrency)
    began = time.perf_counter()

    waits: list[Any] = []

    async def started(n: int) -> None:
        async with gate:
            waits.append(await start(f"{uuid.uuid4().hex[:8]}-{n}", n))

    await asyncio.gather(*(started(n) for n in range(count)))
    await asyncio.gather(*(w() for w in waits))
    return count / (time.perf_counter() - began)


def start_handwritten(
    address: str,
    env: dict[str, str],
    log: Path,
    *,
    sandbox: bool = True,
    pollers: str | None = None,
) -> subprocess.Popen[bytes]:
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "bench.handwritten", "--address", address,
             "--task-queue", "bench-handwritten", *([] if sandbox else ["--unsandboxed"]),
             *(["--pollers", pollers] if pollers else [])],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


@contextlib.contextmanager
def only_active(workers: dict[str, subprocess.Popen[bytes]], active: str | None) -> Iterator[None]:
    """Pause (SIGSTOP) every worker but ``active``; None: leave them all running."""
    paused = [p for name, p in workers.items() if active is not None and name != active]
    for proc in paused:
        os.kill(proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for proc in paused:
            os.kill(proc.pid, signal.SIGCONT)


def dev_server_pid(address: str) -> int:
    """The embedded dev server's process (listening on ``address``'s port)."""
    port = address.rsplit(":", 1)[1]
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"start-dev" in args and port.encode() in args:
            return int(proc.name)
    raise RuntimeError(f"no dev server process on port {port}")


def order_of(modes: Sequence[str], number: int, alternate: bool) -> list[str]:
    """The modes of round ``number``: alternating, or rotated and reversed side by side."""
    if alternate:
        return list(modes) if number % 2 == 0 else list(modes)[::-1]
    order = list(modes[number % len(modes) :]) + list(modes[: number % len(modes)])
    return order if number % 2 == 0 else order[::-1]


async def main(
    count: int,
    concurrency: int,
    rounds: int,
    *,
    modes: Sequence[str] = MODES,
    alternate: bool = False,
    failures: bool = False,
    metrics: bool = False,
    sandbox: bool = True,
    benign_refusals: bool = False,
    handwritten_pollers: str | None = None,
) -> dict[str, Any]:
    load_modules(["bench.sagas"])
    folder = Path(tempfile.mkdtemp(prefix="sagas-bench-baseline-"))
    server = await start_dev_server()
    address = server.client.service_client.config.target_host
    env = bench_env(
        folder,
        server,
        SAGAS_WORKFLOW_SANDBOX=str(sandbox).lower(),
        BENCH_BENIGN_REFUSALS="1" if benign_refusals else "0",  # read by bench.sagas
    )

    def served() -> dict[str, str]:  # as deployed: the engine's workers serve their metrics
        return {"SAGAS_WORKER_METRICS_PORT": str(free_port())} if metrics else {}

    needed = {WORKER[m] for m in modes}
    workers: dict[str, subprocess.Popen[bytes]] = {}
    if "handwritten" in needed:
        workers["handwritten"] = start_handwritten(
            address, env, folder / "handwritten.log", sandbox=sandbox, pollers=handwritten_pollers
        )
    if "engine" in needed:
        workers["engine"] = spawn(
            ["worker"],
            {**env, **served(), "SAGAS_TASK_QUEUE": "bench-engine", "SAGAS_STORE_ENABLED": "false"},
            folder / "engine.log",
        )
    if "engine+store" in needed:
        workers["engine+store"] = spawn(
            ["worker"],
            {**env, **served(), "SAGAS_TASK_QUEUE": "bench-store"},
            folder / "engine+store.log",
        )
    client: Client = server.client
    engine_clients = {
        w: SagaClient(client, task_queue=QUEUE[w]) for w in ("engine", "engine+store")
    }

    def starter(mode: str) -> Callable[[str, int], Awaitable[Any]]:
        worker = WORKER[mode]

        async def start(trip_id: str, n: int) -> Any:
            trip = Trip(trip_id=trip_id, fail_at=FAIL_AT[n % 4] if failures else None)
            if worker == "handwritten":
                handle = await client.start_workflow(
                    TYPE[mode], trip, id=f"hand-{trip_id}", task_queue=QUEUE[worker]
                )

                async def ended() -> None:
                    # A refused trip fails the hand-written workflow once it has compensated.
                    with contextlib.suppress(Exception):
                        await handle.result()

                return ended
            sagas = engine_clients[worker]
            saga_id = await sagas.start(TYPE[mode], trip.model_dump())
            return lambda: sagas.result(saga_id)

        return start

    throughput: dict[str, list[float]] = {m: [] for m in modes}
    cpu: dict[str, float] = dict.fromkeys(modes, 0.0)
    server_cpu: dict[str, float] = dict.fromkeys(modes, 0.0)
    driver_cpu: dict[str, float] = dict.fromkeys(modes, 0.0)
    server_rounds: dict[str, list[float]] = {m: [] for m in modes}
    try:
        for name, proc in workers.items():
            await wait_ready(folder / f"{name}.log", proc)
        for mode in modes:
            with only_active(workers, WORKER[mode] if alternate else None):
                await one_round(20, concurrency, starter(mode))  # warm-up
        server_pid = dev_server_pid(address)
        for number in range(rounds):
            for mode in order_of(modes, number, alternate):
                pid = workers[WORKER[mode]].pid
                with only_active(workers, WORKER[mode] if alternate else None):
                    before, server_before = cpu_seconds(pid), cpu_seconds(server_pid)
                    driver_before = time.process_time()
                    throughput[mode].append(await one_round(count, concurrency, starter(mode)))
                    cpu[mode] += cpu_seconds(pid) - before
                    driver_cpu[mode] += time.process_time() - driver_before
                    # One mode's sagas at a time (rounds are sequential): the server's CPU
                    # over the round is theirs.
                    spent = cpu_seconds(server_pid) - server_before
                    server_cpu[mode] += spent
                    server_rounds[mode].append(round(1000 * spent / count, 1))
    finally:
        for proc in workers.values():  # a paused worker cannot stop
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)
        await tear_down(workers.values(), server, folder)
    found = report(throughput, cpu, count=count, concurrency=concurrency, rounds=rounds,
                   alternate=alternate, failures=failures)  # fmt: skip
    found["workflow_sandbox"] = sandbox
    found["refusals_marked_benign_by_the_activities"] = benign_refusals
    found["workflow_task_pollers"] = {
        "engine": env.get("SAGAS_WORKFLOW_TASK_POLLERS", "auto"),
        "handwritten": handwritten_pollers or "the SDK's default (5, one on the task queue)",
    }
    found["server_cpu_ms_per_saga"] = {
        m: round(1000 * server_cpu[m] / (count * rounds), 2) for m in modes
    }
    found["server_cpu_ms_per_saga_per_round"] = server_rounds
    # This process: starting the sagas and reading their results (the client's share).
    found["driver_cpu_ms_per_saga"] = {
        m: round(1000 * driver_cpu[m] / (count * rounds), 2) for m in modes
    }
    return found


def report(
    throughput: dict[str, list[float]],
    cpu: dict[str, float],
    *,
    count: int,
    concurrency: int,
    rounds: int,
    alternate: bool,
    failures: bool,
) -> dict[str, Any]:
    """Per mode: mean, median and range of sagas/s; ratios to the hand-written baseline."""
    modes = list(throughput)
    out: dict[str, Any] = {
        "setup": "alternating, one worker active" if alternate else "side by side",
        "failure_mix": "a quarter refused at each step" if failures else "none",
        "sagas_per_round": count,
        "concurrency": concurrency,
        "rounds": rounds,
        "sagas_per_second": {m: round(statistics.fmean(throughput[m]), 1) for m in modes},
        "median_sagas_per_second": {m: round(statistics.median(throughput[m]), 1) for m in modes},
        "range_sagas_per_second": {
            m: [round(min(throughput[m]), 1), round(max(throughput[m]), 1)] for m in modes
        },
        "per_round": {m: [round(x, 1) for x in throughput[m]] for m in modes},
        "worker_cpu_ms_per_saga": {m: round(1000 * cpu[m] / (count * rounds), 2) for m in modes},
    }
    if "handwritten" in throughput:
        base = throughput["handwritten"]
        for mode in modes:
            if mode == "handwritten":
                continue
            per_round = [x / b for x, b in zip(throughput[mode], base, strict=True)]
            key = mode.replace("+", "_with_").replace("-", "_")
            out[f"{key}_over_handwritten"] = round(
                statistics.median(throughput[mode]) / statistics.median(base), 3
            )
            out[f"{key}_over_handwritten_per_round"] = {
                "median": round(statistics.median(per_round), 3),
                "min": round(min(per_round), 3),
                "max": round(max(per_round), 3),
            }
    return out


def polls(value: str) -> str:
    """A ``--handwritten-pollers`` value: auto or a number of polls (2 or more)."""
    if value != "auto" and not (value.isascii() and value.isdigit() and int(value) >= 2):
        raise argparse.ArgumentTypeError(f"{value!r}: auto or a number of polls, 2 or more")
    return value


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sagas", type=int, default=150)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--modes",
        default=None,
        help=f"comma-separated, from {', '.join(MODES + LOCAL_MODES)} (default: "
        f"{', '.join(MODES)}, and with --local {', '.join(LOCAL_MODES)})",
    )
    parser.add_argument("--local", action="store_true", help="also the local-activity modes")
    parser.add_argument("--alternate", action="store_true", help="one worker active at a time")
    parser.add_argument("--failures", action="store_true", help="a quarter refuse at each step")
    parser.add_argument(
        "--metrics", action="store_true", help="the engine's workers serve metrics (as deployed)"
    )
    parser.add_argument(
        "--benign-refusals",
        action="store_true",
        help="the activities raise their refusals BENIGN (the hand-written worker's SDK then "
        "logs them at debug, as the engine's does)",
    )
    parser.add_argument(
        "--unsandboxed",
        action="store_true",
        help="every worker outside Temporal's workflow sandbox (SAGAS_WORKFLOW_SANDBOX=false)",
    )
    parser.add_argument(
        "--handwritten-pollers",
        type=polls,
        help="the hand-written worker's polls for workflow tasks: auto or a number (default: "
        "the SDK's); the engine's workers read SAGAS_WORKFLOW_TASK_POLLERS (default: auto)",
    )
    options = parser.parse_args()
    chosen = (
        tuple(m.strip() for m in options.modes.split(","))
        if options.modes
        else MODES + (LOCAL_MODES if options.local else ())
    )
    unknown = [m for m in chosen if m not in WORKER]
    if unknown:
        parser.error(f"unknown modes: {', '.join(unknown)}")
    result = asyncio.run(
        main(
            options.sagas,
            options.concurrency,
            options.rounds,
            modes=chosen,
            alternate=options.alternate,
            failures=options.failures,
            metrics=options.metrics,
            sandbox=not options.unsandboxed,
            benign_refusals=options.benign_refusals,
            handwritten_pollers=options.handwritten_pollers,
        )
    )
    print(json.dumps(result, indent=2))
