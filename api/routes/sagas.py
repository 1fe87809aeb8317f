"""Start, list, show, steer and follow sagas."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent

from api.deps import (
    Caller,
    CancelRequest,
    DecisionRequest,
    IdempotencyKey,
    PreferWait,
    SagaId,
    SagaInput,
    SagaQuery,
    SagaType,
    ServiceDep,
    StepName,
    WaitSeconds,
)
from api.models import BulkRetryPublic, CancelBody, ResolveBody, SagaPage, SagaPublic
from api.service import Action

router = APIRouter(tags=["sagas"])


@router.post(
    "/sagas/{saga_type}",
    status_code=202,
    response_model=SagaPublic,
    responses={200: {"model": SagaPublic, "description": "Started before with this key"}},
)
async def start_saga(
    saga_type: SagaType,
    body: SagaInput,
    response: Response,
    service: ServiceDep,
    caller: Caller,
    key: IdempotencyKey = None,
    wait: PreferWait = None,
) -> SagaPublic:
    """Start a saga (the body is its input); a repeated Idempotency-Key gives the same saga.

    ``Prefer: wait=N`` (RFC 7240): answer once the saga has ended or waits for a person, or
    after N seconds (at most SAGAS_API_WAIT_MAX_SECONDS), with its state then;
    ``Preference-Applied`` says the wait applied.
    """
    saga, created = await service.start(saga_type, body, key=key, by=caller)
    if not created:
        response.status_code = 200
    if wait is not None:
        seconds = int(service.wait_seconds(wait))
        saga, granted = await service.wait(saga, seconds, by=caller)
        if granted:  # else no place was left for another waiter: answered at once
            response.headers["Preference-Applied"] = f"wait={seconds}"
    return saga


@router.get("/sagas", response_model=SagaPage)
async def list_sagas(query: SagaQuery, service: ServiceDep, caller: Caller) -> SagaPage:
    """Sagas, newest first, filtered; pass ``next_cursor`` back as ``cursor`` for more."""
    return await service.page(query)


@router.get("/sagas/{saga_id}", response_model=SagaPublic)
async def get_saga(
    saga_id: SagaId, service: ServiceDep, caller: Caller, wait: WaitSeconds = None
) -> SagaPublic:
    """The saga: status, input, result, error, every step and compensation, links.

    ``?wait=N``: answer once the saga has ended or waits for a person, or after N seconds (at
    most SAGAS_API_WAIT_MAX_SECONDS), with its state then.
    """
    saga = await service.show(saga_id)
    if wait:
        saga, _ = await service.wait(saga, service.wait_seconds(wait), by=caller)
    return saga


@router.post("/sagas/{saga_id}/cancel", response_model=SagaPublic)
async def cancel_saga(
    saga_id: SagaId, service: ServiceDep, caller: Caller, body: CancelRequest = None
) -> SagaPublic:
    """Cancel and compensate; 409 once past the pivot or finished."""
    reason = (body or CancelBody()).reason
    return await service.steer(saga_id, Action.CANCEL, by=caller, reason=reason)


@router.post("/sagas/{saga_id}/approve", response_model=SagaPublic)
async def approve_saga(
    saga_id: SagaId, service: ServiceDep, caller: Caller, body: DecisionRequest = None
) -> SagaPublic:
    """Approve the step that waits for a decision."""
    comment = body.comment if body else None
    return await service.steer(saga_id, Action.APPROVE, by=caller, reason=comment)


@router.post("/sagas/{saga_id}/reject", response_model=SagaPublic)
async def reject_saga(
    saga_id: SagaId, service: ServiceDep, caller: Caller, body: DecisionRequest = None
) -> SagaPublic:
    """Reject the step that waits for a decision: the saga compensates."""
    comment = body.comment if body else None
    return await service.steer(saga_id, Action.REJECT, by=caller, reason=comment)


@router.post("/sagas/compensations/retry", response_model=BulkRetryPublic)
async def retry_parked_sagas(
    query: SagaQuery, service: ServiceDep, caller: Caller
) -> BulkRetryPublic:
    """Retry every parked (``compensation_failed``) saga matching the list's filters."""
    return await service.retry_parked(query, by=caller)


@router.post("/sagas/{saga_id}/compensations/retry", response_model=SagaPublic)
async def retry_compensations(saga_id: SagaId, service: ServiceDep, caller: Caller) -> SagaPublic:
    """Retry the failed compensations of a ``compensation_failed`` saga (else 409)."""
    return await service.steer(saga_id, Action.RETRY_COMPENSATIONS, by=caller)


@router.post("/sagas/{saga_id}/steps/{step}/resolve", response_model=SagaPublic)
async def resolve_step(
    saga_id: SagaId, step: StepName, body: ResolveBody, service: ServiceDep, caller: Caller
) -> SagaPublic:
    """Mark a failed compensation as resolved by hand; the reason is kept."""
    return await service.steer(saga_id, Action.RESOLVE, by=caller, step=step, reason=body.reason)


async def _known_saga(saga_id: SagaId, service: ServiceDep, caller: Caller) -> AsyncIterator[str]:
    """The saga's id once it is known to exist and the stream has its place (api.streams):
    a 404 or a 429 comes before the stream starts; the place is freed when it ends."""
    with service.streams.admit(caller):
        await service.load(saga_id)
        yield saga_id


@router.get(
    "/sagas/{saga_id}/events",
    response_class=EventSourceResponse,
    responses={200: {"description": "`event: saga` with the saga resource, at each change"}},
)
async def saga_events(
    # scope="request": the place is held until the response has been sent, not until the
    # route function returns the stream.
    saga_id: Annotated[str, Depends(_known_saga, scope="request")],
    service: ServiceDep,
    caller: Caller,
) -> AsyncIterator[ServerSentEvent]:
    """Server-sent events: the saga resource each time it changes, until the saga ends.

    FastAPI frames the events and, while nothing changes, sends a keep-alive comment
    (``: ping``) every 15 s so that proxies keep the connection open.
    """
    async with contextlib.aclosing(service.watch(saga_id)) as changes:
        async for saga in changes:
            yield ServerSentEvent(event="saga", data=saga)
