"""What the API takes and returns (the saga resource, pages, saga types, problems)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field

from engine import CompensationStatus, Decision, ParticipantWait, SagaStatus, StepStatus


class Problem(BaseModel):
    """An error, as application/problem+json (RFC 9457)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    #: For invalid input: one entry per field, e.g. {"field": "hotel.nights", "message": ...}.
    errors: list[dict[str, Any]] | None = None


class CompensationPublic(BaseModel):
    status: CompensationStatus
    attempts: int
    started_at: datetime | None = None
    ended_at: datetime | None = None
    error: str | None = None
    resolved_by: str | None = None
    resolution: str | None = None
    #: Waiting on a participant its worker will not call now (circuit open, bulkhead full).
    waiting: ParticipantWait | None = None


class StepPublic(BaseModel):
    name: str
    kind: str
    status: StepStatus
    attempts: int
    started_at: datetime | None = None
    ended_at: datetime | None = None
    error: str | None = None
    idempotency_key: str
    approval: Decision | None = None
    compensation: CompensationPublic | None = None
    #: Waiting on a participant its worker will not call now (circuit open, bulkhead full).
    waiting: ParticipantWait | None = None
    #: The fallback activity that served when the action failed for good.
    served_by: str | None = None


class OperatorActionPublic(BaseModel):
    action: str
    step: str | None = None
    actor: str | None = None
    reason: str | None = None
    at: datetime


class SagaPublic(BaseModel):
    id: str
    type: str
    status: SagaStatus
    input: Any = None
    result: Any = None
    error: str | None = None
    cancel_reason: str | None = None
    awaiting_approval: list[str] = []
    past_pivot: bool = False
    steps: list[StepPublic]
    actions: list[OperatorActionPublic] = []
    trace_id: str | None = None
    trace_url: str | None = None
    temporal_url: str
    created_at: datetime
    updated_at: datetime


def _as_utc(value: datetime | None) -> datetime | None:
    # The store holds UTC and SQLite compares times as text: 10:00+02:00 is 08:00 there.
    if value is None:
        return None
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


#: A time-range bound; without an offset it is taken as UTC.
UtcTime = Annotated[datetime | None, AfterValidator(_as_utc)]


class SagaFilters(BaseModel):
    """The list's query: filters and the page wanted."""

    type: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,100}$")
    status: SagaStatus | None = None
    created_after: UtcTime = None
    created_before: UtcTime = None
    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = Field(default=None, max_length=500, pattern=r"^[A-Za-z0-9_-]+$")

    def page_query(self) -> dict[str, Any]:
        """These filters as the arguments of ``SagaStore.page``."""
        return {
            "saga_type": self.type,
            "status": self.status.value if self.status else None,
            "created_after": self.created_after,
            "created_before": self.created_before,
            "limit": self.limit,
            "cursor": self.cursor,
        }


class BulkRetryPublic(BaseModel):
    """What a bulk retry of parked sagas did."""

    #: How many sagas were retried, and which.
    retried: int
    saga_ids: list[str]
    #: Parked when listed but not when asked (resolved or retried meanwhile).
    skipped: int = 0


class SagaPage(BaseModel):
    items: list[SagaPublic]
    next_cursor: str | None = None


class SagaTypeStep(BaseModel):
    name: str
    kind: str
    compensation: str | None = None


class SagaTypePublic(BaseModel):
    name: str
    description: str = ""
    steps: list[SagaTypeStep]
    input_schema: dict[str, Any]
    diagram: str


class CancelBody(BaseModel):
    reason: str = Field(default="cancelled by request", min_length=1, max_length=2000)


class DecisionBody(BaseModel):
    comment: str | None = Field(default=None, max_length=2000)


class ResolveBody(BaseModel):
    reason: str = Field(min_length=1, max_length=2000, examples=["refunded by hand, ticket #123"])
