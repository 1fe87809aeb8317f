"""The console's pages over a saga store alone (no Temporal, no browser): what needs a person,
counts, masking, the diagram's colours and the actions a key may take."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from engine import SagaState
from engine.store import SagaStore
from tests.support.console import OPS, VIEWER, offline_app, secret
from tests.support.postgres import create_database


def saga(saga_id: str, status: str, steps: list[dict[str, object]], **kw: object) -> SagaState:
    at = datetime.now(UTC)
    return SagaState.model_validate(
        {"id": saga_id, "type": "three_steps", "status": status, "input": {"order_id": "o"},
         "started_at": at, "updated_at": at, "steps": steps, **kw}
    )  # fmt: skip


def step(name: str, status: str, **kw: object) -> dict[str, object]:
    return {"name": name, "kind": "compensatable", "status": status,
            "idempotency_key": f"k/{name}", **kw}  # fmt: skip


@pytest.fixture(params=["sqlite", "postgresql"])
async def http(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    # Both stores: the console's queries (what needs a person first, counts, filters) are SQL.
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'sagas.sqlite'}"
    else:
        url = create_database(request.getfixturevalue("postgres"), f"console_{uuid.uuid4().hex}")
    store = SagaStore(url)
    store.migrate()
    now = datetime.now(UTC)
    wait = {"participant": "bank", "reason": "circuit_open", "since": now,
            "until": now + timedelta(seconds=30), "refusals": 2}  # fmt: skip
    undo_failed = {"status": "failed", "attempts": 3, "error": "bank said no to 4111111111111111"}
    store.apply(
        [
            (saga("three_steps-waits", "running",
                  [step("a", "succeeded"), step("b", "running", waiting=wait),
                   step("c", "pending")],
                  input={"order_id": "o", "card_number": "4111111111111111"}), 1),
            (saga("three_steps-parked", "compensation_failed",
                  [step("a", "compensation_failed", compensation=undo_failed),
                   step("b", "failed", error="b refused"), step("c", "pending")]), 1),
            (saga("three_steps-done", "completed", [step(n, "succeeded") for n in "abc"]), 1),
        ]
    )  # fmt: skip
    app = offline_app(store)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        yield client
    store.close()


async def log_in(http: httpx.AsyncClient, key: str) -> None:
    answer = await http.post("/console/login", data={"api_key": secret(key)})
    assert answer.status_code == 303


class TestList:
    async def test_parked_and_waiting_sagas_come_first_with_why(
        self, http: httpx.AsyncClient
    ) -> None:
        await log_in(http, OPS)
        page = (await http.get("/console")).text
        attention = page[page.index("Needs a person") : page.index("By status")]
        assert attention.index("three_steps-parked") < attention.index("three_steps-waits")
        assert "a: bank said no to" in attention
        assert "4111111111111111" not in page
        assert "b waits on bank (circuit open)" in attention
        assert "three_steps-done" not in attention
        for status, n in (("running", 1), ("completed", 1), ("compensation failed", 1)):
            assert f"{status} <strong>{n}</strong>" in page

    async def test_the_filters_narrow_the_list_and_the_counts(
        self, http: httpx.AsyncClient
    ) -> None:
        await log_in(http, OPS)
        page = (await http.get("/console", params={"status": "completed"})).text
        listed = page[page.index('<h2 id="list-h">') :]
        assert "three_steps-done" in listed
        assert "three_steps-parked" not in listed
        later = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
        empty = (await http.get("/console", params={"created_after": later})).text
        assert "By status (0)" in empty
        assert "No saga matches" in empty


class TestSagaPage:
    async def test_the_input_is_masked_and_the_diagram_coloured(
        self, http: httpx.AsyncClient
    ) -> None:
        await log_in(http, OPS)
        page = (await http.get("/console/sagas/three_steps-waits")).text
        assert "4111111111111111" not in page
        assert "&#34;card_number&#34;: &#34;[redacted]&#34;" in page
        assert 'class="node st-running"' in page
        assert 'class="node st-pending"' in page
        assert "waits on bank (circuit open)" in page
        assert "/namespaces/default/workflows/three_steps-waits" in page

    async def test_actions_follow_the_state_and_the_roles(self, http: httpx.AsyncClient) -> None:
        await log_in(http, OPS)
        page = (await http.get("/console/sagas/three_steps-parked")).text
        assert "Retry failed compensations" in page
        assert "Resolve a by hand" in page
        assert "Resolve b by hand" not in page
        assert "Cancel and compensate" not in page
        await log_in(http, VIEWER)
        page = (await http.get("/console/sagas/three_steps-parked")).text
        assert '<button type="submit" class="btn-' not in page
        assert "this key lacks the role" in page
