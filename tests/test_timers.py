"""Timer-heavy rules on the time-skipping test server: hours of saga time in a moment."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from temporalio.testing import WorkflowEnvironment

from engine import SagaClient, SagaStatus, StepStatus
from tests.support import ledger

pytestmark = pytest.mark.temporal


async def start(sagas: SagaClient, saga_type: str, amount: int) -> str:
    saga_id = f"{saga_type}-{uuid.uuid4().hex[:12]}"
    ledger.plan(saga_id)
    await sagas.start(saga_type, {"order_id": saga_id, "amount": amount}, saga_id=saga_id)
    return saga_id


class TestApprovalTimeout:
    """A step that waits for approval gives up after its timeout and the saga compensates."""

    async def test_no_decision_within_an_hour_compensates(
        self, skipping_sagas: SagaClient, skipping_env: WorkflowEnvironment
    ) -> None:
        saga_id = await start(skipping_sagas, "approval", amount=500)
        await skipping_env.sleep(timedelta(hours=2))  # skipped, not waited
        state = await skipping_sagas.result(saga_id)
        assert state.status is SagaStatus.COMPENSATED
        assert state.step("b").status is StepStatus.FAILED
        assert state.step("b").error == "approval timed out"
        assert state.step("a").status is StepStatus.COMPENSATED
        assert ledger.active(saga_id) == set()
        waited = state.step("b").ended_at - state.started_at  # type: ignore[operator]
        assert waited.total_seconds() >= 3600


class TestSagaDeadline:
    """The saga-level deadline works like a cancellation, even while a step waits."""

    async def test_deadline_before_the_approval_timeout(
        self, skipping_sagas: SagaClient, skipping_env: WorkflowEnvironment
    ) -> None:
        saga_id = await start(skipping_sagas, "long_deadline", amount=1)
        await skipping_env.sleep(timedelta(days=2))
        state = await skipping_sagas.result(saga_id)
        assert state.status is SagaStatus.COMPENSATED
        assert state.cancel_reason == "deadline exceeded"
        assert state.step("b").error == "cancelled while awaiting approval"
        assert ledger.active(saga_id) == set()
        elapsed = state.updated_at - state.started_at
        assert 86400 <= elapsed.total_seconds() < 7 * 86400
