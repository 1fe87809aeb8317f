"""Saga orchestration on Temporal.

Define a saga as steps, each an activity with the activity that undoes it::

    from engine import Saga, Step, Parallel

    trip_booking = Saga(
        "trip_booking",
        input=TripRequest,
        steps=[
            Parallel(
                Step(flights.reserve, compensate=flights.cancel),
                Step(hotels.reserve, compensate=hotels.cancel),
            ),
            Step(payments.charge, compensate=payments.refund),
            Step(notifications.send_itinerary, retriable=True),
        ],
    )

Run it with ``sagas worker --module my_sagas`` and start it with ``sagas start`` or
:class:`SagaClient`. Everything not listed in ``__all__`` is private.
"""

from temporalio.common import RetryPolicy

from engine._client import DEFAULT_TASK_QUEUE, SagaClient, SagaSummary, connect
from engine._definition import Saga, SagaDefinition
from engine._errors import (
    InvalidSagaInput,
    SagaAlreadyExists,
    SagaConflict,
    SagaDefinitionError,
    SagaError,
    SagaNotFound,
    StepFailed,
    TemporalUnavailable,
    UnknownSagaType,
)
from engine._imperative import ImperativeSaga, SagaRun
from engine._registry import load_modules, registered
from engine._state import (
    Compensation,
    CompensationState,
    CompensationStatus,
    Decision,
    SagaState,
    SagaStatus,
    StepState,
    StepStatus,
)
from engine._step import Approval, Parallel, Results, Step, StepKind, activity_name
from engine._step_info import StepInfo, idempotency_key, idempotency_key_for, step_info
from engine._worker import build_replayer, build_worker

__all__ = [
    "DEFAULT_TASK_QUEUE",
    "Approval",
    "Compensation",
    "CompensationState",
    "CompensationStatus",
    "Decision",
    "ImperativeSaga",
    "InvalidSagaInput",
    "Parallel",
    "Results",
    "RetryPolicy",
    "Saga",
    "SagaAlreadyExists",
    "SagaClient",
    "SagaConflict",
    "SagaDefinition",
    "SagaDefinitionError",
    "SagaError",
    "SagaNotFound",
    "SagaRun",
    "SagaState",
    "SagaStatus",
    "SagaSummary",
    "Step",
    "StepFailed",
    "StepInfo",
    "StepKind",
    "StepState",
    "StepStatus",
    "TemporalUnavailable",
    "UnknownSagaType",
    "activity_name",
    "build_replayer",
    "build_worker",
    "connect",
    "idempotency_key",
    "idempotency_key_for",
    "load_modules",
    "registered",
    "step_info",
]
