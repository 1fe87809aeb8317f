"""The state a saga carries into its next run survives the trip (no Temporal server needed).

The carry goes to Temporal as the continued run's second argument, through the same pydantic
data converter as every payload; what comes back must rebuild the same record.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from opentelemetry.trace import SpanContext, TraceFlags
from temporalio.contrib.pydantic import pydantic_data_converter

from engine._carry import Carry, Resume, capture, restore
from engine._compensation import Entry, UndoLog
from engine._continue import BASE_MEMO, LoopState, revision_base
from engine._errors import StepFailed
from engine._record import SagaRecord
from engine._state import (
    CancelRequest,
    CompensationState,
    Decision,
    SagaStatus,
    StepState,
    StepStatus,
)
from engine._step import Step
from tests.support.sagas import a, b, c, d, undo_a, undo_b

T0 = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
SPAN = SpanContext(
    trace_id=0x0AF7651916CD43DD8448EB211C80319C,
    span_id=0x00F067AA0BA902B7,
    is_remote=False,
    trace_flags=TraceFlags(1),
)


def bare_record(**fields: Any) -> SagaRecord:
    """A record outside a workflow (its constructor reads the workflow's info)."""
    record = object.__new__(SagaRecord)
    defaults: dict[str, Any] = {
        "saga_id": "s-1",
        "saga_type": "t",
        "input": None,
        "steps": {},
        "results": {},
        "phase": SagaStatus.RUNNING,
        "error": None,
        "cancel": None,
        "awaiting": [],
        "waiting_since": {},
        "pivot_started": False,
        "past_pivot": False,
        "started_at": T0,
        "updated_at": T0,
        "revision_base": 0,
        "_listed_status": None,
        "_publish_scheduled": False,
    }
    for name, value in {**defaults, **fields}.items():
        setattr(record, name, value)
    return record


def state(name: str, status: StepStatus, **fields: Any) -> StepState:
    return StepState(
        name=name, kind="compensatable", idempotency_key=f"s-1/{name}", status=status, **fields
    )


def a_saga_in_the_middle() -> tuple[SagaRecord, UndoLog]:
    steps = {
        "a": state("a", StepStatus.SUCCEEDED, attempts=1, output={"step": "a", "amount": 3}),
        "b": state(
            "b",
            StepStatus.SUCCEEDED,
            attempts=2,
            approval=Decision(approved=True, by="ops", at=T0),
            compensation=CompensationState(),
        ),
        "c": state("c", StepStatus.RUNNING, attempts=40, error="Unavailable: down"),
        "d": state("d", StepStatus.PENDING),
    }
    record = bare_record(
        steps=steps,
        results={"a": {"step": "a", "amount": 3}, "b": None},
        pivot_started=True,
        awaiting=["d"],
        waiting_since={"d": T0 + timedelta(minutes=5)},
        revision_base=4000,
        cancel=CancelRequest(reason="refused: past the pivot"),
        updated_at=T0 + timedelta(hours=2),
    )
    log = UndoLog()
    log.open_stage().append(
        Entry(step=Step(a, compensate=undo_a), arg=1, state=steps["a"], span_context=SPAN)
    )
    log.open_stage().append(Entry(step=Step(b, compensate=undo_b), arg=2, state=steps["b"]))
    log.open_stage().append(Entry(step=Step(c, retriable=True), arg=3, state=steps["c"]))
    return record, log


def round_trip(carry: Carry) -> Carry:
    converter = pydantic_data_converter.payload_converter
    back: Carry = converter.from_payload(converter.to_payload(carry), Carry)
    return back


class TestCapture:
    def carry(self) -> Carry:
        record, log = a_saga_in_the_middle()
        loops = {
            "c/forward": LoopState(tried=40, budget_end=T0 + timedelta(days=3)),
            "a/forward": LoopState(tried=1),  # finished: nothing to carry
            "a/compensation": LoopState(tried=2),
        }
        decisions = {"b": Decision(approved=True, by="ops", at=T0)}
        return capture(
            record, log, decisions=decisions, loops=loops, version=2, runs=1, history_length=300
        )

    def test_what_is_carried(self) -> None:
        carry = self.carry()
        assert carry.version == 2
        assert carry.runs == 2
        assert carry.revision_base == 4300
        # Only finished steps' entries: a running one rebuilds its own when it runs again.
        assert set(carry.entries) == {"a", "b"}
        assert carry.entries["a"].span_context() == SPAN
        assert not carry.entries["b"].span_context().is_valid
        # Only the loops of steps still running forward.
        assert set(carry.loops) == {"c/forward"}
        assert carry.loops["c/forward"].tried == 40

    def test_the_trip_through_the_data_converter_keeps_everything(self) -> None:
        carry = self.carry()
        assert round_trip(carry) == carry

    def test_restored_into_a_new_record(self) -> None:
        before, _ = a_saga_in_the_middle()
        carry = round_trip(self.carry())
        record = bare_record()
        resume, loops = restore(carry, record)
        assert record.snapshot().model_dump(exclude={"result"}) == before.snapshot().model_dump(
            exclude={"result"}
        )
        assert record.status is SagaStatus.AWAITING_APPROVAL
        assert record.waiting_since == before.waiting_since
        assert record.revision_base == 4300
        assert record.results == {}  # the forward walk puts them back, typed
        assert loops == {"c/forward": LoopState(tried=40, budget_end=T0 + timedelta(days=3))}
        assert isinstance(resume, Resume)


class TestReplay:
    def test_a_failed_step_fails_again_and_its_entry_returns(self) -> None:
        record, log = a_saga_in_the_middle()
        record.steps["b"].status = StepStatus.FAILED
        record.steps["b"].error = "rejected by ops"
        carry = capture(record, log, decisions={}, loops={}, version=1, runs=0, history_length=1)
        new = bare_record()
        resume, _ = restore(round_trip(carry), new)
        stage: list[Entry] = []
        with pytest.raises(StepFailed, match="rejected by ops"):
            resume.replay(Step(b, compensate=undo_b), new.steps["b"], stage, new)
        assert [e.state.name for e in stage] == ["b"]
        assert stage[0].needs_compensation

    def test_a_skipped_step_is_skipped_again(self) -> None:
        record = bare_record(steps={"d": state("d", StepStatus.SKIPPED)})
        carry = capture(
            record, UndoLog(), decisions={}, loops={}, version=1, runs=0, history_length=1
        )
        new = bare_record()
        resume, _ = restore(round_trip(carry), new)
        stage: list[Entry] = []
        assert resume.replay(Step(d), new.steps["d"], stage, new) is None
        assert stage == []
        assert new.results == {}


def test_the_revision_base_is_read_from_the_memo() -> None:
    assert revision_base({}) == 0
    assert revision_base({"saga_status": "running", BASE_MEMO: 8123}) == 8123
    assert revision_base({BASE_MEMO: "garbage"}) == 0
