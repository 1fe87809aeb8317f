"""The operator console served for a browser: the real API app on a real port (uvicorn), a
worker that projects into the same store, a Temporal server; and a headless Chromium.

Used by tests/test_console.py and by ``python -m tests.support.screenshots``.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import uvicorn
from fastapi import FastAPI
from temporalio.client import Client

from api.main import create_app
from api.metrics import ApiMetrics
from api.service import SagaService
from engine import SagaClient
from engine.config import Settings
from engine.store import SagaStore
from engine.worker import build_worker, load_modules
from tests.support import ledger
from tests.support.processes import free_port
from tests.support.sagas import ALL

#: Debian's package (``apt-get install -y chromium``); Playwright must not fetch its own.
CHROMIUM = "/usr/bin/chromium"
#: What Chromium needs to run headless as root in a container, and nothing it would fetch.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
OPS = "ops:" + "o" * 32
VIEWER = "viewer:" + "v" * 32


def secret(key: str) -> str:
    return key.partition(":")[2]


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing: `make browser` installs it (apt-get install -y chromium)"
    return None


@dataclass
class Console:
    """The running console: its base URL and an API client holding the operator's key."""

    url: str
    http: httpx.AsyncClient

    async def start(self, saga_type: str, **plan: Any) -> str:
        """Start a test saga whose faults are planned by its order id; its id."""
        order_id = f"o-{uuid.uuid4().hex[:10]}"
        amount = plan.pop("amount", 10)
        ledger.plan(order_id, **plan)
        body = {"order_id": order_id, "amount": amount}
        response = await self.http.post(f"/sagas/{saga_type}", json=body)
        assert response.status_code == 202, response.text
        saga_id: str = response.json()["id"]
        return saga_id

    async def until(
        self, saga_id: str, ok: Callable[[dict[str, Any]], bool], timeout: float = 30
    ) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                saga: dict[str, Any] = (await self.http.get(f"/sagas/{saga_id}")).json()
                if ok(saga):
                    return saga
                await asyncio.sleep(0.1)

    async def status(self, saga_id: str, status: str) -> dict[str, Any]:
        return await self.until(saga_id, lambda s: s["status"] == status)


@contextlib.asynccontextmanager
async def serve_console(client: Client, directory: Path) -> AsyncIterator[Console]:
    """The API (console included) on 127.0.0.1, with a worker for the test sagas."""
    url = f"sqlite:///{directory / 'sagas.sqlite'}"
    target = client.service_client.config.target_host
    settings = Settings(
        database_url=url,
        temporal_address=target,
        task_queue=f"console-{uuid.uuid4()}",
        modules=["tests.support.sagas"],
        api_keys=[OPS, VIEWER],
        api_key_roles=["viewer:read"],
        temporal_ui_url=f"http://{target.split(':')[0]}:8233",
    )
    store = SagaStore(url)
    store.migrate()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    worker = build_worker(client, task_queue=settings.task_queue, sagas=ALL, store=store)
    async with worker:
        serving = asyncio.create_task(server.serve())
        try:
            async with asyncio.timeout(20):
                while not server.started:
                    await asyncio.sleep(0.05)
            base = f"http://127.0.0.1:{port}"
            headers = {"Authorization": f"Bearer {secret(OPS)}"}
            async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as http:
                yield Console(base, http)
        finally:
            server.should_exit = True
            await serving
            store.close()


def offline_app(store: SagaStore, **settings: Any) -> FastAPI:
    """The API over a saga store alone, for the console's pages (tests, timings).

    The pages read only the store (a saga it holds is never looked up in Temporal), so the
    service gets no Temporal client: an action or an unknown saga would fail here.
    """
    load_modules(["tests.support.sagas", *settings.pop("modules", [])])
    config = Settings(database_url=store.url, api_keys=[OPS, VIEWER],
                      api_key_roles=["viewer:read"], **settings)  # fmt: skip
    service = SagaService(config, cast(SagaClient, None), store, ApiMetrics())
    return create_app(config, service=service)
