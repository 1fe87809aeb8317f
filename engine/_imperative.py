"""The imperative form: a saga written as an async function that branches as it goes.

    async def refund_or_rebook(saga: SagaRun[Claim]) -> None:
        booking = await saga.step(flights.reserve, compensate=flights.cancel)
        if saga.input.rebook:
            await saga.step(payments.charge, saga.input.fee, compensate=payments.refund)
        await saga.step(notifications.send, retriable=True)

    claims = ImperativeSaga("claims", input=Claim, run=refund_or_rebook,
                            activities=[flights.reserve, flights.cancel, ...])

Each ``saga.step`` call registers the step's compensation as it succeeds; the saga workflow
then applies exactly the rules of the declarative form.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel
from temporalio.common import RetryPolicy

from engine._definition import DEFAULT_START_TO_CLOSE, Approval, Step, StepKind, activity_name

if TYPE_CHECKING:
    from engine._workflow import SagaWorkflow

InputT = TypeVar("InputT", bound=BaseModel)

_NO_ARG: Any = object()


class SagaRun(Generic[InputT]):
    """Handle given to an imperative saga's ``run`` function."""

    def __init__(self, workflow: SagaWorkflow) -> None:
        self._workflow = workflow
        self._point_of_no_return: str | None = None

    @property
    def input(self) -> InputT:
        value: InputT = self._workflow.saga_input
        return value

    @property
    def results(self) -> Mapping[str, Any]:
        """Outputs of the steps that have succeeded so far, by step name."""
        return dict(self._workflow.results)

    async def step(
        self,
        action: Callable[..., Any],
        arg: Any = _NO_ARG,
        *,
        compensate: Callable[..., Any] | None = None,
        name: str | None = None,
        pivot: bool = False,
        retriable: bool = False,
        retry: RetryPolicy | None = None,
        compensation_retry: RetryPolicy | None = None,
        start_to_close: timedelta = DEFAULT_START_TO_CLOSE,
        schedule_to_close: timedelta | None = None,
        heartbeat: timedelta | None = None,
        non_retryable: tuple[str, ...] = (),
        approval: Approval | None = None,
    ) -> Any:
        """Run one step (the saga input is its argument unless ``arg`` is given).

        Returns the action's output. If the step fails for good, ``StepFailed`` propagates and
        the saga compensates; catching it to try another branch is allowed.
        """
        for fn in (action, compensate):
            if fn is not None and not self._workflow.declares(fn):
                # Not registered on the worker, its task would wait in the queue for ever.
                raise RuntimeError(
                    f"activity {activity_name(fn)!r} is not in this saga's activities=[...]"
                )
        step_name = self._unique_name(name or activity_name(action))
        kind = StepKind.PIVOT if pivot else StepKind.RETRIABLE if retriable else None
        if kind is None and self._point_of_no_return is not None:
            raise RuntimeError(
                f"step {step_name!r} is compensatable but comes after the point of no return "
                f"({self._point_of_no_return!r}); mark it retriable=True"
            )
        if retriable and compensate is not None:
            raise RuntimeError(f"step {step_name!r}: a retriable step is never compensated")
        value = arg
        step = Step(
            action,
            compensate=compensate,
            name=step_name,
            input=None if value is _NO_ARG else (lambda _input: value),
            pivot=pivot,
            retriable=retriable,
            retry=retry,
            compensation_retry=compensation_retry,
            start_to_close=start_to_close,
            schedule_to_close=schedule_to_close,
            heartbeat=heartbeat,
            non_retryable=non_retryable,
            approval=approval,
        )
        if pivot or retriable:
            self._point_of_no_return = self._point_of_no_return or step_name
        (output,) = await self._workflow.run_stage([step])
        return output

    def _unique_name(self, base: str) -> str:
        name, n = base, 1
        while self._workflow.has_step(name):
            n += 1
            name = f"{base}.{n}"
        return name
