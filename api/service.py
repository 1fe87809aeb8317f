"""The API's use cases: start a saga, load it, steer it, list and watch it.

Routes translate HTTP to these calls and back; everything here speaks engine and API models.
A saga is read from the store, and from Temporal (then stored) when the store does not hold
it yet; operator actions go to the saga's workflow and are recorded in the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import uuid
from collections.abc import AsyncGenerator, Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

from temporalio.converter import PayloadCodec
from temporalio.service import RPCError, RPCStatusCode

from api.metrics import ApiMetrics
from api.models import BulkRetryPublic, SagaFilters, SagaPage, SagaPublic
from api.presenter import saga_public
from api.roles import FourEyes
from api.streams import Look, StreamHub, TooManyStreams
from engine import (
    SagaAlreadyExists,
    SagaClient,
    SagaConflict,
    SagaError,
    SagaNotFound,
    SagaState,
    SagaStatus,
    TemporalUnavailable,
)
from engine._client import TIMEOUT_MESSAGE
from engine._errors import InvalidRequest, TemporalTimeout
from engine.config import Settings
from engine.store import OperatorAction, SagaStore, StoredSaga, read_from_temporal
from engine.telemetry import current_trace_id
from engine.worker import get_definition

T = TypeVar("T")


class Action(StrEnum):
    """What an operator can do to a saga; the value is what the store and metrics record."""

    CANCEL = "cancel"
    APPROVE = "approve"
    REJECT = "reject"
    RETRY_COMPENSATIONS = "retry_compensations"
    RESOLVE = "resolve"


@dataclass
class SagaService:
    """The use cases over the Temporal client, the saga store and the API's metrics.

    One per app, built by its lifespan from the settings (tests may pass their own).
    """

    settings: Settings
    sagas: SagaClient
    store: SagaStore
    metrics: ApiMetrics
    #: Open event streams and their pollers (api.streams).
    streams: StreamHub = field(init=False)

    def __post_init__(self) -> None:
        self.streams = StreamHub(
            self._look,
            poll_seconds=self.settings.events_poll_seconds,
            max_seconds=self.settings.events_max_seconds,
            max_streams=self.settings.events_max_streams,
            max_per_key=self.settings.events_max_streams_per_key,
        )

    async def _deadline(self, call: Awaitable[T]) -> T:
        """``call`` (to Temporal) bounded by SAGAS_API_TEMPORAL_TIMEOUT_SECONDS: 504 past it."""
        try:
            async with asyncio.timeout(self.settings.api_temporal_timeout_seconds):
                return await call
        except TimeoutError:
            raise TemporalTimeout(TIMEOUT_MESSAGE) from None

    @property
    def codec(self) -> PayloadCodec | None:
        """The payload codec the engine seals with (None: no encryption key configured)."""
        return self.sagas.client.data_converter.payload_codec

    async def start(
        self, saga_type: str, body: dict[str, Any], *, key: str | None, by: str = "anonymous"
    ) -> tuple[SagaPublic, bool]:
        """Start a saga, or find the one ``key`` started before; (the saga, whether new).

        ``by`` (the API key's name) is kept in the saga's memo, for the four-eyes rule.
        """
        definition = get_definition(saga_type)
        check_input_size(body, definition.max_input_bytes or self.settings.max_input_bytes)
        model = definition.validate_input(body)
        input_json = model.model_dump(mode="json")
        now, trace_id = datetime.now(UTC), current_trace_id()
        saga_id, created = await asyncio.to_thread(
            self.store.claim,
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
            await self._deadline(
                self.sagas.start(saga_type, model, saga_id=saga_id, memo={"started_by": by})
            )
        except SagaAlreadyExists:
            pass
        except Exception as exc:
            # A start that may have been accepted keeps its key: the client's retry with the
            # same key finds this saga (and starts it if it was not) instead of a second one.
            if created and (key is None or start_refused(exc)):
                await asyncio.to_thread(self.store.forget, saga_id, key)
            raise
        if not created:
            return await self.show(saga_id), False
        self.metrics.started.labels(saga_type).inc()
        # What the store now holds, without reading it back: the start path stays short.
        state = SagaState(
            id=saga_id,
            type=saga_type,
            status=SagaStatus.RUNNING,
            input=input_json,
            started_at=now,
            updated_at=now,
        )
        return self.present(StoredSaga(state, trace_id, now, revision=0)), True

    async def load(self, saga_id: str) -> StoredSaga:
        """The saga from the store; from Temporal (and then stored) if the store lacks it."""
        found = await asyncio.to_thread(self.store.get, saga_id)
        if found is not None:
            return found
        live = await self._deadline(read_from_temporal(self.sagas.client, saga_id))
        if live is None:
            raise SagaNotFound(f"no saga with id {saga_id!r}")
        await asyncio.to_thread(self.store.apply, [live])
        found = await asyncio.to_thread(self.store.get, saga_id)
        assert found is not None
        return found

    async def show(self, saga_id: str, *, fresher: SagaState | None = None) -> SagaPublic:
        """The saga resource; ``fresher`` is a state just returned by the saga itself."""
        stored = await self.load(saga_id)
        actions = await asyncio.to_thread(self.store.actions, saga_id)
        return self.present(stored, actions, fresher=fresher)

    async def page(self, filters: SagaFilters) -> SagaPage:
        """A page of sagas, newest first."""
        page = await asyncio.to_thread(lambda: self.store.page(**filters.page_query()))
        return SagaPage(
            items=[self.present(item) for item in page.items], next_cursor=page.next_cursor
        )

    async def steer(
        self,
        saga_id: str,
        action: Action,
        *,
        by: str,
        step: str | None = None,
        reason: str | None = None,
    ) -> SagaPublic:
        """Send an operator's action to the saga, record it, and answer the saga after it.

        ``reason`` is the cancel reason, the decision's comment or the resolution; for a
        decision, the step recorded is the one that it was for.
        """
        await self.load(saga_id)  # 404 for an unknown saga before Temporal is asked
        if action is Action.APPROVE and self.settings.api_four_eyes:
            await self._check_four_eyes(saga_id, by)
        state = await self._send(saga_id, action, by=by, step=step, reason=reason)
        if action in (Action.APPROVE, Action.REJECT):
            step = _decided(state)
        await asyncio.to_thread(
            self.store.record_action, saga_id, action.value, actor=by, step=step, reason=reason
        )
        self.metrics.actions.labels(action.value).inc()
        return await self.show(saga_id, fresher=state)

    async def retry_parked(self, filters: SagaFilters, *, by: str) -> BulkRetryPublic:
        """Retry the compensations of every parked saga that matches the list's filters.

        After an outage, one call instead of one per saga; ``limit`` and ``cursor`` do not
        apply: every match is retried, each recorded as the caller's action.
        """
        parked = SagaStatus.COMPENSATION_FAILED
        if filters.status not in (None, parked):
            message = f"only {parked.value} sagas can be retried"
            raise InvalidRequest(message, errors=[{"loc": ("query", "status"), "msg": message}])
        retried: list[str] = []
        skipped, cursor = 0, None
        while True:
            page = await asyncio.to_thread(
                self.store.page,
                saga_type=filters.type,
                status=parked.value,
                created_after=filters.created_after,
                created_before=filters.created_before,
                limit=200,
                cursor=cursor,
            )
            for item in page.items:
                saga_id = item.state.id
                try:
                    await self.sagas.retry_compensations(saga_id)
                except SagaConflict:
                    skipped += 1
                    continue
                await asyncio.to_thread(
                    self.store.record_action, saga_id, Action.RETRY_COMPENSATIONS.value, actor=by
                )
                self.metrics.actions.labels(Action.RETRY_COMPENSATIONS.value).inc()
                retried.append(saga_id)
            if page.next_cursor is None:
                return BulkRetryPublic(retried=len(retried), saga_ids=retried, skipped=skipped)
            cursor = page.next_cursor

    async def _check_four_eyes(self, saga_id: str, by: str) -> None:
        if await self._deadline(self.sagas.started_by(saga_id)) == by:
            raise FourEyes("four eyes: the key that started this saga may not approve it")

    async def _send(
        self, saga_id: str, action: Action, *, by: str, step: str | None, reason: str | None
    ) -> SagaState:
        match action:
            case Action.CANCEL:
                assert reason is not None, "a cancellation has a reason"
                return await self.sagas.cancel(saga_id, reason=reason, by=by)
            case Action.APPROVE:
                return await self.sagas.approve(saga_id, by=by, comment=reason)
            case Action.REJECT:
                return await self.sagas.reject(saga_id, by=by, comment=reason)
            case Action.RETRY_COMPENSATIONS:
                return await self.sagas.retry_compensations(saga_id)
            case Action.RESOLVE:
                assert step is not None, "a resolution names the step"
                assert reason is not None, "a resolution has a reason"
                return await self.sagas.resolve(saga_id, step, reason=reason, by=by)

    def watch(self, saga_id: str) -> AsyncGenerator[SagaPublic, None]:
        """The saga each time it changes, until it ends (or after ``events_max_seconds``).

        Every stream of one saga shares one poller (api.streams).
        """
        return self.streams.follow(saga_id)

    async def wait(self, saga: SagaPublic, seconds: float, *, by: str) -> tuple[SagaPublic, bool]:
        """The saga once it is settled (final, or waiting for a person), or after ``seconds``
        (cut to SAGAS_API_WAIT_MAX_SECONDS) as it is then. ``saga`` is its state now; the
        flag is false when the wait was not granted (no place left).

        Through the saga's shared poller (api.streams): no store polling per waiting request.
        A waiter holds a place as an event stream does (SAGAS_EVENTS_MAX_STREAMS, and per key
        SAGAS_EVENTS_MAX_STREAMS_PER_KEY): with none left, the answer comes at once (a wait
        is a preference: a start has happened either way).
        A workflow update that waits would answer sooner but write two events per waiter into
        the saga's history (Temporal also bounds the updates in flight per workflow), and it
        could not answer for a saga that has ended.
        """
        if settled(saga) or seconds <= 0:
            return saga, True
        with contextlib.ExitStack() as place:
            try:
                place.enter_context(self.streams.admit(by))
            except TooManyStreams:
                return saga, False
            seen = await self.streams.wait(saga.id, seconds, settled)
        return (seen if seen is not None else saga), True

    def wait_seconds(self, asked: float) -> float:
        """The wait applied for ``asked`` seconds: at most SAGAS_API_WAIT_MAX_SECONDS."""
        return max(0.0, min(asked, self.settings.api_wait_max_seconds))

    def _look(self, saga_id: str) -> Look | None:
        """A poller's look at the saga in the store (blocking: on the hub's own threads)."""
        stored = self.store.get(saga_id)
        if stored is None:
            return None
        saga = self.present(stored, self.store.actions(saga_id))
        seen = (stored.revision, stored.state.status, stored.state.updated_at, len(saga.actions))
        return Look(saga, seen, stored.state.status.is_final)

    async def readiness(self) -> dict[str, str]:
        """Whether Temporal and the database answer within 3 s: "ok" or why not, by name."""
        return {
            "temporal": await _check(self.sagas.client.service_client.check_health()),
            "database": await _check(asyncio.to_thread(self.store.ping)),
        }

    def present(
        self,
        stored: StoredSaga,
        actions: Sequence[OperatorAction] = (),
        *,
        fresher: SagaState | None = None,
    ) -> SagaPublic:
        """The saga resource, with this API's links."""
        return saga_public(stored, actions, settings=self.settings, fresher=fresher)


class InputTooLarge(SagaError):
    http_status = 413
    code = "input_too_large"


def check_input_size(body: Any, limit: int) -> None:
    """InputTooLarge if ``body`` as compact JSON is over ``limit`` bytes."""
    size = len(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode())
    if size > limit:
        raise InputTooLarge(f"the input is {size} bytes as JSON; this saga type takes {limit}")


#: Refusals that mean Temporal did not start the workflow (anything else might have).
_REFUSED = frozenset(
    {
        RPCStatusCode.INVALID_ARGUMENT,
        RPCStatusCode.FAILED_PRECONDITION,
        RPCStatusCode.PERMISSION_DENIED,
        RPCStatusCode.UNAUTHENTICATED,
        RPCStatusCode.NOT_FOUND,
        RPCStatusCode.RESOURCE_EXHAUSTED,
        RPCStatusCode.OUT_OF_RANGE,
        RPCStatusCode.UNIMPLEMENTED,
    }
)


def start_refused(exc: BaseException) -> bool:
    """Whether a failed start was refused for sure (else it may have been accepted)."""
    if isinstance(exc, RPCError):
        return exc.status in _REFUSED
    # Ours before anything was sent (an invalid input...), but not a lost answer.
    return isinstance(exc, SagaError) and not isinstance(exc, TemporalUnavailable)


def fingerprint(saga_type: str, input: Any) -> str:
    """What an idempotency key is bound to: the saga type and its input, canonical JSON."""
    canonical = json.dumps([saga_type, input], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


#: Statuses a saga stays in until a person acts: a wait answers with them.
_FOR_A_PERSON = frozenset({SagaStatus.AWAITING_APPROVAL, SagaStatus.COMPENSATION_FAILED})


def settled(saga: SagaPublic) -> bool:
    """Whether a wait is over: the saga has ended or waits for a person."""
    return saga.status.is_final or saga.status in _FOR_A_PERSON


def _decided(state: SagaState) -> str | None:
    """The step that the decision just returned in ``state`` was for: the latest decided."""
    decided = [(s.approval.at, s.name) for s in state.steps if s.approval and s.approval.at]
    return max(decided)[1] if decided else None


async def _check(answer: Awaitable[object]) -> str:
    try:
        await asyncio.wait_for(answer, timeout=3)
    except Exception as exc:
        return f"unreachable: {type(exc).__name__}"
    return "ok"
