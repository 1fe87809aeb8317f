"""Keep the saga store in step with the workflows, off the sagas' critical path.

The saga workflow *publishes* a snapshot of its state at most once per workflow activation in
which something changed (never while replaying). The snapshot goes to the :class:`Projector` of
the worker that runs the task queue, which writes it to the store from its own task, batching
and coalescing: a saga never waits for the database, and a slow or absent database never
slows a saga. Each snapshot carries its history length as revision, so the store keeps the
newest whatever the order of writes.

What a crash can lose (snapshots published but not yet written), the *reconciler* repairs: it
reads sagas the store holds as unfinished and quiet for a while back from Temporal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from temporalio.api.enums.v1 import EventType
from temporalio.api.failure.v1 import Failure
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.exceptions import FailureError
from temporalio.service import RPCError, RPCStatusCode

from engine._continue import revision_base
from engine._state import SagaState, SagaStatus
from engine._store import SagaStore

T = TypeVar("T")

logger = logging.getLogger("engine.projection")

Sink = Callable[[dict[str, Any], int], None]
_sinks: dict[str, Sink] = {}


def listening(task_queue: str) -> bool:
    """Whether a projector takes the queue's snapshots (none with the saga store off)."""
    return task_queue in _sinks


def publish(task_queue: str, snapshot: dict[str, Any], revision: int) -> None:
    """Called by the workflow (any worker thread): hand a snapshot to the queue's projector."""
    sink = _sinks.get(task_queue)
    if sink is not None:
        sink(snapshot, revision)


class Projector:
    """Writes published snapshots to the store; reconciles what was missed."""

    def __init__(
        self,
        store: SagaStore,
        client: Client,
        task_queue: str,
        *,
        reconcile_every: timedelta = timedelta(seconds=30),
        quiet_for: timedelta = timedelta(seconds=20),
        batch_window: timedelta = timedelta(milliseconds=50),
    ) -> None:
        self.store = store
        self.client = client
        self.task_queue = task_queue
        self.reconcile_every = reconcile_every
        self.quiet_for = quiet_for
        self.batch_window = batch_window
        self._pending: dict[str, tuple[dict[str, Any], int]] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._in_threads: set[asyncio.Future[Any]] = set()
        self.written = 0

    # Called from workflow threads.
    def _receive(self, snapshot: dict[str, Any], revision: int) -> None:
        with self._lock:
            known = self._pending.get(snapshot["id"])
            if known is None or known[1] <= revision:
                self._pending[snapshot["id"]] = (snapshot, revision)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Project while the block runs; flush what is pending when it exits."""
        if self.task_queue in _sinks:
            raise RuntimeError(f"task queue {self.task_queue!r} already has a projector here")
        self._loop = asyncio.get_running_loop()
        _sinks[self.task_queue] = self._receive
        tasks = [asyncio.create_task(self._write_forever()),
                 asyncio.create_task(self._reconcile_forever())]  # fmt: skip
        try:
            yield
        finally:
            _sinks.pop(self.task_queue, None)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # A cancelled task leaves its database call running in its thread: wait for it, so
            # that nobody closes the store under a connection still in use.
            await asyncio.gather(*self._in_threads, return_exceptions=True)
            await self.flush()

    async def _in_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn`` in a thread, tracked until it returns even if the caller is cancelled."""
        future = asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs))
        self._in_threads.add(future)
        future.add_done_callback(self._in_threads.discard)
        return await asyncio.shield(future)

    async def flush(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, {}
        if not batch:
            return
        snapshots = list(batch.values())
        try:
            self.written += await self._in_thread(self.store.apply, snapshots)
        except Exception:
            # Keep them (unless something newer arrived meanwhile) and try again later.
            with self._lock:
                for saga_id, (snapshot, rev) in batch.items():
                    known = self._pending.get(saga_id)
                    if known is None or known[1] < rev:
                        self._pending[saga_id] = (snapshot, rev)
            raise

    async def _write_forever(self) -> None:
        backoff = 0.1
        while True:
            await self._wake.wait()
            self._wake.clear()
            # Let a few more changes arrive: one write then carries several sagas, and a saga
            # that moved on twice meanwhile is written once.
            await asyncio.sleep(self.batch_window.total_seconds())
            try:
                await self.flush()
                backoff = 0.1
            except Exception:
                logger.exception("saga store write failed; retrying in %.1f s", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                self._wake.set()

    async def _reconcile_forever(self) -> None:
        while True:
            try:
                await self.reconcile()
            except Exception:
                logger.exception("saga store reconciliation failed")
            await asyncio.sleep(self.reconcile_every.total_seconds())

    async def reconcile(self) -> int:
        """Re-read from Temporal every saga the store holds as unfinished and quiet."""
        before = datetime.now(UTC) - self.quiet_for
        ids = await self._in_thread(self.store.unfinished, updated_before=before)
        snapshots = []
        for saga_id in ids:
            found = await read_from_temporal(self.client, saga_id)
            if found is not None:
                snapshots.append(found)
        if not snapshots:
            return 0
        return await self._in_thread(self.store.apply, snapshots)


async def read_from_temporal(client: Client, saga_id: str) -> tuple[SagaState, int] | None:
    """A saga's state and revision as Temporal holds them; None if Temporal has no such saga."""
    handle = client.get_workflow_handle(saga_id, result_type=SagaState)
    try:
        description = await handle.describe()
        # The latest run's length, above every earlier run's (a saga that continued as new).
        revision = description.history_length + revision_base(await description.memo())
        if description.status == WorkflowExecutionStatus.RUNNING:
            state: SagaState = await handle.query("state", result_type=SagaState)
            return state, revision
        if description.status == WorkflowExecutionStatus.COMPLETED:
            return await handle.result(), revision
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    # Failed at the Temporal level (bad input, terminated, timed out): no saga state exists.
    error = "the saga's workflow ended without a result"
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
            error = await _failure_message(
                client, event.workflow_execution_failed_event_attributes.failure
            )
    state = SagaState(
        id=saga_id,
        type=description.workflow_type,
        status=SagaStatus.FAILED,
        input=None,
        error=error,
        started_at=description.start_time,
        updated_at=description.close_time or description.start_time,
    )
    return state, revision


async def _failure_message(client: Client, failure: Failure) -> str:
    """A failure's message as it was raised: history holds "Encoded failure" in its place when
    encryption is on (``_codec``), and the client's converter opens it."""
    decoded = await client.data_converter.decode_failure(failure)
    return decoded.message if isinstance(decoded, FailureError) else str(decoded)
