"""The consistency checker's rules, on saga states and records made by hand (no services)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from engine import SagaState, SagaStatus, StepState, StepStatus
from participants.checker import compare

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def saga(status: SagaStatus, *steps: tuple[str, StepStatus, Any]) -> SagaState:
    return SagaState(
        id="s",
        type="trip_booking",
        status=status,
        input={},
        steps=[
            StepState(name=name, kind="compensatable", status=step_status, output=output,
                      idempotency_key=f"s/{name}")
            for name, step_status, output in steps
        ],
        started_at=NOW,
        updated_at=NOW,
    )  # fmt: skip


RESERVED = {"key": "s/x", "status": "reserved", "price": 1}
FAILED = SagaStatus.COMPENSATION_FAILED


class TestUnknownOutcomes:
    """A failed compensation of a step whose outcome is unknown may hold nothing."""

    def test_unknown_outcome_may_hold_nothing_or_one(self) -> None:
        state = saga(FAILED, ("reserve_flight", StepStatus.COMPENSATION_FAILED, None))
        assert compare(state, []) == []
        assert compare(state, [("s/reserve_flight", "reserved")]) == []

    def test_but_never_two(self) -> None:
        state = saga(FAILED, ("reserve_hotel", StepStatus.COMPENSATION_FAILED, None))
        two = [("s/reserve_hotel", "reserved"), ("s/reserve_hotel", "reserved")]
        (mismatch,) = compare(state, two)
        assert mismatch.expected == "at most one active record"

    def test_a_known_outcome_stays_exact(self) -> None:
        state = saga(FAILED, ("reserve_flight", StepStatus.COMPENSATION_FAILED, RESERVED))
        (mismatch,) = compare(state, [])
        assert (mismatch.expected, mismatch.found) == ("an active record", "nothing")


class TestTheOtherRulesStayExact:
    def test_completed_needs_each_succeeded_step_once(self) -> None:
        state = saga(
            SagaStatus.COMPLETED,
            ("reserve_flight", StepStatus.SUCCEEDED, RESERVED),
            ("reserve_car", StepStatus.FAILED_OPTIONAL, None),
        )
        assert compare(state, [("s/reserve_flight", "reserved")]) == []
        (mismatch,) = compare(
            state, [("s/reserve_flight", "reserved"), ("s/reserve_car", "reserved")]
        )
        assert mismatch.step == "reserve_car"

    def test_a_fallback_record_counts_for_its_step(self) -> None:
        state = saga(SagaStatus.COMPLETED, ("reserve_hotel", StepStatus.SUCCEEDED, RESERVED))
        # The hotel never stored it (it was down); the broker holds it, under the same key.
        assert compare(state, [("s/reserve_hotel", "reserved")]) == []

    def test_compensated_holds_nothing(self) -> None:
        state = saga(SagaStatus.COMPENSATED, ("reserve_flight", StepStatus.COMPENSATED, None))
        assert compare(state, [("s/reserve_flight", "cancelled")]) == []
        assert len(compare(state, [("s/reserve_flight", "reserved")])) == 1
