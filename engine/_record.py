"""The saga record: a saga's state as the world sees it, and where it is published.

Every change goes through the record's methods, which publish it:

* the saga status to the workflow memo, so listings (``sagas list``, the Temporal UI) show it
  without a query (a saga stamped with the engine's generation, engine._patches, is listed as
  running by its start memo and not listed as completed, nor from generation 2 as
  compensated: its workflow's status, with the status listed before, says so);
* the outcome metrics (``sagas_ended``), once per status that counts;
* a snapshot to the saga store's projection, scheduled with ``call_soon`` so that a burst
  of changes is one snapshot (an activation may still publish twice, at the same history
  length: the store takes the later one), and none on replay: a replayed change was
  published when it first happened.

It runs inside the saga workflow (it reads the workflow clock and info).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow

from engine import _metrics, _projection
from engine._patches import STATUS_MEMO, stamp
from engine._state import (
    FINAL_STATUSES,
    CancelRequest,
    SagaState,
    SagaStatus,
    StepState,
    StepStatus,
)
from engine._step import Step

# Statuses counted by the sagas_ended metric: the final ones, and compensation_failed (the
# saga stays open, but an operator must act).
COUNTED_STATUSES = FINAL_STATUSES | {SagaStatus.COMPENSATION_FAILED}
# By the generation a saga was stamped with (engine._patches; 2 or later as 2), the statuses
# it leaves its memo without: the workflow completes as it reaches them, and the listing reads
# them from that and the status listed before (engine._client._listed_status).
_SHOWN_BY_CLOSE: tuple[frozenset[SagaStatus], ...] = (
    frozenset(),
    frozenset({SagaStatus.COMPLETED}),
    frozenset({SagaStatus.COMPLETED, SagaStatus.COMPENSATED}),
)


class SagaRecord:
    """The state of one saga: its phase, steps, results, and what it waits for."""

    def __init__(self) -> None:
        # Built in the workflow's __init__, so that handlers can always read it.
        info = workflow.info()
        self.saga_id = info.workflow_id
        self.saga_type = info.workflow_type
        self.input: Any = None
        self.steps: dict[str, StepState] = {}
        self.results: dict[str, Any] = {}
        self.phase = SagaStatus.RUNNING
        self.error: str | None = None
        self.cancel: CancelRequest | None = None
        self.awaiting: list[str] = []
        self.waiting_since: dict[str, datetime] = {}  # when each awaited step began to wait
        self.pivot_started = False  # the pivot's action has been called: no way back
        self.past_pivot = False  # the pivot succeeded
        self.started_at: datetime = workflow.now()
        self.updated_at: datetime = self.started_at
        # History events of the saga's earlier runs (engine._carry): the store's revision of
        # a snapshot is this plus the current run's history length, rising across runs.
        self.revision_base = 0
        # Started with the generation stamp (engine._patches), the saga is listed as running by
        # its start memo; and when it completes, it is not listed as completed: the workflow's
        # own status says it (the listing reads a completed workflow whose memo shows no final
        # status as completed, and from generation 2, one whose memo shows compensating or
        # compensation_failed as compensated). A continued run's status is set by
        # engine._carry.restore.
        generation = stamp()
        self._listed_status: SagaStatus | None = SagaStatus.RUNNING if generation else None
        self._shown_by_close = _SHOWN_BY_CLOSE[min(generation, len(_SHOWN_BY_CLOSE) - 1)]
        self._publish_scheduled = False
        # Building a snapshot is most of a change's cost: none when no projector listens.
        self._projected = _projection.listening(info.task_queue)

    # ------------------------------------------------------------ changes

    def changed(self) -> None:
        """Note a change: stamp it, publish the status if it moved, schedule a snapshot."""
        self.updated_at = workflow.now()
        status = self.status
        if status is not self._listed_status:
            self._listed_status = status
            if status not in self._shown_by_close:
                workflow.upsert_memo({STATUS_MEMO: status.value})
            if status in COUNTED_STATUSES:
                _metrics.saga_status(self.saga_type, status.value)
        self.publish_soon()

    def set_phase(self, phase: SagaStatus) -> None:
        self.phase = phase
        self.changed()

    def step_state(self, step: Step) -> StepState:
        """The step's state, added when an imperative saga reaches a new step."""
        state = self.steps.get(step.step_name)
        if state is None:
            state = self.steps[step.step_name] = step.pending_state(self.saga_id)
        return state

    def set_step(self, state: StepState, status: StepStatus) -> None:
        state.status = status
        self.changed()

    def end_step(self, state: StepState, status: StepStatus, *, error: str | None) -> None:
        state.error = error
        state.ended_at = workflow.now()
        self.set_step(state, status)

    def wait_for_decision(self, step: str) -> None:
        # Already waiting when the saga resumes a wait after it continued as new.
        if step not in self.awaiting:
            self.awaiting.append(step)
        self.waiting_since.setdefault(step, workflow.now())
        self.changed()

    def stop_waiting(self, step: str) -> None:
        self.awaiting.remove(step)
        self.waiting_since.pop(step, None)
        self.changed()

    def listed(self, status: SagaStatus) -> None:
        """The status the memo already shows (carried by a continue-as-new)."""
        self._listed_status = status

    def measure(self, step: str, phase: str, outcome: str, since: datetime | None) -> None:
        """Record how long a step (or compensation) took from its first attempt."""
        took = workflow.now() - since if since else timedelta(0)
        _metrics.step_duration(self.saga_type, step, phase, outcome, took)

    # ------------------------------------------------------------ reading

    @property
    def status(self) -> SagaStatus:
        if self.phase is SagaStatus.RUNNING and self.awaiting:
            return SagaStatus.AWAITING_APPROVAL
        return self.phase

    def snapshot(self) -> SagaState:
        status = self.status
        return SagaState(
            id=self.saga_id,
            type=self.saga_type,
            status=status,
            input=self.input,
            result=dict(self.results) if status is SagaStatus.COMPLETED else None,
            error=self.error,
            steps=list(self.steps.values()),
            cancel_reason=self.cancel.reason if self.cancel else None,
            awaiting_approval=list(self.awaiting),
            past_pivot=self.past_pivot,
            started_at=self.started_at,
            updated_at=self.updated_at,
        )

    # --------------------------------------------------------- publication

    def publish_now(self) -> None:
        """Publish a pending snapshot at once (the final state, before the workflow ends)."""
        self._publish()

    def publish_soon(self) -> None:
        """Publish a snapshot once the workflow's loop has run what is ready (never on replay,
        nor with no projector to take it: the saga store is off)."""
        if not self._publish_scheduled and self._projected and not workflow.unsafe.is_replaying():
            self._publish_scheduled = True
            asyncio.get_running_loop().call_soon(self._publish)

    def _publish(self) -> None:
        if not self._publish_scheduled:
            return
        self._publish_scheduled = False
        info = workflow.info()
        snapshot = self.snapshot().model_dump(mode="json")
        revision = self.revision_base + info.get_current_history_length()
        _projection.publish(info.task_queue, snapshot, revision)
