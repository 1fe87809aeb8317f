"""Answers without polling: ``Prefer: wait=N`` on a start, ``?wait=N`` on a get (real stack).

A waiting request answers as soon as the saga has ended or waits for a person, or after N
seconds with the saga as it is then; all the waiters of one saga share its one poller.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from api.deps import prefer_wait
from api.main import create_app
from engine import SagaClient
from engine.config import Settings
from engine.store import SagaStore
from engine.worker import build_worker
from tests.support import ledger
from tests.support.sagas import ALL
from tests.test_api import AUTH, KEY, Api

pytestmark = pytest.mark.temporal

READER = "reader:" + "r" * 32


@pytest.fixture(scope="module")
async def api(
    dev_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Api]:
    url = f"sqlite:///{tmp_path_factory.mktemp('wait') / 'sagas.sqlite'}"
    settings = Settings(
        database_url=url,
        temporal_address=dev_env.client.service_client.config.target_host,
        task_queue=f"wait-{uuid.uuid4()}",
        modules=["tests.support.sagas"],
        api_keys=[KEY, READER],
        api_key_roles=["reader:read"],
        api_wait_max_seconds=3,
        events_poll_seconds=0.1,
    )
    store = SagaStore(url)
    store.migrate()
    app = create_app(settings)
    worker = build_worker(dev_env.client, task_queue=settings.task_queue, sagas=ALL, store=store)
    async with worker, app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            yield Api(http, settings)
    store.close()


async def start(api: Api, saga_type: str, prefer: str, **plan: Any) -> httpx.Response:
    order_id = f"o-{uuid.uuid4().hex[:10]}"
    amount = plan.pop("amount", 10)
    ledger.plan(order_id, **plan)
    return await api.http.post(
        f"/sagas/{saga_type}",
        json={"order_id": order_id, "amount": amount},
        headers={**AUTH, "Prefer": prefer},
    )


async def test_a_start_that_waits_answers_with_the_end(api: Api) -> None:
    response = await start(api, "three_steps", "wait=10")
    assert response.status_code == 202, response.text
    assert response.headers["Preference-Applied"] == "wait=3"  # cut to the bound
    saga = response.json()
    assert saga["status"] == "completed"
    assert [s["status"] for s in saga["steps"]] == ["succeeded"] * 3


async def test_a_wait_answers_when_the_saga_needs_a_person(api: Api) -> None:
    response = await start(api, "approval", "respond-async, wait=3", amount=500)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "awaiting_approval"
    saga_id = response.json()["id"]
    assert (await api.post(f"/sagas/{saga_id}/reject")).status_code == 200
    await api.status(saga_id, "compensated")  # nothing left running


async def test_a_wait_ends_after_n_seconds_with_the_state_then(api: Api) -> None:
    began = time.monotonic()
    response = await start(api, "three_steps", "wait=1", slow={"b": 2})
    took = time.monotonic() - began
    assert response.status_code == 202, response.text
    assert response.headers["Preference-Applied"] == "wait=1"
    assert response.json()["status"] == "running"
    assert 0.9 <= took < 2, took
    await api.status(response.json()["id"], "completed")  # nothing left running


async def test_a_get_waits_too_and_shares_one_poller(api: Api) -> None:
    response = await start(api, "three_steps", "wait=0", slow={"b": 1.5})
    assert response.headers["Preference-Applied"] == "wait=0"
    saga_id = response.json()["id"]
    assert response.json()["status"] == "running"
    service = api.http._transport.app.state.service  # type: ignore[attr-defined]

    async def get() -> dict[str, Any]:
        answer = await api.http.get(f"/sagas/{saga_id}?wait=3", headers=AUTH)
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    waiters = [asyncio.create_task(get()) for _ in range(20)]
    await asyncio.sleep(0.5)
    assert service.streams.pollers == 1  # twenty waiters, one poller
    answers = await asyncio.gather(*waiters)
    assert {a["status"] for a in answers} == {"completed"}
    assert service.streams.pollers == 0


async def test_waits_keep_roles_and_check_their_input(api: Api) -> None:
    reader = {"Authorization": "Bearer " + "r" * 32}
    response = await api.http.post(
        "/sagas/three_steps",
        json={"order_id": "o-x", "amount": 1},
        headers={**reader, "Prefer": "wait=1"},
    )
    assert response.status_code == 403, response.text
    bad = await api.http.get("/sagas/three_steps-nope?wait=-1", headers=reader)
    assert bad.status_code == 422
    assert "wait" in bad.text
    missing = await api.http.get("/sagas/three_steps-nope?wait=1", headers=reader)
    assert missing.status_code == 404, missing.text


async def test_waiters_hold_places_as_streams_do(api: Api) -> None:
    """A waiter takes an event stream's place; with none left for its key, the answer comes
    at once (a start has happened either way) and says the wait was not applied."""
    service = api.http._transport.app.state.service  # type: ignore[attr-defined]
    service.streams.max_per_key, kept = 0, service.streams.max_per_key
    try:
        began = time.monotonic()
        response = await start(api, "three_steps", "wait=3", slow={"b": 1.5})
        assert response.status_code == 202, response.text
        assert "Preference-Applied" not in response.headers
        answer = await api.http.get(f"/sagas/{response.json()['id']}?wait=3", headers=AUTH)
        assert answer.json()["status"] == "running"
        assert time.monotonic() - began < 1.5
    finally:
        service.streams.max_per_key = kept
    await api.status(response.json()["id"], "completed")


def test_prefer_wait_is_read_as_rfc_7240_says() -> None:
    assert prefer_wait(None) is None
    assert prefer_wait("wait=5") == 5
    assert prefer_wait("respond-async, WAIT = 7") == 7
    assert prefer_wait('wait="2";x=1') == 2
    assert prefer_wait("wait=soon") is None
    assert prefer_wait("wait=\u00b2") is None  # a digit to str.isdigit, not to int()
    assert prefer_wait("wait=" + "9" * 5000) is None
    assert prefer_wait("return=minimal") is None


async def test_the_clients_settled_follows_the_history(dev_env: WorkflowEnvironment) -> None:
    # What `sagas start --wait` uses: the end, or a person's turn, or the state at the bound.
    task_queue = f"settled-{uuid.uuid4()}"
    async with build_worker(dev_env.client, task_queue=task_queue, sagas=ALL):
        sagas = SagaClient(dev_env.client, task_queue=task_queue)
        done = await sagas.start("three_steps", {"order_id": f"o-{uuid.uuid4().hex[:8]}"})
        assert (await sagas.settled(done, timeout=30)).status.value == "completed"
        order = f"o-{uuid.uuid4().hex[:8]}"
        waiting = await sagas.start("approval", {"order_id": order, "amount": 500})
        assert (await sagas.settled(waiting, timeout=30)).status.value == "awaiting_approval"
        await sagas.reject(waiting)
        order = f"o-{uuid.uuid4().hex[:8]}"
        ledger.plan(order, slow={"b": 2})
        slow = await sagas.start("three_steps", {"order_id": order})
        assert (await sagas.settled(slow, timeout=0.5)).status.value == "running"
        assert (await sagas.settled(slow, timeout=30)).status.value == "completed"
        await sagas.wait_for(waiting, until=lambda s: s.status.is_final)
