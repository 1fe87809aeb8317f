"""The execution rules of DESIGN.md, one class per rule, on a real Temporal dev server.

Every test checks the saga's own state *and* what the participant (the SQLite ledger) saw:
which effects are active, which were undone, and in which order compensations were called.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from temporalio.client import WorkflowExecutionStatus

from engine import (
    InvalidSagaInput,
    SagaAlreadyExists,
    SagaClient,
    SagaConflict,
    SagaNotFound,
    SagaState,
    SagaStatus,
    StepStatus,
    UnknownSagaType,
)
from tests.support import ledger
from tests.support.ledger import ALWAYS

pytestmark = pytest.mark.temporal


def new_id(prefix: str = "saga") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def start(
    sagas: SagaClient, saga_type: str, *, amount: int = 10, express: bool = False, **faults: Any
) -> str:
    saga_id = new_id(saga_type)
    ledger.plan(saga_id, **faults)
    order = {"order_id": saga_id, "amount": amount, "express": express}
    await sagas.start(saga_type, order, saga_id=saga_id)
    return saga_id


async def wait_for(
    sagas: SagaClient, saga_id: str, ok: Callable[[SagaState], bool], timeout: float = 30
) -> SagaState:
    """Poll the saga's live state until ``ok`` holds; bounded, so a bug fails, not hangs."""
    return await sagas.wait_for(saga_id, until=ok, timeout=timeout, interval=0.1)


def running(step: str) -> Callable[[SagaState], bool]:
    return lambda s: s.step(step).status is StepStatus.RUNNING


def status_is(status: SagaStatus) -> Callable[[SagaState], bool]:
    return lambda s: s.status is status


def compensation_attempts(state: SagaState, step: str = "b") -> int:
    comp = state.step(step).compensation
    return comp.attempts if comp else 0


def undone_in_order(saga_id: str) -> list[str]:
    """Steps whose compensation succeeded or was called, in the order first called."""
    order: list[str] = []
    for step, _, _ in ledger.calls(saga_id, "compensation"):
        if step not in order:
            order.append(step)
    return order


class TestWaitingForASaga:
    """SagaClient.wait_for returns the state that met the condition, or says where it stuck."""

    async def test_by_default_it_waits_until_the_saga_settles(self, sagas: SagaClient) -> None:
        saga_id = await start(sagas, "approval", amount=500)
        state = await sagas.wait_for(saga_id, timeout=30)
        assert state.status is SagaStatus.AWAITING_APPROVAL
        await sagas.approve(saga_id, by="test")
        state = await sagas.wait_for(saga_id, until=SagaStatus.COMPLETED, timeout=30)
        assert state.status is SagaStatus.COMPLETED

    async def test_a_timeout_names_the_status_it_stuck_in(self, sagas: SagaClient) -> None:
        saga_id = await start(sagas, "approval", amount=500)
        await sagas.wait_for(saga_id, until=SagaStatus.AWAITING_APPROVAL, timeout=30)
        with pytest.raises(TimeoutError, match=r"within 0\.5 s \(it is awaiting_approval\)"):
            await sagas.wait_for(
                saga_id, until={SagaStatus.COMPLETED, SagaStatus.COMPENSATED}, timeout=0.5
            )
        await sagas.cancel(saga_id)
        assert (await sagas.result(saga_id)).status is SagaStatus.COMPENSATED


class TestRule1ForwardOrder:
    """Forward steps run in order; the steps of a Parallel group run concurrently."""

    async def test_steps_run_in_definition_order(self, sagas: SagaClient) -> None:
        saga_id = await start(sagas, "three_steps")
        state = await sagas.result(saga_id)
        assert state.status is SagaStatus.COMPLETED
        assert [s for s, _, _ in ledger.calls(saga_id, "forward")] == ["a", "b", "c"]
        assert ledger.active(saga_id) == {"a", "b", "c"}
        assert state.result is not None
        assert set(state.result) == {"a", "b", "c"}

    async def test_parallel_steps_overlap(self, sagas: SagaClient) -> None:
        saga_id = await start(sagas, "parallel_group", slow={"p1": 0.5, "p2": 0.5, "p3": 0.5})
        state = await sagas.result(saga_id)
        assert state.status is SagaStatus.COMPLETED
        group = [state.step(n) for n in ("p1", "p2", "p3")]
        first_end = min(s.ended_at for s in group if s.ended_at)
        assert all(s.started_at is not None and s.started_at < first_end for s in group)
        assert state.step("d").started_at >= max(s.ended_at for s in group if s.ended_at)  # type: ignore[operator]


class TestRule2CompensationOnFailure:
    """A step that fails for good compensates the succeeded and unknown steps, in reverse."""

    @pytest.mark.parametrize(
        ("failing", "expected_undo", "final"),
        [
            ("a", [], SagaStatus.FAILED),
            ("b", ["a"], SagaStatus.COMPENSATED),
            ("c", ["b", "a"], SagaStatus.COMPENSATED),
        ],
    )
    async def test_failure_at_each_position(
        self, sagas: SagaClient, failing: str, expected_undo: list[str], final: SagaStatus
    ) -> None:
        saga_id = await start(sagas, "three_steps", refuse={failing})
        state = await sagas.result(saga_id)
        assert state.status is final
        assert undone_in_order(saga_id) == expected_undo
        assert ledger.active(saga_id) == set()
        assert state.step(failing).status is StepStatus.FAILED
        assert "refused" in (state.step(failing).error or "")
        for name in expected_undo:
            assert state.step(name).status is StepStatus.COMPENSATED
        later = {"a": ["b", "c"], "b": ["c"], "c": []}[failing]
        for name in later:
            assert state.step(name).status is StepStatus.PENDING

    async def test_failure_in_parallel_group_compensates_siblings(self, sagas: SagaClient) -> None:
        saga_id = await start(sagas, "parallel_group", refuse={"p2"}, slow={"p3": 0.3})
        state = await sagas.result(saga_id)
        assert state.status is SagaStatus.COMPENSATED
        order = undone_in_order(saga_id)
        assert set(order[:2]) == {"p1", "p3"}, "the group is undone before the step before it"
        assert order[2:] == ["a"]
        assert state.step("p2").status is StepStatus.FAILED
        assert state.step("p2").compensation is None, "a refused step has nothing to undo"
        assert state.step("d").status is StepStatus.PENDING
        assert ledger.active(saga_id) == set()

    async def test_step_that_timed_out_after_taking_effect_is_compensated(
        self, sagas: SagaClient
    ) -> None:
        saga_id = await start(sagas, "timed_out_step", act_then_hang={"b": 3})
        state = await sagas.result(saga_id)
        assert state.status is SagaStatus.COMPENSATED
        assert "timed out" in (state.step("b").error or "")
        assert state.step("b").status is StepStatus.COMPENSATED
        assert ledger.effects(saga_id)["b"] == ("undone", 1)
        assert undone_in_order(saga_id) == ["b", "a"]

    async def test_retries_exhausted_on_transient_errors_counts_as_unknown(
        self, sagas: SagaClient
    ) -> None:
        saga_id = await start(sagas, "three_steps", transient={"b": 10})
        state = await sagas.result(saga_id)
        assert state.status is SagaStatus.COMPENSATED
        assert state.step("b").attempts == 3
        assert "gave up after 3 attempts" in (state.step("b").error or "")
        # The compensation ran although nothing took effect: it must succeed anyway.
        assert state.step("b").status is StepStatus.COMPENSATED
        assert ledger.effects(saga_id)["b"] == ("undone", 0)

    async def test_transient_errors_are_retried_then_succeed(self, sagas: SagaClient) -> None:
        saga_id = await start(sagas, "three_steps", transient={"b": 2})
        state = await sagas.result(saga_id)
        assert state.status is SagaStatus.COMPLETED
        assert state.step("b").attempts == 3
        assert [a for s, _, a in ledger.calls(saga_id, "forward") if s == "b"] == [1, 2, 3]


class TestRule3CompensationRetriesAndRepair:
    """Compensations are retried; one that keeps failing waits for an operator."""

    async def test_compensation_failing_twice_then_succeeding(self, sagas: SagaClient) -> None:
        saga_id = await start(sagas, "three_steps", refuse={"c"}, compensation_failures={"b": 2})
        state = await sagas.result(saga_id)
        assert state.status is SagaStatus.COMPENSATED
        comp = state.step("b").compensation
        assert comp is not None
        assert comp.attempts == 3
        assert comp.status == "succeeded"
        assert ledger.active(saga_id) == set()

    async def test_compensation_failed_then_retried_after_the_fix(
        self, sagas: SagaClient, dev_env: object
    ) -> None:
        saga_id = await start(
            sagas, "three_steps", refuse={"c"}, compensation_failures={"b": ALWAYS}
        )
        state = await wait_for(sagas, saga_id, status_is(SagaStatus.COMPENSATION_FAILED))
        assert state.step("b").status is StepStatus.COMPENSATION_FAILED
        assert state.step("b").compensation.attempts == 3  # type: ignore[union-attr]
        assert "cannot undo b" in (state.step("b").compensation.error or "")  # type: ignore[union-attr]
        # Everything else was undone; exactly the failed step is left for the operator.
        assert state.step("a").status is StepStatus.COMPENSATED
        assert ledger.active(saga_id) == {"b"}
        # The saga stays open and visible.
        description = await sagas.client.get_workflow_handle(saga_id).describe()
        assert description.status == WorkflowExecutionStatus.RUNNING

        # A retry before the fault is fixed fails again, with a fresh budget of attempts.
        # The answer already shows the saga compensating again, not the state it left.
        answer = await sagas.retry_compensations(saga_id)
        assert answer.status is SagaStatus.COMPENSATING
        state = await wait_for(
            sagas,
            saga_id,
            lambda s: s.status is SagaStatus.COMPENSATION_FAILED and compensation_attempts(s) == 6,
        )
        ledger.fix(saga_id)
        await sagas.retry_compensations(saga_id)
        state = await sagas.result(saga_id)
        assert state.status is SagaStatus.COMPENSATED
        assert state.step("b").status is StepStatus.COMPENSATED
        assert state.step("b").compensation.attempts == 7  # type: ignore[union-attr]
        assert ledger.active(saga_id) == set()

    async def test_resolved_by_hand(self, sagas: SagaClient) -> None:
        saga_id = await start(
            sagas, "three_steps", refuse={"c"}, compensation_failures={"a": ALWAYS}
        )
        await wait_for(sagas, saga_id, status_is(SagaStatus.COMPENSATION_FAILED))
        with pytest.raises(SagaConflict, match="only a step whose compensation failed"):
            await sagas.resolve(saga_id, "b", reason="b was fine")
        answer = await sagas.resolve(saga_id, "a", reason="refunded by phone, ticket 42", by="ops")
        # Resolving the last failed compensation settles the saga, and the answer says so.
        assert answer.status is SagaStatus.COMPENSATED
        state = await sagas.result(saga_id)
        assert state.status is SagaStatus.COMPENSATED
        step = state.step("a")
        assert step.status is StepStatus.RESOLVED
        assert step.compensation is not None
        assert step.compensation.resolution == "refunded by phone, ticket 42"
        assert step.compensation.resolved_by == "ops"

    async def test_retry_refused_unless_compensation_failed(self, sagas: SagaClient) -> None:
        saga_id = await start(sagas, "three_steps", slow={"b": 30})
        await wait_for(sagas, saga_id, running("b"))
        with pytest.raises(SagaConflict, match="only a compensation_failed saga"):
            await sagas.retry_compensations(saga_id)
        await sagas.cancel(saga_id)
        await sagas.result(saga_id)


class TestRule4PivotAndForwardRecovery:
    """After the pivot succeeds the saga only goes forward, retrying until it succeeds."""

    async def test_after_pivot_failures_are_retried_not_compensated(
        self, sagas: SagaClient
    ) -> None:
        saga_id = await start(sagas, "pivoted", transient={"c": 4}, refusals={"d": 2})
        state = await sagas.result(saga_id)
        assert state.status is SagaStatus.COMPLETED
        assert state.step("c").attempts == 5
        # Even errors marked non-retryable are retried past the pivot.
        assert state.step("d").attempts == 3
        assert ledger.calls(saga_id, "compensation") == []
        assert ledger.active(saga_id) == {"a", "b", "c", "d"}

    async def test_pivot_failure_still_compensates(self, sagas: SagaClient) -> None:
        saga_id = await start(sagas, "pivoted", refuse={"b"})
        state = await sagas.result(saga_id)
        assert state.status is SagaStatus.COMPENSATED
        assert undone_in_order(saga_id) == ["a"]
        assert not state.past_pivot


class TestRule5Cancellation:
    """Cancelling compensates what was done; after the pivot it is refused; so is a deadline."""

    async def test_cancel_mid_saga_compensates(self, sagas: SagaClient) -> None:
        saga_id = await start(sagas, "three_steps", slow={"b": 30})
        await wait_for(sagas, saga_id, running("b"))
        await sagas.cancel(saga_id, reason="customer changed their mind", by="api")
        state = await sagas.result(saga_id)
        assert state.status is SagaStatus.COMPENSATED
        assert state.cancel_reason == "customer changed their mind"
        # b was running: its outcome is unknown, so it is compensated too.
        assert undone_in_order(saga_id) == ["b", "a"]
        assert state.step("c").status is StepStatus.PENDING
        assert ledger.active(saga_id) == set()

    async def test_cancel_through_temporal_compensates(self, sagas: SagaClient) -> None:
        saga_id = await start(sagas, "three_steps", slow={"b": 30})
        await wait_for(sagas, saga_id, running("b"))
        await sagas.client.get_workflow_handle(saga_id).cancel()
        state = await sagas.result(saga_id)
        assert state.status is SagaStatus.COMPENSATED
        assert state.cancel_reason == "cancelled through Temporal"
        assert ledger.active(saga_id) == set()

    async def test_cancel_after_pivot_is_refused(self, sagas: SagaClient) -> None:
        saga_id = await start(sagas, "pivoted", slow={"c": 2})
        await wait_for(sagas, saga_id, running("c"))
        with pytest.raises(SagaConflict, match="past its pivot"):
            await sagas.cancel(saga_id)
        # A cancellation through Temporal is ignored as well: the saga goes forward.
        await sagas.client.get_workflow_handle(saga_id).cancel()
        state = await sagas.result(saga_id)
        assert state.status is SagaStatus.COMPLETED
        assert ledger.calls(saga_id, "compensation") == []

    async def test_cancel_finished_saga_is_refused(self, sagas: SagaClient) -> None:
        saga_id = await start(sagas, "three_steps")
        await sagas.result(saga_id)
        with pytest.raises(SagaConflict, match="already finished"):
            await sagas.cancel(saga_id)

    async def test_deadline_compensates(self, sagas: SagaClient) -> None:
        saga_id = await start(sagas, "with_deadline", slow={"b": 30})
        state = await sagas.result(saga_id)
        assert state.status is SagaStatus.COMPENSATED
        assert state.cancel_reason == "deadline exceeded"
        assert ledger.active(saga_id) == set()


class TestRule6IdempotencyKeys:
    """Every step call carries a key derived from the saga id and step, stable across retries."""

    async def test_key_is_stable_across_attempts_and_compensation(self, sagas: SagaClient) -> None:
        saga_id = await start(sagas, "three_steps", transient={"b": 2}, refuse={"c"})
        state = await sagas.result(saga_id)
        assert state.step("b").idempotency_key == f"{saga_id}/b"
        assert state.step("b").output["key"] == f"{saga_id}/b"
        # Three attempts of b, one effect; the compensation asserted the same key.
        assert ledger.effects(saga_id)["b"] == ("undone", 1)


class TestRule7Approval:
    """A step may wait for a human decision; rejection or timeout compensates."""

    async def test_approved(self, sagas: SagaClient) -> None:
        saga_id = await start(sagas, "approval", amount=500)
        state = await wait_for(sagas, saga_id, status_is(SagaStatus.AWAITING_APPROVAL))
        assert state.awaiting_approval == ["b"]
        assert ledger.active(saga_id) == {"a"}
        answer = await sagas.approve(saga_id, by="manager", comment="ok")
        # The answer shows the saga moving on, not still waiting for the decision it took.
        assert (answer.status, answer.awaiting_approval) == (SagaStatus.RUNNING, [])
        state = await sagas.result(saga_id)
        assert state.status is SagaStatus.COMPLETED
        decision = state.step("b").approval
        assert decision is not None
        assert decision.approved
        assert decision.by == "manager"

    async def test_rejected(self, sagas: SagaClient) -> None:
        saga_id = await start(sagas, "approval", amount=500)
        await wait_for(sagas, saga_id, status_is(SagaStatus.AWAITING_APPROVAL))
        answer = await sagas.reject(saga_id, by="manager", comment="too expensive")
        assert answer.step("b").status is StepStatus.FAILED
        state = await sagas.result(saga_id)
        assert state.status is SagaStatus.COMPENSATED
        assert state.step("b").error == "rejected by manager: too expensive"
        assert undone_in_order(saga_id) == ["a"]
        assert ledger.active(saga_id) == set()

    async def test_no_approval_needed_below_the_amount(self, sagas: SagaClient) -> None:
        saga_id = await start(sagas, "approval", amount=50)
        state = await sagas.result(saga_id)
        assert state.status is SagaStatus.COMPLETED
        assert state.step("b").approval is None

    async def test_decision_without_a_waiting_step_is_refused(self, sagas: SagaClient) -> None:
        saga_id = await start(sagas, "three_steps", slow={"b": 30})
        await wait_for(sagas, saga_id, running("b"))
        with pytest.raises(SagaConflict, match="waiting for approval"):
            await sagas.approve(saga_id)
        await sagas.cancel(saga_id)
        await sagas.result(saga_id)


class TestRule8StatusModel:
    """Steps report skipped, inputs from earlier outputs, and the saga its status."""

    async def test_skipped_step_and_inputs_from_earlier_results(self, sagas: SagaClient) -> None:
        saga_id = await start(sagas, "conditional", amount=7)
        state = await sagas.result(saga_id)
        assert state.status is SagaStatus.COMPLETED
        assert state.step("b").status is StepStatus.SKIPPED
        assert state.step("c").output["amount"] == 14
        assert ledger.active(saga_id) == {"a", "c"}

    async def test_unknown_type_and_invalid_input_are_refused_before_starting(
        self, sagas: SagaClient
    ) -> None:
        with pytest.raises(UnknownSagaType, match="nope"):
            await sagas.start("nope", {})
        with pytest.raises(InvalidSagaInput, match="amount") as info:
            await sagas.start("three_steps", {"amount": -5})
        assert info.value.errors[0]["loc"] == ("amount",)


class TestImperativeForm:
    """The imperative form branches in code and follows the same rules."""

    async def test_happy_path(self, sagas: SagaClient) -> None:
        saga_id = await start(sagas, "branching")
        state = await sagas.result(saga_id)
        assert state.status is SagaStatus.COMPLETED
        assert [s.name for s in state.steps] == ["a", "b", "p1"]

    async def test_branches_on_a_refused_step(self, sagas: SagaClient) -> None:
        saga_id = await start(sagas, "branching", refuse={"b"}, express=True)
        state = await sagas.result(saga_id)
        assert state.status is SagaStatus.COMPLETED
        assert [s.name for s in state.steps] == ["a", "b", "c", "d", "p1"]
        assert state.step("b").status is StepStatus.FAILED
        assert state.step("d").kind == "pivot"
        assert state.past_pivot
        assert ledger.active(saga_id) == {"a", "c", "d", "p1"}

    async def test_failure_compensates_in_reverse(self, sagas: SagaClient) -> None:
        saga_id = await start(sagas, "branching", refuse={"b", "c"})
        state = await sagas.result(saga_id)
        assert state.status is SagaStatus.COMPENSATED
        assert undone_in_order(saga_id) == ["a"]
        assert ledger.active(saga_id) == set()


class TestStartValidation:
    """Bad saga ids are refused before anything reaches Temporal."""

    @pytest.mark.parametrize("bad", ["", "a b", "a/b", "x" * 201])
    async def test_bad_saga_id(self, sagas: SagaClient, bad: str) -> None:
        with pytest.raises(InvalidSagaInput, match="saga_id"):
            await sagas.start("three_steps", {}, saga_id=bad)

    async def test_same_id_twice(self, sagas: SagaClient) -> None:
        saga_id = await start(sagas, "three_steps")
        with pytest.raises(SagaAlreadyExists):
            await sagas.start("three_steps", {}, saga_id=saga_id)

    async def test_unknown_saga_id(self, sagas: SagaClient) -> None:
        with pytest.raises(SagaNotFound):
            await sagas.state("no-such-saga")
        with pytest.raises(SagaNotFound):
            await sagas.cancel("no-such-saga")
