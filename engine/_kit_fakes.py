"""Activity fakes by step: they answer for a saga's activities and record every call.

A fake is registered under the real activity's name (and with its signature, so Temporal
decodes the same argument), so the saga workflow runs unchanged. Each call learns its step,
phase and attempt from the activity id, and is recorded with its idempotency key. What a call
does is told per step (and phase), for every saga or for one saga id:

* succeed (the default): take effect and answer a value of the real activity's return type;
* refuse: a business refusal (non-retryable), nothing took effect;
* fail ``times`` attempts transiently, before or after taking effect, then succeed;
* time out after taking effect: the answer is lost. On the time-skipping test server a
  running activity stops the clock, so the lost answer is reported as a retryable failure
  (the engine's path for a start-to-close timeout) instead of waiting out the timeout;
* hang, before or after taking effect, until the attempt is cancelled or the fake released.

A step's fallback and the fallback's compensation are activities of their own: their calls
are recorded with ``fallback=True`` under the step's name (the engine runs them as the step),
and they are told apart (``Fakes.fallback``, ``Fakes.fallback_undo``; the phases
``FALLBACK`` and ``FALLBACK_COMPENSATION``), so a fault told to the step's action does not
also strike the fallback that replaces it.

With ``passthrough=True`` "taking effect" calls the real activity (real participants), and
its answer is the fake's; the faults above are injected around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from engine._definition import SagaDefinition
from engine._kit_values import return_type, sample
from engine._state import Compensation
from engine._step import activity_name
from engine._step_info import COMPENSATION, FORWARD, step_info

#: The phases a fallback's calls are told under (they run as the step's forward and
#: compensation phases).
FALLBACK = "fallback"
FALLBACK_COMPENSATION = "fallback_compensation"

#: Error types of the fakes' failures, as the saga records them.
REFUSED = "KitRefusal"
TRANSIENT = "KitTransientError"
ANSWER_LOST = "KitAnswerLost"

_UNSET: Any = object()


class Fault(StrEnum):
    SUCCEED = "succeed"
    REFUSE = "refuse"
    FAIL = "fail"
    TIME_OUT = "time_out"
    HANG = "hang"


@dataclass(frozen=True)
class Behaviour:
    """What the calls of one step (in one phase) do."""

    fault: Fault = Fault.SUCCEED
    #: How many attempts the fault lasts before the step succeeds; None: every attempt.
    times: int | None = None
    #: For ``fail`` and ``hang``: the effect is taken before the fault.
    after_effect: bool = False
    message: str = ""

    def applies(self, attempt: int) -> bool:
        return self.fault is not Fault.SUCCEED and (self.times is None or attempt <= self.times)


@dataclass
class Call:
    """One call of a fake: one attempt of a step's action or compensation."""

    seq: int
    saga_id: str
    step: str
    phase: str
    attempt: int
    activity: str
    idempotency_key: str
    arg: Any
    #: running, succeeded, refused, failed, lost (effect taken, answer lost), cancelled
    outcome: str = "running"
    effect: bool = False
    #: The sequence number at which the call ended (every call start and end is numbered).
    ended: int | None = None
    #: A call of the step's fallback (forward) or of the fallback's compensation.
    fallback: bool = False
    #: Run as a local activity (the step's fast path).
    local: bool = False

    @property
    def told_as(self) -> str:
        """The phase this call's behaviour is told under (a fallback's are apart)."""
        if not self.fallback:
            return self.phase
        return FALLBACK if self.phase == FORWARD else FALLBACK_COMPENSATION

    @property
    def arg_key(self) -> str | None:
        """A compensation's argument carries the key of the step it undoes."""
        if isinstance(self.arg, Compensation):
            return self.arg.idempotency_key
        if isinstance(self.arg, dict):
            key = self.arg.get("idempotency_key")
            return key if isinstance(key, str) else None
        return None


class StepFake:
    """Tells one step's fake (in one phase, for all sagas or for one) what to do."""

    def __init__(self, fakes: Fakes, saga_id: str | None, step: str, phase: str) -> None:
        self._fakes, self._where = fakes, (saga_id, step, phase)

    def _set(self, behaviour: Behaviour) -> StepFake:
        self._fakes.tell(*self._where, behaviour)
        return self

    def succeed(self, value: Any = _UNSET) -> StepFake:
        """Succeed (the default); ``value`` (or ``value(arg)``) is the answer."""
        if value is not _UNSET:
            self.returns(value)
        return self._set(Behaviour())

    def returns(self, value: Any) -> StepFake:
        """The answer once the step succeeds: a value, or a function of the argument."""
        saga_id, step, phase = self._where
        self._fakes._values[(saga_id, step if phase != FALLBACK else f"{step}/{FALLBACK}")] = value
        return self

    def refuse(self, message: str = "refused by the fake") -> StepFake:
        return self._set(Behaviour(Fault.REFUSE, message=message))

    def fail(self, times: int | None = 1, *, after_effect: bool = False) -> StepFake:
        """Fail transiently ``times`` attempts (None: every attempt), then succeed."""
        return self._set(Behaviour(Fault.FAIL, times=times, after_effect=after_effect))

    def time_out(self, times: int | None = None) -> StepFake:
        """Take effect and lose the answer, ``times`` attempts (None: every attempt)."""
        return self._set(Behaviour(Fault.TIME_OUT, times=times, after_effect=True))

    def hang(self, *, after_effect: bool = False, times: int | None = 1) -> StepFake:
        """Never answer (heartbeating) until cancelled or ``Fakes.release``d."""
        return self._set(Behaviour(Fault.HANG, times=times, after_effect=after_effect))


@dataclass
class _Waiters:
    events: dict[tuple[str, str, str, str], asyncio.Event] = field(default_factory=dict)

    def get(self, key: tuple[str, str, str, str]) -> asyncio.Event:
        return self.events.setdefault(key, asyncio.Event())


class Fakes:
    """Fakes for every activity of ``sagas``; register ``fakes.activities`` on the worker."""

    def __init__(self, *sagas: SagaDefinition[Any], passthrough: bool = False) -> None:
        self.passthrough = passthrough
        self._real: dict[str, Callable[..., Any]] = {}
        #: (step, phase) -> the activity that is the step's fallback (or its compensation).
        self._fallbacks: dict[tuple[str, str], str] = {}
        for saga in sagas:
            for fn in saga.activities:
                self._real.setdefault(activity_name(fn), fn)
            for step in saga.steps:
                if step.fallback is not None:
                    name = activity_name(step.fallback)
                    self._fallbacks.setdefault((step.step_name, FORWARD), name)
                if step.fallback_compensate is not None:
                    name = activity_name(step.fallback_compensate)
                    self._fallbacks.setdefault((step.step_name, COMPENSATION), name)
        self._behaviours: dict[tuple[str | None, str, str], Behaviour] = {}
        self._values: dict[tuple[str | None, str], Any] = {}
        self._calls: list[Call] = []
        self._seq = itertools.count(1)
        self._waiters = _Waiters()
        self._released: set[tuple[str, str, str]] = set()
        self.activities: list[Callable[..., Any]] = [
            _fake_activity(self, name, fn) for name, fn in self._real.items()
        ]

    # ----------------------------------------------------------------- telling

    def step(self, name: str, *, saga_id: str | None = None) -> StepFake:
        """The fake of step ``name``'s action (for saga ``saga_id`` only, if given)."""
        return StepFake(self, saga_id, name, FORWARD)

    def undo(self, name: str, *, saga_id: str | None = None) -> StepFake:
        """The fake of step ``name``'s compensation."""
        return StepFake(self, saga_id, name, COMPENSATION)

    def fallback(self, name: str, *, saga_id: str | None = None) -> StepFake:
        """The fake of step ``name``'s fallback (the activity that serves when its action
        fails for good)."""
        return StepFake(self, saga_id, name, FALLBACK)

    def fallback_undo(self, name: str, *, saga_id: str | None = None) -> StepFake:
        """The fake of the compensation of step ``name``'s fallback."""
        return StepFake(self, saga_id, name, FALLBACK_COMPENSATION)

    def tell(self, saga_id: str | None, step: str, phase: str, behaviour: Behaviour) -> None:
        """What ``step``'s calls in ``phase`` do (for saga ``saga_id``, or for every saga);
        ``phase``: FORWARD, COMPENSATION, FALLBACK or FALLBACK_COMPENSATION."""
        self._behaviours[(saga_id, step, phase)] = behaviour

    def reset(self, saga_id: str | None = None) -> None:
        """Forget what the steps were told (for one saga, or all); calls are kept."""
        for key in [k for k in self._behaviours if saga_id is None or k[0] == saga_id]:
            del self._behaviours[key]

    def release(self, saga_id: str, step: str, phase: str = FORWARD) -> None:
        """Let a hanging call of ``step`` go on (it then succeeds)."""
        self._released.add((saga_id, step, phase))
        self._waiters.get((saga_id, step, phase, "release")).set()

    # ---------------------------------------------------------------- watching

    def calls(
        self, saga_id: str | None = None, *, step: str | None = None, phase: str | None = None
    ) -> list[Call]:
        """The recorded calls, in the order they started."""
        return [
            c
            for c in self._calls
            if (saga_id is None or c.saga_id == saga_id)
            and (step is None or c.step == step)
            and (phase is None or c.phase == phase)
        ]

    async def reached(
        self, saga_id: str, step: str, *, phase: str = FORWARD, point: str = "called"
    ) -> None:
        """Wait until a call of ``step`` has started (``point="called"``), is hanging
        (``"hanging"``) or has answered successfully (``"succeeded"``)."""
        await self._waiters.get((saga_id, step, phase, point)).wait()

    # ------------------------------------------------------------------ calling

    def _behaviour(self, saga_id: str, step: str, phase: str) -> Behaviour:
        found = self._behaviours.get((saga_id, step, phase))
        if found is None:
            found = self._behaviours.get((None, step, phase), Behaviour())
        return found

    def _signal(self, call: Call, point: str) -> None:
        self._waiters.get((call.saga_id, call.step, call.told_as, point)).set()

    async def _call(self, name: str, real: Callable[..., Any], args: Sequence[Any]) -> Any:
        info = step_info()
        fallback = self._fallbacks.get((info.step, info.phase)) == name
        # Attempts are counted per activity: a fallback's first call is its attempt 1.
        attempt = 1 + sum(
            1
            for c in self._calls
            if (c.saga_id, c.step, c.phase, c.fallback)
            == (info.saga_id, info.step, info.phase, fallback)
        )
        call = Call(
            seq=next(self._seq),
            saga_id=info.saga_id,
            step=info.step,
            phase=info.phase,
            attempt=attempt,
            activity=name,
            idempotency_key=info.idempotency_key,
            arg=args[0] if len(args) == 1 else tuple(args),
            fallback=fallback,
            local=activity.info().is_local,
        )
        self._calls.append(call)
        self._signal(call, "called")
        behaviour = self._behaviour(info.saga_id, info.step, call.told_as)
        fault = behaviour.fault if behaviour.applies(attempt) else Fault.SUCCEED
        answer: Any = _UNSET
        try:
            if fault is Fault.REFUSE:
                call.outcome = "refused"
                raise ApplicationError(behaviour.message, type=REFUSED, non_retryable=True)
            if behaviour.after_effect and fault is not Fault.SUCCEED:
                answer = await self._take_effect(call, real, args)
            if fault is Fault.FAIL:
                call.outcome = "lost" if call.effect else "failed"
                raise ApplicationError(f"transient failure (attempt {attempt})", type=TRANSIENT)
            if fault is Fault.TIME_OUT:
                call.outcome = "lost"
                raise ApplicationError(
                    f"timed out after taking effect (attempt {attempt})", type=ANSWER_LOST
                )
            if fault is Fault.HANG:
                await self._hang(call)
            if not call.effect:
                answer = await self._take_effect(call, real, args)
            call.outcome = "succeeded"
            return self._answer(call, real, answer)
        except asyncio.CancelledError:
            call.outcome = "cancelled"
            raise
        finally:
            call.ended = next(self._seq)
            if call.outcome == "succeeded":
                self._signal(call, "succeeded")

    async def _take_effect(self, call: Call, real: Callable[..., Any], args: Sequence[Any]) -> Any:
        call.effect = True
        if not self.passthrough:
            return _UNSET
        if inspect.iscoroutinefunction(real):
            return await real(*args)
        return await asyncio.to_thread(real, *args)

    async def _hang(self, call: Call) -> None:
        where = (call.saga_id, call.step, call.told_as)
        released = self._waiters.get((*where, "release"))
        self._signal(call, "hanging")
        # Heartbeats carry the cancellation to a regular activity (the worker's throttle is
        # short); a local one cannot heartbeat, and is cancelled by its worker directly.
        beats = not activity.info().is_local
        while where not in self._released:
            if beats:
                activity.heartbeat()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(released.wait(), timeout=0.05)

    def _answer(self, call: Call, real: Callable[..., Any], answer: Any) -> Any:
        if answer is not _UNSET:
            return answer
        # A fallback answers what it was told, else a value of its own return type.
        step = f"{call.step}/{FALLBACK}" if call.fallback else call.step
        value = self._values.get((call.saga_id, step), _UNSET)
        if value is _UNSET:
            value = self._values.get((None, step), _UNSET)
        if value is _UNSET:
            return sample(return_type(real), label=call.idempotency_key)
        return value(call.arg) if callable(value) else value


def _fake_activity(fakes: Fakes, name: str, real: Callable[..., Any]) -> Callable[..., Any]:
    """An activity named like ``real``, with its signature, that asks ``fakes`` what to do."""

    async def fake(*args: Any) -> Any:
        return await fakes._call(name, real, args)

    signature = inspect.signature(real)
    try:
        hints = typing.get_type_hints(real)
    except Exception:
        hints = {}
    params = [p.replace(annotation=hints.get(p.name, Any)) for p in signature.parameters.values()]
    result = hints.get("return", Any)
    fake.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=params, return_annotation=result
    )
    fake.__annotations__ = {**{p.name: p.annotation for p in params}, "return": result}
    fake.__qualname__ = fake.__name__ = f"fake_{name}"
    return activity.defn(name=name)(fake)
