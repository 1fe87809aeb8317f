"""Start, inspect and steer sagas: a thin typed layer over the Temporal client."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import WorkflowIDReusePolicy
from temporalio.contrib.opentelemetry import OpenTelemetryPlugin, TracingInterceptor
from temporalio.converter import DataConverter
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.runtime import Runtime
from temporalio.service import RetryConfig, RPCError, RPCStatusCode

from engine import _registry
from engine._connection import TemporalConnection, explain_failure
from engine._continue import LIMIT_MEMO
from engine._errors import (
    CONFLICT,
    InvalidSagaInput,
    SagaAlreadyExists,
    SagaConflict,
    SagaNotFound,
    TemporalTimeout,
    TemporalUnavailable,
)
from engine._generation_gate import GenerationGate
from engine._ids import SAGA_ID_RULE, is_saga_id
from engine._patches import STATUS_MEMO
from engine._state import (
    FINAL_STATUSES,
    CancelRequest,
    DecisionRequest,
    ResolveRequest,
    SagaState,
    SagaStatus,
)
from engine._tracing import tracing_enabled
from engine.config import get_settings

DEFAULT_TASK_QUEUE = "sagas"


async def connect(
    target: str | TemporalConnection | None = None,
    *,
    namespace: str | None = None,
    runtime: Runtime | None = None,
    data_converter: DataConverter | None = None,
    retry_config: RetryConfig | None = None,
) -> Client:
    """A Temporal client with the pydantic data converter the engine needs.

    ``target`` is an address (plaintext, as the dev server speaks), a
    :class:`TemporalConnection`, or None: then the process's settings say where and how
    (Temporal's own configuration, profiles and ``TEMPORAL_*`` variables, then
    ``SAGAS_TEMPORAL_*``; TLS, mTLS and API keys included).

    With tracing on (:func:`engine.configure_tracing`), the client carries Temporal's
    OpenTelemetry plugin, and so do the workers built on it: the trace context travels from
    the caller through the workflow to every activity. ``data_converter`` defaults to the one
    the process's settings describe (sealed with ``SAGAS_ENCRYPTION_KEY``). ``retry_config``
    is how the SDK retries a call Temporal did not answer (by default for about 10 s).
    """
    settings = get_settings()
    if isinstance(target, TemporalConnection):
        connection = target
    elif target is None:
        connection = settings.temporal_connection()
    else:
        connection = TemporalConnection(address=target)
    if namespace is not None:
        connection = dataclasses.replace(connection, namespace=namespace)
    try:
        return await Client.connect(
            connection.address,
            **connection.client_options(),
            data_converter=data_converter or settings.data_converter(),
            **_tracing_options(),
            runtime=runtime,
            retry_config=retry_config,
        )
    except RuntimeError as exc:
        raise TemporalUnavailable(explain_failure(str(exc), connection)) from None


def _tracing_options() -> dict[str, Any]:
    if not tracing_enabled():
        return {}
    if os.environ.get("SAGAS_TRACING_INTEGRATION") == "interceptor":
        # Temporal's older TracingInterceptor, kept only so that bench/tracing.py can compare
        # its cost: its workflow spans last no time, and step spans do not nest under them.
        return {"interceptors": [TracingInterceptor()]}
    return {"plugins": [OpenTelemetryPlugin(add_temporal_spans=True)]}


class SagaSummary(BaseModel):
    id: str
    type: str
    status: str
    temporal_status: str
    started_at: datetime | None
    closed_at: datetime | None


class SagaClient:
    """Start sagas by type and steer them by id.

    ``rpc_timeout`` bounds each call to Temporal; ``update_timeout`` bounds an operator
    action, which waits until a worker has run it (TemporalTimeout after it: the action may
    still be applied when a worker comes back). None: the SDK's defaults (no bound).

    A saga continues as new when Temporal suggests it or when its history reaches
    ``history_events_limit`` events (default: ``SAGAS_HISTORY_EVENTS_LIMIT``, else Temporal's
    suggestion only), the limit it is started with. Every call here follows the saga's latest
    run: a continued saga is one saga.

    ``workers_generation``: the engine generation (engine._patches) that every worker on the
    task queue runs, when the caller knows it (the testing kit starts its own workers); None:
    asked of Temporal, which lists the queue's pollers (engine._generation_gate).
    """

    def __init__(
        self,
        client: Client,
        *,
        task_queue: str = DEFAULT_TASK_QUEUE,
        rpc_timeout: timedelta | None = None,
        update_timeout: timedelta | None = None,
        history_events_limit: int | None = None,
        workers_generation: int | None = None,
    ) -> None:
        self.client = client
        self.task_queue = task_queue
        self.rpc_timeout = rpc_timeout
        self.update_timeout = update_timeout
        self.history_events_limit = history_events_limit
        self._generation = GenerationGate(client, task_queue, rpc_timeout, known=workers_generation)

    @classmethod
    async def connect(
        cls,
        target: str | TemporalConnection | None = None,
        *,
        namespace: str | None = None,
        task_queue: str = DEFAULT_TASK_QUEUE,
    ) -> SagaClient:
        """Connect as :func:`connect` does (``target`` None: as the settings say)."""
        return cls(await connect(target, namespace=namespace), task_queue=task_queue)

    async def start(
        self,
        saga_type: str,
        input: Any,
        *,
        saga_id: str | None = None,
        memo: dict[str, Any] | None = None,
        task_timeout: timedelta | None = None,
    ) -> str:
        """Validate ``input`` against the saga's model and start the saga; return its id.

        ``memo`` is kept with the workflow (the API records which key started the saga).
        ``task_timeout``: how long a worker has for one of the saga's workflow tasks before
        Temporal hands it to another (None: Temporal's default, 10 s).
        Raises UnknownSagaType, InvalidSagaInput, SagaAlreadyExists, TemporalUnavailable
        (TemporalTimeout: the start may have been accepted).
        """
        definition = _registry.get(saga_type)
        model = definition.validate_input(input)
        if saga_id is not None and not is_saga_id(saga_id):
            raise InvalidSagaInput(
                f"saga_id: {SAGA_ID_RULE}",
                errors=[{"loc": ("saga_id",), "msg": "invalid saga id", "type": "value_error"}],
            )
        saga_id = saga_id or f"{saga_type}-{uuid.uuid4()}"
        limit = self.history_events_limit or get_settings().history_events_limit
        stamp = await self._generation.start_memo(definition.local_steps_named)
        try:
            await self.client.start_workflow(
                saga_type,
                model,
                id=saga_id,
                task_queue=self.task_queue,
                # In the start event, so that every replay of the saga reads the same limit
                # and generation (engine._generation_gate).
                memo={**(memo or {}), **stamp, **({LIMIT_MEMO: limit} if limit else {})} or None,
                # Saga ids are also the root of every idempotency key: never reuse one.
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                task_timeout=task_timeout,
                rpc_timeout=self.rpc_timeout,
            )
        except WorkflowAlreadyStartedError:
            raise SagaAlreadyExists(f"a saga with id {saga_id!r} already exists") from None
        except RPCError as exc:
            raise _map_rpc(exc, saga_id) from None
        return saga_id

    def _handle(self, saga_id: str) -> WorkflowHandle[Any, SagaState]:
        return self.client.get_workflow_handle(saga_id, result_type=SagaState)

    async def state(self, saga_id: str) -> SagaState:
        """The saga's state now: live from a running saga, the final record from a finished one."""
        handle = self._handle(saga_id)
        try:
            description = await handle.describe(rpc_timeout=self.rpc_timeout)
            if description.status == WorkflowExecutionStatus.RUNNING:
                state: SagaState = await handle.query(
                    "state", result_type=SagaState, rpc_timeout=self.rpc_timeout
                )
                return state
            if description.status == WorkflowExecutionStatus.COMPLETED:
                return await handle.result(rpc_timeout=self.rpc_timeout)
        except RPCError as exc:
            raise _map_rpc(exc, saga_id) from None
        # Failed, terminated or timed out at the Temporal level: no saga state was returned.
        error = (description.status.name if description.status else "unknown").lower()
        try:
            await handle.result()
        except WorkflowFailureError as exc:
            error = str(exc.cause or exc)
        return SagaState(
            id=saga_id,
            type=description.workflow_type,
            status=SagaStatus.FAILED,
            input=None,
            error=error,
            started_at=description.start_time,
            updated_at=description.close_time or description.start_time,
        )

    async def result(self, saga_id: str) -> SagaState:
        """Wait until the saga has finished and return its final state.

        A saga in ``compensation_failed`` has not finished: it waits for an operator.
        """
        try:
            return await self._handle(saga_id).result()
        except RPCError as exc:
            raise _map_rpc(exc, saga_id) from None
        except WorkflowFailureError:
            return await self.state(saga_id)

    async def settled(self, saga_id: str, *, timeout: float | None = None) -> SagaState:  # noqa: ASYNC109
        """The saga once it has ended or waits for a person, or after ``timeout`` seconds as
        it is then (None: no bound).

        Without polling: it follows the saga's history through Temporal's long poll, from the
        event it has reached, and reads the state once per workflow task that completes (the
        state changes only then); through each run, when the saga continues as new.
        """
        state = await self.state(saga_id)
        if state.status in _SETTLED:
            return state
        try:
            async with asyncio.timeout(timeout):
                while not await self._follow_run(saga_id):
                    pass  # the run continued as new: follow the next one
                state = await self.state(saga_id)
        except TimeoutError:
            pass
        except RPCError as exc:
            raise _map_rpc(exc, saga_id) from None
        return state

    async def _follow_run(self, saga_id: str) -> bool:
        """Follow the saga's current run until it settles or ends (True), or continues as new
        (False)."""
        described = await self._handle(saga_id).describe(rpc_timeout=self.rpc_timeout)
        # The state read before may be older than this description: read it again, or a change
        # between the two (the saga reaching a person's turn) would be skipped below, and the
        # wait would last to its bound.
        if (await self.state(saga_id)).status in _SETTLED:
            return True
        run = self.client.get_workflow_handle(saga_id, run_id=described.run_id)
        async for event in run.fetch_history_events(wait_new_event=True):
            if event.event_id <= described.history_length:
                continue  # what the state read before already showed
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
                return False
            if event.event_type in _STATE_CHANGES:
                state = await self.state(saga_id)
                if state.status in _SETTLED:
                    return True
        return True

    async def wait_for(
        self,
        saga_id: str,
        *,
        until: SagaStatus | Iterable[SagaStatus] | Callable[[SagaState], bool] | None = None,
        timeout: float = 60.0,  # noqa: ASYNC109 - the bound belongs to the call, as in asyncio.wait_for
        interval: float = 0.2,
    ) -> SagaState:
        """Poll the saga's live state until ``until`` holds, and return that state.

        ``until`` is a status, several statuses, or a check of the state; by default, until
        the saga has settled: finished, or waiting for a person (``awaiting_approval``,
        ``compensation_failed``). Raises ``TimeoutError`` after ``timeout`` seconds, naming
        the status the saga was in.
        """
        done = _condition(until)
        state = await self.state(saga_id)
        try:
            async with asyncio.timeout(timeout):
                while not done(state):
                    await asyncio.sleep(interval)
                    state = await self.state(saga_id)
        except TimeoutError:
            raise TimeoutError(
                f"saga {saga_id!r} did not get there within {timeout:g} s "
                f"(it is {state.status.value})"
            ) from None
        return state

    async def cancel(
        self, saga_id: str, *, reason: str = "cancelled by request", by: str | None = None
    ) -> SagaState:
        return await self._update(saga_id, "cancel", CancelRequest(reason=reason, by=by))

    async def approve(
        self, saga_id: str, *, by: str | None = None, comment: str | None = None
    ) -> SagaState:
        return await self._update(saga_id, "approve", DecisionRequest(by=by, comment=comment))

    async def reject(
        self, saga_id: str, *, by: str | None = None, comment: str | None = None
    ) -> SagaState:
        return await self._update(saga_id, "reject", DecisionRequest(by=by, comment=comment))

    async def retry_compensations(self, saga_id: str) -> SagaState:
        return await self._update(saga_id, "retry_compensations", None)

    async def retry_parked(self, *, saga_type: str | None = None) -> list[str]:
        """Retry the compensations of every parked (compensation_failed) saga on this task
        queue, of one type or all; the ids retried (a saga that left meanwhile is skipped)."""
        retried = []
        async for summary in self.iter(saga_type=saga_type, limit=0, running=True):
            if summary.status != SagaStatus.COMPENSATION_FAILED.value:
                continue
            try:
                await self.retry_compensations(summary.id)
            except SagaConflict:
                continue
            retried.append(summary.id)
        return retried

    async def resolve(
        self, saga_id: str, step: str, *, reason: str, by: str | None = None
    ) -> SagaState:
        return await self._update(
            saga_id, "resolve", ResolveRequest(step=step, reason=reason, by=by)
        )

    async def list(self, *, saga_type: str | None = None, limit: int = 50) -> list[SagaSummary]:
        return [s async for s in self.iter(saga_type=saga_type, limit=limit)]

    async def iter(
        self, *, saga_type: str | None = None, limit: int = 50, running: bool = False
    ) -> AsyncIterator[SagaSummary]:
        """Sagas on this task queue, newest first (``limit`` 0: all; ``running``: open ones)."""
        query = f"TaskQueue = '{self.task_queue}'"
        if running:
            query += " AND ExecutionStatus = 'Running'"
        if saga_type is not None:
            _registry.get(saga_type)  # unknown types are an error, not an empty list
            query += f" AND WorkflowType = '{saga_type}'"
        try:
            async for wf in self.client.list_workflows(query, limit=limit or None):
                memo = await wf.memo()
                temporal_status = (wf.status.name if wf.status else "UNKNOWN").lower()
                yield SagaSummary(
                    id=wf.id,
                    type=wf.workflow_type,
                    # A saga that failed at the Temporal level (bad input, terminated) has no
                    # saga status of its own: show Temporal's.
                    status=_listed_status(memo, temporal_status),
                    temporal_status=temporal_status,
                    started_at=wf.start_time,
                    closed_at=wf.close_time,
                )
        except RPCError as exc:
            raise _map_rpc(exc, "") from None

    async def started_by(self, saga_id: str) -> str | None:
        """The name of the API key that started the saga (kept in its memo), if any."""
        try:
            description = await self._handle(saga_id).describe(rpc_timeout=self.rpc_timeout)
            by = await description.memo_value("started_by", None)
        except RPCError as exc:
            raise _map_rpc(exc, saga_id) from None
        return by if isinstance(by, str) else None

    async def _update(self, saga_id: str, name: str, arg: BaseModel | None) -> SagaState:
        handle = self._handle(saga_id)
        args = [] if arg is None else [arg]
        try:
            # Waits until a worker has run the update: with none polling, for ever.
            state: SagaState = await _bounded(
                handle.execute_update(
                    name, args=args, result_type=SagaState, rpc_timeout=self.rpc_timeout
                ),
                self.update_timeout,
            )
            return state
        except WorkflowUpdateRPCTimeoutOrCancelledError:
            raise TemporalTimeout(TIMEOUT_MESSAGE) from None
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            if isinstance(cause, ApplicationError) and cause.type == CONFLICT:
                raise SagaConflict(cause.message) from None
            raise
        except RPCError as exc:
            raise _map_rpc(exc, saga_id) from None


def _listed_status(memo: Mapping[str, Any], temporal_status: str) -> str:
    """The status a listing shows: the saga's own (its memo), or Temporal's when it has none or
    the workflow closed without the saga ending in one (bad input, terminated, timed out): its
    memo then still says what it was doing, ``running`` from its start. A saga started with the
    generation stamp does not list ``completed``, nor (from generation 2) ``compensated``
    (engine._record): its workflow completed, listed running, or compensating or
    compensation_failed (a saga in either completes only compensated: an operator's resolve
    takes it there from compensation_failed at once)."""
    status = memo.get(STATUS_MEMO)
    if not isinstance(status, str):
        return temporal_status
    if temporal_status == "completed" and status in _COMPENSATING:
        return SagaStatus.COMPENSATED.value
    if temporal_status != "running" and status not in FINAL_STATUSES:
        return temporal_status
    return status


# The listed statuses from which a saga's workflow completes only compensated.
_COMPENSATING = frozenset({SagaStatus.COMPENSATING, SagaStatus.COMPENSATION_FAILED})
# Where a saga stops on its own: finished, or waiting for a person.
_SETTLED = FINAL_STATUSES | {SagaStatus.COMPENSATION_FAILED, SagaStatus.AWAITING_APPROVAL}
#: History events after which a saga's state may have changed: a completed workflow task, or
#: the end of the workflow.
_STATE_CHANGES = frozenset(
    {
        EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
    }
)


def _condition(
    until: SagaStatus | Iterable[SagaStatus] | Callable[[SagaState], bool] | None,
) -> Callable[[SagaState], bool]:
    if until is None:
        return lambda state: state.status in _SETTLED
    if isinstance(until, SagaStatus):
        return lambda state: state.status is until
    if callable(until):
        return until
    statuses = frozenset(until)
    return lambda state: state.status in statuses


async def _bounded(call: Awaitable[SagaState], bound: timedelta | None) -> SagaState:
    if bound is None:
        return await call
    try:
        async with asyncio.timeout(bound.total_seconds()):
            return await call
    except TimeoutError:
        raise TemporalTimeout(TIMEOUT_MESSAGE) from None


# Said to API callers as they are: no address, host name or server message in them.
UNAVAILABLE_MESSAGE = "Temporal is unavailable; try again later"
TIMEOUT_MESSAGE = "Temporal did not answer in time; the request may still take effect"


def _map_rpc(exc: RPCError, saga_id: str) -> Exception:
    if exc.status == RPCStatusCode.NOT_FOUND:
        # An update (cancel, approve...) sent to a saga that ends before it reads it is
        # aborted "by closing workflow": the saga has finished, it was found.
        if "already completed" in exc.message or "closing workflow" in exc.message:
            return SagaConflict(f"saga {saga_id!r} has already finished")
        return SagaNotFound(f"no saga with id {saga_id!r}")
    if exc.status == RPCStatusCode.DEADLINE_EXCEEDED:
        return TemporalTimeout(TIMEOUT_MESSAGE)
    if exc.status == RPCStatusCode.UNAVAILABLE:
        return TemporalUnavailable(UNAVAILABLE_MESSAGE)
    return exc
