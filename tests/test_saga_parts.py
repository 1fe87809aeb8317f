"""The saga workflow's parts on their own, without a Temporal server.

The rules they implement are tested end to end in test_execution_rules.py; these tests pin
the pieces: the attempt loop's give-up rule and backoff, what counts as a refusal, the undo
log's order, a definition's groups, initial states and diagram, and how a definition drives
a stage runner (declarative stage by stage, imperative through SagaRun).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import pytest
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError, TimeoutType

from engine import ImperativeSaga, Parallel, Saga, SagaRun, Step, StepKind, StepStatus
from engine._attempts import backoff, describe, gives_up, is_refusal
from engine._compensation import Entry, UndoLog
from engine._state import StepState
from tests.support.sagas import Order, a, b, c, d, undo_a, undo_b, undo_c

POLICY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=3,
)


def activity_error(cause: BaseException) -> ActivityError:
    error = ActivityError(
        "activity failed",
        scheduled_event_id=1,
        started_event_id=2,
        identity="test",
        activity_type="a",
        activity_id="a/forward/1",
        retry_state=None,
    )
    error.__cause__ = cause
    return error


class TestGiveUpRule:
    """The attempt loop stops on a final refusal or an exhausted budget, and only then."""

    def test_goes_on_while_attempts_remain(self) -> None:
        assert gives_up(POLICY, tried=2, refusal=False, give_up_on_refusal=True) is None

    def test_stops_when_attempts_are_exhausted(self) -> None:
        reason = gives_up(POLICY, tried=3, refusal=False, give_up_on_refusal=True)
        assert reason == "gave up after 3 attempts"

    def test_a_refusal_stops_at_once_where_refusals_are_final(self) -> None:
        assert gives_up(POLICY, tried=1, refusal=True, give_up_on_refusal=True) == ""

    def test_a_retriable_step_retries_even_a_refusal(self) -> None:
        forever = RetryPolicy(maximum_attempts=0)
        assert gives_up(forever, tried=1000, refusal=True, give_up_on_refusal=False) is None

    def test_backoff_is_exponential_and_capped(self) -> None:
        waits = [backoff(POLICY, n).total_seconds() for n in range(1, 7)]
        assert waits == [1, 2, 4, 8, 10, 10]


class TestRefusals:
    """A business refusal is a non-retryable ApplicationError or a type the step names."""

    def test_non_retryable_application_error(self) -> None:
        cause = ApplicationError("sold out", type="ParticipantRefused", non_retryable=True)
        assert is_refusal(activity_error(cause), [])

    def test_error_type_named_by_the_step(self) -> None:
        cause = ApplicationError("card declined", type="CardDeclined")
        assert is_refusal(activity_error(cause), ["CardDeclined"])
        assert not is_refusal(activity_error(cause), ["Other"])

    def test_a_timeout_is_not_a_refusal(self) -> None:
        cause = TimeoutError("late", type=TimeoutType.START_TO_CLOSE, last_heartbeat_details=[])
        assert not is_refusal(activity_error(cause), ["TimeoutError"])

    def test_errors_are_described_with_secrets_masked(self) -> None:
        cause = ApplicationError("declined tok_4242424242", type="ParticipantRefused")
        described = describe(activity_error(cause))
        assert described.startswith("ParticipantRefused: declined")
        assert "tok_4242424242" not in described

    def test_timeouts_are_described_by_kind(self) -> None:
        cause = TimeoutError("late", type=TimeoutType.HEARTBEAT, last_heartbeat_details=[])
        assert describe(activity_error(cause)) == "timed out (heartbeat)"


def entry(step: Step, *, refused: bool = False) -> Entry:
    state = StepState(name=step.step_name, kind=step.kind.value, idempotency_key="k")
    return Entry(step=step, arg=None, state=state, definitely_failed=refused)


class TestUndoLog:
    """What is undone, and in which order: newest stage first, refusals and retriables never."""

    def test_stages_are_undone_newest_first(self) -> None:
        log = UndoLog()
        first, second = log.open_stage(), log.open_stage()
        first.append(entry(Step(a, compensate=undo_a)))
        second += [entry(Step(b, compensate=undo_b)), entry(Step(c, compensate=undo_c))]
        stages = [[e.state.name for e in stage] for stage in log.stages_to_undo()]
        assert stages == [["b", "c"], ["a"]]

    def test_refused_steps_and_steps_without_compensation_are_skipped(self) -> None:
        log = UndoLog()
        stage = log.open_stage()
        stage += [
            entry(Step(a, compensate=undo_a)),
            entry(Step(b, compensate=undo_b), refused=True),
            entry(Step(d, retriable=True)),
        ]
        assert [e.state.name for e in log.to_undo()] == ["a"]


class FakeRunner:
    """A stage runner that records the stages it is asked to run (StageRunner)."""

    def __init__(self, activities: Sequence[Callable[..., Any]] = ()) -> None:
        self.stages: list[list[str]] = []
        self._activities = list(activities)
        self.saga_input = Order(item="x")
        self.results: dict[str, Any] = {}

    async def run_stage(self, steps: Sequence[Step]) -> list[Any]:
        self.stages.append([s.step_name for s in steps])
        for step in steps:
            self.results[step.step_name] = step.step_name.upper()
        return [self.results[s.step_name] for s in steps]

    def has_step(self, name: str) -> bool:
        return name in self.results

    def declares(self, fn: Callable[..., Any]) -> bool:
        return any(fn is known for known in self._activities)


TRIP = Saga(
    "trip",
    input=Order,
    steps=[
        Parallel(Step(a, compensate=undo_a), Step(b, compensate=undo_b)),
        Step(c, pivot=True),
        Step(d, retriable=True),
    ],
)


class TestDefinitions:
    """A definition answers what callers used to work out with isinstance switches."""

    def test_groups_and_steps(self) -> None:
        assert [[s.step_name for s in g] for g in TRIP.groups] == [["a", "b"], ["c"], ["d"]]
        assert [s.kind for s in TRIP.steps] == [
            StepKind.COMPENSATABLE, StepKind.COMPENSATABLE, StepKind.PIVOT, StepKind.RETRIABLE
        ]  # fmt: skip

    def test_initial_step_states_are_pending_with_their_keys(self) -> None:
        states = TRIP.initial_step_states("saga-1")
        assert [(s.name, s.status, s.idempotency_key) for s in states] == [
            ("a", StepStatus.PENDING, "saga-1/a"),
            ("b", StepStatus.PENDING, "saga-1/b"),
            ("c", StepStatus.PENDING, "saga-1/c"),
            ("d", StepStatus.PENDING, "saga-1/d"),
        ]

    def test_the_diagram_draws_groups_kinds_and_undos(self) -> None:
        diagram = TRIP.diagram()
        assert diagram.splitlines()[0] == "flowchart LR"
        assert 'subgraph parallel_0["in parallel"]' in diagram
        assert "start --> a & b" in diagram
        assert "a & b --> c" in diagram
        assert "<i>undo: undo_a</i>" in diagram
        assert "(pivot)" in diagram
        assert "(retried until done)" in diagram
        assert diagram.endswith("d --> done((done))")

    async def test_a_declarative_saga_runs_stage_by_stage(self) -> None:
        runner = FakeRunner()
        await TRIP.forward(runner)
        assert runner.stages == [["a", "b"], ["c"], ["d"]]


async def branching(saga: SagaRun[Order]) -> None:
    await saga.step(a, compensate=undo_a)
    await saga.step(a, compensate=undo_a)  # the same activity twice: named a.2
    if saga.results["a"] == "A":
        await saga.step(c, pivot=True)
        await saga.step(d, retriable=True)


IMPERATIVE = ImperativeSaga("branching", input=Order, run=branching, activities=[a, undo_a, c, d])


class TestImperativeSagas:
    """An imperative saga declares no steps and drives the runner as it branches."""

    def test_declares_no_steps(self) -> None:
        assert IMPERATIVE.groups == ()
        assert IMPERATIVE.initial_step_states("s") == []
        assert "imperative, may call a, undo_a, c, d" in IMPERATIVE.diagram()

    async def test_runs_its_steps_one_stage_each_with_unique_names(self) -> None:
        runner = FakeRunner(IMPERATIVE.activities)
        await IMPERATIVE.forward(runner)
        assert runner.stages == [["a"], ["a.2"], ["c"], ["d"]]

    async def test_an_undeclared_activity_is_refused(self) -> None:
        async def sneaky(saga: SagaRun[Order]) -> None:
            await saga.step(b, compensate=undo_b)

        saga = ImperativeSaga("sneaky", input=Order, run=sneaky, activities=[a])
        with pytest.raises(RuntimeError, match="not in this saga's activities"):
            await saga.forward(FakeRunner(saga.activities))

    async def test_a_compensatable_step_after_the_pivot_is_refused(self) -> None:
        async def late(saga: SagaRun[Order]) -> None:
            await saga.step(c, pivot=True)
            await saga.step(a, compensate=undo_a)

        saga = ImperativeSaga("late", input=Order, run=late, activities=[a, undo_a, c])
        with pytest.raises(RuntimeError, match=r"after the point of no return \('c'\)"):
            await saga.forward(FakeRunner(saga.activities))
