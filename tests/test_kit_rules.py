"""The testing kit's rules on made-up runs: each can fail (the explorations show they pass)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from activities.pricing import TripTotal
from engine import Compensation, SagaState, SagaStatus, StepState, StepStatus
from engine._kit_rules import check_rules
from engine._kit_values import sample
from engine.testing import Call, Run

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SAGA = "s-1"


def call(seq: int, step: str, phase: str = "forward", outcome: str = "succeeded",
         *, attempt: int = 1, key: str | None = None, effect: bool = True,
         fallback: bool = False) -> Call:  # fmt: skip
    arg: Any = None
    if phase == "compensation":
        arg = Compensation[Any, Any](
            saga_id=SAGA, step=step, idempotency_key=key or f"{SAGA}/{step}", input=None
        )
    return Call(seq, SAGA, step, phase, attempt, step, key or f"{SAGA}/{step}", arg, outcome,
                effect and outcome != "refused", seq + 1, fallback)  # fmt: skip


def run(status: SagaStatus, *calls: Call, **kw: Any) -> Run:
    steps = [StepState(name=n, kind="compensatable", idempotency_key=f"{SAGA}/{n}") for n in "ab"]
    state = SagaState(id=SAGA, type="t", status=status, input=None, steps=steps, started_at=NOW,
                      updated_at=NOW)  # fmt: skip
    return Run("x", SAGA, state, list(calls), stage_of={"a": 0, "b": 1},
               has_undo=frozenset("ab"), **kw)  # fmt: skip


def test_a_good_run_keeps_every_rule() -> None:
    good = run(SagaStatus.COMPENSATED, call(1, "a"), call(3, "b", outcome="refused"),
               call(5, "a", "compensation"))  # fmt: skip
    assert check_rules(good) == []


def test_each_rule_can_fail() -> None:
    # a's effect is never undone; b (refused) is compensated, twice, before a.
    bad = run(SagaStatus.COMPENSATED, call(1, "a"), call(3, "b", outcome="refused"),
              call(5, "b", "compensation"), call(7, "b", "compensation"))  # fmt: skip
    problems = check_rules(bad)
    assert "effects: a took effect and was never undone" in problems
    assert "effects: b was undone 2 times" in problems
    assert "refusals: b was compensated after a refusal" in problems
    out_of_order = run(SagaStatus.COMPENSATED, call(1, "a"), call(3, "b"),
                       call(5, "a", "compensation"), call(7, "b", "compensation"))  # fmt: skip
    assert check_rules(out_of_order) == ["order: a was undone before b (which ran after it)"]
    moved_key = run(SagaStatus.COMPLETED, call(1, "a"), call(3, "a", attempt=2, key="s-1/x"))
    assert check_rules(moved_key) == ["keys: a forward attempt 2 carried ['s-1/x'], not s-1/a"]
    past_pivot = run(SagaStatus.COMPENSATED, call(1, "a"), call(3, "b"),
                     call(5, "a", "compensation"), pivot="b")  # fmt: skip
    assert "pivot: compensated after the pivot b succeeded" in check_rules(past_pivot)
    never_parked = run(SagaStatus.COMPENSATED, failing_undos=frozenset({"a"}))
    assert check_rules(never_parked) == ["parked: never parked in compensation_failed (a)"]


def test_a_fallback_s_effect_is_counted_apart() -> None:
    # a's action lost its answer (outcome unknown), its fallback served; both undone once.
    served = dict(fallback_undo=frozenset("a"), fallbacks={"a": "a_alt"})
    good = run(SagaStatus.COMPENSATED, call(1, "a", outcome="lost"), call(3, "a", fallback=True),
               call(5, "b", outcome="refused"), call(7, "a", "compensation", fallback=True),
               call(9, "a", "compensation"), **served)  # fmt: skip
    good.state.step("a").served_by = "a_alt"
    assert check_rules(good) == []
    twice = run(SagaStatus.COMPENSATED, call(1, "a", outcome="lost"), call(3, "a", fallback=True),
                call(5, "a", "compensation"), call(7, "a", "compensation"), **served)  # fmt: skip
    twice.state.step("a").served_by = "a_alt"
    assert check_rules(twice) == [
        "effects: a was undone 2 times",
        "effects: a's fallback took effect and was never undone",
    ]
    refused = run(SagaStatus.COMPENSATED, call(1, "a", outcome="refused"),
                  call(3, "a", fallback=True), call(5, "a", "compensation", fallback=True),
                  **served)  # fmt: skip
    assert check_rules(refused) == [
        "fallbacks: a's fallback ran although its action was refused",
        "fallbacks: a's fallback ran, yet served_by is None",
    ]


def test_a_completed_saga_keeps_only_the_fallback_s_effect() -> None:
    served = dict(fallback_undo=frozenset("a"), fallbacks={"a": "a_alt"})
    kept_both = run(SagaStatus.COMPLETED, call(1, "a", outcome="lost"),
                    call(3, "a", fallback=True), call(5, "b"), **served)  # fmt: skip
    kept_both.state.step("a").served_by = "a_alt"
    assert check_rules(kept_both) == ["effects: a took effect, was replaced and was left active"]
    replaced = run(SagaStatus.COMPLETED, call(1, "a", outcome="lost"),
                   call(3, "a", fallback=True), call(5, "a", "compensation"), call(7, "b"),
                   **served)  # fmt: skip
    replaced.state.step("a").served_by = "a_alt"
    assert check_rules(replaced) == []


def test_a_failed_optional_step_holds_nothing() -> None:
    left = run(SagaStatus.COMPLETED, call(1, "a", outcome="lost"), call(3, "b"))
    left.state.step("a").status = StepStatus.FAILED_OPTIONAL
    assert check_rules(left) == ["effects: a took effect, failed (optional) and was left active"]
    undone = run(SagaStatus.COMPLETED, call(1, "a", outcome="lost"), call(3, "a", "compensation"),
                 call(5, "b"))  # fmt: skip
    undone.state.step("a").status = StepStatus.FAILED_OPTIONAL
    assert check_rules(undone) == []
    refused = run(SagaStatus.COMPLETED, call(1, "a", outcome="refused"),
                  call(3, "a", "compensation"), call(5, "b"))  # fmt: skip
    refused.state.step("a").status = StepStatus.FAILED_OPTIONAL
    assert check_rules(refused) == ["refusals: a was compensated after a refusal"]


def test_fake_answers_have_the_declared_type() -> None:
    total = sample(TripTotal)
    assert isinstance(total, TripTotal)
    assert (total.total, total.needs_approval) == (0, False)
    assert sample(str, "key") == "key"
    assert sample(list[int]) == []
    assert sample(int | None) is None
