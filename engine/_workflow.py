"""The one generic saga workflow: the Temporal side of running a saga.

It is a *dynamic* workflow: the Temporal workflow type is the saga type (``trip_booking``),
so the Temporal UI and visibility show sagas by their business name, and one class runs every
registered definition, declarative or imperative.

The saga's jobs live in modules of their own; this class keeps what Temporal needs on the
workflow class (``run``, the query, the updates and their validators) and the platform
concerns: which definition version a saga runs, cancellation, the deadline.

* ``engine._record``: the saga's state and its publication (memo, metrics, store).
* ``engine._forward``: the forward runner, which writes the undo log.
* ``engine._compensation``: the undo log and the compensation runner.
* ``engine._attempts``: one activity per attempt, retries and backoff.
* ``engine._continue`` and ``engine._carry``: continue-as-new, which keeps a saga's history
  bounded, and the state the next run carries.

The forward phase runs as its own task. ``run`` waits on it together with what can interrupt
it (a cancel request, the deadline, a Temporal cancellation) and decides what an interruption
means: before the pivot it cancels the forward task and compensates; once the pivot has
started it is refused (DESIGN.md, "Execution rules").
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Awaitable, Sequence
from typing import Any, NoReturn, TypeVar

from temporalio import workflow
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from engine import _carry, _metrics, _registry
    from engine._compensation import CompensationRunner, UndoLog
    from engine._continue import BASE_MEMO, LIMIT_MEMO, Continuation
    from engine._definition import SagaDefinition
    from engine._errors import CONFLICT, INVALID_INPUT, StepFailed
    from engine._forward import ForwardRunner
    from engine._record import SagaRecord
    from engine._state import (
        CancelRequest,
        CompensationStatus,
        Decision,
        DecisionRequest,
        ResolveRequest,
        SagaState,
        SagaStatus,
        StepStatus,
    )

T = TypeVar("T")


@workflow.defn(dynamic=True)
class SagaWorkflow:
    def __init__(self) -> None:
        self._record = SagaRecord()
        self._log = UndoLog()
        self._compensation = CompensationRunner(self._record, self._log)
        self._forward: ForwardRunner | None = None
        # Read by the attempt loops (engine._continue.attempt_loop).
        self.continuation = Continuation()

    @workflow.run
    async def run(self, args: Sequence[RawValue]) -> SagaState:
        record = self._record
        # The state of the saga's previous run, when it continued as new (engine._carry).
        carry = None
        if len(args) > 1:
            carry = workflow.payload_converter().from_payload(args[1].payload, _carry.Carry)
        definition = self._load_definition(carry.version if carry else None)
        try:
            raw = args[0].payload if args else None
            payload = workflow.payload_converter().from_payload(raw) if raw else {}
            record.input = definition.validate_input(payload)
        except Exception as exc:
            raise ApplicationError(str(exc), type=INVALID_INPUT, non_retryable=True) from None
        compensation = self._compensation
        self._forward = ForwardRunner(
            definition,
            record,
            self._log,
            undo_now=compensation.undo_failed_optional,
            undo_replaced=compensation.undo_replaced_action,
        )
        if carry is None:
            for state in definition.initial_step_states(record.saga_id):
                record.steps[state.name] = state
            _metrics.saga_started(record.saga_type)
        else:
            self._forward.resume, loops = _carry.restore(carry, record)
            self._forward.decisions.update(carry.decisions)
            self.continuation.resumed = loops
        self.continuation.limit = workflow.memo_value(LIMIT_MEMO, None, type_hint=int)
        record.publish_soon()

        forward = asyncio.create_task(definition.forward(self._forward))
        self.continuation.enabled = True
        await self._wait_for_forward(forward, definition)
        if not forward.done():  # its loops parked: they end with this run
            self._continue_as_new(definition.version, carry.runs if carry else 0)
        self.continuation.stop()
        if forward.cancelled() or forward.exception() is not None:
            record.error = self._describe_forward_failure(forward)
            if record.past_pivot:
                # Only imperative code can get here (retriable steps never fail): a bug in the
                # saga code after the point of no return. Fail the task so Temporal retries it
                # and the saga resumes once the code is fixed; never compensate past the pivot.
                cause = forward.exception() if not forward.cancelled() else None
                raise RuntimeError(f"saga failed after its pivot: {record.error}") from cause
            await _uncancellable(self._compensation.settle())
        else:
            record.set_phase(SagaStatus.COMPLETED)
        await workflow.wait_condition(workflow.all_handlers_finished)
        record.publish_now()  # the final state, before the workflow completes
        return record.snapshot()

    def _load_definition(self, version: int | None) -> SagaDefinition[Any]:
        saga_type = self._record.saga_type
        versions = _registry.versions(saga_type)
        if not versions:
            # A task failure, not a workflow failure: Temporal retries the task, so a worker
            # that does know this saga type (or a fixed deployment) picks the saga up.
            raise RuntimeError(f"saga type {saga_type!r} is not registered on this worker")
        if version is None:
            return pin_definition(versions)
        # A continued saga keeps the version its first run pinned.
        for definition in versions:
            if definition.version == version:
                return definition
        raise RuntimeError(f"saga {saga_type!r} version {version} is not registered on this worker")

    def _continue_as_new(self, version: int, runs: int) -> NoReturn:
        """End this run and go on in a new one of the same saga, with the state carried."""
        record = self._record
        assert self._forward is not None
        carry = _carry.capture(
            record,
            self._log,
            decisions=self._forward.decisions,
            loops=self.continuation.loops,
            version=version,
            runs=runs,
            history_length=workflow.info().get_current_history_length(),
        )
        self.continuation.end_parked_spans()
        workflow.logger.info(
            "saga continues as new",
            extra={
                "history_length": workflow.info().get_current_history_length(),
                "runs": carry.runs,
            },
        )
        workflow.continue_as_new(
            args=[record.input, carry],
            workflow=record.saga_type,
            memo={**workflow.memo(), BASE_MEMO: carry.revision_base},
        )

    async def _wait_for_forward(
        self, forward: asyncio.Task[None], definition: SagaDefinition[Any]
    ) -> None:
        """Wait for the forward phase, turning cancel requests and the deadline into a cancel."""
        record = self._record
        deadline = None
        if definition.deadline is not None:
            deadline = record.started_at + definition.deadline
        while not forward.done():
            timeout = None
            if deadline is not None and not record.pivot_started:
                timeout = max((deadline - workflow.now()).total_seconds(), 0.001)
            try:
                await workflow.wait_condition(
                    lambda: (
                        forward.done() or record.cancel is not None or self.continuation.ready()
                    ),
                    timeout=timeout,
                )
            except builtins.TimeoutError:
                if not record.pivot_started and record.cancel is None:
                    record.cancel = CancelRequest(reason="deadline exceeded")
                deadline = None
            except asyncio.CancelledError:
                # Cancelled through Temporal (UI, CLI or SDK) rather than our cancel update.
                if record.pivot_started:
                    workflow.logger.warning("cancellation refused: the saga is past its pivot")
                elif record.cancel is None:
                    record.cancel = CancelRequest(reason="cancelled through Temporal")
            if record.cancel is not None and not forward.done():
                if record.pivot_started:
                    record.cancel = None  # refused; the update validator says why
                    continue
                self.continuation.stop()
                forward.cancel()
                # Let running activities acknowledge their cancellation before compensating.
                await workflow.wait([forward])
            elif not forward.done() and self.continuation.ready():
                return  # the forward phase goes on in the next run (see run)

    def _describe_forward_failure(self, forward: asyncio.Task[None]) -> str:
        if forward.cancelled():
            cancel = self._record.cancel
            return cancel.reason if cancel else "cancelled"
        exc = forward.exception()
        if isinstance(exc, StepFailed | ApplicationError):
            return str(exc)
        # Anything else is a bug in saga code: let Temporal fail the task (and retry it).
        assert exc is not None
        raise exc

    # ------------------------------------------------------------ handlers

    @workflow.query
    def state(self) -> SagaState:
        return self._record.snapshot()

    @workflow.update
    def cancel(self, request: CancelRequest) -> SagaState:
        self._record.cancel = request
        self._record.changed()
        return self._record.snapshot()

    @cancel.validator
    def _validate_cancel(self, request: CancelRequest) -> None:
        record = self._record
        if record.phase is not SagaStatus.RUNNING:
            raise _conflict(f"the saga is already {record.phase.value}")
        if record.past_pivot:
            raise _conflict("the saga is past its pivot step and can only go forward")
        if record.pivot_started:
            raise _conflict(
                "the saga is at its point of no return (its pivot or a retriable step has "
                "started); it can only go forward"
            )
        if record.cancel is not None:
            raise _conflict(f"a cancellation is already under way ({record.cancel.reason})")

    @workflow.update
    async def approve(self, request: DecisionRequest) -> SagaState:
        return await self._decide(request, approved=True)

    @approve.validator
    def _validate_approve(self, request: DecisionRequest) -> None:
        self._awaiting_step()

    @workflow.update
    async def reject(self, request: DecisionRequest) -> SagaState:
        return await self._decide(request, approved=False)

    @reject.validator
    def _validate_reject(self, request: DecisionRequest) -> None:
        self._awaiting_step()

    @workflow.update
    async def retry_compensations(self) -> SagaState:
        self._compensation.retry_requested = True
        self._record.changed()
        # Answer once the compensation loop has taken the request (the saga is compensating
        # again), so the caller never sees the state it has just asked to leave.
        await workflow.wait_condition(lambda: not self._compensation.retry_requested)
        return self._record.snapshot()

    @retry_compensations.validator
    def _validate_retry(self) -> None:
        phase = self._record.phase
        if phase is not SagaStatus.COMPENSATION_FAILED:
            raise _conflict(
                f"only a compensation_failed saga can retry compensations "
                f"(this one is {phase.value})"
            )

    @workflow.update
    async def resolve(self, request: ResolveRequest) -> SagaState:
        record = self._record
        state = record.steps[request.step]
        comp = state.compensation
        assert comp is not None
        comp.status = CompensationStatus.RESOLVED
        comp.resolution = request.reason
        comp.resolved_by = request.by
        comp.ended_at = workflow.now()
        record.set_step(state, StepStatus.RESOLVED)
        # Resolving the last failed compensation settles the saga (compensated); answer with
        # that status rather than the compensation_failed it is about to leave.
        await workflow.wait_condition(
            lambda: (
                record.phase is not SagaStatus.COMPENSATION_FAILED
                or any(s.status is StepStatus.COMPENSATION_FAILED for s in record.steps.values())
            )
        )
        return record.snapshot()

    @resolve.validator
    def _validate_resolve(self, request: ResolveRequest) -> None:
        state = self._record.steps.get(request.step)
        if state is None:
            raise _conflict(f"the saga has no step {request.step!r}")
        if state.status is not StepStatus.COMPENSATION_FAILED:
            raise _conflict(
                f"step {request.step!r} is {state.status.value}; only a step whose "
                "compensation failed can be resolved"
            )

    async def _decide(self, request: DecisionRequest, *, approved: bool) -> SagaState:
        step = self._awaiting_step()
        assert self._forward is not None  # a step awaits a decision: the forward phase runs
        self._forward.decisions[step] = Decision(
            approved=approved, by=request.by, comment=request.comment, at=workflow.now()
        )
        self._record.changed()
        # Answer once the step has taken the decision, so the caller sees the saga moving on
        # (running again, or the step failed by the rejection), not still awaiting approval.
        await workflow.wait_condition(lambda: step not in self._record.awaiting)
        return self._record.snapshot()

    def _awaiting_step(self) -> str:
        awaiting = self._record.awaiting
        if not awaiting:
            raise _conflict("no step of this saga is waiting for approval")
        if len(awaiting) > 1:
            raise _conflict(f"several steps await approval: {', '.join(awaiting)}")
        return awaiting[0]


def _conflict(message: str) -> ApplicationError:
    return ApplicationError(message, type=CONFLICT, non_retryable=True)


async def _uncancellable(coro: Awaitable[T]) -> T:
    """Run ``coro`` to the end even if the workflow is cancelled meanwhile."""
    task: asyncio.Task[T] = asyncio.ensure_future(coro)
    while True:
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():
                raise
            workflow.logger.warning("cancellation ignored while compensating")


def pin_definition(versions: Sequence[SagaDefinition[Any]]) -> SagaDefinition[Any]:
    """The version of the definition this saga runs, for its whole life (newest first given).

    A new saga takes the newest version and, when older ones are registered beside it, leaves
    a patch marker naming it in its history. Replaying, ``workflow.patched`` is true only for
    the marker the history holds, so a saga keeps the version it started with however many
    newer ones have rolled out since. No marker found: the saga started when only the oldest
    registered version existed (or before versions did), and that is the one it runs.
    """
    for definition in versions[:-1]:
        if workflow.patched(f"saga-definition-v{definition.version}"):
            return definition
    return versions[-1]
