"""The forward runner: runs a saga's steps, stage by stage, writing the undo log as it goes.

It is the ``StageRunner`` that a definition's ``forward`` drives (a declarative saga stage by
stage, an imperative one through ``SagaRun``). For each step: skip it when its ``when`` says
so, wait for a person's decision when it asks for one, then run its attempts in a span of its
own. A step that fails for good raises ``StepFailed``; its running siblings in a parallel
stage finish first, and whatever they did is compensated with the rest.

Graceful degradation: when the action fails for good, not by a business refusal, the step's
``fallback`` runs instead (in the same span, with fresh retries) and the step records that it
served (``served_by``). The action it replaced may have acted all the same (its outcome is
unknown), so its compensation runs at once: the saga keeps the fallback's effect only, which
``fallback_compensate`` undoes if the saga compensates. A fallback that refuses leaves the
action's compensation to the saga. An ``optional`` step that fails ends ``failed_optional``
and the saga goes on without its result, its possible effect undone at once. (These undos at
once wait as any compensation does: on a participant that is down, the saga waits for it.)
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

from opentelemetry.trace import Span
from temporalio import workflow

from engine._attempts import GaveUp, run_attempts
from engine._carry import Resume, finished
from engine._compensation import Entry, UndoLog
from engine._continue import FALLBACK_LOOP, undivided
from engine._definition import SagaDefinition
from engine._errors import StepFailed
from engine._patches import (
    FALLBACK_REFUSED_ACTION_UNKNOWN,
    UNDO_FAILED_OPTIONAL,
    UNDO_REPLACED_ACTION,
    later,
)
from engine._record import SagaRecord
from engine._state import Decision, StepState, StepStatus
from engine._step import DEFAULT_OUTAGE_PATIENCE, Step, StepKind, activity_name
from engine._step_info import FORWARD
from engine._tracing import saga_span, set_outcome


class ForwardRunner:
    """Runs stages of steps for one saga (implements ``engine._definition.StageRunner``)."""

    def __init__(
        self,
        definition: SagaDefinition[Any],
        record: SagaRecord,
        log: UndoLog,
        undo_now: Callable[[Entry], Awaitable[None]] | None = None,
        undo_replaced: Callable[[Entry], Awaitable[None]] | None = None,
    ) -> None:
        self._definition = definition
        self._record = record
        self._log = log
        self._undo_now = undo_now
        self._undo_replaced = undo_replaced
        self.decisions: dict[str, Decision] = {}
        # Steps that finished before the saga continued as new (engine._carry).
        self.resume = Resume()
        self._reached: set[str] = set()

    # StageRunner: what SagaRun (the imperative form) reads.
    @property
    def saga_input(self) -> Any:
        return self._record.input

    @property
    def results(self) -> dict[str, Any]:
        return self._record.results

    def has_step(self, name: str) -> bool:
        # Reached in this run (a continued run holds every step's state from the start).
        return name in self._reached

    def declares(self, fn: Callable[..., Any]) -> bool:
        return any(fn is known for known in self._definition.activities)

    async def run_stage(self, steps: Sequence[Step]) -> list[Any]:
        """Run one stage (a step or a parallel group); raise StepFailed if any step failed.

        A failed step does not cancel its running siblings: they finish, and whatever they did
        is compensated with the rest. The caller's cancellation does cancel them.
        """
        stage = self._log.open_stage()
        tasks = [asyncio.create_task(self._run_step(step, stage)) for step in steps]
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return list(outcomes)

    async def _run_step(self, step: Step, stage: list[Entry]) -> Any:
        record, name = self._record, step.step_name
        state = record.step_state(step)
        self._reached.add(name)
        if finished(step, state):  # before the saga continued as new: the same outcome
            return self.resume.replay(step, state, stage, record)
        if not step.should_run(record.input, record.results):
            record.set_step(state, StepStatus.SKIPPED)
            return None
        approval = step.approval
        if (
            approval
            and name not in self.decisions
            and approval.required(record.input, record.results)
        ):
            await self._wait_for_approval(step, state)
        arg = step.action_input(record.input, record.results)
        if step.pivot or step.retriable:
            # A retriable step is never undone: once one runs, the saga is past its point of
            # no return even without a pivot (as the definition's checks already hold), so a
            # cancel or the deadline is refused (found by engine.testing's explore).
            record.pivot_started = True
        entry = Entry(step=step, arg=arg, state=state)
        stage.append(entry)
        state.started_at = state.started_at or workflow.now()  # kept by a continue-as-new
        record.set_step(state, StepStatus.RUNNING)
        with saga_span(
            saga_type=record.saga_type, saga_id=record.saga_id, step=name, phase=FORWARD
        ) as span:
            entry.span_context = span.get_span_context()
            try:
                output = await self._act(step, entry, state, span)
            except GaveUp as exc:
                entry.definitely_failed = exc.business_refusal
                if step.optional:
                    # The saga goes on; an unknown outcome is still undone if it compensates.
                    record.end_step(state, StepStatus.FAILED_OPTIONAL, error=str(exc))
                    set_outcome(span, "failed_optional", attempts=state.attempts, error=str(exc))
                    record.measure(name, FORWARD, "failed_optional", state.started_at)
                    if (
                        self._undo_now is not None
                        and entry.needs_compensation
                        and later(UNDO_FAILED_OPTIONAL)
                    ):
                        # Its outcome is unknown (found by engine.testing's explore): a car
                        # reserved whose answer was lost would stay held by a completed trip.
                        with undivided():  # not cut off by a continue-as-new
                            await self._undo_now(entry)
                    return None
                record.end_step(state, StepStatus.FAILED, error=str(exc))
                set_outcome(span, "failed", attempts=state.attempts, error=str(exc))
                record.measure(name, FORWARD, "failed", state.started_at)
                raise StepFailed(name, str(exc)) from None
            except asyncio.CancelledError:
                # Outcome unknown: the activity may have acted before it saw the cancellation.
                record.end_step(state, StepStatus.FAILED, error="cancelled while running")
                set_outcome(span, "cancelled", attempts=state.attempts, error="cancelled")
                raise
            set_outcome(span, "succeeded", attempts=state.attempts)
            record.measure(name, FORWARD, "succeeded", state.started_at)
        entry.output = output
        state.output = output
        record.results[name] = output
        if step.pivot:
            record.past_pivot = True
        record.end_step(state, StepStatus.SUCCEEDED, error=None)
        return output

    async def _act(self, step: Step, entry: Entry, state: StepState, span: Span) -> Any:
        """The step's action, then its fallback if the action failed for good (not refused)."""
        if state.served_by is None or step.fallback is None:
            try:
                return await self._attempts(step, step.action, entry.arg, state, span)
            except GaveUp as exc:
                if step.fallback is None or exc.business_refusal:
                    raise
                failure = str(exc)
            fallback = activity_name(step.fallback)
            span.add_event("fallback", {"saga.fallback": fallback, "error.message": failure})
            workflow.logger.info(
                "fallback serves", extra={"step": state.name, "fallback": fallback}
            )
            state.served_by = fallback
        # else the saga continued as new while the fallback was retrying: it goes on.
        entry.fallback_served = True
        try:
            output = await self._attempts(
                step, step.fallback, entry.arg, state, span, loop_name=FALLBACK_LOOP
            )
        except GaveUp as exc:
            if not exc.business_refusal or not later(FALLBACK_REFUSED_ACTION_UNKNOWN):
                raise
            # The fallback said no, so it holds nothing; but the action's outcome is still
            # unknown (it failed, not by a refusal), so its compensation must run (found by
            # engine.testing's explore: a refused fallback left the action's effect in place).
            entry.fallback_refused = True
            raise GaveUp(str(exc), business_refusal=False) from None
        if (
            self._undo_replaced is not None
            and step.compensate is not None
            and later(UNDO_REPLACED_ACTION)
        ):
            # The fallback serves; the action it replaced may have acted all the same (found
            # by engine.testing's explore against the participants: a room held at the hotel
            # and at the broker by one completed trip). Undo it now, as for an unknown outcome
            # (not cut off by a continue-as-new: the step's state shows its undo meanwhile).
            with undivided():
                await self._undo_replaced(entry)
        return output

    async def _attempts(
        self,
        step: Step,
        fn: Callable[..., Any],
        arg: Any,
        state: StepState,
        span: Span,
        loop_name: str | None = None,
    ) -> Any:
        retriable = step.kind is StepKind.RETRIABLE
        return await run_attempts(
            fn,
            arg,
            step=step,
            phase=FORWARD,
            policy=step.retry_policy,
            counter=state,
            budget=step.schedule_to_close,
            give_up_on_refusal=not retriable,
            span=span,
            on_change=self._record.changed,
            patience=None if retriable else self._patience(step),
            loop_name=loop_name,
        )

    def _patience(self, step: Step) -> timedelta:
        return step.outage_patience or self._definition.outage_patience or DEFAULT_OUTAGE_PATIENCE

    async def _wait_for_approval(self, step: Step, state: StepState) -> None:
        assert step.approval is not None
        record, name = self._record, step.step_name
        record.wait_for_decision(name)
        # The time left: a saga that continued as new while waiting keeps its deadline.
        timeout = step.approval.timeout - (workflow.now() - record.waiting_since[name])
        # Not in a ``finally``: a coroutine closed outside the workflow's loop (its worker shut
        # down while the saga waited) must not touch the record, which reads the workflow's
        # clock. The record changes in the order it always did (recorded histories replay).
        try:
            await workflow.wait_condition(lambda: name in self.decisions, timeout=timeout)
        except builtins.TimeoutError:
            record.end_step(state, StepStatus.FAILED, error="approval timed out")
            record.stop_waiting(name)
            raise StepFailed(name, "approval timed out") from None
        except asyncio.CancelledError:
            record.end_step(state, StepStatus.FAILED, error="cancelled while awaiting approval")
            record.stop_waiting(name)
            raise
        record.stop_waiting(name)
        decision = self.decisions[name]
        state.approval = decision
        if not decision.approved:
            who = f" by {decision.by}" if decision.by else ""
            why = f": {decision.comment}" if decision.comment else ""
            record.end_step(state, StepStatus.FAILED, error=f"rejected{who}{why}")
            raise StepFailed(name, f"rejected{who}{why}")
