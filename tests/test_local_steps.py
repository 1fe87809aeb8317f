"""The fast path (local steps) and refusals that are not incidents, on a real dev server.

A local step runs its attempts as Temporal local activities in the saga's worker; every rule
of the engine holds for it as for a regular step. A participant's refusal is marked BENIGN by
the worker, so the SDK does not log it as a failed activity with a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import PollerBehaviorAutoscaling, PollerBehaviorSimpleMaximum, Worker

from engine import (
    Compensation,
    RetryPolicy,
    Saga,
    SagaClient,
    SagaConflict,
    SagaDefinitionError,
    SagaStatus,
    Step,
    StepStatus,
    participant,
    step_info,
)
from engine._participants import as_benign
from engine._process import worker_tuning
from engine.config import Settings, settings_problems
from engine.worker import OutagePolicy, build_replayer, build_worker
from tests.support.generation import polled

pytestmark = pytest.mark.temporal

#: saga id -> what the activities saw, in order: (activity, local?, idempotency key)
SEEN: dict[str, list[tuple[str, bool, str]]] = defaultdict(list)
#: (saga id, activity) -> transient failures still to give; 0: refuse; -1: hang.
SCRIPT: dict[tuple[str, str], int] = {}


class Job(BaseModel):
    n: int = 0


async def _behave(saga_id: str, name: str) -> None:
    SEEN[saga_id].append((name, activity.info().is_local, step_info().idempotency_key))
    left = SCRIPT.get((saga_id, name))
    if left == 0:
        raise ApplicationError(f"{name} refused", {"why": "no"}, type="Refused", non_retryable=True)
    if left == -1:
        await asyncio.sleep(5)
    if left == -2:
        await asyncio.sleep(0.5)
        return
    elif left:
        if left > 1:
            SCRIPT[saga_id, name] = left - 1
        else:
            del SCRIPT[saga_id, name]
        raise ApplicationError(f"{name} unavailable", type="Unavailable")


def pair(name: str) -> tuple[Any, Any]:
    @participant(f"p_{name}")
    @activity.defn(name=f"l_{name}")
    async def do(job: Job) -> str:
        await _behave(step_info().saga_id, name)
        return name

    @participant(f"p_{name}")
    @activity.defn(name=f"l_undo_{name}")
    async def undo(c: Compensation[Job, str]) -> None:
        await _behave(c.saga_id, f"undo_{name}")

    return do, undo


a, undo_a = pair("a")
b, undo_b = pair("b")
c, undo_c = pair("c")

FAST = RetryPolicy(
    initial_interval=timedelta(milliseconds=50),
    maximum_interval=timedelta(milliseconds=100),
    maximum_attempts=3,
)
local_saga = Saga(
    "l_local",
    input=Job,
    local_steps=True,
    steps=[
        Step(a, compensate=undo_a, name="a", retry=FAST),
        Step(b, compensate=undo_b, name="b", retry=FAST, start_to_close=timedelta(seconds=1)),
        Step(c, compensate=undo_c, name="c", retry=FAST),
    ],
)
mixed_saga = Saga(
    "l_mixed",
    input=Job,
    steps=[
        Step(a, compensate=undo_a, name="a", retry=FAST, local=True),
        Step(b, compensate=undo_b, name="b", retry=FAST),
    ],
)
regular_saga = Saga(
    "l_regular",
    input=Job,
    steps=[
        Step(a, compensate=undo_a, name="a", retry=FAST),
        Step(b, compensate=undo_b, name="b", retry=FAST),
    ],
)
#: A regular step, then a local one: its failure can reach the saga a workflow task late.
late_saga = Saga(
    "l_late",
    input=Job,
    steps=[
        Step(a, compensate=undo_a, name="a", retry=FAST),
        Step(b, compensate=undo_b, name="b", retry=FAST, local=True),
        Step(c, compensate=undo_c, name="c", retry=FAST),
    ],
)
SAGAS = [local_saga, mixed_saga, regular_saga, late_saga]


@pytest.fixture
async def sagas(dev_env: WorkflowEnvironment) -> AsyncIterator[SagaClient]:
    task_queue = f"local-{uuid.uuid4()}"
    outage = OutagePolicy(failure_threshold=100)
    async with build_worker(dev_env.client, task_queue=task_queue, sagas=SAGAS, outage=outage):
        await polled(dev_env.client, task_queue)  # its sagas are stamped (engine._patches)
        yield SagaClient(dev_env.client, task_queue=task_queue)


async def start_unstamped(sagas: SagaClient, saga_type: str, saga_id: str | None = None) -> str:
    """Start a saga as a client before the generation stamp did (engine._patches): no memo."""
    saga_id = saga_id or f"{saga_type}-{uuid.uuid4().hex[:10]}"
    await sagas.client.start_workflow(saga_type, Job(n=1), id=saga_id, task_queue=sagas.task_queue)
    return saga_id


async def run(sagas: SagaClient, saga_type: str, **script: int) -> tuple[str, Any]:
    saga_id = f"{saga_type}-{uuid.uuid4().hex[:10]}"
    for name, value in script.items():
        SCRIPT[saga_id, name] = value
    await sagas.start(saga_type, {"n": 1}, saga_id=saga_id)
    state = await asyncio.wait_for(sagas.result(saga_id), timeout=60)
    history = await sagas.client.get_workflow_handle(saga_id).fetch_history()
    replayed = await build_replayer(SAGAS).replay_workflow(history, raise_on_replay_failure=False)
    assert replayed.replay_failure is None, replayed.replay_failure
    return saga_id, state


async def event_types(sagas: SagaClient, saga_id: str) -> list[str]:
    history = await sagas.client.get_workflow_handle(saga_id).fetch_history()
    return [str(e.event_type) for e in history.events]


async def test_a_local_saga_completes_without_activity_tasks(sagas: SagaClient) -> None:
    saga_id, state = await run(sagas, "l_local")
    assert state.status is SagaStatus.COMPLETED
    assert [(name, local) for name, local, _ in SEEN[saga_id]] == [
        ("a", True), ("b", True), ("c", True)
    ]  # fmt: skip
    keys = {s.name: s.idempotency_key for s in state.steps}
    assert [key for *_, key in SEEN[saga_id]] == [keys["a"], keys["b"], keys["c"]]
    events = await event_types(sagas, saga_id)
    assert events.count("10") == 0  # ACTIVITY_TASK_SCHEDULED: none, the results are markers
    # MARKER_RECORDED: one per attempt. The stamp's start memo names the local steps, so no
    # patch marker, nor its search-attribute update (UPSERT_WORKFLOW_SEARCH_ATTRIBUTES).
    assert events.count("25") == 3
    assert events.count("40") == 0


async def test_an_unstamped_local_saga_records_the_local_steps_marker(sagas: SagaClient) -> None:
    saga_id = await start_unstamped(sagas, "l_local")
    state = await asyncio.wait_for(sagas.result(saga_id), timeout=60)
    assert state.status is SagaStatus.COMPLETED
    events = await event_types(sagas, saga_id)
    # MARKER_RECORDED: the local-steps patch (the later ones follow from it), one per attempt.
    assert events.count("25") == 4
    assert events.count("40") == 1  # UPSERT_WORKFLOW_SEARCH_ATTRIBUTES: the patch's
    history = await sagas.client.get_workflow_handle(saga_id).fetch_history()
    replayed = await build_replayer(SAGAS).replay_workflow(history, raise_on_replay_failure=False)
    assert replayed.replay_failure is None, replayed.replay_failure


async def test_local_attempts_back_off_and_count(sagas: SagaClient) -> None:
    _, state = await run(sagas, "l_local", b=2)
    assert state.status is SagaStatus.COMPLETED
    step_b = next(s for s in state.steps if s.name == "b")
    assert step_b.attempts == 3
    assert step_b.error is None


async def test_a_local_refusal_compensates_locally_and_is_not_an_incident(
    sagas: SagaClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="temporalio")
    saga_id, state = await run(sagas, "l_local", c=0)
    assert state.status is SagaStatus.COMPENSATED
    steps = {s.name: s for s in state.steps}
    assert steps["c"].status is StepStatus.FAILED
    assert steps["c"].attempts == 1  # refused: not retried
    assert "Refused: c refused" in (steps["c"].error or "")
    assert [s.status for s in (steps["a"], steps["b"])] == [StepStatus.COMPENSATED] * 2
    undone = [(name, local) for name, local, _ in SEEN[saga_id] if name.startswith("undo")]
    assert undone == [("undo_b", True), ("undo_a", True)]
    failed = [
        r for r in caplog.records if r.getMessage().startswith("Completing activity as failed")
    ]
    assert failed, "the refusal should still be logged, at debug"
    assert all(r.levelno == logging.DEBUG for r in failed), [r.levelname for r in failed]


async def test_an_unknown_local_outcome_is_compensated(sagas: SagaClient) -> None:
    # b outlives its 1 s start-to-close three times: it may have acted, so it is undone.
    _, state = await run(sagas, "l_local", b=-1)
    assert state.status is SagaStatus.COMPENSATED
    steps = {s.name: s for s in state.steps}
    assert steps["b"].attempts == 3
    assert "timed out" in (steps["b"].error or "")
    assert steps["b"].status is StepStatus.COMPENSATED
    assert steps["a"].status is StepStatus.COMPENSATED


async def test_local_and_regular_steps_mix(sagas: SagaClient) -> None:
    saga_id, state = await run(sagas, "l_mixed", b=0)
    assert state.status is SagaStatus.COMPENSATED
    assert [(name, local) for name, local, _ in SEEN[saga_id]] == [
        ("a", True), ("b", False), ("undo_a", True)
    ]  # fmt: skip
    events = await event_types(sagas, saga_id)
    assert events.count("10") == 1  # b alone is a regular activity


async def test_the_guard_covers_local_activities(dev_env: WorkflowEnvironment) -> None:
    # One transient failure opens a's circuit; the next attempt is refused by the worker
    # without a call, the step waits out the cool-down and its probe succeeds: three
    # attempts, two calls. Unguarded, the second attempt would have called and succeeded.
    task_queue = f"local-{uuid.uuid4()}"
    # The cool-down outlasts the 50 ms backoff by far, even on a loaded machine.
    outage = OutagePolicy(failure_threshold=1, cooldown=timedelta(seconds=2))
    guarded = Saga(
        "l_guarded",
        input=Job,
        steps=[Step(a, compensate=undo_a, name="a", retry=FAST, local=True)],
    )
    async with build_worker(dev_env.client, task_queue=task_queue, sagas=[guarded], outage=outage):
        sagas = SagaClient(dev_env.client, task_queue=task_queue)
        saga_id = f"l_guarded-{uuid.uuid4().hex[:10]}"
        SCRIPT[saga_id, "a"] = 1
        await sagas.start("l_guarded", {"n": 1}, saga_id=saga_id)
        state = await asyncio.wait_for(sagas.result(saga_id), timeout=60)
    step = state.steps[0]
    assert step.status is StepStatus.SUCCEEDED
    assert step.attempts == 3
    assert [name for name, *_ in SEEN[saga_id]] == ["a", "a"]


async def test_a_worker_polls_for_workflow_tasks_as_set(dev_env: WorkflowEnvironment) -> None:
    # Temporal's fixed default keeps one poll on the task queue, where a saga of local steps
    # does all its work; the engine's default lets the server's feedback scale the polls.
    client = dev_env.client

    def polls(**options: Any) -> Any:  # a queue of its own: the SDK registers each worker
        queue = f"local-{uuid.uuid4()}"
        worker = build_worker(client, task_queue=queue, sagas=[local_saga], **options)
        return worker, worker.config()["workflow_task_poller_behavior"]

    assert isinstance(polls()[1], PollerBehaviorAutoscaling)
    fixed, behaviour = polls(workflow_task_pollers=12)
    assert behaviour == PollerBehaviorSimpleMaximum(12)
    # The SDK's own options, when given, win.
    chosen = PollerBehaviorSimpleMaximum(3)
    assert polls(workflow_task_poller_behavior=chosen)[1] is chosen
    older, behaviour = polls(max_concurrent_workflow_task_polls=4)
    sdks_default = inspect.signature(Worker).parameters["workflow_task_poller_behavior"].default
    assert behaviour == sdks_default  # the older option rules (it overrides the behaviour)
    assert older.config()["max_concurrent_workflow_task_polls"] == 4
    # Activity tasks the same way.
    activities = build_worker(
        client, task_queue=f"local-{uuid.uuid4()}", sagas=[local_saga], activity_task_pollers=7
    )
    assert activities.config()["activity_task_poller_behavior"] == PollerBehaviorSimpleMaximum(7)
    async with fixed:  # a fixed number runs sagas as well
        queue = fixed.task_queue
        await polled(client, queue)
        sagas = SagaClient(client, task_queue=queue)
        saga_id = await sagas.start("l_local", {"n": 1})
        state = await asyncio.wait_for(sagas.result(saga_id), timeout=60)
    assert state.status is SagaStatus.COMPLETED


@pytest.mark.parametrize(
    ("setting", "least"), [("workflow_task_pollers", 2), ("activity_task_pollers", 1)]
)
def test_the_pollers_settings_are_auto_or_a_number(
    monkeypatch: pytest.MonkeyPatch, setting: str, least: int
) -> None:
    variable = f"SAGAS_{setting.upper()}"
    monkeypatch.delenv(variable, raising=False)
    default = getattr(Settings(_env_file=None), setting)
    assert default == Settings.model_fields[setting].default
    assert worker_tuning(Settings(_env_file=None))[setting] == default
    for given, read in (("12", 12), (" 12 ", 12), ("Auto", "auto"), (str(least), least)):
        monkeypatch.setenv(variable, given)
        settings = Settings(_env_file=None)
        assert getattr(settings, setting) == read
        # What ``sagas worker`` hands to build_worker.
        assert worker_tuning(settings)[setting] == read
    for bad in (str(least - 1), "many", "-3", "2.5", "1001", "\u00b2", "\u0663", ""):
        monkeypatch.setenv(variable, bad)
        with pytest.raises(ValidationError) as refused:
            Settings(_env_file=None)
        assert settings_problems(refused.value) == (
            f"{variable}: 'auto' or a number of polls from {least} to 1000"
        )


def test_a_local_step_cannot_heartbeat() -> None:
    with pytest.raises(SagaDefinitionError, match="local step cannot heartbeat"):
        Saga(
            "l_bad",
            input=Job,
            steps=[Step(a, name="a", local=True, heartbeat=timedelta(seconds=1))],
        )
    with pytest.raises(SagaDefinitionError, match="local step cannot heartbeat"):
        Saga(
            "l_bad",
            input=Job,
            local_steps=True,
            steps=[Step(a, name="a", heartbeat=timedelta(seconds=1))],
        )
    # A step may opt out of the saga's default.
    Saga(
        "l_ok",
        input=Job,
        local_steps=True,
        steps=[Step(a, name="a", local=False, heartbeat=timedelta(seconds=1))],
    )


def test_refusals_are_marked_benign_and_kept_whole_but_their_traceback() -> None:
    try:
        raise ApplicationError("no", {"x": 1}, type="Refused", non_retryable=True)
    except ApplicationError as raised:
        refusal = raised
    assert refusal.__traceback__ is not None
    marked = as_benign(refusal)
    assert marked.category is ApplicationErrorCategory.BENIGN
    assert (marked.message, marked.type, marked.details, marked.non_retryable) == (
        "no", "Refused", ({"x": 1},), True
    )  # fmt: skip
    assert marked.__traceback__ is None
    transient = ApplicationError("later", type="Unavailable")
    assert as_benign(transient) is transient
    chosen = ApplicationError(
        "no", non_retryable=True, category=ApplicationErrorCategory.UNSPECIFIED
    )
    assert as_benign(chosen).category is ApplicationErrorCategory.BENIGN


async def test_a_step_turned_local_keeps_running_sagas_replayable(
    sagas: SagaClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A history recorded while no step was local replays once the definition makes its steps
    # local (the engine's patch): sagas in flight survive the change of definition.
    from engine import _registry

    saga_id, state = await run(sagas, "l_regular", b=0)
    assert state.status is SagaStatus.COMPENSATED
    history = await sagas.client.get_workflow_handle(saga_id).fetch_history()
    flipped = Saga(
        "l_regular",
        input=Job,
        steps=[
            Step(a, compensate=undo_a, name="a", retry=FAST, local=True),
            Step(b, compensate=undo_b, name="b", retry=FAST, local=True),
        ],
    )
    monkeypatch.setitem(_registry._definitions, "l_regular", {})
    replayed = await build_replayer([flipped]).replay_workflow(
        history, raise_on_replay_failure=False
    )
    assert replayed.replay_failure is None, replayed.replay_failure


async def test_a_cancel_lets_a_local_attempt_end_then_compensates_it(
    sagas: SagaClient,
) -> None:
    """A cancel does not interrupt a local attempt (a local activity holds the workflow task,
    and the SDK cannot replay its cancellation reliably): it lands once the attempt has
    ended, here while the regular step after it runs; both steps are undone."""
    saga_id = f"l_mixed-{uuid.uuid4().hex[:10]}"
    SCRIPT[saga_id, "a"] = -2  # a takes half a second
    SCRIPT[saga_id, "b"] = -2  # b takes half a second too
    await sagas.start("l_mixed", {"n": 1}, saga_id=saga_id)
    for _ in range(200):
        if SEEN[saga_id]:
            break
        await asyncio.sleep(0.01)
    await sagas.cancel(saga_id)
    state = await asyncio.wait_for(sagas.result(saga_id), timeout=30)
    assert state.status is SagaStatus.COMPENSATED
    assert [s for s, *_ in SEEN[saga_id]] == ["a", "b", "undo_b", "undo_a"]
    assert [s.status for s in state.steps] == [StepStatus.COMPENSATED] * 2
    history = await sagas.client.get_workflow_handle(saga_id).fetch_history()
    replayed = await build_replayer(SAGAS).replay_workflow(history, raise_on_replay_failure=False)
    assert replayed.replay_failure is None, replayed.replay_failure


async def test_a_cancel_that_lands_after_an_all_local_saga_ended_is_a_conflict(
    sagas: SagaClient,
) -> None:
    """Steps that are all local run in one workflow task: a cancel sent meanwhile reaches the
    saga only when it has ended, and is answered as a cancel of a finished saga."""
    saga_id = f"l_local-{uuid.uuid4().hex[:10]}"
    SCRIPT[saga_id, "b"] = -2
    await sagas.start("l_local", {"n": 1}, saga_id=saga_id)
    for _ in range(200):
        if SEEN[saga_id]:
            break
        await asyncio.sleep(0.01)
    with pytest.raises(SagaConflict, match="finished"):
        await sagas.cancel(saga_id)
    state = await asyncio.wait_for(sagas.result(saga_id), timeout=30)
    assert state.status is SagaStatus.COMPLETED


@pytest.mark.parametrize("stamped", [True, False], ids=["stamped", "unstamped"])
async def test_a_local_refusal_under_queries_replays(sagas: SagaClient, stamped: bool) -> None:
    """A query while a local step runs can make its refusal reach the saga one workflow task
    later than replay delivers it; the compensation's first patch was then answered
    differently in replay (nondeterminism: 2 to 3 sagas in 10 before engine._patches). A saga
    started without the generation stamp still consults its patches."""
    failures = []
    for _ in range(12):
        saga_id = f"l_late-{uuid.uuid4().hex[:10]}"
        SCRIPT[saga_id, "b"] = 0
        done = asyncio.Event()

        async def query(saga_id: str = saga_id, done: asyncio.Event = done) -> None:
            while not done.is_set():
                with contextlib.suppress(Exception):
                    await sagas.state(saga_id)
                await asyncio.sleep(0.001)

        querying = asyncio.create_task(query())
        if stamped:
            await sagas.start("l_late", {"n": 1}, saga_id=saga_id)
        else:
            await start_unstamped(sagas, "l_late", saga_id)
        state = await asyncio.wait_for(sagas.result(saga_id), timeout=60)
        done.set()
        await querying
        assert state.status is SagaStatus.COMPENSATED
        history = await sagas.client.get_workflow_handle(saga_id).fetch_history()
        replayer = build_replayer(SAGAS)
        replayed = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        if replayed.replay_failure is not None:
            failures.append(str(replayed.replay_failure))
    assert failures == []
