"""What a saga carries when it continues as new, and how the next run picks it up.

When (``engine._continue``) is one question; this module answers what. The next run of the
same workflow id gets two arguments: the saga's input, as the first run did, and a ``Carry``:

* the saga record (phase, steps with their attempts, errors, outputs and decisions, the
  pivot's flags, the start time that the deadline counts from, who is awaited since when);
* the undo log, as the steps whose action was called (with the span each compensation links
  to): the next run rebuilds its log from them;
* the counters of the attempt loops that were running, so that attempts and time budgets
  count across runs;
* the definition version the saga is pinned to, and the store's revision base.

The next run walks its forward phase again from the first stage: a step that finished before
(succeeded, skipped, failed) is not run again but *replayed* (``Resume.replay``): its outcome
comes back from the carried state, its entry goes back into the undo log, and the walk goes on
to where the saga was. That holds for imperative sagas too, whose code is deterministic: it
takes the same branches from the same outcomes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import temporalio.activity
from opentelemetry.trace import SpanContext, TraceFlags
from pydantic import BaseModel
from temporalio import workflow

from engine._compensation import Entry, UndoLog
from engine._continue import LoopState
from engine._errors import StepFailed
from engine._record import SagaRecord
from engine._state import CancelRequest, Decision, SagaStatus, StepState, StepStatus
from engine._step import Step
from engine._step_info import FORWARD

#: The statuses of a step that has finished its forward phase.
FINISHED = frozenset({StepStatus.SUCCEEDED, StepStatus.SKIPPED, StepStatus.FAILED})


class CarriedEntry(BaseModel):
    """An undo log entry without its step (the next run's walk finds the step again)."""

    definitely_failed: bool = False
    trace_id: int = 0
    span_id: int = 0
    trace_flags: int = 0

    def span_context(self) -> SpanContext:
        return SpanContext(
            self.trace_id, self.span_id, is_remote=False, trace_flags=TraceFlags(self.trace_flags)
        )


class CarriedLoop(BaseModel):
    tried: int
    budget_end: datetime | None = None


class Carry(BaseModel):
    """A saga's state from one run to the next."""

    version: int
    runs: int  # runs before this one
    revision_base: int
    phase: SagaStatus
    error: str | None = None
    cancel: CancelRequest | None = None
    pivot_started: bool = False
    past_pivot: bool = False
    started_at: datetime
    updated_at: datetime
    steps: list[StepState]
    awaiting: list[str] = []
    waiting_since: dict[str, datetime] = {}
    decisions: dict[str, Decision] = {}
    entries: dict[str, CarriedEntry] = {}
    loops: dict[str, CarriedLoop] = {}


def capture(
    record: SagaRecord,
    log: UndoLog,
    *,
    decisions: dict[str, Decision],
    loops: dict[str, LoopState],
    version: int,
    runs: int,
    history_length: int,
) -> Carry:
    """The state to carry, taken once no attempt is in flight (every loop parked or asleep);
    ``history_length``: of the run that ends, for the store's revisions."""
    running = {name for name, s in record.steps.items() if s.status is StepStatus.RUNNING}
    entries = {}
    for stage in log.stages:
        for entry in stage:
            # A running step rebuilds its entry when it runs again; a finished one is replayed.
            if entry.state.status in FINISHED:
                context = entry.span_context
                entries[entry.state.name] = CarriedEntry(
                    definitely_failed=entry.definitely_failed,
                    trace_id=context.trace_id,
                    span_id=context.span_id,
                    trace_flags=int(context.trace_flags),
                )
    return Carry(
        version=version,
        runs=runs + 1,
        revision_base=record.revision_base + history_length,
        phase=record.phase,
        error=record.error,
        cancel=record.cancel,
        pivot_started=record.pivot_started,
        past_pivot=record.past_pivot,
        started_at=record.started_at,
        updated_at=record.updated_at,
        steps=list(record.steps.values()),
        awaiting=list(record.awaiting),
        waiting_since=dict(record.waiting_since),
        decisions=dict(decisions),
        entries=entries,
        loops={
            key: CarriedLoop(tried=loop.tried, budget_end=loop.budget_end)
            for key, loop in loops.items()
            if key.rpartition("/")[::2] in {(name, FORWARD) for name in running}
        },
    )


def restore(carry: Carry, record: SagaRecord) -> tuple[Resume, dict[str, LoopState]]:
    """Put the carried state back into a new run's record; what its forward walk needs."""
    record.phase = carry.phase
    record.error = carry.error
    record.cancel = carry.cancel
    record.pivot_started = carry.pivot_started
    record.past_pivot = carry.past_pivot
    record.started_at = carry.started_at
    record.updated_at = carry.updated_at
    record.steps = {state.name: state for state in carry.steps}
    record.awaiting = list(carry.awaiting)
    record.waiting_since = dict(carry.waiting_since)
    record.revision_base = carry.revision_base
    record.listed(record.status)  # the memo went along with the run
    loops = {k: LoopState(tried=v.tried, budget_end=v.budget_end) for k, v in carry.loops.items()}
    return Resume(carry.entries), loops


class Resume:
    """The forward walk of a continued run: replays the steps that finished before."""

    def __init__(self, entries: dict[str, CarriedEntry] | None = None) -> None:
        self._entries = dict(entries or {})

    def replay(self, step: Step, state: StepState, stage: list[Entry], record: SagaRecord) -> Any:
        """The outcome of a step that finished in an earlier run, as it was, without running
        it; its undo log entry (if its action was called) goes back into ``stage``."""
        name = step.step_name
        output = None
        if state.status is StepStatus.SUCCEEDED:
            output = typed_output(state.output, step.action)
        carried = self._entries.pop(name, None)
        if carried is not None:
            arg = step.action_input(record.input, record.results)
            stage.append(
                Entry(
                    step=step,
                    arg=arg,
                    state=state,
                    output=output,
                    definitely_failed=carried.definitely_failed,
                    span_context=carried.span_context(),
                )
            )
        if state.status is StepStatus.FAILED:
            raise StepFailed(name, state.error or "failed")
        if state.status is StepStatus.SUCCEEDED:
            state.output = output
            record.results[name] = output
        return output


def typed_output(value: Any, action: Any) -> Any:
    """An activity's output carried as JSON, back as the type the activity returns."""
    defn = temporalio.activity._Definition.from_callable(action)
    ret_type = defn.ret_type if defn else None
    if value is None or ret_type is None:
        return value
    converter = workflow.payload_converter()
    return converter.from_payload(converter.to_payload(value), ret_type)
