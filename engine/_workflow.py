"""The one generic saga workflow.

It is a *dynamic* workflow: the Temporal workflow type is the saga type (``trip_booking``),
so the Temporal UI and visibility show sagas by their business name, and one class runs every
registered definition, declarative or imperative.

How it is put together (the reasons are in DESIGN.md, "Execution rules"):

* The forward phase runs as its own task. ``run`` waits on it together with the things that
  can interrupt it (a cancel request, the deadline, a Temporal cancellation) and decides what
  an interruption means: before the pivot it cancels the forward task and compensates; once
  the pivot has started it is refused.
* Each step's attempts are driven here, one Temporal activity per attempt, with the step's
  retry policy applied by the workflow. That is what lets the live state show attempts and the
  last error while a step is still being retried, and lets a compensation that gives up stay
  repairable: an operator's retry starts a fresh budget of attempts.
* Steps are compensated in reverse order of the *start* of their stage ("units"); the steps of
  one parallel stage are compensated concurrently. A compensation that keeps failing does not
  block the earlier ones: every other effect is undone, and the saga waits in
  ``compensation_failed`` with exactly the failed steps left for an operator.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    TimeoutError,
    is_cancelled_exception,
)

with workflow.unsafe.imports_passed_through():
    from opentelemetry.trace import INVALID_SPAN_CONTEXT, Span, SpanContext

    from engine import _metrics, _projection, _registry
    from engine._definition import (
        DEFAULT_COMPENSATION_RETRY,
        ImperativeSaga,
        Parallel,
        Saga,
        SagaDefinition,
        Step,
        StepKind,
    )
    from engine._errors import StepFailed
    from engine._imperative import SagaRun
    from engine._logging import redact_text
    from engine._state import (
        CancelRequest,
        Compensation,
        CompensationState,
        CompensationStatus,
        Decision,
        DecisionRequest,
        ResolveRequest,
        SagaState,
        SagaStatus,
        StepState,
        StepStatus,
    )
    from engine._step_info import COMPENSATION, FORWARD, activity_id_for, idempotency_key_for
    from engine._tracing import record_failed_attempt, saga_span, set_outcome

T = TypeVar("T")

# Statuses counted by the sagas_ended metric: the final ones, and compensation_failed (the
# saga stays open, but an operator must act).
_COUNTED_STATUSES = frozenset(
    {
        SagaStatus.COMPLETED,
        SagaStatus.COMPENSATED,
        SagaStatus.FAILED,
        SagaStatus.COMPENSATION_FAILED,
    }
)

# Error types that the engine's workflow raises for the client to map back to SagaError.
CONFLICT = "SagaConflict"
INVALID_INPUT = "InvalidSagaInput"


@dataclass
class _Started:
    """A step whose action was started, kept for compensation."""

    step: Step
    arg: Any
    state: StepState
    output: Any = None
    definitely_failed: bool = False  # a business refusal: nothing took effect, nothing to undo
    span_context: SpanContext = INVALID_SPAN_CONTEXT  # of the step's span, for the undo's link

    @property
    def needs_compensation(self) -> bool:
        return self.step.compensate is not None and not self.definitely_failed


@dataclass
class _Unit:
    """The steps of one stage, compensated together."""

    started: list[_Started] = field(default_factory=list)


class _GaveUp(Exception):
    def __init__(self, message: str, *, business_refusal: bool) -> None:
        super().__init__(message)
        self.business_refusal = business_refusal


@workflow.defn(dynamic=True)
class SagaWorkflow:
    def __init__(self) -> None:
        self._definition: SagaDefinition[Any] | None = None
        self._input: Any = None
        self._state: SagaState | None = None
        self._steps: dict[str, StepState] = {}
        self._results: dict[str, Any] = {}
        self._units: list[_Unit] = []
        self._phase = SagaStatus.RUNNING
        self._cancel: CancelRequest | None = None
        self._pivot_started = False
        self._past_pivot = False
        self._awaiting: list[str] = []
        self._decisions: dict[str, Decision] = {}
        self._retry_requested = False
        self._error: str | None = None
        self._started_at: datetime | None = None
        self._updated_at: datetime | None = None
        self._listed_status: SagaStatus | None = None
        self._publish_scheduled = False

    # ------------------------------------------------------------------ run

    @workflow.run
    async def run(self, args: Sequence[RawValue]) -> SagaState:
        info = workflow.info()
        versions = _registry.versions(info.workflow_type)
        if not versions:
            # A task failure, not a workflow failure: Temporal retries the task, so a worker
            # that does know this saga type (or a fixed deployment) picks the saga up.
            raise RuntimeError(f"saga type {info.workflow_type!r} is not registered on this worker")
        definition = _pin_definition(versions)
        self._definition = definition
        self._started_at = self._updated_at = workflow.now()
        try:
            raw = args[0].payload if args else None
            payload = workflow.payload_converter().from_payload(raw) if raw else {}
            self._input = definition.validate_input(payload)
        except Exception as exc:
            raise ApplicationError(str(exc), type=INVALID_INPUT, non_retryable=True) from None
        if isinstance(definition, Saga):
            for step in definition.steps:
                self._add_step_state(step)
        _metrics.saga_started(info.workflow_type)
        self._schedule_publish()

        forward = asyncio.create_task(self._forward())
        await self._wait_for_forward(forward)
        if forward.cancelled() or forward.exception() is not None:
            self._error = self._describe_forward_failure(forward)
            if self._past_pivot:
                # Only imperative code can get here (retriable steps never fail): a bug in the
                # saga code after the point of no return. Fail the task so Temporal retries it
                # and the saga resumes once the code is fixed; never compensate past the pivot.
                cause = forward.exception() if not forward.cancelled() else None
                raise RuntimeError(f"saga failed after its pivot: {self._error}") from cause
            await self._uncancellable(self._compensate_until_settled())
        else:
            self._phase = SagaStatus.COMPLETED
            self._touch()
        await workflow.wait_condition(workflow.all_handlers_finished)
        self._publish()  # the final state, before the workflow completes
        return self._snapshot()

    async def _forward(self) -> None:
        definition = self._definition
        if isinstance(definition, Saga):
            for stage in definition.stages:
                steps = stage.steps if isinstance(stage, Parallel) else (stage,)
                await self.run_stage(steps)
        elif isinstance(definition, ImperativeSaga):
            await definition.run(SagaRun(self))

    async def _wait_for_forward(self, forward: asyncio.Task[None]) -> None:
        """Wait for the forward phase, turning cancel requests and the deadline into a cancel."""
        deadline = None
        if self._definition is not None and self._definition.deadline is not None:
            assert self._started_at is not None
            deadline = self._started_at + self._definition.deadline
        while not forward.done():
            timeout = None
            if deadline is not None and not self._pivot_started:
                timeout = max((deadline - workflow.now()).total_seconds(), 0.001)
            try:
                await workflow.wait_condition(
                    lambda: forward.done() or self._cancel is not None, timeout=timeout
                )
            except builtins.TimeoutError:
                if not self._pivot_started and self._cancel is None:
                    self._cancel = CancelRequest(reason="deadline exceeded")
                deadline = None
            except asyncio.CancelledError:
                # Cancelled through Temporal (UI, CLI or SDK) rather than our cancel update.
                if self._pivot_started:
                    workflow.logger.warning("cancellation refused: the saga is past its pivot")
                elif self._cancel is None:
                    self._cancel = CancelRequest(reason="cancelled through Temporal")
            if self._cancel is not None and not forward.done():
                if self._pivot_started:
                    self._cancel = None  # refused; the update validator says why
                    continue
                forward.cancel()
                # Let running activities acknowledge their cancellation before compensating.
                await asyncio.wait([forward])

    def _describe_forward_failure(self, forward: asyncio.Task[None]) -> str:
        if forward.cancelled():
            return self._cancel.reason if self._cancel else "cancelled"
        exc = forward.exception()
        if isinstance(exc, StepFailed | ApplicationError):
            return str(exc)
        # Anything else is a bug in saga code: let Temporal fail the task (and retry it).
        assert exc is not None
        raise exc

    # ------------------------------------------------------------ forward

    async def run_stage(self, steps: Sequence[Step]) -> list[Any]:
        """Run one stage (a step or a parallel group); raise StepFailed if any step failed.

        A failed step does not cancel its running siblings: they finish, and whatever they did
        is compensated with the rest. The caller's cancellation does cancel them.
        """
        unit = _Unit()
        self._units.append(unit)
        tasks = [asyncio.create_task(self._run_step(step, unit)) for step in steps]
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return list(outcomes)

    async def _run_step(self, step: Step, unit: _Unit) -> Any:
        name = step.step_name
        state = self._steps.get(name) or self._add_step_state(step)
        if not step.should_run(self._input, self._results):
            self._set_step(state, StepStatus.SKIPPED)
            return None
        if step.approval is not None and step.approval.required(self._input, self._results):
            await self._wait_for_approval(step, state)
        arg = step.action_input(self._input, self._results)
        if step.pivot:
            self._pivot_started = True
        started = _Started(step=step, arg=arg, state=state)
        unit.started.append(started)
        state.started_at = workflow.now()
        self._set_step(state, StepStatus.RUNNING)
        with self._span(name, FORWARD) as span:
            started.span_context = span.get_span_context()
            try:
                output = await self._attempts(
                    step.action,
                    arg,
                    step=step,
                    phase=FORWARD,
                    policy=step.retry_policy,
                    counter=state,
                    budget=step.schedule_to_close,
                    give_up_on_refusal=step.kind is not StepKind.RETRIABLE,
                    span=span,
                )
            except _GaveUp as exc:
                started.definitely_failed = exc.business_refusal
                self._end_step(state, StepStatus.FAILED, error=str(exc))
                set_outcome(span, "failed", attempts=state.attempts, error=str(exc))
                self._measure(state.name, FORWARD, "failed", state.started_at)
                raise StepFailed(name, str(exc)) from None
            except asyncio.CancelledError:
                # Outcome unknown: the activity may have acted before it saw the cancellation.
                self._end_step(state, StepStatus.FAILED, error="cancelled while running")
                set_outcome(span, "cancelled", attempts=state.attempts, error="cancelled")
                raise
            set_outcome(span, "succeeded", attempts=state.attempts)
            self._measure(state.name, FORWARD, "succeeded", state.started_at)
        started.output = output
        state.output = output
        self._results[name] = output
        if step.pivot:
            self._past_pivot = True
        self._end_step(state, StepStatus.SUCCEEDED, error=None)
        return output

    async def _wait_for_approval(self, step: Step, state: StepState) -> None:
        assert step.approval is not None
        name = step.step_name
        self._awaiting.append(name)
        self._touch()
        try:
            await workflow.wait_condition(
                lambda: name in self._decisions, timeout=step.approval.timeout
            )
        except builtins.TimeoutError:
            self._end_step(state, StepStatus.FAILED, error="approval timed out")
            raise StepFailed(name, "approval timed out") from None
        except asyncio.CancelledError:
            self._end_step(state, StepStatus.FAILED, error="cancelled while awaiting approval")
            raise
        finally:
            self._awaiting.remove(name)
            self._touch()
        decision = self._decisions[name]
        state.approval = decision
        if not decision.approved:
            who = f" by {decision.by}" if decision.by else ""
            why = f": {decision.comment}" if decision.comment else ""
            self._end_step(state, StepStatus.FAILED, error=f"rejected{who}{why}")
            raise StepFailed(name, f"rejected{who}{why}")

    # -------------------------------------------------------------- attempts

    async def _attempts(
        self,
        fn: Callable[..., Any],
        arg: Any,
        *,
        step: Step,
        phase: str,
        policy: RetryPolicy,
        counter: StepState | CompensationState,
        give_up_on_refusal: bool,
        span: Span,
        budget: timedelta | None = None,
    ) -> Any:
        """Run an activity until it succeeds or ``policy`` says stop; one activity per attempt.

        ``budget`` is the schedule-to-close timeout: the time all attempts together may take.
        """
        budget_end = workflow.now() + budget if budget else None
        tried = 0
        while True:
            start_to_close = step.start_to_close
            if budget_end is not None:
                left = budget_end - workflow.now()
                if left <= timedelta(0):
                    raise _GaveUp(
                        f"schedule-to-close timeout after {tried} attempts: {counter.error}",
                        business_refusal=False,
                    )
                start_to_close = min(start_to_close, left)
            counter.attempts += 1
            tried += 1
            self._touch()
            try:
                return await workflow.execute_activity(
                    fn,
                    arg,
                    activity_id=activity_id_for(step.step_name, phase, counter.attempts),
                    start_to_close_timeout=start_to_close,
                    heartbeat_timeout=step.heartbeat,
                    retry_policy=RetryPolicy(maximum_attempts=1),
                    cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                )
            except ActivityError as exc:
                if is_cancelled_exception(exc):
                    raise asyncio.CancelledError() from None
                counter.error = _describe(exc)
                refusal = _is_refusal(
                    exc, [*(policy.non_retryable_error_types or ()), *step.non_retryable]
                )
                workflow.logger.info(
                    "attempt failed",
                    extra={"step": step.step_name, "phase": phase, "attempt": counter.attempts},
                )
                gives_up = (refusal and give_up_on_refusal) or bool(
                    policy.maximum_attempts and tried >= policy.maximum_attempts
                )
                record_failed_attempt(
                    span, attempt=counter.attempts, error=counter.error, retrying=not gives_up
                )
                if refusal and give_up_on_refusal:
                    raise _GaveUp(counter.error, business_refusal=True) from None
                if policy.maximum_attempts and tried >= policy.maximum_attempts:
                    raise _GaveUp(
                        f"gave up after {tried} attempts: {counter.error}",
                        business_refusal=False,
                    ) from None
                self._touch()
                await workflow.sleep(_backoff(policy, tried))

    # ---------------------------------------------------------- compensation

    async def _compensate_until_settled(self) -> None:
        to_undo = [
            s for unit in reversed(self._units) for s in unit.started if s.needs_compensation
        ]
        if not to_undo:
            self._phase = SagaStatus.FAILED
            self._touch()
            return
        self._phase = SagaStatus.COMPENSATING
        self._touch()
        for unit in reversed(self._units):
            await asyncio.gather(
                *(self._compensate(s) for s in unit.started if s.needs_compensation)
            )
        while True:
            failed = [s for s in to_undo if s.state.status is StepStatus.COMPENSATION_FAILED]
            if not failed:
                break
            self._phase = SagaStatus.COMPENSATION_FAILED
            self._touch()
            workflow.logger.warning(
                "compensation failed; waiting for an operator",
                extra={"steps": [s.state.name for s in failed]},
            )
            await workflow.wait_condition(
                lambda: (
                    self._retry_requested
                    or all(s.state.status is not StepStatus.COMPENSATION_FAILED for s in to_undo)
                )
            )
            if self._retry_requested:
                self._retry_requested = False
                self._phase = SagaStatus.COMPENSATING
                self._touch()
                still = [s for s in to_undo if s.state.status is StepStatus.COMPENSATION_FAILED]
                await asyncio.gather(*(self._compensate(s) for s in still))
        self._phase = SagaStatus.COMPENSATED
        self._touch()

    async def _compensate(self, started: _Started) -> None:
        step, state = started.step, started.state
        assert step.compensate is not None
        comp = state.compensation or CompensationState()
        state.compensation = comp
        comp.status = CompensationStatus.RUNNING
        comp.started_at = workflow.now()
        comp.ended_at = None
        self._set_step(state, StepStatus.COMPENSATING)
        undo: Compensation[Any, Any] = Compensation(
            saga_id=workflow.info().workflow_id,
            step=state.name,
            idempotency_key=state.idempotency_key,
            input=started.arg,
            output=started.output,
        )
        # Linked to the step it undoes: in another part of the trace, often much later.
        with self._span(state.name, COMPENSATION, links=[started.span_context]) as span:
            try:
                await self._attempts(
                    step.compensate,
                    undo,
                    step=step,
                    phase=COMPENSATION,
                    policy=step.compensation_retry_policy or DEFAULT_COMPENSATION_RETRY,
                    counter=comp,
                    give_up_on_refusal=True,
                    span=span,
                )
            except _GaveUp as exc:
                comp.status = CompensationStatus.FAILED
                comp.error = str(exc)
                comp.ended_at = workflow.now()
                self._set_step(state, StepStatus.COMPENSATION_FAILED)
                set_outcome(span, "compensation_failed", attempts=comp.attempts, error=str(exc))
                self._measure(state.name, COMPENSATION, "compensation_failed", comp.started_at)
                return
            set_outcome(span, "compensated", attempts=comp.attempts)
            self._measure(state.name, COMPENSATION, "compensated", comp.started_at)
        comp.status = CompensationStatus.SUCCEEDED
        comp.error = None
        comp.ended_at = workflow.now()
        self._set_step(state, StepStatus.COMPENSATED)

    def _measure(self, step: str, phase: str, outcome: str, since: datetime | None) -> None:
        took = workflow.now() - since if since else timedelta(0)
        _metrics.step_duration(workflow.info().workflow_type, step, phase, outcome, took)

    def _span(
        self, step: str, phase: str, links: Sequence[SpanContext] = ()
    ) -> AbstractContextManager[Span]:
        info = workflow.info()
        return saga_span(
            saga_type=info.workflow_type,
            saga_id=info.workflow_id,
            step=step,
            phase=phase,
            links=links,
        )

    async def _uncancellable(self, coro: Awaitable[T]) -> T:
        """Run ``coro`` to the end even if the workflow is cancelled meanwhile."""
        task: asyncio.Task[T] = asyncio.ensure_future(coro)
        while True:
            try:
                return await asyncio.shield(task)
            except asyncio.CancelledError:
                if task.cancelled():
                    raise
                workflow.logger.warning("cancellation ignored while compensating")

    # ------------------------------------------------------------ handlers

    @workflow.query
    def state(self) -> SagaState:
        return self._snapshot()

    @workflow.update
    def cancel(self, request: CancelRequest) -> SagaState:
        self._cancel = request
        self._touch()
        return self._snapshot()

    @cancel.validator
    def _validate_cancel(self, request: CancelRequest) -> None:
        if self._phase is not SagaStatus.RUNNING:
            raise _conflict(f"the saga is already {self._phase.value}")
        if self._past_pivot:
            raise _conflict("the saga is past its pivot step and can only go forward")
        if self._pivot_started:
            raise _conflict("the pivot step is running; its outcome decides the saga")
        if self._cancel is not None:
            raise _conflict(f"a cancellation is already under way ({self._cancel.reason})")

    @workflow.update
    async def approve(self, request: DecisionRequest) -> SagaState:
        return await self._decide(request, approved=True)

    @approve.validator
    def _validate_approve(self, request: DecisionRequest) -> None:
        self._awaiting_step(request)

    @workflow.update
    async def reject(self, request: DecisionRequest) -> SagaState:
        return await self._decide(request, approved=False)

    @reject.validator
    def _validate_reject(self, request: DecisionRequest) -> None:
        self._awaiting_step(request)

    @workflow.update
    async def retry_compensations(self) -> SagaState:
        self._retry_requested = True
        self._touch()
        # Answer once the compensation loop has taken the request (the saga is compensating
        # again), so the caller never sees the state it has just asked to leave.
        await workflow.wait_condition(lambda: not self._retry_requested)
        return self._snapshot()

    @retry_compensations.validator
    def _validate_retry(self) -> None:
        if self._phase is not SagaStatus.COMPENSATION_FAILED:
            raise _conflict(
                f"only a compensation_failed saga can retry compensations "
                f"(this one is {self._phase.value})"
            )

    @workflow.update
    async def resolve(self, request: ResolveRequest) -> SagaState:
        state = self._steps[request.step]
        comp = state.compensation
        assert comp is not None
        comp.status = CompensationStatus.RESOLVED
        comp.resolution = request.reason
        comp.resolved_by = request.by
        comp.ended_at = workflow.now()
        self._set_step(state, StepStatus.RESOLVED)
        # Resolving the last failed compensation settles the saga (compensated); answer with
        # that status rather than the compensation_failed it is about to leave.
        await workflow.wait_condition(
            lambda: (
                self._phase is not SagaStatus.COMPENSATION_FAILED
                or any(s.status is StepStatus.COMPENSATION_FAILED for s in self._steps.values())
            )
        )
        return self._snapshot()

    @resolve.validator
    def _validate_resolve(self, request: ResolveRequest) -> None:
        state = self._steps.get(request.step)
        if state is None:
            raise _conflict(f"the saga has no step {request.step!r}")
        if state.status is not StepStatus.COMPENSATION_FAILED:
            raise _conflict(
                f"step {request.step!r} is {state.status.value}; only a step whose "
                "compensation failed can be resolved"
            )

    async def _decide(self, request: DecisionRequest, *, approved: bool) -> SagaState:
        step = self._awaiting_step(request)
        self._decisions[step] = Decision(
            approved=approved, by=request.by, comment=request.comment, at=workflow.now()
        )
        self._touch()
        # Answer once the step has taken the decision, so the caller sees the saga moving on
        # (running again, or the step failed by the rejection), not still awaiting approval.
        await workflow.wait_condition(lambda: step not in self._awaiting)
        return self._snapshot()

    def _awaiting_step(self, request: DecisionRequest) -> str:
        if not self._awaiting:
            raise _conflict("no step of this saga is waiting for approval")
        if len(self._awaiting) > 1:
            raise _conflict(f"several steps await approval: {', '.join(self._awaiting)}")
        return self._awaiting[0]

    # --------------------------------------------------------------- state

    def _add_step_state(self, step: Step) -> StepState:
        name = step.step_name
        state = StepState(
            name=name,
            kind=step.kind.value,
            idempotency_key=idempotency_key_for(workflow.info().workflow_id, name),
        )
        self._steps[name] = state
        return state

    def _set_step(self, state: StepState, status: StepStatus) -> None:
        state.status = status
        self._touch()

    def _end_step(self, state: StepState, status: StepStatus, *, error: str | None) -> None:
        state.error = error
        state.ended_at = workflow.now()
        self._set_step(state, status)

    def _touch(self) -> None:
        self._updated_at = workflow.now()
        status = self.status()
        if status is not self._listed_status:
            # Listings (sagas list, Temporal UI) show the saga status without a query.
            self._listed_status = status
            workflow.upsert_memo({"saga_status": status.value})
            if status in _COUNTED_STATUSES:
                _metrics.saga_status(workflow.info().workflow_type, status.value)
        self._schedule_publish()

    def _schedule_publish(self) -> None:
        # The saga store's projection: one snapshot per activation that changed something, and
        # none on replay (a replayed change was published when it first happened).
        if not self._publish_scheduled and not workflow.unsafe.is_replaying():
            self._publish_scheduled = True
            asyncio.get_running_loop().call_soon(self._publish)

    def _publish(self) -> None:
        if not self._publish_scheduled:
            return
        self._publish_scheduled = False
        info = workflow.info()
        snapshot = self._snapshot().model_dump(mode="json")
        _projection.publish(info.task_queue, snapshot, info.get_current_history_length())

    def status(self) -> SagaStatus:
        if self._phase is SagaStatus.RUNNING and self._awaiting:
            return SagaStatus.AWAITING_APPROVAL
        return self._phase

    def _snapshot(self) -> SagaState:
        info = workflow.info()
        status = self.status()
        result = None
        if status is SagaStatus.COMPLETED:
            result = dict(self._results)
        return SagaState(
            id=info.workflow_id,
            type=info.workflow_type,
            status=status,
            input=self._input,
            result=result,
            error=self._error,
            steps=list(self._steps.values()),
            cancel_reason=self._cancel.reason if self._cancel else None,
            awaiting_approval=list(self._awaiting),
            past_pivot=self._past_pivot,
            started_at=self._started_at or workflow.now(),
            updated_at=self._updated_at or workflow.now(),
        )

    # Used by SagaRun (the imperative form).
    @property
    def saga_input(self) -> Any:
        return self._input

    @property
    def results(self) -> dict[str, Any]:
        return self._results

    @property
    def past_pivot(self) -> bool:
        return self._pivot_started

    def has_step(self, name: str) -> bool:
        return name in self._steps

    def declares(self, fn: Callable[..., Any]) -> bool:
        return self._definition is not None and any(
            fn is known for known in self._definition.activities
        )


def _conflict(message: str) -> ApplicationError:
    return ApplicationError(message, type=CONFLICT, non_retryable=True)


def _is_refusal(exc: ActivityError, non_retryable_types: Sequence[str]) -> bool:
    cause = exc.cause
    if isinstance(cause, ApplicationError):
        return cause.non_retryable or (cause.type or "") in non_retryable_types
    return False


def _pin_definition(versions: Sequence[SagaDefinition[Any]]) -> SagaDefinition[Any]:
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


def _describe(exc: ActivityError) -> str:
    """The attempt's error as the saga records it: shown by the API, in spans and logs, so
    card tokens and numbers that a participant echoed are masked first."""
    cause = exc.cause
    if isinstance(cause, TimeoutError):
        return f"timed out ({cause.type.name.lower() if cause.type else 'timeout'})"
    if isinstance(cause, ApplicationError):
        kind = f"{cause.type}: " if cause.type else ""
        return redact_text(f"{kind}{cause.message}")
    return redact_text(str(cause or exc))


def _backoff(policy: RetryPolicy, attempts_done: int) -> timedelta:
    seconds = policy.initial_interval.total_seconds() * (
        policy.backoff_coefficient ** (attempts_done - 1)
    )
    if policy.maximum_interval is not None:
        seconds = min(seconds, policy.maximum_interval.total_seconds())
    return timedelta(seconds=seconds)
