"""Starting sagas through the REST API against starting them with the Temporal client.

Both modes run side by side in one run, on the same embedded Temporal dev server and the same
worker process (with the saga store projection on), alternating rounds so that drift hits both:

* client: ``SagaClient.start`` from this process;
* api:    ``POST /sagas/bench_trip`` to a ``sagas api`` process (which validates, writes the
          saga and the idempotency key to the store, then starts the workflow).

For each round: N sagas started with C in flight at a time, then waited for to completion.
Reported: throughput (completed sagas per second, first start to last completion), start
latency p50/p99, and the api/client throughput ratio. Not a test: run it with ``make bench``.

    python -m bench.api_start --sagas 300 --concurrency 20 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from engine import SagaClient
from engine.worker import load_modules
from tests.support.processes import ROOT, SAGAS, free_port

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Round:
    mode: str
    sagas: int
    seconds: float
    start_latencies: list[float]
    cpu: dict[str, float] | None = None

    @property
    def throughput(self) -> float:
        return self.sagas / self.seconds

    def percentile(self, p: float) -> float:
        ordered = sorted(self.start_latencies)
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000


async def run_round(
    mode: str,
    count: int,
    concurrency: int,
    start: Callable[[str], Awaitable[str]],
    sagas: SagaClient,
) -> Round:
    latencies: list[float] = []
    ids: list[str] = []
    gate = asyncio.Semaphore(concurrency)

    async def one(n: int) -> None:
        async with gate:
            began = time.perf_counter()
            ids.append(await start(f"{mode}-{uuid.uuid4().hex[:8]}-{n}"))
            latencies.append(time.perf_counter() - began)

    began = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(count)))
    finals = await asyncio.gather(*(sagas.result(i) for i in ids))
    seconds = time.perf_counter() - began
    bad = [s.id for s in finals if s.status.value != "completed"]
    if bad:
        raise SystemExit(f"{len(bad)} sagas did not complete, e.g. {bad[0]}")
    return Round(mode, count, seconds, latencies)


class LeanHttp:
    """A minimal HTTP/1.1 keep-alive client, one connection per concurrent caller.

    Like wrk, it spends little CPU per request, so that the load generator's own cost (httpx
    costs about 3 ms of CPU per request here) is not charged to the API on a shared machine.
    """

    def __init__(self, host: str, port: int, size: int) -> None:
        self.host, self.port = host, port
        self.idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )
        self.size = size

    async def open(self) -> None:
        for _ in range(self.size):
            self.idle.put_nowait(await asyncio.open_connection(self.host, self.port))

    async def close(self) -> None:
        while not self.idle.empty():
            _, writer = self.idle.get_nowait()
            writer.close()

    async def post_json(self, path: str, body: bytes) -> tuple[int, bytes]:
        reader, writer = await self.idle.get()
        try:
            try:
                return await self._exchange(reader, writer, path, body)
            except (asyncio.IncompleteReadError, ConnectionError):
                # The server closed an idle keep-alive connection: open a new one, once.
                writer.close()
                reader, writer = await asyncio.open_connection(self.host, self.port)
                return await self._exchange(reader, writer, path, body)
        finally:
            self.idle.put_nowait((reader, writer))

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str, body: bytes
    ) -> tuple[int, bytes]:
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        return status, await reader.readexactly(length)


async def tear_down(
    procs: Iterable[subprocess.Popen[bytes]], server: WorkflowEnvironment, folder: Path
) -> None:
    """Stop a benchmark's processes (killed if one has not stopped in 30 s), its dev server,
    and remove its folder."""
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    await server.shutdown()
    shutil.rmtree(folder, ignore_errors=True)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def binary(name: str) -> str:
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} is not installed; run `make install`")
    return found


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("w") as out:
        return subprocess.Popen(
            [*SAGAS, *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )


async def wait_ready(log: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while "ready" not in (text := await asyncio.to_thread(log.read_text)):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"process did not start:\n{text}")
        await asyncio.sleep(0.2)


async def start_dev_server() -> WorkflowEnvironment:
    """The embedded Temporal dev server every benchmark runs on (in memory, quiet)."""
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=binary("temporal"),
        data_converter=pydantic_data_converter,
        dev_server_log_level="error",
    )


def bench_env(folder: Path, server: WorkflowEnvironment, **settings: str) -> dict[str, str]:
    """Environment for ``sagas`` processes of a benchmark: the bench sagas, no tracing."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
        "SAGAS_DATA_DIR": str(folder),
        "SAGAS_TEMPORAL_ADDRESS": server.client.service_client.config.target_host,
        "SAGAS_MODULES": "bench.sagas",
        **settings,
    }


async def main(count: int, concurrency: int, rounds: int, http_client: str) -> dict[str, object]:
    load_modules(["bench.sagas"])
    folder = Path(tempfile.mkdtemp(prefix="sagas-bench-"))
    env_server = await start_dev_server()
    port = free_port()
    env = bench_env(folder, env_server, SAGAS_TASK_QUEUE="bench", SAGAS_API_PORT=str(port))
    worker = spawn(["worker"], env, folder / "worker.log")
    api = spawn(["api"], env, folder / "api.log")
    try:
        await wait_ready(folder / "worker.log", worker)
        await wait_ready(folder / "api.log", api)
        sagas = SagaClient(env_server.client, task_queue="bench")
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=60
        ) as http:

            async def via_client(trip_id: str) -> str:
                return await sagas.start("bench_trip", {"trip_id": trip_id})

            lean = LeanHttp("127.0.0.1", port, concurrency)
            await lean.open()

            async def via_api(trip_id: str) -> str:
                if http_client == "httpx":
                    response = await http.post("/sagas/bench_trip", json={"trip_id": trip_id})
                    response.raise_for_status()
                    saga_id: str = response.json()["id"]
                    return saga_id
                status, body = await lean.post_json(
                    "/sagas/bench_trip", json.dumps({"trip_id": trip_id}).encode()
                )
                if status != 202:
                    raise SystemExit(f"start refused: {status} {body[:300]!r}")
                started: str = json.loads(body)["id"]
                return started

            # Warm up both paths (connections, caches, the worker's sticky queues).
            await run_round("client", 20, concurrency, via_client, sagas)
            await run_round("api", 20, concurrency, via_api, sagas)
            processes = {"api": api.pid, "worker": worker.pid}

            def cpu_now() -> dict[str, float]:
                now = {name: cpu_seconds(pid) for name, pid in processes.items()}
                times = os.times()
                now["bench"] = times.user + times.system
                return now

            results: list[Round] = []
            order = [("client", via_client), ("api", via_api)]
            for number in range(rounds):
                # ABBA: the server slows as finished sagas pile up; alternating which mode
                # goes first cancels that drift out of the pairwise ratios.
                for mode, start in order if number % 2 == 0 else order[::-1]:
                    before = cpu_now()
                    done = await run_round(mode, count, concurrency, start, sagas)
                    after = cpu_now()
                    done.cpu = {k: after[k] - before[k] for k in after}
                    results.append(done)
            await lean.close()
    finally:
        await tear_down((api, worker), env_server, folder)

    def summary(mode: str) -> dict[str, float]:
        mine = [r for r in results if r.mode == mode]
        latencies = [x for r in mine for x in r.start_latencies]
        merged = Round(mode, sum(r.sagas for r in mine), sum(r.seconds for r in mine), latencies)
        return {
            "sagas_per_second": round(merged.throughput, 1),
            "start_p50_ms": round(merged.percentile(0.50), 1),
            "start_p99_ms": round(merged.percentile(0.99), 1),
            "rounds": [round(r.throughput, 1) for r in mine],  # type: ignore[dict-item]
            # CPU milliseconds per saga, by process (the Temporal server is not counted).
            "cpu_ms_per_saga": {  # type: ignore[dict-item]
                name: round(1000 * sum((r.cpu or {}).get(name, 0) for r in mine) / merged.sagas, 2)
                for name in ("api", "worker", "bench")
            },
        }

    client, via = summary("client"), summary("api")
    return {
        "sagas_per_round": count,
        "concurrency": concurrency,
        "client": client,
        "api": via,
        "api_over_client": round(via["sagas_per_second"] / client["sagas_per_second"], 3),
        "http_client": http_client,
        "median_round_ratio": round(
            statistics.median(
                api_round.throughput / client_round.throughput
                for client_round, api_round in zip(
                    [r for r in results if r.mode == "client"],
                    [r for r in results if r.mode == "api"],
                    strict=True,
                )
            ),
            3,
        ),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sagas", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--http-client", choices=["lean", "httpx"], default="lean")
    options = parser.parse_args()
    print(
        json.dumps(
            asyncio.run(
                main(options.sagas, options.concurrency, options.rounds, options.http_client)
            ),
            indent=2,
        )
    )
