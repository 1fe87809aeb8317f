"""The undo log and the compensation runner.

The forward runner writes to the undo log: every step whose action was *called* (it may have
taken effect even if its answer was lost), grouped by the stage it ran in. When the saga must
go back, the compensation runner undoes the log in reverse order of the stages' start; the
steps of one parallel stage are compensated concurrently. A business refusal leaves nothing
to undo; an unknown outcome (timed out, cancelled mid-call) is undone like a success, which is
why compensations must be idempotent and succeed when there is nothing to undo.

A compensation retries transient errors for about an hour by default and waits on an open
circuit without limit (``engine._outage``); a refused one (non-retryable) fails at once.
A compensation that keeps failing does not block the earlier ones: every other effect is
undone, and the saga waits in ``compensation_failed`` with exactly the failed steps left for
an operator, who may retry them (a fresh budget of attempts) or resolve them by hand.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.trace import INVALID_SPAN_CONTEXT, SpanContext
from temporalio import workflow
from temporalio.common import RetryPolicy

from engine._attempts import GaveUp, run_attempts
from engine._patches import PATIENT_COMPENSATIONS, later
from engine._record import SagaRecord
from engine._state import (
    Compensation,
    CompensationState,
    CompensationStatus,
    SagaStatus,
    StepState,
    StepStatus,
)
from engine._step import Step
from engine._step_info import COMPENSATION
from engine._tracing import saga_span, set_outcome


@dataclass
class Entry:
    """A step whose action was called, with what its compensation needs."""

    step: Step
    arg: Any
    state: StepState
    output: Any = None
    definitely_failed: bool = False  # a business refusal: nothing took effect, nothing to undo
    fallback_served: bool = False  # the step's fallback acted: its compensation undoes it
    fallback_refused: bool = False  # ...or said no: nothing of it to undo, the action's still
    action_undone: bool = False  # the action the fallback replaced was undone as it served
    span_context: SpanContext = INVALID_SPAN_CONTEXT  # of the step's span, for the undo's link

    @property
    def undos(self) -> list[tuple[Callable[..., Any], Any]]:
        """The compensations to run, each with the output it undoes.

        That of whichever action served; when the fallback served, the action's outcome is
        unknown (it failed, but not by a refusal), so its compensation runs too, with no
        output, as for any unknown outcome (unless it already ran as the fallback served).
        """
        step = self.step
        if not self.fallback_served:
            return [(step.compensate, self.output)] if step.compensate else []
        fallback_undo = None if self.fallback_refused else step.fallback_compensate
        action_undo = None if self.action_undone else step.compensate
        undos = [(fallback_undo, self.output), (action_undo, None)]
        return [(fn, output) for fn, output in undos if fn is not None]

    @property
    def needs_compensation(self) -> bool:
        return bool(self.undos) and not self.definitely_failed


@dataclass
class UndoLog:
    """The steps called so far, by stage, in the order the stages started."""

    stages: list[list[Entry]] = field(default_factory=list)

    def open_stage(self) -> list[Entry]:
        stage: list[Entry] = []
        self.stages.append(stage)
        return stage

    def stages_to_undo(self) -> Iterator[list[Entry]]:
        """The stages newest first, each with only the entries that need compensating."""
        for stage in reversed(self.stages):
            yield [entry for entry in stage if entry.needs_compensation]

    def to_undo(self) -> list[Entry]:
        return [entry for stage in self.stages_to_undo() for entry in stage]

    def forget(self, entry: Entry) -> None:
        """Drop an entry already undone (a failed optional step's), so it is undone once."""
        for stage in self.stages:
            if entry in stage:
                stage.remove(entry)


class CompensationRunner:
    """Undoes the log, and waits for an operator while any compensation stays failed."""

    def __init__(self, record: SagaRecord, log: UndoLog) -> None:
        self._record = record
        self._log = log
        self.retry_requested = False
        self._patient: bool | None = None

    async def settle(self) -> None:
        """Compensate everything in the log; return once the saga is compensated (or failed)."""
        record = self._record
        to_undo = self._log.to_undo()
        if not to_undo:
            record.set_phase(SagaStatus.FAILED)
            return
        record.set_phase(SagaStatus.COMPENSATING)
        for stage in self._log.stages_to_undo():
            await asyncio.gather(*(self._compensate(entry) for entry in stage))
        while failed := _failed(to_undo):
            record.set_phase(SagaStatus.COMPENSATION_FAILED)
            workflow.logger.warning(
                "compensation failed; waiting for an operator",
                extra={"steps": [entry.state.name for entry in failed]},
            )
            await workflow.wait_condition(lambda: self.retry_requested or not _failed(to_undo))
            if self.retry_requested:
                self.retry_requested = False
                record.set_phase(SagaStatus.COMPENSATING)
                await asyncio.gather(*(self._compensate(entry) for entry in _failed(to_undo)))
        record.set_phase(SagaStatus.COMPENSATED)

    async def undo_failed_optional(self, entry: Entry) -> None:
        """Undo an optional step that failed with its outcome unknown, as the saga goes on
        without it: whatever it may hold would otherwise stay held by a completed saga. Once
        undone it leaves the log and keeps its status (``failed_optional``); an undo that
        fails for good stays in the log (the saga's compensation, if any, tries it again)
        and shows as ``compensation_failed``."""
        await self._compensate(entry)
        if entry.state.status is StepStatus.COMPENSATED:
            self._log.forget(entry)
            self._record.set_step(entry.state, StepStatus.FAILED_OPTIONAL)

    async def undo_replaced_action(self, entry: Entry) -> None:
        """Undo the action a fallback has just replaced: its outcome is unknown, and a saga
        that completes keeps the fallback's effect only (else a room booked at the hotel,
        its answer lost, stays booked beside the broker's). Once undone, the step's undo is
        the fallback's alone and the step keeps its status (``succeeded``); an undo that
        fails for good shows as ``compensation_failed`` and stays the saga's to retry if it
        compensates."""
        assert entry.step.compensate is not None
        status = entry.state.status
        await self._compensate(entry, [(entry.step.compensate, None)])
        if entry.state.status is StepStatus.COMPENSATED:
            entry.action_undone = True
            self._record.set_step(entry.state, status)

    async def _compensate(
        self, entry: Entry, undos: list[tuple[Callable[..., Any], Any]] | None = None
    ) -> None:
        record, step, state = self._record, entry.step, entry.state
        comp = state.compensation or CompensationState()
        state.compensation = comp
        comp.status = CompensationStatus.RUNNING
        comp.started_at = workflow.now()
        comp.ended_at = None
        record.set_step(state, StepStatus.COMPENSATING)
        # Linked to the step it undoes: in another part of the trace, often much later.
        with saga_span(
            saga_type=record.saga_type,
            saga_id=record.saga_id,
            step=state.name,
            phase=COMPENSATION,
            links=[entry.span_context],
        ) as span:
            try:
                for undo_fn, output in entry.undos if undos is None else undos:
                    undo: Compensation[Any, Any] = Compensation(
                        saga_id=record.saga_id,
                        step=state.name,
                        idempotency_key=state.idempotency_key,
                        input=entry.arg,
                        output=output,
                    )
                    await run_attempts(
                        undo_fn,
                        undo,
                        step=step,
                        phase=COMPENSATION,
                        policy=self._policy(step),
                        counter=comp,
                        give_up_on_refusal=True,
                        span=span,
                        on_change=record.changed,
                    )
            except GaveUp as exc:
                comp.status = CompensationStatus.FAILED
                comp.error = str(exc)
                comp.ended_at = workflow.now()
                record.set_step(state, StepStatus.COMPENSATION_FAILED)
                set_outcome(span, "compensation_failed", attempts=comp.attempts, error=str(exc))
                record.measure(state.name, COMPENSATION, "compensation_failed", comp.started_at)
                return
            set_outcome(span, "compensated", attempts=comp.attempts)
            record.measure(state.name, COMPENSATION, "compensated", comp.started_at)
        comp.status = CompensationStatus.SUCCEEDED
        comp.error = None
        comp.ended_at = workflow.now()
        record.set_step(state, StepStatus.COMPENSATED)

    def _policy(self, step: Step) -> RetryPolicy:
        if step.compensation_retry is not None:
            return step.compensation_retry
        if self._patient is None:
            # Sagas whose compensations started under an older engine keep its shorter default
            # (their histories hold no marker); new ones leave the marker and are patient.
            self._patient = later(PATIENT_COMPENSATIONS)
        return step.compensation_retry_policy(patient=self._patient)


def _failed(entries: list[Entry]) -> list[Entry]:
    return [e for e in entries if e.state.status is StepStatus.COMPENSATION_FAILED]
