"""Saga definitions: what declarative and imperative sagas share, and the declarative ``Saga``.

A definition is data. It is checked when it is built, so that a malformed saga fails at import
time with a message naming the saga and the step, never halfway through a customer's booking.
The saga workflow asks a definition to run its forward phase (``forward``) through a
``StageRunner`` that it provides, so the workflow never needs to know which form it runs.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from engine._diagram import mermaid
from engine._errors import InvalidSagaInput, SagaDefinitionError
from engine._state import StepState
from engine._step import (
    STEP_NAME,
    Parallel,
    Stage,
    Step,
    StepKind,
    activity_name,
    stage_steps,
)

InputT = TypeVar("InputT", bound=BaseModel)

_SAGA_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


class StageRunner(Protocol):
    """What a definition's forward phase drives: the saga workflow's forward runner."""

    @property
    def saga_input(self) -> Any: ...

    @property
    def results(self) -> dict[str, Any]: ...

    async def run_stage(self, steps: Sequence[Step]) -> list[Any]:
        """Run one group of steps (concurrently); raise ``StepFailed`` if one failed."""
        ...

    def has_step(self, name: str) -> bool: ...

    def declares(self, fn: Callable[..., Any]) -> bool:
        """Whether ``fn`` is one of the saga's activities (registered on the worker)."""
        ...


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
        outage_patience: timedelta | None = None,
        max_input_bytes: int | None = None,
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
        if outage_patience is not None and outage_patience <= timedelta(0):
            raise SagaDefinitionError(f"saga {name!r}: outage_patience must be positive")
        if max_input_bytes is not None and (
            not isinstance(max_input_bytes, int) or max_input_bytes < 1
        ):
            raise SagaDefinitionError(f"saga {name!r}: max_input_bytes must be a positive integer")
        self.name = name
        self.input = input
        self.deadline = deadline
        self.description = description
        # Running sagas keep the version they started with while newer ones roll out (see
        # engine._registry.versions and the workflow's pin_definition).
        self.version = version
        #: How long its steps may wait on a participant that is down (a step may say otherwise).
        self.outage_patience = outage_patience
        # Every attempt of a step carries the input into the history: a bound on it is a
        # bound on how fast a history grows. None: the API's SAGAS_MAX_INPUT_BYTES.
        self.max_input_bytes = max_input_bytes

    @property
    def activities(self) -> list[Callable[..., Any]]:
        """Every activity the saga may call: the worker registers them."""
        raise NotImplementedError

    @property
    def groups(self) -> tuple[tuple[Step, ...], ...]:
        """The declared steps in groups that run together, in order (none if imperative)."""
        return ()

    @property
    def steps(self) -> list[Step]:
        """Every declared step, flattened in definition order."""
        return [step for group in self.groups for step in group]

    @property
    def local_steps_named(self) -> list[str] | None:
        """The names of the steps that run as local activities, which a saga's start memo
        carries (engine._patches); None when they are not known before the saga runs (an
        imperative saga's, or another kind of definition's): its run then consults the patch."""
        return None

    def initial_step_states(self, saga_id: str) -> list[StepState]:
        """The declared steps' states before any has run: all pending."""
        return [step.pending_state(saga_id) for step in self.steps]

    def diagram(self) -> str:
        """The saga as a Mermaid flowchart."""
        return mermaid(self.name, self.groups, self.activities)

    async def forward(self, runner: StageRunner) -> None:
        """Run the forward phase through ``runner``."""
        raise NotImplementedError

    def validate_input(self, data: Any) -> InputT:
        """Parse and validate raw input (dict, JSON string or model) into the input model."""
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
        outage_patience: timedelta | None = None,
        max_input_bytes: int | None = None,
        local_steps: bool = False,
    ) -> None:
        """``local_steps=True``: every step that does not say ``local=`` runs as a local
        activity (see ``Step.local``)."""
        super().__init__(
            name,
            input=input,
            deadline=deadline,
            description=description,
            version=version,
            outage_patience=outage_patience,
            max_input_bytes=max_input_bytes,
        )
        self.local_steps = local_steps
        # Steps that do not say keep local=None (regular) unless the saga says local_steps.
        self.stages: tuple[Stage, ...] = tuple(
            _with_local_default(s, True) if local_steps else s for s in steps
        )
        _check_stages(name, self.stages)
        self._groups = tuple(stage_steps(stage) for stage in self.stages)

    @property
    def groups(self) -> tuple[tuple[Step, ...], ...]:
        return self._groups

    @property
    def local_steps_named(self) -> list[str] | None:
        return [step.step_name for step in self.steps if step.local]

    @property
    def activities(self) -> list[Callable[..., Any]]:
        fns: list[Callable[..., Any] | None] = []
        for step in self.steps:
            fns += [step.action, step.compensate, step.fallback, step.fallback_compensate]
        return [fn for fn in fns if fn is not None]

    async def forward(self, runner: StageRunner) -> None:
        for group in self.groups:
            await runner.run_stage(group)


def _with_local_default(stage: Stage, local: bool) -> Stage:
    """The stage with the saga's ``local_steps`` given to the steps that do not say."""
    if isinstance(stage, Parallel):
        return Parallel(*(_local_default(step, local) for step in stage.steps))
    return _local_default(stage, local) if isinstance(stage, Step) else stage


def _local_default(step: Step, local: bool) -> Step:
    # Anything but a Step is left for _check_stages to refuse with a clear message.
    if isinstance(step, Step) and step.local is None:
        return dataclasses.replace(step, local=local)
    return step


def _check_stages(saga: str, stages: tuple[Stage, ...]) -> None:
    if not stages:
        raise SagaDefinitionError(f"saga {saga!r} has no steps")
    seen: set[str] = set()
    pivot_seen: str | None = None
    retriable_seen: str | None = None
    for stage in stages:
        group = stage_steps(stage)
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
            if not STEP_NAME.match(name):
                raise SagaDefinitionError(
                    f"{where}: a step name must be 1-100 letters, digits, '_', '.' or '-'"
                )
            if name in seen:
                raise SagaDefinitionError(
                    f"{where}: duplicate step name (give one of them name=...)"
                )
            seen.add(name)
            for label, fn in (
                ("compensate", step.compensate),
                ("fallback", step.fallback),
                ("fallback_compensate", step.fallback_compensate),
            ):
                if fn is not None:
                    try:
                        activity_name(fn)
                    except TypeError as exc:
                        raise SagaDefinitionError(f"{where}: {label}: {exc}") from None
            check_degradation(where, step)
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


def check_degradation(where: str, step: Step) -> None:
    """Fallbacks, optional steps and outage patience."""
    if step.fallback_compensate is not None and step.fallback is None:
        raise SagaDefinitionError(f"{where}: fallback_compensate= needs a fallback=")
    if step.fallback is not None and step.compensate is not None and not step.fallback_compensate:
        raise SagaDefinitionError(
            f"{where}: the fallback of a compensatable step needs its own fallback_compensate="
        )
    if (step.fallback is not None or step.optional) and step.kind is not StepKind.COMPENSATABLE:
        raise SagaDefinitionError(
            f"{where}: a pivot or retriable step cannot have a fallback or be optional"
        )
    if step.outage_patience is not None and step.outage_patience <= timedelta(0):
        raise SagaDefinitionError(f"{where}: outage_patience must be positive")
    if step.local and step.heartbeat is not None:
        raise SagaDefinitionError(
            f"{where}: a local step cannot heartbeat (Temporal's local activities have no "
            "heartbeats); drop heartbeat= or local="
        )


def _name(saga: str, step: Step) -> str:
    try:
        return step.step_name
    except TypeError as exc:
        raise SagaDefinitionError(f"saga {saga!r}: {exc}") from None
