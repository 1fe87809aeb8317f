"""A worker's HTTP endpoint: ``/healthz``, ``/readyz`` and ``/metrics``, on the worker's loop.

Served by a small asyncio server on the same event loop as the Temporal worker, not by a
thread: a loop that hangs (a blocking call in an activity, a stuck shutdown) stops answering
``/healthz``, so Kubernetes restarts the pod, where a metrics thread would answer on.

* ``/healthz``: the loop answers, and the Temporal worker has not failed or stopped.
* ``/readyz``: that, and Temporal answers a health check within two seconds.
* ``/metrics``: Prometheus text (SDK and saga metrics, as before).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import prometheus_client
from temporalio.client import Client
from temporalio.worker import Worker

_READY_TIMEOUT = 2.0
_REQUEST_TIMEOUT = 5.0


class WorkerHealth:
    """Answers what a probe asks about one worker."""

    def __init__(self, worker: Worker, client: Client) -> None:
        self._worker = worker
        self._client = client

    def alive(self) -> tuple[bool, str]:
        if self._worker.is_shutdown:
            return False, "the Temporal worker has stopped"
        if not self._worker.is_running:
            return False, "the Temporal worker is not running"
        return True, "ok"

    async def ready(self) -> tuple[bool, dict[str, str]]:
        alive, worker = self.alive()
        try:
            async with asyncio.timeout(_READY_TIMEOUT):
                await self._client.service_client.check_health()
            temporal = "ok"
        except Exception as exc:  # any failure means not ready; say which
            temporal = f"unreachable: {type(exc).__name__}"
        return alive and temporal == "ok", {"worker": worker, "temporal": temporal}

    async def respond(self, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for ``path``."""
        if path == "/healthz":
            alive, why = self.alive()
            return _json(200 if alive else 503, {"status": why})
        if path == "/readyz":
            ready, checks = await self.ready()
            return _json(200 if ready else 503, checks)
        if path == "/metrics":
            return 200, prometheus_client.CONTENT_TYPE_LATEST, prometheus_client.generate_latest()
        return _json(404, {"status": "not found"})


def _json(status: int, body: dict[str, Any]) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(body).encode()


@contextlib.asynccontextmanager
async def serving(health: WorkerHealth, host: str, port: int) -> AsyncIterator[str]:
    """Serve ``health`` on ``host:port`` while the block runs; yields the base URL."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_REQUEST_TIMEOUT):
                request = await reader.readuntil(b"\r\n\r\n")
                method, path, _ = request.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
                if method not in ("GET", "HEAD"):
                    status, kind, body = _json(405, {"status": "method not allowed"})
                else:
                    status, kind, body = await health.respond(path.split("?", 1)[0])
                head = (
                    f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\n"
                    f"Content-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
                    "Connection: close\r\n\r\n"
                )
                writer.write(head.encode() + (b"" if method == "HEAD" else body))
                await writer.drain()
        except (
            TimeoutError,
            ValueError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ConnectionError,
        ):
            pass  # a probe that hung up or sent garbage gets nothing
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, port)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.close()
        await server.wait_closed()


_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
