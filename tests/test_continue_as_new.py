"""A saga's history stays bounded: it continues as new, and stays one saga (issue 12, item 2).

The sagas here are started with a small history limit, so that a step failing transiently a few
dozen times takes them across it several times. Each test checks what must hold across runs:
attempts counted on, steps done before not done again, compensation of what was done before,
imperative code resuming from its steps' carried results, approvals and deadlines kept.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from engine import (
    Approval,
    ImperativeSaga,
    Parallel,
    RetryPolicy,
    Saga,
    SagaClient,
    SagaRun,
    SagaStatus,
    Step,
    StepFailed,
    StepStatus,
)
from engine._carry import Carry
from engine._continue import BASE_MEMO, LIMIT_MEMO
from engine._patches import GENERATION, GENERATION_MEMO, LOCAL_MEMO
from engine._projection import read_from_temporal
from engine._store import SagaStore
from engine.config import Settings
from engine.worker import build_replayer, build_worker, load_modules
from tests.support import ledger
from tests.support.generation import polled
from tests.support.ledger import ALWAYS
from tests.support.otlp import ReceivedSpan, otlp_receiver
from tests.support.processes import Background
from tests.support.sagas import (
    FAST,
    FAST_FOREVER,
    Order,
    Receipt,
    a,
    b,
    c,
    d,
    fast,
    p1,
    p2,
    undo_a,
    undo_b,
    undo_p1,
    undo_p2,
)
from tests.test_api import KEY, Api
from tests.test_execution_rules import undone_in_order

pytestmark = pytest.mark.temporal

# Small enough that a step failing ~20 times continues as new several times (a retry adds
# about a dozen events: the activity, its timer, their workflow tasks).
LIMIT = 60
# On the dev server a backoff timer takes a second whatever its length: fewer retries there.
DEV_LIMIT = 40

forever = Saga(
    "can_forever",
    input=Order,
    steps=[
        fast(a, undo_a),
        fast(b, pivot=True),
        Step(c, retriable=True, retry=FAST_FOREVER),
        Step(d, retriable=True, retry=FAST_FOREVER),
    ],
)

then_refused = Saga(
    "can_then_refused",
    input=Order,
    steps=[
        fast(a, undo_a),
        fast(b, undo_b, retry=FAST_FOREVER),
        Parallel(fast(p1, undo_p1, retry=FAST_FOREVER), fast(p2, undo_p2)),
        fast(c),
    ],
)

waiting = Saga(
    "can_waiting",
    input=Order,
    steps=[
        fast(a, undo_a),
        Parallel(
            fast(p1, undo_p1, retry=FAST_FOREVER),
            fast(p2, undo_p2, approval=Approval(timedelta(hours=1))),
        ),
    ],
)

# p1's retries take half an hour: the saga continues as new well into p2's wait.
SLOW_FOREVER = RetryPolicy(
    initial_interval=timedelta(minutes=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
    maximum_attempts=0,
)
waiting_long = Saga(
    "can_waiting_long",
    input=Order,
    steps=[
        fast(a, undo_a),
        Parallel(
            fast(p1, undo_p1, retry=SLOW_FOREVER),
            fast(p2, undo_p2, approval=Approval(timedelta(hours=1))),
        ),
    ],
)


async def _imperative(saga: SagaRun[Order]) -> None:
    first: Receipt = await saga.step(a, compensate=undo_a, retry=FAST, compensation_retry=FAST)
    try:
        await saga.step(b, compensate=undo_b, retry=FAST, compensation_retry=FAST)
    except StepFailed:
        # Refused: the other branch. Its argument needs a's output as a Receipt, not a dict.
        await saga.step(c, Order(order_id=saga.input.order_id, amount=first.amount + 1), pivot=True)
    await saga.step(p1, retriable=True, retry=FAST_FOREVER)
    await saga.step(p1, retriable=True, retry=FAST_FOREVER)  # the same activity: p1.2
    await saga.step(d, retriable=True, retry=FAST_FOREVER)


imperative = ImperativeSaga(
    "can_imperative",
    input=Order,
    run=_imperative,
    activities=[a, undo_a, b, undo_b, c, p1, d],
)

deadlined = Saga(
    "can_deadline",
    input=Order,
    deadline=timedelta(hours=2),
    steps=[fast(a, undo_a), fast(b, undo_b, retry=SLOW_FOREVER)],
)

# b fails for good (outcome unknown) and is optional: its undo retries across the limit.
optional_undone = Saga(
    "can_optional_undone",
    input=Order,
    steps=[
        fast(a, undo_a),
        fast(b, undo_b, optional=True, compensation_retry=FAST_FOREVER),
        Step(c, retriable=True, retry=FAST_FOREVER),
    ],
)
# b's action and then its fallback (p1) retry across the limit (the plan's faults for "b"
# count the calls of both: they run as step b).
FIFTEEN = RetryPolicy(
    initial_interval=timedelta(milliseconds=50),
    maximum_interval=timedelta(milliseconds=200),
    maximum_attempts=15,
)
degrading = Saga(
    "can_degrading",
    input=Order,
    steps=[
        fast(a, undo_a),
        fast(b, undo_b, retry=FIFTEEN, fallback=p1, fallback_compensate=undo_p1),
    ],
)

# Local steps on either side of a step that retries across the limit (generation 2 names them
# in the start memo, which goes along with every run).
local_across = Saga(
    "can_local_across",
    input=Order,
    steps=[
        fast(a, undo_a, local=True),
        Step(c, retriable=True, retry=FAST_FOREVER),
        Step(d, retriable=True, retry=FAST_FOREVER, local=True),
    ],
)

SAGAS = [
    forever,
    local_across,
    then_refused,
    waiting,
    waiting_long,
    imperative,
    deadlined,
    optional_undone,
    degrading,
]


@pytest.fixture
async def limited(skipping_env: WorkflowEnvironment) -> AsyncIterator[SagaClient]:
    """On the time-skipping server: backoff timers take no time."""
    task_queue = f"tq-{uuid.uuid4()}"
    async with build_worker(skipping_env.client, task_queue=task_queue, sagas=SAGAS):
        yield SagaClient(skipping_env.client, task_queue=task_queue, history_events_limit=LIMIT)


@pytest.fixture
async def limited_dev(dev_env: WorkflowEnvironment) -> AsyncIterator[SagaClient]:
    """On the dev server, for the tests that query or update a continued saga (the
    time-skipping server does not route queries to a continued run)."""
    task_queue = f"tq-{uuid.uuid4()}"
    async with build_worker(dev_env.client, task_queue=task_queue, sagas=SAGAS):
        await polled(dev_env.client, task_queue)  # its sagas are stamped (engine._patches)
        yield SagaClient(dev_env.client, task_queue=task_queue, history_events_limit=DEV_LIMIT)


async def replay_every_run(sagas: SagaClient, saga_id: str) -> int:
    """Replay each run of the saga, the latest first; how many there were."""
    replayer = build_replayer(SAGAS)
    runs, run_id = 0, ""  # the latest run, then back along the chain
    while True:
        handle = sagas.client.get_workflow_handle(saga_id, run_id=run_id or None)
        history = await handle.fetch_history()
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        assert result.replay_failure is None, f"run {runs}: {result.replay_failure}"
        runs += 1
        started = history.events[0].workflow_execution_started_event_attributes
        run_id = started.continued_execution_run_id
        if not run_id:
            return runs


async def start(sagas: SagaClient, saga_type: str, amount: int = 10, **faults: object) -> str:
    saga_id = f"can-{uuid.uuid4().hex[:8]}"
    ledger.plan(saga_id, **faults)  # type: ignore[arg-type]
    await sagas.start(saga_type, {"order_id": saga_id, "amount": amount}, saga_id=saga_id)
    return saga_id


async def carried(client: Client, saga_id: str) -> Carry | None:
    """What the saga's latest run was started with from the run before (None: its first)."""
    history = await client.get_workflow_handle(saga_id).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    if len(started.input.payloads) < 2:
        return None
    return client.data_converter.payload_converter.from_payload(started.input.payloads[1], Carry)


def forward_calls(saga_id: str, step: str) -> list[int]:
    return [attempt for s, _, attempt in ledger.calls(saga_id, "forward") if s == step]


class TestARetriableStepCrossesTheLimit:
    async def test_it_completes_with_attempts_counted_across_runs(
        self, limited: SagaClient
    ) -> None:
        saga_id = await start(limited, "can_forever", transient={"c": 25, "d": 3})
        state = await limited.result(saga_id)
        assert state.status is SagaStatus.COMPLETED
        assert [s.status for s in state.steps] == [StepStatus.SUCCEEDED] * 4
        assert state.step("c").attempts == 26
        assert state.step("d").attempts == 4
        # Every attempt ran once, numbered on across runs; done steps never ran again.
        assert forward_calls(saga_id, "c") == list(range(1, 27))
        assert forward_calls(saga_id, "a") == [1]
        assert forward_calls(saga_id, "b") == [1]
        assert state.result is not None
        assert state.result["a"] == {"step": "a", "key": f"{saga_id}/a", "amount": 10}
        assert set(state.result) == {"a", "b", "c", "d"}
        assert state.past_pivot
        # One saga: the same id, its start time, several runs behind it.
        carry = await carried(limited.client, saga_id)
        assert carry is not None
        assert carry.runs >= 3
        assert state.started_at == carry.started_at
        memo = await (await limited.client.get_workflow_handle(saga_id).describe()).memo()
        # The memo went along with every run. The time-skipping server names no workers
        # polling a task queue: the saga is not stamped (engine._generation_gate).
        assert GENERATION_MEMO not in memo
        assert memo["saga_status"] == "completed"
        assert memo[LIMIT_MEMO] == LIMIT
        assert memo[BASE_MEMO] == carry.revision_base > LIMIT * 2

    async def test_every_run_replays(self, limited: SagaClient) -> None:
        saga_id = await start(limited, "can_forever", transient={"c": 12})
        await limited.result(saga_id)
        assert await replay_every_run(limited, saga_id) >= 2


class TestCompensationAfterContinuing:
    async def test_effects_done_before_are_undone_in_reverse(self, limited: SagaClient) -> None:
        saga_id = await start(
            limited, "can_then_refused", transient={"b": 8, "p1": 12}, refuse={"p2"}
        )
        state = await limited.result(saga_id)
        assert state.status is SagaStatus.COMPENSATED
        assert (await carried(limited.client, saga_id)) is not None
        assert state.step("b").attempts == 9
        assert state.step("p1").attempts == 13
        assert state.step("p2").status is StepStatus.FAILED
        assert state.step("c").status is StepStatus.PENDING
        assert undone_in_order(saga_id) == ["p1", "b", "a"]
        assert ledger.active(saga_id) == set()
        assert forward_calls(saga_id, "a") == [1]


async def runs_of(client: Client, saga_id: str) -> list[tuple[Carry | None, list[str]]]:
    """Each run of the saga, newest first: what it was started with from the run before
    (None: the first run), and the activities it scheduled."""
    found: list[tuple[Carry | None, list[str]]] = []
    run_id = ""
    converter = client.data_converter.payload_converter
    while True:
        handle = client.get_workflow_handle(saga_id, run_id=run_id or None)
        events = (await handle.fetch_history()).events
        scheduled = [
            e.activity_task_scheduled_event_attributes.activity_type.name
            for e in events
            if e.HasField("activity_task_scheduled_event_attributes")
        ]
        attributes = events[0].workflow_execution_started_event_attributes
        if len(attributes.input.payloads) < 2:
            found.append((None, scheduled))
            return found
        found.append((converter.from_payload(attributes.input.payloads[1], Carry), scheduled))
        run_id = attributes.continued_execution_run_id


class TestDegradedStepsAcrossRuns:
    async def test_a_failed_optional_step_is_undone_once_and_never_run_again(
        self, limited: SagaClient
    ) -> None:
        saga_id = await start(
            limited,
            "can_optional_undone",
            transient={"b": 3, "c": 8},
            compensation_failures={"b": 12},
        )
        state = await limited.result(saga_id)
        assert state.status is SagaStatus.COMPLETED, state.error
        assert (await carried(limited.client, saga_id)) is not None
        b_step = state.step("b")
        assert b_step.status is StepStatus.FAILED_OPTIONAL
        assert b_step.compensation is not None
        assert b_step.compensation.attempts == 13
        # Neither run again after the continue-as-new, nor cut off mid-undo.
        assert forward_calls(saga_id, "b") == [1, 2, 3]
        undos = [n for s, _, n in ledger.calls(saga_id, "compensation") if s == "b"]
        assert undos == list(range(1, 14))
        assert ledger.active(saga_id) == {"a", "c"}

    async def test_a_fallback_resumes_as_the_fallback(self, limited: SagaClient) -> None:
        # The action fails 15 times (its budget), the fallback 14 times, then serves.
        saga_id = await start(limited, "can_degrading", transient={"b": 29})
        state = await limited.result(saga_id)
        assert state.status is SagaStatus.COMPLETED, state.error
        assert state.step("b").served_by == "p1"
        assert forward_calls(saga_id, "b") == list(range(1, 31))
        # The action it replaced undone once, as the fallback served.
        assert [n for s, _, n in ledger.calls(saga_id, "compensation") if s == "b"] == [1]
        # A run that began in the fallback's retries went on with them, not with the action.
        in_fallback = 0
        for carry, scheduled in await runs_of(limited.client, saga_id):
            if carry is None:
                continue
            (b_state,) = [s for s in carry.steps if s.name == "b"]
            if b_state.status is StepStatus.RUNNING and b_state.served_by == "p1":
                in_fallback += 1
                assert "b" not in scheduled
                assert "p1" in set(scheduled)
                assert carry.loops["b/fallback"].tried > 0
        assert in_fallback > 0


class TestImperativeSagasResume:
    async def test_done_steps_are_replayed_from_the_carried_state(
        self, limited: SagaClient
    ) -> None:
        saga_id = await start(limited, "can_imperative", refuse={"b"}, transient={"d": 20})
        state = await limited.result(saga_id)
        assert state.status is SagaStatus.COMPLETED, state.error
        assert [s.name for s in state.steps] == ["a", "b", "c", "p1", "p1.2", "d"]
        assert state.step("b").status is StepStatus.FAILED
        assert state.step("d").attempts == 21
        for step in ("a", "b", "c"):
            assert len(forward_calls(saga_id, step)) == 1, step
        assert forward_calls(saga_id, "p1") == forward_calls(saga_id, "p1.2") == [1]
        assert state.result is not None
        assert state.result["c"]["amount"] == 11
        carry = await carried(limited.client, saga_id)
        assert carry is not None
        assert carry.runs >= 2


class TestWaitsSurvive:
    async def test_settled_follows_the_saga_across_runs(self, limited_dev: SagaClient) -> None:
        # What `sagas start --wait` uses: it follows each run, not only the first.
        saga_id = await start(limited_dev, "can_forever", transient={"c": 8})
        state = await limited_dev.settled(saga_id, timeout=120)
        assert state.status is SagaStatus.COMPLETED
        assert (await carried(limited_dev.client, saga_id)) is not None
        # The generation stamp went along with every run, and every run replays.
        handle = limited_dev.client.get_workflow_handle(saga_id)
        assert (await (await handle.describe()).memo())[GENERATION_MEMO] == GENERATION
        assert await replay_every_run(limited_dev, saga_id) >= 2

    async def test_local_steps_stay_local_in_a_continued_run(self, limited_dev: SagaClient) -> None:
        saga_id = await start(limited_dev, "can_local_across", transient={"c": 8})
        state = await limited_dev.settled(saga_id, timeout=120)
        assert state.status is SagaStatus.COMPLETED
        assert (await carried(limited_dev.client, saga_id)) is not None
        assert forward_calls(saga_id, "a") == [1]
        assert forward_calls(saga_id, "d") == [1]
        handle = limited_dev.client.get_workflow_handle(saga_id)
        memo = await (await handle.describe()).memo()
        assert memo[GENERATION_MEMO] == GENERATION
        assert memo[LOCAL_MEMO] == {"names": ["a", "d"]}
        # d ran in the last run, local by the memo it carried: no patch marker, no search
        # attribute update, no activity task.
        events = list((await handle.fetch_history()).events)
        markers = [
            e.marker_recorded_event_attributes.marker_name
            for e in events
            if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
        ]
        assert markers == ["core_local_activity"]
        assert not any(
            e.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES for e in events
        )
        assert await replay_every_run(limited_dev, saga_id) >= 2

    async def test_an_approval_awaited_across_runs(self, limited_dev: SagaClient) -> None:
        limited = limited_dev
        saga_id = await start(limited, "can_waiting", transient={"p1": 5})
        state = await limited.wait_for(
            saga_id, until=lambda s: s.step("p1").status is StepStatus.SUCCEEDED, timeout=60
        )
        assert state.status is SagaStatus.AWAITING_APPROVAL
        assert (await carried(limited.client, saga_id)) is not None
        state = await limited.approve(saga_id, by="ops", comment="fine")
        final = await limited.result(saga_id)
        assert final.status is SagaStatus.COMPLETED
        approval = final.step("p2").approval
        assert approval is not None
        assert approval.by == "ops"
        assert final.step("p1").attempts == 6

    async def test_the_approval_keeps_its_timeout(
        self, limited: SagaClient, skipping_env: WorkflowEnvironment
    ) -> None:
        saga_id = await start(limited, "can_waiting_long", transient={"p1": 8})
        await skipping_env.sleep(timedelta(hours=3))  # p1's retries, the approval's wait
        final = await limited.result(saga_id)
        assert final.status is SagaStatus.COMPENSATED
        assert final.step("p2").error == "approval timed out"
        waited = final.step("p2").ended_at - final.started_at  # type: ignore[operator]
        # Not an hour from the new run's start (the retries took half an hour).
        assert 3600 <= waited.total_seconds() < 3600 + 120
        assert final.step("p1").attempts == 9
        assert undone_in_order(saga_id) == ["p1", "a"]
        assert (await carried(limited.client, saga_id)) is not None

    async def test_the_deadline_counts_from_the_first_run(
        self, limited: SagaClient, skipping_env: WorkflowEnvironment
    ) -> None:
        saga_id = await start(limited, "can_deadline", transient={"b": ALWAYS})
        await skipping_env.sleep(timedelta(hours=4))  # b retries every 5 minutes meanwhile
        final = await limited.result(saga_id)
        assert final.status is SagaStatus.COMPENSATED
        assert final.cancel_reason == "deadline exceeded"
        carry = await carried(limited.client, saga_id)
        assert carry is not None
        assert carry.runs >= 2
        elapsed = final.step("b").ended_at - final.started_at  # type: ignore[operator]
        assert 7200 <= elapsed.total_seconds() < 7200 + 120
        assert undone_in_order(saga_id) == ["b", "a"]

    async def test_a_cancel_after_continuing_undoes_what_came_before(
        self, limited_dev: SagaClient
    ) -> None:
        limited = limited_dev
        saga_id = await start(limited, "can_waiting", transient={"p1": 5})
        await limited.wait_for(
            saga_id, until=lambda s: s.step("p1").status is StepStatus.SUCCEEDED, timeout=60
        )
        state = await limited.cancel(saga_id, reason="changed plans")
        assert state.cancel_reason == "changed plans"
        final = await limited.result(saga_id)
        assert final.status is SagaStatus.COMPENSATED
        assert undone_in_order(saga_id) == ["p1", "a"]
        assert ledger.active(saga_id) == set()


async def test_the_store_shows_one_saga(dev_env: WorkflowEnvironment, tmp_path: Path) -> None:
    """Revisions rise across runs: the store keeps the newest run's snapshots."""
    store = SagaStore(f"sqlite:///{tmp_path / 'sagas.sqlite'}")
    store.migrate()
    task_queue = f"tq-{uuid.uuid4()}"
    try:
        async with build_worker(dev_env.client, task_queue=task_queue, sagas=SAGAS, store=store):
            sagas = SagaClient(
                dev_env.client, task_queue=task_queue, history_events_limit=DEV_LIMIT
            )
            saga_id = await start(sagas, "can_forever", transient={"c": 5})
            final = await sagas.result(saga_id)
            assert final.status is SagaStatus.COMPLETED
            async with asyncio.timeout(10):
                while (found := store.get(saga_id)) is None or not found.state.status.is_final:
                    await asyncio.sleep(0.05)
            assert found.state.steps == final.steps
            # Above every snapshot of the earlier runs; the reconciler counts the same way.
            carry = await carried(dev_env.client, saga_id)
            assert carry is not None
            assert found.revision > carry.revision_base >= DEV_LIMIT
            read = await read_from_temporal(dev_env.client, saga_id)
            assert read is not None
            history = await dev_env.client.get_workflow_handle(saga_id).fetch_history()
            assert read[1] == carry.revision_base + len(history.events)
    finally:
        store.close()


async def test_the_api_shows_one_saga(dev_env: WorkflowEnvironment, tmp_path: Path) -> None:
    """Started through the API with SAGAS_HISTORY_EVENTS_LIMIT: GET follows it across runs."""
    url = f"sqlite:///{tmp_path / 'sagas.sqlite'}"
    settings = Settings(
        database_url=url,
        temporal_address=dev_env.client.service_client.config.target_host,
        task_queue=f"api-{uuid.uuid4()}",
        modules=["tests.support.sagas"],
        api_keys=[KEY],
        history_events_limit=100,
    )
    store = SagaStore(url)
    store.migrate()
    app = create_app(settings)
    worker = build_worker(dev_env.client, task_queue=settings.task_queue, sagas=SAGAS, store=store)
    try:
        async with worker, app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
                api = Api(http, settings)
                _, started = await api.start("can_forever", transient={"c": 9})
                saga_id = started["id"]
                seen: list[int] = []

                def completed(saga: dict[str, Any]) -> bool:
                    seen.append(saga["steps"][2]["attempts"])
                    return bool(saga["status"] == "completed")

                done = await api.until(saga_id, completed)
                assert done["id"] == saga_id
                assert [s["attempts"] for s in done["steps"]] == [1, 1, 10, 1]
                assert seen == sorted(seen)  # never an older run's snapshot after a newer one
                carry = await carried(dev_env.client, saga_id)
                assert carry is not None
                assert done["created_at"] == started["created_at"]
    finally:
        store.close()


pinned_v1 = Saga(
    "can_pinned",
    input=Order,
    steps=[fast(a, undo_a), Step(c, retriable=True, retry=FAST_FOREVER)],
)
pinned_v2 = Saga(
    "can_pinned",
    version=2,
    input=Order,
    steps=[fast(a, undo_a), fast(b, undo_b), Step(c, retriable=True, retry=FAST_FOREVER)],
)


async def test_a_continued_saga_keeps_its_definition_version(dev_env: WorkflowEnvironment) -> None:
    """Started on v1, continued as new after v2 rolled out: every run is v1."""
    task_queue = f"tq-{uuid.uuid4()}"
    sagas = SagaClient(dev_env.client, task_queue=task_queue, history_events_limit=DEV_LIMIT)
    async with build_worker(dev_env.client, task_queue=task_queue, sagas=[pinned_v1]):
        saga_id = await start(sagas, "can_pinned", transient={"c": 6})
        await sagas.wait_for(saga_id, until=lambda s: s.step("c").attempts >= 1, timeout=30)
    async with build_worker(dev_env.client, task_queue=task_queue, sagas=[pinned_v1, pinned_v2]):
        state = await sagas.result(saga_id)
    assert state.status is SagaStatus.COMPLETED
    assert [s.name for s in state.steps] == ["a", "c"]
    assert forward_calls(saga_id, "b") == []
    carry = await carried(dev_env.client, saga_id)
    assert carry is not None
    assert carry.version == 1


async def test_the_trace_stays_one_trace(dev_env: WorkflowEnvironment, tmp_path: Path) -> None:
    """A worker exporting traces (a process of its own, as tracing is per process): the runs'
    spans are one trace, the next run's workflow span a child of the one before."""
    task_queue = f"traced-{uuid.uuid4()}"
    with otlp_receiver() as receiver:
        env = {
            **os.environ,
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.http_endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "SAGAS_DATA_DIR": str(tmp_path / "data"),
            "SAGAS_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
            "SAGAS_TASK_QUEUE": task_queue,
            "SAGAS_STORE_ENABLED": "false",
        }
        env.pop("OTEL_SERVICE_NAME", None)
        worker = Background(["worker", "-m", __name__], env, tmp_path / "worker.log")
        try:
            worker.wait_for("ready")
            load_modules([__name__])  # the client validates inputs: it knows the sagas too
            sagas = SagaClient(
                dev_env.client, task_queue=task_queue, history_events_limit=DEV_LIMIT
            )
            saga_id = await start(sagas, "can_forever", transient={"c": 5})
            assert (await sagas.result(saga_id)).status is SagaStatus.COMPLETED
            carry = await carried(dev_env.client, saga_id)
            assert carry is not None

            def ours(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
                return [s for s in spans if s.attributes.get("saga.id") == saga_id]

            receiver.received.wait_for(lambda spans: "step d" in {s.name for s in ours(spans)})
            await asyncio.sleep(0.5)  # the last batches
            traces = {s.trace_id for s in ours(receiver.received.snapshot())}
            assert len(traces) == 1
            (trace_id,) = traces
            spans = [s for s in receiver.received.snapshot() if s.trace_id == trace_id]
            runs = [s for s in spans if s.name.startswith("RunWorkflow:")]
            assert len(runs) == carry.runs + 1
            by_id = {s.span_id: s for s in spans}
            assert sum(1 for s in runs if s.parent_span_id in by_id) == carry.runs
            # The step that was retrying when its run ended: a span per run, the same trace.
            outcomes = [s.attributes.get("saga.outcome") for s in spans if s.name == "step c"]
            assert outcomes.count("continued_as_new") == carry.runs
            assert outcomes.count("succeeded") == 1
        finally:
            worker.stop()
