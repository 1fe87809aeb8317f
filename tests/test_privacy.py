"""Card data outside Temporal: a paid trip through the API leaves no card token in the saga
store's database nor in any answer (start, get, list, server-sent events, an operator's action),
on SQLite and on PostgreSQL.

The demo participants and a worker (``workflows`` and the test sagas, projecting into the
store) run as ``sagas`` processes; the API runs in this process with its real lifespan. Every
card token of the demo starts with ``tok_``: none may be found anywhere.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from engine.config import Settings
from engine.store import SagaStore
from tests.support.postgres import create_database
from tests.support.processes import ROOT, Background, free_port
from tests.test_store import kept

pytestmark = pytest.mark.temporal

KEY = "ops:" + "p" * 32
AUTH = {"Authorization": "Bearer " + "p" * 32}
TOKEN = "tok_"  # the start of every card token


@pytest.fixture(scope="module")
def participants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("participants")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "SAGAS_DATA_DIR": str(folder), "SAGAS_PARTICIPANTS_PORT": str(port)}
    process = Background(["participants"], env, folder / "participants.log")
    try:
        process.wait_for("ready")
        yield url
    finally:
        process.stop()


@dataclass
class Stack:
    http: httpx.AsyncClient
    store: SagaStore

    async def get(self, path: str) -> httpx.Response:
        response = await self.http.get(path, headers=AUTH)
        assert response.status_code == 200, response.text
        assert TOKEN not in response.text
        return response

    async def until(self, saga_id: str, *statuses: str) -> dict[str, Any]:
        async with asyncio.timeout(60):
            while True:
                saga: dict[str, Any] = (await self.get(f"/sagas/{saga_id}")).json()
                if saga["status"] in statuses:
                    return saga
                await asyncio.sleep(0.2)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
async def stack(
    request: pytest.FixtureRequest,
    dev_env: WorkflowEnvironment,
    participants: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    folder = tmp_path_factory.mktemp("privacy")
    if request.param == "sqlite":
        url = f"sqlite:///{folder / 'sagas.sqlite'}"
    else:
        url = create_database(request.getfixturevalue("postgres"), f"privacy_{uuid.uuid4().hex}")
    store = SagaStore(url)
    store.migrate()
    address = dev_env.client.service_client.config.target_host
    task_queue = f"privacy-{uuid.uuid4()}"
    env = {
        **os.environ,
        "SAGAS_DATA_DIR": str(folder / "data"),
        "SAGAS_PARTICIPANTS_URL": participants,
        "SAGAS_TEMPORAL_ADDRESS": address,
        "SAGAS_TASK_QUEUE": task_queue,
        "SAGAS_DATABASE_URL": url,
    }
    worker = Background(
        ["worker", "-m", "workflows", "-m", "tests.support.sagas"], env, folder / "worker.log"
    )
    settings = Settings(
        database_url=url,
        temporal_address=address,
        task_queue=task_queue,
        modules=["workflows", "tests.support.sagas"],
        api_keys=[KEY],
    )
    app = create_app(settings)
    try:
        worker.wait_for("ready")
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
                yield Stack(http, store)
    finally:
        worker.stop()
        store.close()


def trip(name: str, **payment: str) -> dict[str, Any]:
    """A trip from examples/demo/, with another card if given."""
    loaded: dict[str, Any] = json.loads((ROOT / "examples" / "demo" / f"{name}.json").read_text())
    loaded["payment"].update(payment)
    return loaded


async def test_a_paid_trip_leaves_no_card_token_in_the_store_or_the_api(stack: Stack) -> None:
    """tok_flaky: the payment fails twice, then the trip completes."""
    key = {"Idempotency-Key": f"trip-{uuid.uuid4()}"}
    started = await stack.http.post(
        "/sagas/trip_booking", json=trip("trip-flaky"), headers={**AUTH, **key}
    )
    assert started.status_code == 202, started.text
    assert TOKEN not in started.text
    saga_id = started.json()["id"]
    assert started.json()["input"]["payment"] == {"card_token": "[redacted]"}

    async with asyncio.timeout(60):
        events = await stack.get(f"/sagas/{saga_id}/events")
    statuses = [json.loads(line[6:])["status"] for line in events.text.splitlines()
                if line.startswith("data: ")]  # fmt: skip
    assert statuses[-1] == "completed"

    saga = (await stack.get(f"/sagas/{saga_id}")).json()
    charge = next(s for s in saga["steps"] if s["name"] == "charge_payment")
    assert (charge["status"], charge["attempts"]) == ("succeeded", 3)
    # What is not card data is shown as it was given.
    assert saga["input"]["customer_email"] == "ada@example.com"
    assert saga["input"]["flight"]["passenger"] == "Ada Lovelace"
    assert saga["result"]["charge_payment"]["price"] > 0
    listed = (await stack.get("/sagas?type=trip_booking")).json()
    assert saga_id in {item["id"] for item in listed["items"]}

    # The idempotency key is bound to the full input, card token included.
    again = await stack.http.post(
        "/sagas/trip_booking", json=trip("trip-flaky"), headers={**AUTH, **key}
    )
    assert (again.status_code, again.json()["id"]) == (200, saga_id)
    assert TOKEN not in again.text
    other_card = await stack.http.post(
        "/sagas/trip_booking", json=trip("trip-flaky", card_token="tok_visa"),
        headers={**AUTH, **key},
    )  # fmt: skip
    assert other_card.status_code == 409, other_card.text

    assert TOKEN not in kept(stack.store)


async def test_an_approved_trip_answers_without_the_card(stack: Stack) -> None:
    """The approval's answer is the state the saga itself returned, card token included:
    the API masks it too."""
    started = await stack.http.post("/sagas/trip_booking", json=trip("trip-expensive"),
                                    headers=AUTH)  # fmt: skip
    assert started.status_code == 202, started.text
    saga_id = started.json()["id"]
    await stack.until(saga_id, "awaiting_approval")
    approved = await stack.http.post(
        f"/sagas/{saga_id}/approve", json={"comment": "card 4242 4242 4242 4242 checked"},
        headers=AUTH,
    )  # fmt: skip
    assert approved.status_code == 200, approved.text
    assert TOKEN not in approved.text
    assert "4242" not in approved.text
    assert approved.json()["input"]["payment"] == {"card_token": "[redacted]"}
    await stack.until(saga_id, "completed")
    held = kept(stack.store)
    assert TOKEN not in held
    assert "4242" not in held


async def test_a_card_token_echoed_in_a_step_error_is_masked(stack: Stack) -> None:
    token = f"tok_{uuid.uuid4().hex}"
    order_id = f"o-{uuid.uuid4().hex[:10]}"
    started = await stack.http.post(
        "/sagas/card_declined", json={"order_id": order_id, "card_token": token}, headers=AUTH
    )
    assert started.status_code == 202, started.text
    saga = await stack.until(started.json()["id"], "compensated")
    check = next(s for s in saga["steps"] if s["name"] == "check_card")
    assert check["error"] == f"Declined: card [redacted] declined for order {order_id}"
    assert saga["error"] is not None
    assert "[redacted]" in saga["error"]
    assert token not in kept(stack.store)
