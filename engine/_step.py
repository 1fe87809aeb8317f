"""A saga's steps as data: ``Step``, ``Parallel``, ``Approval`` and the retry defaults.

A step names the activity that acts and the activity that undoes it, with the options that
govern its attempts. Nothing here runs anything: the saga workflow reads these objects.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any

import temporalio.activity
from pydantic import BaseModel
from temporalio.common import RetryPolicy

from engine._state import StepState
from engine._step_info import idempotency_key_for

#: Outputs of the steps that have succeeded so far, by step name.
Results = Mapping[str, Any]

# Step names appear in URLs, activity ids and idempotency keys: keep them plain.
STEP_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")

DEFAULT_START_TO_CLOSE = timedelta(seconds=30)
DEFAULT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=5,
)
# Patient compensations: a compensation that meets transient errors keeps trying for about an
# hour (1+2+...+32 s, then every minute: 65 attempts take ~62 min) before the saga is parked
# for an operator; a refused one (non-retryable) parks it at once, retrying cannot help.
DEFAULT_COMPENSATION_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
    maximum_attempts=65,
)
# The default before patient compensations (about 30 s of backoff): sagas that started their
# compensations under it keep it (see engine._compensation, patch "patient-compensations").
LEGACY_COMPENSATION_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=6,
)
# How long a step waits, in all, on a participant whose circuit is open (or whose bulkhead is
# full) before it gives up as if its retries were exhausted. Compensations wait without limit.
DEFAULT_OUTAGE_PATIENCE = timedelta(minutes=5)
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
    #: The service the step calls (its breaker and bulkhead), if its activity does not say.
    participant: str | None = None
    #: Time the step may wait on an open circuit; None: the saga's, else five minutes.
    outage_patience: timedelta | None = None
    #: Runs instead when the action fails for good (not when it is refused); its undo is
    #: ``fallback_compensate``.
    fallback: Callable[..., Awaitable[Any]] | Callable[..., Any] | None = None
    fallback_compensate: Callable[..., Awaitable[Any]] | Callable[..., Any] | None = None
    #: The saga goes on if this step fails (status ``failed_optional``).
    optional: bool = False
    #: Run the action and its compensation as Temporal local activities, in the worker that
    #: runs the saga (the fast path for short in-process steps; no heartbeats). None: the
    #: saga's ``local_steps``.
    local: bool | None = None

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

    def compensation_retry_policy(self, *, patient: bool = True) -> RetryPolicy:
        """The compensation's policy; ``patient=False``: the default of older engines."""
        if self.compensation_retry is not None:
            return self.compensation_retry
        return DEFAULT_COMPENSATION_RETRY if patient else LEGACY_COMPENSATION_RETRY

    def action_input(self, saga_input: BaseModel, results: Results) -> Any:
        if self.input is None:
            return saga_input
        return _call_with_results(self.input, saga_input, results)

    def should_run(self, saga_input: BaseModel, results: Results) -> bool:
        return self.when is None or bool(_call_with_results(self.when, saga_input, results))

    def pending_state(self, saga_id: str) -> StepState:
        """This step's state in saga ``saga_id`` before it has run."""
        name = self.step_name
        return StepState(
            name=name, kind=self.kind.value, idempotency_key=idempotency_key_for(saga_id, name)
        )


@dataclass(frozen=True)
class Parallel:
    """Steps that run concurrently; if one fails, the others' effects are compensated."""

    steps: tuple[Step, ...] = field(default=())

    def __init__(self, *steps: Step) -> None:
        object.__setattr__(self, "steps", tuple(steps))


Stage = Step | Parallel


def stage_steps(stage: Stage) -> tuple[Step, ...]:
    """The steps of one stage: a parallel group's, or the one step."""
    return stage.steps if isinstance(stage, Parallel) else (stage,)
