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

Run it with ``sagas worker --module my_sagas`` (or :mod:`engine.worker` from Python) and start
it with ``sagas start`` or :class:`SagaClient`. The tiers, as in temporalio:

* ``engine``: writing and calling sagas (this module);
* ``engine.worker``: running them (``build_worker``, ``build_replayer``, ``load_modules``);
* ``engine.store``, ``engine.telemetry``, ``engine.config``: the saga store, traces, logs and
  metrics, and settings, for the processes that serve them;
* ``engine.testing``: the testing kit (``explore``, activity fakes, a pytest plugin).

Everything not listed in an ``__all__`` is private.
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
from engine._participants import PARTICIPANT_UNREACHABLE, participant
from engine._state import (
    Compensation,
    CompensationState,
    CompensationStatus,
    Decision,
    ParticipantWait,
    SagaState,
    SagaStatus,
    StepState,
    StepStatus,
)
from engine._step import Approval, Parallel, Results, Step, StepKind
from engine._step_info import StepInfo, idempotency_key, step_info

__all__ = [
    "DEFAULT_TASK_QUEUE",
    "PARTICIPANT_UNREACHABLE",
    "Approval",
    "Compensation",
    "CompensationState",
    "CompensationStatus",
    "Decision",
    "ImperativeSaga",
    "InvalidSagaInput",
    "Parallel",
    "ParticipantWait",
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
    "connect",
    "idempotency_key",
    "participant",
    "step_info",
]
