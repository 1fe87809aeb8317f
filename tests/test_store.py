"""The saga store on SQLite and PostgreSQL, and the projection that keeps it in step.

The projection tests run real sagas on the dev server with a worker that owns a store, and
check that the store follows each saga to its end, that a stale snapshot never wins, and that
the reconciler repairs what a lost worker never wrote.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, event, insert
from temporalio.client import Client, WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from engine import SagaClient, SagaState, SagaStatus, StepState, StepStatus
from engine._migrate import upgrade
from engine._store import with_driver
from engine._store_tables import OPERATOR_ACTIONS, SAGAS, STEPS, TABLES
from engine.config import Settings
from engine.store import InvalidCursor, KeyConflict, Projector, SagaStore, read_from_temporal
from engine.worker import build_worker
from tests.support import ledger
from tests.support.postgres import create_database
from tests.support.sagas import ALL
from tests.test_encryption import new_key


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SagaStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'sagas.sqlite'}"
    else:
        url = create_database(request.getfixturevalue("postgres"), f"store_{uuid.uuid4().hex}")
    store = SagaStore(url)
    store.migrate()
    yield store
    store.close()


def state(
    saga_id: str, status: SagaStatus, *, at: datetime | None = None, **kw: object
) -> SagaState:
    at = at or datetime.now(UTC)
    return SagaState.model_validate(
        {"id": saga_id, "type": "t", "status": status, "input": {"n": 1},
         "started_at": at, "updated_at": at, **kw}
    )  # fmt: skip


def claim(
    store: SagaStore, saga_id: str, key: str | None = None, fp: str = "f"
) -> tuple[str, bool]:
    return store.claim(saga_id=saga_id, saga_type="t", input={"n": 1}, key=key, fingerprint=fp,
                       trace_id=None)  # fmt: skip


def step(saga_id: str, name: str) -> StepState:
    return StepState(name=name, kind="compensatable", idempotency_key=f"{saga_id}/{name}")


def _statements(store: SagaStore) -> list[str]:
    """The SQL statements the store sends to the database from now on."""
    seen: list[str] = []

    @event.listens_for(store.engine, "before_cursor_execute")
    def record(conn: object, cursor: object, sql: str, *args: object) -> None:
        seen.append(" ".join(sql.split()))

    return seen


class TestSchema:
    def test_migrations_match_the_models(self, store: SagaStore) -> None:
        # SQLModel shares one MetaData across every model imported in the process (the
        # participants' tables too), so compare against a copy holding only the store's.
        ours = MetaData()
        for table in TABLES:
            table.to_metadata(ours)
        with store.engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), ours) == []

    def test_migrating_twice_is_harmless(self, store: SagaStore) -> None:
        store.migrate()
        assert store.count() == 0


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_processes_that_start_together_all_migrate(
    database: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """`sagas dev` and rolling deployments start the API and workers at once on a new store."""
    if database == "sqlite":
        url = f"sqlite:///{tmp_path / 'race.sqlite'}"
    else:
        url = create_database(request.getfixturevalue("postgres"), f"race_{uuid.uuid4().hex}")
    code = f"from engine._store import SagaStore; SagaStore({url!r}).migrate()"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors


class TestUrls:
    @pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
    def test_a_plain_postgres_url_uses_psycopg_3(self, scheme: str) -> None:
        assert with_driver(f"{scheme}://u:p@db/sagas") == "postgresql+psycopg://u:p@db/sagas"

    def test_a_plain_url_reaches_a_real_server(self, postgres: str) -> None:
        url = create_database(postgres, f"plain_{uuid.uuid4().hex}")
        store = SagaStore(url.replace("postgresql+psycopg://", "postgresql://"))
        store.migrate()
        assert store.count() == 0
        store.close()

    def test_other_urls_are_kept(self) -> None:
        for url in ("sqlite:///x.sqlite", "postgresql+psycopg://u@db/s", "postgresql+asyncpg://d"):
            assert with_driver(url) == url


class TestIdempotencyKeys:
    def test_the_same_key_and_request_give_the_first_saga(self, store: SagaStore) -> None:
        assert claim(store, "s-1", key="k1") == ("s-1", True)
        assert claim(store, "s-2", key="k1") == ("s-1", False)
        assert store.count() == 1

    def test_the_same_key_with_another_request_is_a_conflict(self, store: SagaStore) -> None:
        claim(store, "s-1", key="k2")
        with pytest.raises(KeyConflict, match="different request"):
            claim(store, "s-2", key="k2", fp="other")

    def test_forget_releases_the_key(self, store: SagaStore) -> None:
        claim(store, "s-1", key="k3")
        store.forget("s-1", "k3")
        assert store.get("s-1") is None
        assert claim(store, "s-9", key="k3") == ("s-9", True)


class TestInFlight:
    def test_the_quietest_saga_of_each_status_tells_how_long_nothing_moved(
        self, store: SagaStore
    ) -> None:
        long_ago = datetime(2026, 1, 1, tzinfo=UTC)
        store.apply([
            (state("stuck", SagaStatus.RUNNING, at=long_ago), 3),
            (state("busy", SagaStatus.RUNNING), 7),
            (state("done", SagaStatus.COMPLETED, at=long_ago), 9),
        ])  # fmt: skip
        assert store.in_flight() == {("t", "running"): 2}
        assert store.quietest_in_flight() == {("t", "running"): long_ago}
        store.apply([(state("stuck", SagaStatus.RUNNING), 4)])  # it moved on
        (quiet,) = store.quietest_in_flight().values()
        assert quiet > long_ago


class TestSnapshots:
    def test_a_newer_snapshot_wins_and_an_older_one_is_ignored(self, store: SagaStore) -> None:
        claim(store, "s-1")
        step = StepState(name="a", kind="compensatable", status=StepStatus.SUCCEEDED, attempts=2,
                         idempotency_key="s-1/a")  # fmt: skip
        assert store.apply([(state("s-1", SagaStatus.COMPLETED, steps=[step]), 9)]) == 1
        assert store.apply([(state("s-1", SagaStatus.RUNNING), 5)]) == 0
        stored = store.get("s-1")
        assert stored is not None
        assert stored.state.status is SagaStatus.COMPLETED
        assert stored.state.steps == [step]
        assert stored.revision == 9

    def test_a_snapshot_of_an_unknown_saga_creates_it(self, store: SagaStore) -> None:
        store.apply([(state("cli-started", SagaStatus.RUNNING), 3)])
        stored = store.get("cli-started")
        assert stored is not None
        assert stored.state.input == {"n": 1}

    def test_one_upsert_writes_the_newest_snapshot_of_each_saga(self, store: SagaStore) -> None:
        store.apply([(state("s-1", SagaStatus.COMPENSATING, steps=[step("s-1", "a")]), 5),
                     (state("s-5", SagaStatus.RUNNING), 1)])  # fmt: skip
        batch: list[tuple[SagaState | dict[str, Any], int]] = [
            (state("s-1", SagaStatus.RUNNING), 3),  # older than the stored one
            (state("s-5", SagaStatus.COMPLETED, steps=[step("s-5", "a")]), 2),  # newer
            (state("s-2", SagaStatus.RUNNING, steps=[step("s-2", "a")]), 4),
            (state("s-2", SagaStatus.COMPLETED, steps=[step("s-2", "a"), step("s-2", "b")]), 8),
            (state("s-2", SagaStatus.COMPENSATING), 6),  # older than the one before it
            (state("s-3", SagaStatus.AWAITING_APPROVAL), 2),
            (state("s-3", SagaStatus.AWAITING_APPROVAL), 2),  # the same again
            (state("s-4", SagaStatus.FAILED, error="boom").model_dump(mode="json"), 7),
        ]
        statements = _statements(store)
        assert store.apply(batch) == 4
        on_sagas = [sql for sql in statements if re.search(r"\bsagas\b", sql)]
        assert len(on_sagas) == 1, on_sagas
        assert on_sagas[0].startswith("INSERT INTO sagas")
        assert "ON CONFLICT (id) DO UPDATE" in on_sagas[0]
        found = {i: store.get(i) for i in ("s-1", "s-2", "s-3", "s-4", "s-5")}
        assert {i: (s.state.status, s.revision) for i, s in found.items() if s} == {
            "s-1": (SagaStatus.COMPENSATING, 5),
            "s-2": (SagaStatus.COMPLETED, 8),
            "s-3": (SagaStatus.AWAITING_APPROVAL, 2),
            "s-4": (SagaStatus.FAILED, 7),
            "s-5": (SagaStatus.COMPLETED, 2),
        }
        assert {i: [x.name for x in s.state.steps] for i, s in found.items() if s} == {
            "s-1": ["a"],
            "s-2": ["a", "b"],
            "s-3": [],
            "s-4": [],
            "s-5": ["a"],
        }

    def test_an_equal_revision_is_the_later_word_and_an_older_one_none(
        self, store: SagaStore
    ) -> None:
        # One workflow activation can publish twice at the same history length (the last step
        # done, then the saga completed): the later snapshot must win.
        running = state("s-1", SagaStatus.RUNNING, steps=[step("s-1", "a")])
        assert store.apply([(running, 4)]) == 1
        completed = state("s-1", SagaStatus.COMPLETED, steps=[step("s-1", "a")])
        assert store.apply([(completed, 4)]) == 1
        older = state("s-1", SagaStatus.RUNNING, steps=[step("s-1", "x"), step("s-1", "y")])
        assert store.apply([(older, 3)]) == 0
        stored = store.get("s-1")
        assert stored is not None
        assert (stored.revision, stored.state.status) == (4, SagaStatus.COMPLETED)
        assert [x.name for x in stored.state.steps] == ["a"]

    def test_a_newer_snapshot_keeps_what_only_the_api_knows(self, store: SagaStore) -> None:
        """The claim's creation time and trace id stay; a snapshot without input keeps it."""
        at = datetime(2026, 1, 1, tzinfo=UTC)
        store.claim(saga_id="s-1", saga_type="t", input={"n": 1}, key=None, fingerprint="f",
                    trace_id="ab" * 16, created_at=at)  # fmt: skip
        store.apply([(state("s-1", SagaStatus.RUNNING, steps=[step("s-1", "a")]), 3)])
        # What the reconciler reads of a saga that failed at the Temporal level.
        failed = state("s-1", SagaStatus.FAILED, error="terminated").model_copy(
            update={"input": None}
        )
        assert store.apply([(failed, 9)]) == 1
        stored = store.get("s-1")
        assert stored is not None
        assert (stored.state.status, stored.state.error) == (SagaStatus.FAILED, "terminated")
        assert stored.state.input == {"n": 1}
        assert stored.state.steps == []
        assert (stored.trace_id, stored.created_at) == ("ab" * 16, at)


def kept(store: SagaStore) -> str:
    """Everything the store's database holds, as it holds it: the SQLite file's bytes (and
    its write-ahead log's), or every row of PostgreSQL's tables as text."""
    if store.engine.dialect.name == "sqlite":
        path = Path(str(store.engine.url.database))
        files = [path, path.with_name(path.name + "-wal")]
        return b"".join(f.read_bytes() for f in files if f.exists()).decode("latin-1")
    with store.engine.connect() as conn:
        return "\n".join(
            text
            for table in TABLES
            for text in conn.exec_driver_sql(f"SELECT t::text FROM {table.name} t").scalars()
        )


class TestMasking:
    """Card data in a saga's input, outputs, errors and reasons never reaches the database."""

    TOKEN = "tok_live_5f3c9a"
    NUMBER = "4111 1111 1111 1111"

    def test_card_data_is_masked_in_what_the_store_keeps(self, store: SagaStore) -> None:
        token, number = self.TOKEN, self.NUMBER
        trip = {"customer_email": "ada@example.com", "payment": {"card_token": token},
                "note": f"paid with {number}", "deep": nested_card(30, token)}  # fmt: skip
        store.claim(saga_id="trip-1234567890123456", saga_type="trip", input=trip, key="k",
                    fingerprint="f", trace_id=None)  # fmt: skip
        assert token in json_text(trip)  # the caller's own input is left as it was
        charge = StepState(
            name="charge_payment",
            kind="compensatable",
            status=StepStatus.COMPENSATED,
            attempts=3,
            error=f"payments refused (402): card {token} declined",
            idempotency_key="trip-1234567890123456/charge_payment",
            output={"key": "c-1", "card_token": token, "receipt": f"charged {number}"},
            approval={"approved": True, "by": "ops", "comment": f"card {number} checked"},
            compensation={
                "status": "resolved",
                "error": f"refund of {token} failed",
                "resolution": f"refunded {number} by hand",
            },
        )
        snapshot = state(
            "trip-1234567890123456",
            SagaStatus.COMPENSATED,
            input=trip,
            result={"charge_payment": {"card": token}},
            error=f"charge_payment: card {token} declined",
            cancel_reason=f"customer's card {number} stolen",
            steps=[charge],
        )
        assert store.apply([(snapshot, 5)]) == 1
        store.record_action("trip-1234567890123456", "resolve", reason=f"refunded {number}")

        held = kept(store)
        for secret in (token, number, number.replace(" ", "")):
            assert secret not in held
        stored = store.get("trip-1234567890123456")
        assert stored is not None
        saga = stored.state
        # What is not card data is kept: ids, names, e-mail, the text around a masked token.
        assert saga.id == "trip-1234567890123456"
        assert saga.input["payment"] == {"card_token": "[redacted]"}
        assert saga.input["customer_email"] == "ada@example.com"
        assert saga.input["note"] == "paid with [redacted]"
        assert saga.result == {"charge_payment": {"card": "[redacted]"}}
        assert saga.error == "charge_payment: card [redacted] declined"
        step = saga.step("charge_payment")
        assert step.output == {"key": "c-1", "card_token": "[redacted]",
                               "receipt": "charged [redacted]"}  # fmt: skip
        assert step.error == "payments refused (402): card [redacted] declined"
        assert step.idempotency_key == "trip-1234567890123456/charge_payment"
        assert step.compensation is not None
        assert step.compensation.resolution == "refunded [redacted] by hand"
        (action,) = store.actions("trip-1234567890123456")
        assert action.reason == "refunded [redacted]"


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_the_migration_masks_what_was_kept_before(
    database: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Rows written before masking existed: a finished saga is never written again."""
    if database == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    else:
        url = create_database(request.getfixturevalue("postgres"), f"old_{uuid.uuid4().hex}")
    store = SagaStore(url)
    try:
        masks_what_was_kept_before(store)
    finally:
        store.close()


def masks_what_was_kept_before(store: SagaStore) -> None:
    upgrade(store.engine, "0001")
    token, at = "tok_from_2025", datetime(2025, 1, 1, tzinfo=UTC)
    with store.engine.begin() as conn:  # as the store wrote them then
        conn.execute(insert(SAGAS), [
            {"id": f"old-{n}", "type": "trip", "status": "completed", "revision": 9,
             "input": {"payment": {"card_token": token}, "n": n}, "result": {"charge": token},
             "error": None, "cancel_reason": f"lost {token}", "awaiting_approval": [],
             "past_pivot": True, "trace_id": None, "created_at": at, "updated_at": at}
            for n in range(3)
        ])  # fmt: skip
        conn.execute(insert(STEPS), [
            {"saga_id": "old-1", "position": 0, "name": "charge",
             "state": step("old-1", "charge").model_dump(mode="json")
             | {"output": {"card": token}, "error": f"card {token} declined"}},
        ])  # fmt: skip
        conn.execute(insert(OPERATOR_ACTIONS), [
            {"saga_id": "old-1", "action": "resolve", "reason": f"refunded {token}", "at": at}
        ])  # fmt: skip
    assert token in kept(store)
    store.migrate()
    assert token not in kept(store)
    stored = store.get("old-1")
    assert stored is not None
    assert stored.state.input == {"payment": {"card_token": "[redacted]"}, "n": 1}
    assert stored.state.step("charge").error == "card [redacted] declined"
    assert stored.state.cancel_reason == "lost [redacted]"


def nested_card(depth: int, token: str) -> dict[str, Any]:
    value: dict[str, Any] = {"card_token": token}
    for _ in range(depth):
        value = {"inner": value}
    return value


def json_text(value: Any) -> str:
    return json.dumps(value)


class TestListing:
    def test_filters_and_cursor_pagination(self, store: SagaStore) -> None:
        base = datetime(2026, 1, 1, tzinfo=UTC)
        for i in range(7):
            status = SagaStatus.COMPLETED if i % 2 else SagaStatus.COMPENSATED
            store.apply([(state(f"s-{i}", status, at=base + timedelta(minutes=i)), 1)])
        seen, cursor = [], None
        while True:
            page = store.page(limit=3, cursor=cursor)
            seen += [item.state.id for item in page.items]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert seen == [f"s-{i}" for i in reversed(range(7))]
        completed = store.page(status="completed")
        assert [i.state.id for i in completed.items] == ["s-5", "s-3", "s-1"]
        window = store.page(created_after=base + timedelta(minutes=2),
                            created_before=base + timedelta(minutes=4))  # fmt: skip
        assert [i.state.id for i in window.items] == ["s-3", "s-2"]
        assert store.page(saga_type="other").items == []

    def test_a_forged_cursor_is_refused(self, store: SagaStore) -> None:
        with pytest.raises(InvalidCursor, match="cursor"):
            store.page(cursor="not-a-cursor")


class TestOperatorActions:
    def test_actions_are_kept_in_order(self, store: SagaStore) -> None:
        claim(store, "s-1")
        store.record_action("s-1", "cancel", actor="ops", reason="customer asked")
        store.record_action("s-1", "resolve", step="a", actor="ops", reason="refunded by hand")
        actions = store.actions("s-1")
        assert [(a.action, a.step, a.reason) for a in actions] == [
            ("cancel", None, "customer asked"),
            ("resolve", "a", "refunded by hand"),
        ]


# ---------------------------------------------------------------------- projection


@pytest.fixture
async def projected(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> AsyncIterator[tuple[SagaClient, SagaStore]]:
    store = SagaStore(f"sqlite:///{tmp_path / 'sagas.sqlite'}")
    store.migrate()
    task_queue = f"tq-{uuid.uuid4()}"
    async with build_worker(dev_env.client, task_queue=task_queue, sagas=ALL, store=store):
        yield SagaClient(dev_env.client, task_queue=task_queue), store
    store.close()


async def stored_until(store: SagaStore, saga_id: str, status: SagaStatus) -> SagaState:
    async with asyncio.timeout(10):
        while True:
            found = await asyncio.to_thread(store.get, saga_id)
            if found is not None and found.state.status is status:
                return found.state
            await asyncio.sleep(0.05)


@pytest.mark.temporal
class TestProjection:
    async def test_the_store_follows_a_saga_to_its_end(
        self, projected: tuple[SagaClient, SagaStore]
    ) -> None:
        sagas, store = projected
        saga_id = f"proj-{uuid.uuid4().hex[:8]}"
        ledger.plan(saga_id)
        await sagas.start("three_steps", {"order_id": saga_id, "amount": 5}, saga_id=saga_id)
        final = await sagas.result(saga_id)
        stored = await stored_until(store, saga_id, SagaStatus.COMPLETED)
        assert stored.steps == final.steps
        assert stored.result == final.model_dump(mode="json")["result"]

    async def test_a_compensated_saga_is_stored_with_its_compensations(
        self, projected: tuple[SagaClient, SagaStore]
    ) -> None:
        sagas, store = projected
        saga_id = f"proj-{uuid.uuid4().hex[:8]}"
        ledger.plan(saga_id, refuse={"c"})
        await sagas.start("three_steps", {"order_id": saga_id, "amount": 5}, saga_id=saga_id)
        final = await sagas.result(saga_id)
        assert final.status is SagaStatus.COMPENSATED
        stored = await stored_until(store, saga_id, SagaStatus.COMPENSATED)
        assert [s.status for s in stored.steps] == [s.status for s in final.steps]
        assert stored.error == final.error

    async def test_the_reconciler_repairs_what_no_worker_wrote(
        self, dev_env: WorkflowEnvironment, sagas: SagaClient, tmp_path: Path
    ) -> None:
        """A saga run by a worker without a store (as if its writes were lost in a crash)."""
        store = SagaStore(f"sqlite:///{tmp_path / 'sagas.sqlite'}")
        store.migrate()
        saga_id = f"lost-{uuid.uuid4().hex[:8]}"
        ledger.plan(saga_id)
        claim(store, saga_id)
        await sagas.start("three_steps", {"order_id": saga_id, "amount": 5}, saga_id=saga_id)
        await sagas.result(saga_id)
        stored = store.get(saga_id)
        assert stored is not None
        assert stored.state.status is SagaStatus.RUNNING  # nobody projected it

        projector = Projector(store, dev_env.client, sagas.task_queue, quiet_for=timedelta(0))
        assert await projector.reconcile() == 1
        stored = store.get(saga_id)
        assert stored is not None
        assert stored.state.status is SagaStatus.COMPLETED
        assert stored.revision > 0
        store.close()

    async def test_the_reconciler_reads_a_sealed_failure_message(
        self, dev_env: WorkflowEnvironment
    ) -> None:
        """With encryption on, history holds "Encoded failure": the reconciler opens it."""
        sealed = await Client.connect(
            dev_env.client.service_client.config.target_host,
            data_converter=Settings(encryption_key=new_key()).data_converter(),
        )
        task_queue = f"tq-{uuid.uuid4()}"
        saga_id = f"bad-{uuid.uuid4().hex[:8]}"
        async with build_worker(sealed, task_queue=task_queue, sagas=ALL):
            # Past the client's validation, as an old client or another SDK could start it.
            handle = await sealed.start_workflow(
                "three_steps", {"amount": "many"}, id=saga_id, task_queue=task_queue
            )
            with pytest.raises(WorkflowFailureError):
                await handle.result()
        found = await read_from_temporal(sealed, saga_id)
        assert found is not None
        assert found[0].status is SagaStatus.FAILED
        assert found[0].error is not None
        assert found[0].error.startswith("invalid input for saga 'three_steps'")


@pytest.mark.temporal
async def test_a_worker_without_the_store_builds_no_snapshots(
    sagas: SagaClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no projector on the queue (the saga store off), the saga does not build the
    snapshots it would hand one: building them was most of a change's cost in the worker."""
    import engine._projection as projection

    published: list[str] = []
    monkeypatch.setattr(projection, "publish", lambda queue, *_: published.append(queue))
    saga_id = await sagas.start("three_steps", {"order_id": "o-no-store", "amount": 1})
    assert (await sagas.result(saga_id)).status is SagaStatus.COMPLETED
    assert published == []
    # With a projector listening, the same saga is published (the store's tests follow it).
    monkeypatch.setitem(projection._sinks, sagas.task_queue, lambda *_: None)
    saga_id = await sagas.start("three_steps", {"order_id": "o-store", "amount": 1})
    await sagas.result(saga_id)
    assert set(published) == {sagas.task_queue}
