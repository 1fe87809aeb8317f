"""The engine's facade is deliberate: adding or removing a public name must be a choice."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest

import engine
from engine._attempts import backoff
from engine._step_info import activity_id_for, idempotency_key_for

EXPORTED = {
    "DEFAULT_TASK_QUEUE", "PARTICIPANT_UNREACHABLE", "Approval", "Compensation",
    "CompensationState", "CompensationStatus",
    "Decision", "ImperativeSaga", "InvalidSagaInput", "Parallel", "ParticipantWait", "Results",
    "RetryPolicy",
    "Saga", "SagaAlreadyExists", "SagaClient", "SagaConflict", "SagaDefinition",
    "SagaDefinitionError", "SagaError", "SagaNotFound", "SagaRun", "SagaState", "SagaStatus",
    "SagaSummary", "Step", "StepFailed", "StepInfo", "StepKind", "StepState", "StepStatus",
    "TemporalUnavailable", "UnknownSagaType", "connect", "idempotency_key", "participant",
    "step_info",
}  # fmt: skip

# Running sagas is a tier of its own, as temporalio.worker is.
WORKER_EXPORTED = {
    "OutagePolicy", "activity_name", "build_replayer", "build_worker", "get_definition",
    "idempotency_key_for", "load_modules", "outage_policy", "registered", "saga_activities",
}  # fmt: skip

# Testing sagas is a tier of its own too (engine.testing, with its pytest plugin).
TESTING_EXPORTED = {
    "Behaviour", "Call", "Check", "Exploration", "ExplorationFailed", "Fakes", "Fault", "Row",
    "Run", "SagaKit", "StepFake", "explore", "temporal_for_tests",
}  # fmt: skip


class TestFacade:
    """`engine` exports exactly the documented names, and each of them exists."""

    def test_exports_are_pinned(self) -> None:
        assert set(engine.__all__) == EXPORTED

    def test_every_export_resolves(self) -> None:
        for name in engine.__all__:
            assert getattr(engine, name) is not None

    def test_the_worker_tier_is_pinned(self) -> None:
        import engine.worker

        assert set(engine.worker.__all__) == WORKER_EXPORTED
        for name in engine.worker.__all__:
            assert getattr(engine.worker, name) is not None

    def test_the_testing_tier_is_pinned(self) -> None:
        import engine.testing

        assert set(engine.testing.__all__) == TESTING_EXPORTED
        for name in engine.testing.__all__:
            assert getattr(engine.testing, name) is not None

    def test_writing_a_saga_loads_neither_the_store_nor_the_worker(self) -> None:
        # A fresh interpreter: this one has long imported everything.
        code = (
            "import sys, engine; "
            "loaded = [m for m in ('sqlmodel', 'sqlalchemy', 'engine._store', 'engine._worker',"
            " 'engine._workflow', 'fastapi') if m in sys.modules]; "
            "print(','.join(loaded))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == ""

    def test_statuses_are_those_of_the_design(self) -> None:
        assert [s.value for s in engine.SagaStatus] == [
            "running", "awaiting_approval", "compensating", "completed", "compensated",
            "compensation_failed", "failed",
        ]  # fmt: skip
        assert [s.value for s in engine.StepStatus] == [
            "pending", "running", "succeeded", "failed", "skipped", "compensating",
            "compensated", "compensation_failed", "resolved", "failed_optional",
        ]  # fmt: skip

    def test_errors_carry_http_statuses(self) -> None:
        assert engine.UnknownSagaType("x").http_status == 404
        assert engine.InvalidSagaInput("x", errors=[]).http_status == 422
        assert engine.SagaConflict("x").http_status == 409
        assert engine.TemporalUnavailable("x").http_status == 503


class TestRetryArithmetic:
    """The workflow's own retry loop backs off like a Temporal retry policy."""

    def test_backoff_doubles_up_to_the_maximum(self) -> None:
        policy = engine.RetryPolicy(
            initial_interval=timedelta(seconds=1),
            backoff_coefficient=2,
            maximum_interval=timedelta(seconds=5),
        )
        assert [backoff(policy, n).total_seconds() for n in range(1, 6)] == [1, 2, 4, 5, 5]


class TestStepIdentity:
    """Activity ids carry the step; keys depend only on saga id and step."""

    def test_key_and_activity_id(self) -> None:
        assert idempotency_key_for("trip-1", "reserve_hotel") == "trip-1/reserve_hotel"
        assert activity_id_for("reserve_hotel", "compensation", 3) == (
            "reserve_hotel/compensation/3"
        )

    def test_step_info_outside_an_activity(self) -> None:
        with pytest.raises(RuntimeError, match="only be called inside an activity"):
            engine.step_info()
