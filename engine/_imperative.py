"""The imperative form: a saga written as an async function that branches as it goes.

    async def refund_or_rebook(saga: SagaRun[Claim]) -> None:
        booking = await saga.step(flights.reserve, compensate=flights.cancel)
        if saga.input.rebook:
            await saga.step(payments.charge, saga.input.fee, compensate=payments.refund)
        await saga.step(notifications.send, retriable=True)

    claims = ImperativeSaga("claims", input=Claim, run=refund_or_rebook,
                            activities=[flights.reserve, flights.cancel, ...])

Each ``saga.step`` call registers the step's compensation as it succeeds; the saga workflow
then applies exactly the rules of the declarative form. ``SagaRun`` drives the workflow's
forward runner through the ``StageRunner`` protocol, so this module never imports it.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, Generic, TypeVar

from pydantic import BaseModel
from temporalio.common import RetryPolicy

from engine._definition import SagaDefinition, StageRunner, check_degradation
from engine._errors import SagaDefinitionError
from engine._step import DEFAULT_START_TO_CLOSE, Approval, Step, StepKind, activity_name

InputT = TypeVar("InputT", bound=BaseModel)

_NO_ARG: Any = object()


class SagaRun(Generic[InputT]):
    """Handle given to an imperative saga's ``run`` function."""

    def __init__(self, runner: StageRunner) -> None:
        self._runner = runner
        self._point_of_no_return: str | None = None

    @property
    def input(self) -> InputT:
        value: InputT = self._runner.saga_input
        return value

    @property
    def results(self) -> Mapping[str, Any]:
        """Outputs of the steps that have succeeded so far, by step name."""
        return dict(self._runner.results)

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
        participant: str | None = None,
        outage_patience: timedelta | None = None,
        fallback: Callable[..., Any] | None = None,
        fallback_compensate: Callable[..., Any] | None = None,
        optional: bool = False,
        local: bool = False,
    ) -> Any:
        """Run one step (the saga input is its argument unless ``arg`` is given).

        Returns the action's output. If the step fails for good, ``StepFailed`` propagates and
        the saga compensates; catching it to try another branch is allowed.
        """
        for fn in (action, compensate, fallback, fallback_compensate):
            if fn is not None and not self._runner.declares(fn):
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
            participant=participant,
            outage_patience=outage_patience,
            fallback=fallback,
            fallback_compensate=fallback_compensate,
            optional=optional,
            local=local,
        )
        try:
            check_degradation(f"step {step_name!r}", step)
        except SagaDefinitionError as exc:
            raise RuntimeError(str(exc)) from None
        if pivot or retriable:
            self._point_of_no_return = self._point_of_no_return or step_name
        (output,) = await self._runner.run_stage([step])
        return output

    def _unique_name(self, base: str) -> str:
        name, n = base, 1
        while self._runner.has_step(name):
            n += 1
            name = f"{base}.{n}"
        return name


class ImperativeSaga(SagaDefinition[InputT]):
    """A saga written as code: ``run(saga)`` calls ``await saga.step(...)`` as it branches.

    The function runs inside the Temporal workflow, so it must be deterministic (no I/O, no
    clocks, no randomness: do those in activities). It follows the same rules as a declarative
    saga: compensation in reverse order, pivot, cancellation, deadline, approvals.
    """

    def __init__(
        self,
        name: str,
        *,
        input: type[InputT],
        run: Callable[[SagaRun[InputT]], Awaitable[Any]],
        activities: Sequence[Callable[..., Any]],
        deadline: timedelta | None = None,
        description: str = "",
        version: int = 1,
        outage_patience: timedelta | None = None,
        max_input_bytes: int | None = None,
    ) -> None:
        super().__init__(
            name,
            input=input,
            deadline=deadline,
            description=description,
            version=version,
            outage_patience=outage_patience,
            max_input_bytes=max_input_bytes,
        )
        if not inspect.iscoroutinefunction(run):
            raise SagaDefinitionError(f"saga {name!r}: run must be an async function")
        for fn in activities:
            try:
                activity_name(fn)
            except TypeError as exc:
                raise SagaDefinitionError(f"saga {name!r}: {exc}") from None
        self.run = run
        self._activities = list(activities)

    @property
    def activities(self) -> list[Callable[..., Any]]:
        return list(self._activities)

    async def forward(self, runner: StageRunner) -> None:
        await self.run(SagaRun(runner))
