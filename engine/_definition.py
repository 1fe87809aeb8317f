"""Declarative saga definitions: ``Saga``, ``Step``, ``Parallel`` and ``Approval``.

A definition is data. It is checked when it is built, so that a malformed saga fails at import
time with a message naming the saga and the step, never halfway through a customer's booking.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import temporalio.activity
from pydantic import BaseModel
from temporalio.common import RetryPolicy

from engine._errors import SagaDefinitionError

if TYPE_CHECKING:
    from engine._imperative import SagaRun

InputT = TypeVar("InputT", bound=BaseModel)

#: Outputs of the steps that have succeeded so far, by step name.
Results = Mapping[str, Any]

# Step names appear in URLs, activity ids and idempotency keys: keep them plain.
_STEP_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
_SAGA_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")

DEFAULT_START_TO_CLOSE = timedelta(seconds=30)
DEFAULT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=5,
)
# With these numbers a compensation that always fails gives up after about 30 s of backoff
# (1+2+4+8+16), well inside the two minutes DESIGN.md promises for CANCEL-FAILS.
DEFAULT_COMPENSATION_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=6,
)
# Forward recovery after the pivot: never give up, but do not hammer a participant.
DEFAULT_RETRIABLE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
    maximum_attempts=0,
)


class StepKind(StrEnum):
    COMPENSATABLE = "compensatable"
    PIVOT = "pivot"
    RETRIABLE = "retriable"


def activity_name(fn: Callable[..., Any]) -> str:
    """The registered Temporal name of an ``@activity.defn`` function."""
    defn = temporalio.activity._Definition.from_callable(fn)
    if defn is None or defn.name is None:
        raise TypeError(f"{getattr(fn, '__qualname__', fn)!r} is not an @activity.defn function")
    return defn.name


def _call_with_results(fn: Callable[..., Any], saga_input: BaseModel, results: Results) -> Any:
    """Call a user callback that takes ``(input)`` or ``(input, results)``."""
    if _arity(fn) >= 2:
        return fn(saga_input, results)
    return fn(saga_input)


def _arity(fn: Callable[..., Any]) -> int:
    params = inspect.signature(fn).parameters.values()
    return sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


@dataclass(frozen=True)
class Approval:
    """A human decision the step waits for before its action runs.

    Rejection, or no decision within ``timeout``, fails the step and compensates the saga.
    ``when`` (called with the saga input, or input and results) limits the wait to some sagas,
    e.g. trips above an amount.
    """

    timeout: timedelta
    _: KW_ONLY
    when: Callable[..., bool] | None = None

    def required(self, saga_input: BaseModel, results: Results) -> bool:
        return self.when is None or bool(_call_with_results(self.when, saga_input, results))


@dataclass(frozen=True)
class Step:
    """One action on one participant, with the compensation that undoes it.

    ``action`` and ``compensate`` are ``@activity.defn`` functions. The action receives the
    saga input, or what ``input(saga_input[, results])`` returns; the compensation receives a
    :class:`engine.Compensation` with the action's input, its output (if any) and its
    idempotency key.
    """

    action: Callable[..., Awaitable[Any]] | Callable[..., Any]
    _: KW_ONLY
    compensate: Callable[..., Awaitable[Any]] | Callable[..., Any] | None = None
    name: str | None = None
    input: Callable[..., Any] | None = None
    when: Callable[..., bool] | None = None
    pivot: bool = False
    retriable: bool = False
    retry: RetryPolicy | None = None
    compensation_retry: RetryPolicy | None = None
    start_to_close: timedelta = DEFAULT_START_TO_CLOSE
    schedule_to_close: timedelta | None = None
    heartbeat: timedelta | None = None
    non_retryable: Sequence[str] = ()
    approval: Approval | None = None

    @property
    def step_name(self) -> str:
        return self.name or activity_name(self.action)

    @property
    def kind(self) -> StepKind:
        if self.pivot:
            return StepKind.PIVOT
        if self.retriable:
            return StepKind.RETRIABLE
        return StepKind.COMPENSATABLE

    @property
    def retry_policy(self) -> RetryPolicy:
        if self.retry is not None:
            return self.retry
        return DEFAULT_RETRIABLE_RETRY if self.retriable else DEFAULT_RETRY

    @property
    def compensation_retry_policy(self) -> RetryPolicy:
        return self.compensation_retry or DEFAULT_COMPENSATION_RETRY

    def action_input(self, saga_input: BaseModel, results: Results) -> Any:
        if self.input is None:
            return saga_input
        return _call_with_results(self.input, saga_input, results)

    def should_run(self, saga_input: BaseModel, results: Results) -> bool:
        return self.when is None or bool(_call_with_results(self.when, saga_input, results))


@dataclass(frozen=True)
class Parallel:
    """Steps that run concurrently; if one fails, the others' effects are compensated."""

    steps: tuple[Step, ...] = field(default=())

    def __init__(self, *steps: Step) -> None:
        object.__setattr__(self, "steps", tuple(steps))


Stage = Step | Parallel


class SagaDefinition(Generic[InputT]):
    """What declarative and imperative sagas share: a name, an input model, a deadline."""

    def __init__(
        self,
        name: str,
        *,
        input: type[InputT],
        deadline: timedelta | None = None,
        description: str = "",
        version: int = 1,
    ) -> None:
        if not isinstance(name, str) or not _SAGA_NAME.match(name):
            raise SagaDefinitionError(
                f"saga name {name!r} must be 1-100 letters, digits, '_', '.' or '-'"
            )
        if not (isinstance(input, type) and issubclass(input, BaseModel)):
            raise SagaDefinitionError(
                f"saga {name!r}: input must be a pydantic model class, got {input!r}"
            )
        if deadline is not None and deadline <= timedelta(0):
            raise SagaDefinitionError(f"saga {name!r}: deadline must be positive")
        if not isinstance(version, int) or version < 1:
            raise SagaDefinitionError(f"saga {name!r}: version must be a positive integer")
        self.name = name
        self.input = input
        self.deadline = deadline
        self.description = description
        # Running sagas keep the version they started with while newer ones roll out (see
        # engine._registry.versions and the workflow's _pin_definition).
        self.version = version

    @property
    def activities(self) -> list[Callable[..., Any]]:
        """Every activity the saga may call: the worker registers them."""
        raise NotImplementedError

    def validate_input(self, data: Any) -> InputT:
        """Parse and validate raw input (dict, JSON string or model) into the input model."""
        from pydantic import ValidationError

        from engine._errors import InvalidSagaInput

        try:
            if isinstance(data, self.input):
                return data
            if isinstance(data, str | bytes):
                return self.input.model_validate_json(data)
            return self.input.model_validate(data)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_context=False)
            fields = ", ".join(".".join(str(p) for p in e["loc"]) or "(body)" for e in errors)
            raise InvalidSagaInput(
                f"invalid input for saga {self.name!r}: {fields}: {errors[0]['msg']}",
                errors=[dict(e) for e in errors],
            ) from None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class Saga(SagaDefinition[InputT]):
    """A declarative saga: stages of steps run in order, compensated in reverse on failure."""

    def __init__(
        self,
        name: str,
        *,
        input: type[InputT],
        steps: Sequence[Stage],
        deadline: timedelta | None = None,
        description: str = "",
        version: int = 1,
    ) -> None:
        super().__init__(
            name, input=input, deadline=deadline, description=description, version=version
        )
        self.stages: tuple[Stage, ...] = tuple(steps)
        _check_stages(name, self.stages)

    @property
    def steps(self) -> list[Step]:
        """Every step, flattened in definition order."""
        out: list[Step] = []
        for stage in self.stages:
            out.extend(stage.steps if isinstance(stage, Parallel) else (stage,))
        return out

    @property
    def activities(self) -> list[Callable[..., Any]]:
        fns: list[Callable[..., Any]] = []
        for step in self.steps:
            fns.append(step.action)
            if step.compensate is not None:
                fns.append(step.compensate)
        return fns


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
    ) -> None:
        super().__init__(
            name, input=input, deadline=deadline, description=description, version=version
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


def _check_stages(saga: str, stages: tuple[Stage, ...]) -> None:
    if not stages:
        raise SagaDefinitionError(f"saga {saga!r} has no steps")
    seen: set[str] = set()
    pivot_seen: str | None = None
    retriable_seen: str | None = None
    for stage in stages:
        group = stage.steps if isinstance(stage, Parallel) else (stage,)
        if isinstance(stage, Parallel):
            if not stage.steps:
                raise SagaDefinitionError(f"saga {saga!r}: a Parallel group has no steps")
            if any(not isinstance(s, Step) for s in stage.steps):
                raise SagaDefinitionError(
                    f"saga {saga!r}: a Parallel group may contain only Step objects"
                )
            pivots = [s for s in stage.steps if s.pivot]
            if pivots:
                raise SagaDefinitionError(
                    f"saga {saga!r}, step {_name(saga, pivots[0])!r}: the pivot cannot be "
                    "inside a Parallel group (its siblings could still fail after it)"
                )
        elif not isinstance(stage, Step):
            raise SagaDefinitionError(
                f"saga {saga!r}: steps must be Step or Parallel, got {stage!r}"
            )
        for step in group:
            name = _name(saga, step)
            where = f"saga {saga!r}, step {name!r}"
            if not _STEP_NAME.match(name):
                raise SagaDefinitionError(
                    f"{where}: a step name must be 1-100 letters, digits, '_', '.' or '-'"
                )
            if name in seen:
                raise SagaDefinitionError(
                    f"{where}: duplicate step name (give one of them name=...)"
                )
            seen.add(name)
            if step.compensate is not None:
                try:
                    activity_name(step.compensate)
                except TypeError as exc:
                    raise SagaDefinitionError(f"{where}: compensate: {exc}") from None
            if step.pivot and step.retriable:
                raise SagaDefinitionError(f"{where}: a step cannot be both pivot and retriable")
            if step.retriable and step.compensate is not None:
                raise SagaDefinitionError(
                    f"{where}: a retriable step is never compensated; remove compensate="
                )
            if step.pivot and pivot_seen is not None:
                raise SagaDefinitionError(
                    f"{where}: a saga has at most one pivot ({pivot_seen!r} is already one)"
                )
            after = pivot_seen or retriable_seen
            if step.kind is StepKind.COMPENSATABLE and after is not None:
                raise SagaDefinitionError(
                    f"{where}: a compensatable step cannot come after the point of no return "
                    f"({after!r}); mark it retriable=True or move it before"
                )
            if step.pivot and retriable_seen is not None:
                raise SagaDefinitionError(
                    f"{where}: the pivot must come before retriable steps "
                    f"({retriable_seen!r} is retriable)"
                )
            if step.approval is not None and after is not None:
                raise SagaDefinitionError(
                    f"{where}: an approval after the point of no return ({after!r}) could not "
                    "compensate a rejection"
                )
            if step.approval is not None and step.retriable:
                raise SagaDefinitionError(f"{where}: a retriable step cannot wait for approval")
            for label, fn in (("input", step.input), ("when", step.when)):
                if fn is not None and not callable(fn):
                    raise SagaDefinitionError(f"{where}: {label}= must be callable")
            if step.start_to_close <= timedelta(0):
                raise SagaDefinitionError(f"{where}: start_to_close must be positive")
        # Mark after the whole group: siblings of a retriable step are checked among themselves.
        for step in group:
            if step.pivot:
                pivot_seen = step.step_name
            if step.retriable and retriable_seen is None:
                retriable_seen = step.step_name
        if isinstance(stage, Parallel):
            kinds = {s.kind for s in stage.steps}
            if len(kinds) > 1:
                raise SagaDefinitionError(
                    f"saga {saga!r}: a Parallel group mixes compensatable and retriable steps "
                    f"({', '.join(s.step_name for s in stage.steps)})"
                )


def _name(saga: str, step: Step) -> str:
    try:
        return step.step_name
    except TypeError as exc:
        raise SagaDefinitionError(f"saga {saga!r}: {exc}") from None
