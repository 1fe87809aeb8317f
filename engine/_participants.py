"""Participants: which service each activity calls, and the worker's guard in front of them.

An activity names its participant with :func:`participant` (every saga using it agrees), or a
step does with ``Step(..., participant="payments")``. The worker installs a
:class:`ParticipantGuard`, a Temporal activity interceptor that keeps, per participant:

* a circuit breaker (``engine._breaker``): while it is open, a call is refused at once with an
  ``ApplicationError`` of type ``CircuitOpen`` whose details say which participant and for how
  long (``{"participant", "retry_after", "until"}``);
* a bulkhead: at most ``max_concurrent`` calls at a time; one more is refused at once with
  type ``BulkheadFull`` (same details), so that it gives its activity slot back instead of
  holding it while it waits. A slow participant can then never take every slot.

The saga's attempt loop recognises both refusals (:func:`participant_refusal`): it waits on a
durable timer and tries again, without spending the step's retry budget.

Breaker transitions are logged (``circuit opened`` / ``half_open`` / ``closed``) and set the
``sagas_circuit_state{participant}`` gauge (0 closed, 1 half-open, 2 open). While the worker
runs (:meth:`ParticipantGuard.running`, installed by ``build_worker``), the guard ticks its
breakers every second or so: an open circuit whose cool-down is over turns half-open even if no
call comes to probe it, so the gauge (and the ``SagaCircuitOpen`` alert) does not stay at open
on a worker that no longer calls the participant.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import structlog
from temporalio import activity
from temporalio.common import MetricGauge, MetricMeter
from temporalio.exceptions import ActivityError, ApplicationError, ApplicationErrorCategory
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from engine._breaker import Breaker, CircuitState, Transition
from engine._errors import SagaDefinitionError
from engine._failure_converter import replica

F = TypeVar("F", bound=Callable[..., Any])

CIRCUIT_OPEN = "CircuitOpen"
BULKHEAD_FULL = "BulkheadFull"
#: The error type an activity raises (retryable ``ApplicationError``) when its call never
#: reached the participant (connection refused): not an attempt of the step's retry budget;
#: the step waits on the participant as on an open circuit, up to its outage patience.
PARTICIPANT_UNREACHABLE = "ParticipantUnreachable"
_KINDS = {
    CIRCUIT_OPEN: "circuit_open",
    BULKHEAD_FULL: "bulkhead_full",
    PARTICIPANT_UNREACHABLE: "unreachable",
}
# How often, at most, a running worker moves breakers whose cool-down is over to half-open.
_TICK_SECONDS = 1.0
_ATTRIBUTE = "__saga_participant__"

logger = structlog.get_logger("engine.participants")


def participant(name: str) -> Callable[[F], F]:
    """Declare the participant an activity calls, for its breaker and bulkhead::

    @participant("payments")
    @activity.defn(name="charge_payment")
    async def charge(request: ChargeRequest) -> Receipt: ...
    """
    if not name or not isinstance(name, str):
        raise ValueError("a participant needs a name")

    def mark(fn: F) -> F:
        setattr(fn, _ATTRIBUTE, name)
        return fn

    return mark


def declared_participant(fn: Callable[..., Any] | None) -> str | None:
    """The participant ``fn`` declares with :func:`participant`, if any."""
    return getattr(fn, _ATTRIBUTE, None) if fn is not None else None


@dataclass(frozen=True)
class OutagePolicy:
    """How a worker protects itself and the sagas from a participant that is down or slow.

    ``max_concurrent`` calls per participant (the bulkhead); ``failure_threshold``
    consecutive transient failures open the breaker for ``cooldown``; a call refused by a
    full bulkhead is retried after ``bulkhead_retry``.
    """

    failure_threshold: int = 5
    cooldown: timedelta = timedelta(seconds=10)
    max_concurrent: int = 50
    bulkhead_retry: timedelta = timedelta(seconds=1)

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.max_concurrent < 1:
            raise ValueError("failure_threshold and max_concurrent must be at least 1")
        if self.cooldown <= timedelta(0) or self.bulkhead_retry <= timedelta(0):
            raise ValueError("cooldown and bulkhead_retry must be positive")


@dataclass(frozen=True)
class Refusal:
    """A call refused by the worker's guard, as the saga workflow reads it."""

    participant: str
    kind: str  # "circuit_open", "bulkhead_full" or "unreachable"
    retry_after: timedelta


def participant_refusal(exc: ActivityError) -> Refusal | None:
    """The guard's refusal behind a failed attempt, or an activity's word that its call never
    reached the participant; None if the participant was called."""
    cause = exc.cause
    if not isinstance(cause, ApplicationError) or cause.type not in _KINDS:
        return None
    details = cause.details[0] if cause.details else {}
    if not isinstance(details, dict):
        details = {}
    participant = details.get("participant") or exc.activity_type or "?"
    seconds = max(float(details.get("retry_after", 1.0)), 0.001)
    return Refusal(str(participant), _KINDS[cause.type or ""], timedelta(seconds=seconds))


class ParticipantGuard(Interceptor):
    """The breakers and bulkheads of one worker (see the module's docstring)."""

    def __init__(
        self,
        participants: Mapping[str, str],
        policy: OutagePolicy,
        *,
        clock: Callable[[], float] = time.monotonic,
        meter: MetricMeter | None = None,
    ) -> None:
        self.participants = dict(participants)  # activity name -> participant
        self.policy = policy
        self._clock = clock
        self._breakers: dict[str, Breaker] = {}
        self._in_flight: dict[str, int] = {}
        # The worker's runtime meter, not the activity's: one series per participant, without
        # the activity type and task queue that an activity's meter would add.
        self._state_gauge = (meter or MetricMeter.noop).create_gauge(
            "sagas_circuit_state",
            "State of each participant's circuit breaker in this worker: 0 closed, "
            "1 half-open, 2 open.",
        )
        self._gauges: dict[str, MetricGauge] = {}

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Inbound(next, self)

    def breaker(self, name: str) -> Breaker:
        found = self._breakers.get(name)
        if found is None:
            found = self._breakers[name] = Breaker(
                name,
                threshold=self.policy.failure_threshold,
                cooldown=self.policy.cooldown.total_seconds(),
            )
            self._gauge(name, found.state)
        return found

    def _gauge(self, name: str, state: CircuitState) -> None:
        gauge = self._gauges.get(name)
        if gauge is None:
            gauge = self._gauges[name] = self._state_gauge.with_additional_attributes(
                {"participant": name}
            )
        gauge.set(state.gauge)

    def tick(self) -> None:
        """Move every breaker whose cool-down is over to half-open (and its gauge)."""
        now = self._clock()
        for breaker in list(self._breakers.values()):
            self._note(breaker.tick(now))

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Tick the breakers while the block (the worker) runs."""
        period = min(_TICK_SECONDS, self.policy.cooldown.total_seconds())

        async def tick_forever() -> None:
            while True:
                await asyncio.sleep(period)
                self.tick()

        task = asyncio.create_task(tick_forever())
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def in_flight(self, name: str) -> int:
        return self._in_flight.get(name, 0)

    async def call(self, name: str, run: Callable[[], Any]) -> Any:
        """Run one call to participant ``name`` through its bulkhead and breaker."""
        if self.in_flight(name) >= self.policy.max_concurrent:
            raise _refused(BULKHEAD_FULL, name, self.policy.bulkhead_retry.total_seconds(),
                           f"{name} has {self.policy.max_concurrent} calls running")  # fmt: skip
        breaker = self.breaker(name)
        now = self._clock()
        retry_at, transition = breaker.admit(now)
        self._note(transition)
        if retry_at is not None:
            raise _refused(CIRCUIT_OPEN, name, retry_at - now, f"circuit open for {name}")
        self._in_flight[name] = self.in_flight(name) + 1
        try:
            result = await run()
        except asyncio.CancelledError:
            if _timed_out():
                # Temporal timed the call out and the worker cancelled it: the participant
                # took the call and never answered, which is a failure like a 5xx.
                self._note(breaker.failed(self._clock()))
            else:
                breaker.released()  # a cancel request, a worker shutdown: nothing learnt
            raise
        except ApplicationError as exc:
            # A business refusal is an answer: the participant is up.
            self._note(breaker.succeeded() if exc.non_retryable else breaker.failed(self._clock()))
            raise
        except Exception:
            self._note(breaker.failed(self._clock()))
            raise
        finally:
            self._in_flight[name] -= 1
        self._note(breaker.succeeded())
        return result

    def _note(self, transition: Transition | None) -> None:
        if transition is None:
            return
        breaker = self.breaker(transition.participant)
        fields: dict[str, Any] = {
            "participant": transition.participant,
            "from_state": transition.old.value,
            "failures": transition.failures,
        }
        if transition.new is CircuitState.OPEN:
            fields["retry_after_seconds"] = breaker.cooldown
        logger.warning(f"circuit {transition.new.value}", **fields)
        self._gauge(transition.participant, transition.new)


def _timed_out() -> bool:
    """Whether the running activity was cancelled because Temporal timed it out.

    Start-to-close and heartbeat timeouts come as ``timed_out``. ``not_found`` (the server no
    longer knows the attempt), a cancel request, a pause, a reset or a worker shutdown say
    nothing certain about the participant and stay neutral.
    """
    try:
        details = activity.cancellation_details()
    except RuntimeError:  # not in an activity (the guard's unit tests)
        return False
    return details is not None and details.timed_out


def _refused(kind: str, name: str, retry_after: float, message: str) -> ApplicationError:
    retry_after = max(retry_after, 0.001)
    until = datetime.now(UTC) + timedelta(seconds=retry_after)
    return ApplicationError(
        f"{message}; try again after {until.isoformat(timespec='seconds')}",
        {"participant": name, "retry_after": retry_after, "until": until.isoformat()},
        type=kind,
        # Outside the engine's loop (a plain Temporal retry policy) this still means "later".
        next_retry_delay=timedelta(seconds=retry_after),
        # The worker protecting a participant is not a worker error.
        category=ApplicationErrorCategory.BENIGN,
    )


class _Inbound(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, guard: ParticipantGuard) -> None:
        super().__init__(next)
        self._guard = guard

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        # Regular and local activities alike pass here (``activity.info().is_local``).
        name = self._guard.participants.get(activity.info().activity_type)
        try:
            # Synchronous activities run their interceptors in a thread, where this coroutine
            # could not run: they are not guarded (the shipped activities are all async).
            if name is None or not inspect.iscoroutinefunction(input.fn):
                return await super().execute_activity(input)
            return await self._guard.call(
                name, lambda: super(_Inbound, self).execute_activity(input)
            )
        except ApplicationError as exc:
            benign = as_benign(exc)
            if benign is exc:
                raise
            # Without the participant's traceback (see as_benign); engine._failure_converter
            # sends a BENIGN failure to Temporal without a stack trace at all.
            raise benign from exc.__cause__


def as_benign(exc: ApplicationError) -> ApplicationError:
    """A business refusal (non-retryable, no category) as the same error marked BENIGN.

    A participant saying no is an answer, not an incident: the SDK then logs the failed
    activity at debug, without the warning and traceback, and leaves it out of its failure
    metrics. The saga still records the refusal (the attempt's error, the step's span and
    state), since type, message, details and non_retryable are kept. Its traceback is not:
    where in the participant's client the answer was raised says nothing an operator needs
    (and the engine's failure converter sends a BENIGN failure without a stack trace, which
    formatting, a file read per frame, was the largest cost of a refused attempt in the
    worker: docs/benchmarks.md). Anything else, or an error whose raiser chose a category,
    is returned unchanged, traceback and all.
    """
    if not exc.non_retryable or exc.category != ApplicationErrorCategory.UNSPECIFIED:
        return exc
    return replica(exc, category=ApplicationErrorCategory.BENIGN)


def activity_participants(sagas: Sequence[Any]) -> dict[str, str]:
    """Activity name -> participant, from the sagas' steps and the activities' declarations.

    A step's ``participant=`` covers its action and compensation; a fallback is its own
    activity and declares its own. Two sagas may not disagree about one activity.
    """
    from engine._step import activity_name

    found: dict[str, str] = {}

    def add(saga: str, fn: Callable[..., Any] | None, name: str | None) -> None:
        if fn is None or name is None:
            return
        key = activity_name(fn)
        known = found.setdefault(key, name)
        if known != name:
            raise SagaDefinitionError(
                f"saga {saga!r}: activity {key!r} is said to call both {known!r} and {name!r}"
            )

    for saga in sagas:
        for fn in saga.activities:
            add(saga.name, fn, declared_participant(fn))
        for step in saga.steps:
            name = step.participant or declared_participant(step.action)
            add(saga.name, step.action, name)
            add(saga.name, step.compensate, name)
            fallback_name = declared_participant(step.fallback)
            add(saga.name, step.fallback, fallback_name)
            add(saga.name, step.fallback_compensate, fallback_name)
    return found
