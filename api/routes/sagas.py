"""Start, list, show, steer and follow sagas."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Path, Query, Response
from fastapi.responses import StreamingResponse

from api.models import CancelBody, DecisionBody, ResolveBody, SagaPage, SagaPublic
from api.runtime import CallerDep, RuntimeDep, find_definition
from engine import SagaAlreadyExists, SagaState, SagaStatus, UnknownSagaType
from engine.store import FINAL_STATUSES, StoredSaga
from engine.telemetry import current_trace_id
from engine.worker import registered

router = APIRouter(tags=["sagas"])

SagaType = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,100}$", examples=["trip_booking"])]
SagaId = Annotated[str, Path(pattern=r"^[^\s/]{1,200}$", examples=["trip_booking-1b2c"])]
StepName = Annotated[str, Path(pattern=r"^[^\s/]{1,200}$", examples=["reserve_flight"])]
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$"),
]


def fingerprint(saga_type: str, input: Any) -> str:
    canonical = json.dumps([saga_type, input], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@router.post(
    "/sagas/{saga_type}",
    status_code=202,
    response_model=SagaPublic,
    responses={200: {"model": SagaPublic, "description": "Started before with this key"}},
)
async def start_saga(
    saga_type: SagaType,
    body: Annotated[dict[str, Any], Body(examples=[{"...": "the saga's input"}])],
    response: Response,
    runtime: RuntimeDep,
    caller: CallerDep,
    key: IdempotencyKey = None,
) -> SagaPublic | Response:
    """Start a saga (the body is its input); a repeated Idempotency-Key gives the same saga."""
    definition = find_definition(saga_type)
    if definition is None:
        known = ", ".join(sorted(d.name for d in registered())) or "none"
        raise UnknownSagaType(f"unknown saga type {saga_type!r} (registered: {known})")
    model = definition.validate_input(body)
    input_json = model.model_dump(mode="json")
    now, trace_id = datetime.now(UTC), current_trace_id()
    saga_id, created = await asyncio.to_thread(
        runtime.store.claim,
        saga_id=f"{saga_type}-{uuid.uuid4()}",
        saga_type=saga_type,
        input=input_json,
        key=key,
        fingerprint=fingerprint(saga_type, input_json),
        trace_id=trace_id,
        created_at=now,
    )
    try:
        # Also for a repeated key: the first request may have died between claim and start.
        await runtime.sagas.start(saga_type, model, saga_id=saga_id)
    except SagaAlreadyExists:
        pass
    except Exception:
        if created:
            await asyncio.to_thread(runtime.store.forget, saga_id, key)
        raise
    if not created:
        response.status_code = 200
        return await runtime.resource(saga_id)
    runtime.metrics.started.labels(saga_type).inc()
    # What the store now holds, without reading it back: the start path stays short.
    state = SagaState(
        id=saga_id,
        type=saga_type,
        status=SagaStatus.RUNNING,
        input=input_json,
        started_at=now,
        updated_at=now,
    )
    return runtime.render(StoredSaga(state, trace_id, now, revision=0))


@router.get("/sagas", response_model=SagaPage)
async def list_sagas(
    runtime: RuntimeDep,
    caller: CallerDep,
    type: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_.-]{1,100}$")] = None,
    status: SagaStatus | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=500, pattern=r"^[A-Za-z0-9_-]+$")] = None,
) -> SagaPage:
    """Sagas, newest first, filtered; pass ``next_cursor`` back as ``cursor`` for more."""
    page = await asyncio.to_thread(
        runtime.store.page,
        saga_type=type,
        status=status.value if status else None,
        created_after=created_after,
        created_before=created_before,
        limit=limit,
        cursor=cursor,
    )
    return SagaPage(
        items=[runtime.render(item) for item in page.items], next_cursor=page.next_cursor
    )


@router.get("/sagas/{saga_id}", response_model=SagaPublic)
async def get_saga(saga_id: SagaId, runtime: RuntimeDep, caller: CallerDep) -> SagaPublic:
    """The saga: status, input, result, error, every step and compensation, links."""
    return await runtime.resource(saga_id)


@router.post("/sagas/{saga_id}/cancel", response_model=SagaPublic)
async def cancel_saga(
    saga_id: SagaId,
    runtime: RuntimeDep,
    caller: CallerDep,
    body: Annotated[CancelBody | None, Body()] = None,
) -> SagaPublic:
    """Cancel and compensate; 409 once past the pivot or finished."""
    reason = (body or CancelBody()).reason
    await runtime.stored(saga_id)
    state = await runtime.sagas.cancel(saga_id, reason=reason, by=caller)
    await _record(runtime, saga_id, "cancel", caller, reason=reason)
    return await runtime.resource(saga_id, fresher=state)


@router.post("/sagas/{saga_id}/approve", response_model=SagaPublic)
async def approve_saga(
    saga_id: SagaId,
    runtime: RuntimeDep,
    caller: CallerDep,
    body: Annotated[DecisionBody | None, Body()] = None,
) -> SagaPublic:
    """Approve the step that waits for a decision."""
    comment = (body or DecisionBody()).comment
    await runtime.stored(saga_id)
    state = await runtime.sagas.approve(saga_id, by=caller, comment=comment)
    await _record(runtime, saga_id, "approve", caller, step=_decided(state), reason=comment)
    return await runtime.resource(saga_id, fresher=state)


@router.post("/sagas/{saga_id}/reject", response_model=SagaPublic)
async def reject_saga(
    saga_id: SagaId,
    runtime: RuntimeDep,
    caller: CallerDep,
    body: Annotated[DecisionBody | None, Body()] = None,
) -> SagaPublic:
    """Reject the step that waits for a decision: the saga compensates."""
    comment = (body or DecisionBody()).comment
    await runtime.stored(saga_id)
    state = await runtime.sagas.reject(saga_id, by=caller, comment=comment)
    await _record(runtime, saga_id, "reject", caller, step=_decided(state), reason=comment)
    return await runtime.resource(saga_id, fresher=state)


@router.post("/sagas/{saga_id}/compensations/retry", response_model=SagaPublic)
async def retry_compensations(
    saga_id: SagaId, runtime: RuntimeDep, caller: CallerDep
) -> SagaPublic:
    """Retry the failed compensations of a ``compensation_failed`` saga (else 409)."""
    await runtime.stored(saga_id)
    state = await runtime.sagas.retry_compensations(saga_id)
    await _record(runtime, saga_id, "retry_compensations", caller)
    return await runtime.resource(saga_id, fresher=state)


@router.post("/sagas/{saga_id}/steps/{step}/resolve", response_model=SagaPublic)
async def resolve_step(
    saga_id: SagaId, step: StepName, body: ResolveBody, runtime: RuntimeDep, caller: CallerDep
) -> SagaPublic:
    """Mark a failed compensation as resolved by hand; the reason is kept."""
    await runtime.stored(saga_id)
    state = await runtime.sagas.resolve(saga_id, step, reason=body.reason, by=caller)
    await _record(runtime, saga_id, "resolve", caller, step=step, reason=body.reason)
    return await runtime.resource(saga_id, fresher=state)


def _decided(state: SagaState) -> str | None:
    """The step that the decision just returned in ``state`` was for: the latest decided."""
    decided = [(s.approval.at, s.name) for s in state.steps if s.approval and s.approval.at]
    return max(decided)[1] if decided else None


async def _record(
    runtime: RuntimeDep, saga_id: str, action: str, caller: str, **details: str | None
) -> None:
    await asyncio.to_thread(runtime.store.record_action, saga_id, action, actor=caller, **details)
    runtime.metrics.actions.labels(action).inc()


@router.get(
    "/sagas/{saga_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "`event: saga` with the saga resource, at each change",
        }
    },
)
async def saga_events(saga_id: SagaId, runtime: RuntimeDep, caller: CallerDep) -> StreamingResponse:
    """Server-sent events: the saga resource each time it changes, until the saga ends."""
    await runtime.stored(saga_id)  # 404 before the stream starts
    return StreamingResponse(
        _events(runtime, saga_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _events(runtime: RuntimeDep, saga_id: str) -> AsyncIterator[str]:
    settings = runtime.settings
    ends = time.monotonic() + settings.events_max_seconds
    last_sent = None
    last_beat = time.monotonic()
    while time.monotonic() < ends:
        stored = await runtime.stored(saga_id)
        seen = (stored.revision, stored.state.status, stored.state.updated_at)
        if seen != last_sent:
            last_sent = seen
            actions = await asyncio.to_thread(runtime.store.actions, saga_id)
            resource = runtime.render(stored, actions)
            yield f"event: saga\ndata: {resource.model_dump_json()}\n\n"
            if stored.state.status in FINAL_STATUSES:
                return
        elif time.monotonic() - last_beat > 15:
            last_beat = time.monotonic()
            yield ": still here\n\n"  # a comment keeps proxies from closing the stream
        await asyncio.sleep(settings.events_poll_seconds)
