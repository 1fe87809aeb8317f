"""The saga's live state, as the workflow reports it, and the messages it accepts.

These models cross the Temporal boundary (queries, updates, activity arguments), so they are
pydantic models carried by the pydantic data converter.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field


class SagaStatus(StrEnum):
    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    COMPENSATED = "compensated"
    COMPENSATION_FAILED = "compensation_failed"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        """The saga has ended and will not change again (see :data:`FINAL_STATUSES`)."""
        return self in FINAL_STATUSES


#: The statuses a saga ends in. ``compensation_failed`` is not one of them: such a saga stays
#: open and waits for an operator.
FINAL_STATUSES = frozenset({SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.FAILED})


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    COMPENSATING = "compensating"
    COMPENSATED = "compensated"
    COMPENSATION_FAILED = "compensation_failed"
    RESOLVED = "resolved"
    #: An ``optional=True`` step that failed: the saga went on without it.
    FAILED_OPTIONAL = "failed_optional"


class CompensationStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RESOLVED = "resolved"


class Decision(BaseModel):
    """A human decision on a step that waits for approval."""

    approved: bool
    by: str | None = None
    comment: str | None = Field(default=None, max_length=2000)
    at: datetime | None = None


class ParticipantWait(BaseModel):
    """A step (or compensation) waiting for a participant that its worker will not call now."""

    participant: str
    #: ``circuit_open``: the participant's circuit breaker is open (it kept failing);
    #: ``bulkhead_full``: the worker already runs as many calls to it as it allows;
    #: ``unreachable``: the activity could not reach it (``PARTICIPANT_UNREACHABLE``).
    reason: str
    since: datetime
    until: datetime
    #: Calls refused so far in this wait (not counted against the retry budget).
    refusals: int = 1


class CompensationState(BaseModel):
    status: CompensationStatus = CompensationStatus.PENDING
    attempts: int = 0
    started_at: datetime | None = None
    ended_at: datetime | None = None
    error: str | None = None
    resolved_by: str | None = None
    resolution: str | None = None
    waiting: ParticipantWait | None = None


class StepState(BaseModel):
    name: str
    kind: str
    status: StepStatus = StepStatus.PENDING
    attempts: int = 0
    started_at: datetime | None = None
    ended_at: datetime | None = None
    error: str | None = None
    idempotency_key: str
    output: Any = None
    approval: Decision | None = None
    compensation: CompensationState | None = None
    waiting: ParticipantWait | None = None
    #: The fallback activity that served when the action failed for good (else None).
    served_by: str | None = None


class SagaState(BaseModel):
    """What a saga looks like right now: returned by the ``state`` query and by updates."""

    id: str
    type: str
    status: SagaStatus
    input: Any
    result: dict[str, Any] | None = None
    error: str | None = None
    steps: list[StepState] = []
    cancel_reason: str | None = None
    awaiting_approval: list[str] = []
    past_pivot: bool = False
    started_at: datetime
    updated_at: datetime

    def step(self, name: str) -> StepState:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)


InputT = TypeVar("InputT")
OutputT = TypeVar("OutputT")


class Compensation(BaseModel, Generic[InputT, OutputT]):
    """What a compensation activity receives: enough to undo its own step.

    ``output`` is ``None`` when the step's outcome is unknown (it timed out or its worker was
    lost), so compensations must also succeed when there is nothing to undo. Type the
    parameter as ``Compensation[MyInput, MyOutput]`` to get typed fields.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    saga_id: str
    step: str
    idempotency_key: str
    input: InputT
    output: OutputT | None = None


class ResolveRequest(BaseModel):
    step: str
    reason: str = Field(min_length=1, max_length=2000)
    by: str | None = None


class CancelRequest(BaseModel):
    reason: str = Field(default="cancelled by request", max_length=2000)
    by: str | None = None


class DecisionRequest(BaseModel):
    by: str | None = None
    comment: str | None = Field(default=None, max_length=2000)
