"""A definition is checked when it is built: each mistake is a clear error naming saga and step."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from engine import (
    Approval,
    InvalidSagaInput,
    Parallel,
    Saga,
    SagaDefinitionError,
    Step,
    StepKind,
)
from tests.support.sagas import Order, a, b, c, d, undo_a, undo_b, undo_c


def saga(*steps: Any, input: Any = Order) -> Saga[Any]:
    return Saga("trip", input=input, steps=list(steps))


class TestDefinitionChecks:
    """Each malformed definition is refused with the saga and the step named."""

    def test_duplicate_step_names(self) -> None:
        with pytest.raises(SagaDefinitionError, match=r"saga 'trip', step 'a': duplicate"):
            saga(Step(a, compensate=undo_a), Step(a, compensate=undo_a))

    def test_duplicate_names_can_be_fixed_with_name(self) -> None:
        s = saga(Step(a, compensate=undo_a), Step(a, compensate=undo_a, name="a_again"))
        assert [step.step_name for step in s.steps] == ["a", "a_again"]

    def test_compensation_on_retriable_step(self) -> None:
        with pytest.raises(SagaDefinitionError, match=r"step 'b': a retriable step is never"):
            saga(Step(a, compensate=undo_a), Step(b, compensate=undo_b, retriable=True))

    def test_compensatable_step_after_pivot(self) -> None:
        with pytest.raises(
            SagaDefinitionError,
            match=r"step 'c': a compensatable step cannot "
            r"come after the point of no return \('b'\)",
        ):
            saga(Step(a, compensate=undo_a), Step(b, pivot=True), Step(c, compensate=undo_c))

    def test_compensatable_step_after_retriable(self) -> None:
        with pytest.raises(SagaDefinitionError, match=r"step 'c'.*point of no return \('b'\)"):
            saga(Step(a, compensate=undo_a), Step(b, retriable=True), Step(c, compensate=undo_c))

    def test_pivot_inside_parallel(self) -> None:
        with pytest.raises(SagaDefinitionError, match=r"step 'b': the pivot cannot be inside"):
            saga(Parallel(Step(a, compensate=undo_a), Step(b, pivot=True)))

    def test_input_not_a_pydantic_model(self) -> None:
        with pytest.raises(SagaDefinitionError, match=r"saga 'trip': input must be a pydantic"):
            saga(Step(a), input=dict)

    def test_two_pivots(self) -> None:
        with pytest.raises(SagaDefinitionError, match=r"step 'c': a saga has at most one pivot"):
            saga(Step(a, compensate=undo_a), Step(b, pivot=True), Step(c, pivot=True))

    def test_not_an_activity(self) -> None:
        async def plain(x: Order) -> None: ...

        with pytest.raises(SagaDefinitionError, match=r"is not an @activity\.defn function"):
            saga(Step(plain))
        with pytest.raises(SagaDefinitionError, match=r"step 'a': compensate: .* not an @act"):
            saga(Step(a, compensate=plain))

    def test_approval_after_point_of_no_return(self) -> None:
        with pytest.raises(SagaDefinitionError, match=r"step 'c': an approval after the point"):
            saga(Step(b, pivot=True), Step(c, retriable=True, approval=Approval(timedelta(1))))

    def test_parallel_mixing_kinds(self) -> None:
        with pytest.raises(SagaDefinitionError, match="mixes compensatable and retriable"):
            saga(Parallel(Step(a, compensate=undo_a), Step(b, retriable=True)))

    def test_empty(self) -> None:
        with pytest.raises(SagaDefinitionError, match="'trip' has no steps"):
            saga()
        with pytest.raises(SagaDefinitionError, match="a Parallel group has no steps"):
            saga(Parallel())

    def test_bad_names(self) -> None:
        with pytest.raises(SagaDefinitionError, match="saga name 'a b'"):
            Saga("a b", input=Order, steps=[Step(a)])
        with pytest.raises(SagaDefinitionError, match=r"step 'x/y': a step name must be"):
            saga(Step(a, name="x/y"))

    def test_non_positive_timeouts(self) -> None:
        with pytest.raises(SagaDefinitionError, match="deadline must be positive"):
            Saga("t", input=Order, steps=[Step(a)], deadline=timedelta(0))
        with pytest.raises(SagaDefinitionError, match="start_to_close must be positive"):
            saga(Step(a, start_to_close=timedelta(0)))

        with pytest.raises(SagaDefinitionError, match="outage_patience must be positive"):
            saga(Step(a, outage_patience=timedelta(0)))
        with pytest.raises(SagaDefinitionError, match="saga 't': outage_patience must be"):
            Saga("t", input=Order, steps=[Step(a)], outage_patience=timedelta(seconds=-1))

    def test_fallbacks_and_optional_steps(self) -> None:
        with pytest.raises(SagaDefinitionError, match=r"step 'a': the fallback of a comp"):
            saga(Step(a, compensate=undo_a, fallback=b))
        with pytest.raises(SagaDefinitionError, match=r"step 'a': fallback_compensate= needs"):
            saga(Step(a, fallback_compensate=undo_b))
        with pytest.raises(SagaDefinitionError, match=r"step 'a': a pivot or retriable step"):
            saga(Step(a, pivot=True, optional=True))
        with pytest.raises(SagaDefinitionError, match=r"step 'a': fallback: "):
            saga(Step(a, fallback=lambda x: x))
        degrading = saga(Step(a, compensate=undo_a, fallback=b, fallback_compensate=undo_b))
        assert len(degrading.activities) == 4  # the worker registers the fallback's too


class TestWellFormedDefinitions:
    """A valid definition exposes its steps, kinds and activities."""

    def test_kinds_and_activities(self) -> None:
        s = saga(
            Parallel(Step(a, compensate=undo_a), Step(b, compensate=undo_b)),
            Step(c, pivot=True),
            Step(d, retriable=True),
        )
        assert [(st.step_name, st.kind) for st in s.steps] == [
            ("a", StepKind.COMPENSATABLE),
            ("b", StepKind.COMPENSATABLE),
            ("c", StepKind.PIVOT),
            ("d", StepKind.RETRIABLE),
        ]
        assert len(s.activities) == 6

    def test_input_validation_names_the_field(self) -> None:
        class Trip(BaseModel):
            city: str
            nights: int

        s = saga(Step(a), input=Trip)
        with pytest.raises(InvalidSagaInput, match="nights") as info:
            s.validate_input({"city": "Oslo", "nights": "many"})
        assert info.value.errors[0]["loc"] == ("nights",)
        assert s.validate_input('{"city": "Oslo", "nights": 2}') == Trip(city="Oslo", nights=2)

    def test_callbacks_take_input_or_input_and_results(self) -> None:
        step = Step(a, when=lambda o: o.express, input=lambda o, done: done["x"])
        order = Order(express=True)
        assert step.should_run(order, {}) is True
        assert step.action_input(order, {"x": 42}) == 42


class TestWorkerRegistration:
    """Activities are registered by name, so a name clash between sagas is an error."""

    def test_two_functions_with_one_activity_name(self) -> None:
        from temporalio import activity

        from engine._worker import saga_activities

        @activity.defn(name="a")
        async def impostor(o: Order) -> None: ...

        first = Saga("first", input=Order, steps=[Step(a)])
        second = Saga("second", input=Order, steps=[Step(impostor)])
        with pytest.raises(SagaDefinitionError, match=r"saga 'second': activity name 'a' is use"):
            saga_activities([first, second])
        assert saga_activities([first, first]) == [a]
