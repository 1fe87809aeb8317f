"""Circuit breakers and bulkheads, without a server: the state machine and the worker's guard."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel
from structlog.testing import capture_logs
from temporalio import activity
from temporalio.exceptions import ActivityError, ApplicationError, RetryState

from engine import Saga, SagaDefinitionError, Step, participant
from engine._breaker import Breaker, CircuitState
from engine._participants import (
    BULKHEAD_FULL,
    CIRCUIT_OPEN,
    OutagePolicy,
    ParticipantGuard,
    activity_participants,
    participant_refusal,
)
from engine.config import Settings
from engine.worker import outage_policy


class TestBreaker:
    """closed -> open after N consecutive transient failures -> half-open (one probe) -> closed."""

    def test_opens_after_the_threshold_of_consecutive_failures(self) -> None:
        b = Breaker("payments", threshold=3, cooldown=10)
        assert b.failed(0) is None
        assert b.failed(1) is None
        transition = b.failed(2)
        assert transition is not None
        assert transition.new is CircuitState.OPEN
        assert b.admit(5) == (12, None)  # refused until the cool-down is over

    def test_a_success_or_a_refusal_resets_the_count(self) -> None:
        b = Breaker("payments", threshold=2, cooldown=10)
        b.failed(0)
        assert b.succeeded() is None  # closed stays closed
        assert b.failed(1) is None
        assert b.state is CircuitState.CLOSED

    def test_one_probe_after_the_cool_down_then_closed_on_success(self) -> None:
        b = Breaker("payments", threshold=1, cooldown=10)
        b.failed(0)
        retry_at, transition = b.admit(10)
        assert retry_at is None
        assert transition is not None
        assert transition.new is CircuitState.HALF_OPEN
        # While the probe is out, others are told to come back after a cool-down.
        assert b.admit(11) == (21, None)
        closed = b.succeeded()
        assert closed is not None
        assert closed.new is CircuitState.CLOSED
        assert b.admit(12) == (None, None)

    def test_a_failed_probe_opens_again(self) -> None:
        b = Breaker("payments", threshold=1, cooldown=10)
        b.failed(0)
        b.admit(10)
        reopened = b.failed(10.5)
        assert reopened is not None
        assert reopened.new is CircuitState.OPEN
        assert b.admit(11) == (20.5, None)

    def test_a_cancelled_probe_lets_another_go(self) -> None:
        b = Breaker("payments", threshold=1, cooldown=10)
        b.failed(0)
        b.admit(10)
        b.released()
        assert b.admit(10.1) == (None, None)
        assert b.state is CircuitState.HALF_OPEN

    def test_gauge_values(self) -> None:
        assert [s.gauge for s in CircuitState] == [0, 2, 1]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def _fail() -> None:
    raise ApplicationError("503", type="ParticipantUnavailable")


async def _refuse() -> None:
    raise ApplicationError("409", type="ParticipantRefused", non_retryable=True)


async def _ok() -> str:
    return "ok"


class TestTick:
    """Time alone ends the cool-down: the state (and its gauge) does not stay open for ever."""

    def test_tick_moves_an_open_circuit_to_half_open_once_its_cool_down_is_over(self) -> None:
        b = Breaker("payments", threshold=1, cooldown=10)
        b.failed(0)
        assert b.tick(9) is None
        assert b.state is CircuitState.OPEN
        transition = b.tick(10)
        assert transition is not None
        assert (transition.old, transition.new) == (CircuitState.OPEN, CircuitState.HALF_OPEN)
        assert b.tick(11) is None  # once
        assert b.admit(11) == (None, None)  # the next call is the probe...
        assert b.admit(11.5) == (21.5, None)  # ...and only it

    def test_tick_leaves_closed_and_half_open_circuits_alone(self) -> None:
        b = Breaker("payments", threshold=1, cooldown=10)
        assert b.tick(100) is None
        b.failed(0)
        b.admit(10)  # the probe is out
        assert b.tick(30) is None
        assert b.state is CircuitState.HALF_OPEN

    async def test_a_running_guard_moves_its_gauge_without_calls(self) -> None:
        gauge = _Gauge()
        guard = ParticipantGuard(
            {}, OutagePolicy(failure_threshold=1, cooldown=timedelta(milliseconds=50)),
            meter=gauge,  # type: ignore[arg-type]
        )  # fmt: skip
        with capture_logs() as logs:
            async with guard.running():
                with pytest.raises(ApplicationError):
                    await guard.call("payments", _fail)
                assert gauge.values["payments"] == 2
                for _ in range(100):
                    if gauge.values["payments"] != 2:
                        break
                    await asyncio.sleep(0.01)
        assert gauge.values["payments"] == 1
        assert guard.breaker("payments").state is CircuitState.HALF_OPEN
        assert [e["event"] for e in logs] == ["circuit open", "circuit half_open"]


class _Gauge:
    """A stand-in for the runtime's meter, recording the circuit gauge per participant."""

    def __init__(self, attributes: dict[str, str] | None = None, values: Any = None) -> None:
        self.attributes = attributes or {}
        self.values: dict[str, int] = {} if values is None else values

    def create_gauge(self, *args: Any) -> _Gauge:
        return self

    def with_additional_attributes(self, attributes: dict[str, str]) -> _Gauge:
        return _Gauge(attributes, self.values)

    def set(self, value: int) -> None:
        self.values[self.attributes["participant"]] = value


class TestGuard:
    """The worker's guard: fails fast with CircuitOpen / BulkheadFull, counts outcomes."""

    def guard(self, clock: Clock, **policy: Any) -> ParticipantGuard:
        return ParticipantGuard({}, OutagePolicy(**policy), clock=clock)

    async def test_open_circuit_refuses_with_the_retry_time(self) -> None:
        clock = Clock()
        guard = self.guard(clock, failure_threshold=2, cooldown=timedelta(seconds=30))
        with capture_logs() as logs:
            for _ in range(2):
                with pytest.raises(ApplicationError):
                    await guard.call("payments", _fail)
            clock.now = 10
            with pytest.raises(ApplicationError) as refused:
                await guard.call("payments", _ok)
        assert refused.value.type == CIRCUIT_OPEN
        details = refused.value.details[0]
        assert details["participant"] == "payments"
        assert details["retry_after"] == pytest.approx(20)
        assert [e["event"] for e in logs] == ["circuit open"]
        assert logs[0]["participant"] == "payments"

    async def test_refusals_count_as_answers(self) -> None:
        guard = self.guard(Clock(), failure_threshold=2)
        for _ in range(5):
            with pytest.raises(ApplicationError):
                await guard.call("hotels", _fail)
            with pytest.raises(ApplicationError):
                await guard.call("hotels", _refuse)
        assert guard.breaker("hotels").state is CircuitState.CLOSED

    async def test_probe_closes_the_circuit_and_logs_each_transition(self) -> None:
        clock = Clock()
        guard = self.guard(clock, failure_threshold=1, cooldown=timedelta(seconds=5))
        with capture_logs() as logs:
            with pytest.raises(ApplicationError):
                await guard.call("cars", _fail)
            clock.now = 6
            assert await guard.call("cars", _ok) == "ok"
        assert [e["event"] for e in logs] == ["circuit open", "circuit half_open", "circuit closed"]

    async def test_breakers_are_per_participant(self) -> None:
        guard = self.guard(Clock(), failure_threshold=1)
        with pytest.raises(ApplicationError):
            await guard.call("hotels", _fail)
        assert await guard.call("payments", _ok) == "ok"

    async def test_bulkhead_refuses_beyond_its_bound(self) -> None:
        guard = self.guard(Clock(), max_concurrent=2, bulkhead_retry=timedelta(seconds=3))
        release = asyncio.Event()
        peak = 0

        async def slow() -> None:
            nonlocal peak
            peak = max(peak, guard.in_flight("hotels"))
            await release.wait()

        running = [asyncio.create_task(guard.call("hotels", slow)) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(ApplicationError) as full:
            await guard.call("hotels", slow)
        assert full.value.type == BULKHEAD_FULL
        assert full.value.details[0]["retry_after"] == 3
        assert await guard.call("payments", _ok) == "ok"  # other participants are not held
        release.set()
        await asyncio.gather(*running)
        assert peak == 2
        assert guard.in_flight("hotels") == 0


def _activity_error(cause: BaseException) -> ActivityError:
    error = ActivityError(
        "activity failed",
        scheduled_event_id=1,
        started_event_id=2,
        identity="w",
        activity_type="a",
        activity_id="s/forward/1",
        retry_state=RetryState.NON_RETRYABLE_FAILURE,
    )
    error.__cause__ = cause
    return error


class TestRefusalAsTheWorkflowReadsIt:
    def test_circuit_open(self) -> None:
        cause = ApplicationError(
            "open", {"participant": "payments", "retry_after": 7.5}, type=CIRCUIT_OPEN
        )
        refusal = participant_refusal(_activity_error(cause))
        assert refusal is not None
        assert (refusal.participant, refusal.kind) == ("payments", "circuit_open")
        assert refusal.retry_after == timedelta(seconds=7.5)

    def test_other_errors_are_not_refusals_of_the_guard(self) -> None:
        cause = ApplicationError("503", type="ParticipantUnavailable")
        assert participant_refusal(_activity_error(cause)) is None


class Order(BaseModel):
    n: int = 0


@participant("payments")
@activity.defn(name="t_charge")
async def charge(order: Order) -> None: ...


@activity.defn(name="t_refund")
async def refund(order: Any) -> None: ...


@activity.defn(name="t_book")
async def book(order: Order) -> None: ...


class TestWhoCallsWhom:
    def test_from_the_activity_or_the_step(self) -> None:
        saga = Saga(
            "who",
            input=Order,
            steps=[
                Step(charge, compensate=refund),
                Step(book, participant="hotels", name="book"),
            ],
        )
        assert activity_participants([saga]) == {
            "t_charge": "payments",
            "t_refund": "payments",
            "t_book": "hotels",
        }

    def test_two_sagas_may_not_disagree(self) -> None:
        one = Saga("one", input=Order, steps=[Step(book, participant="hotels")])
        two = Saga("two", input=Order, steps=[Step(book, participant="cars")])
        with pytest.raises(SagaDefinitionError, match="t_book"):
            activity_participants([one, two])

    def test_policy_from_settings(self) -> None:
        settings = Settings(circuit_failure_threshold=3, circuit_cooldown_seconds=2)
        policy = outage_policy(settings, max_concurrent_activities=10)
        assert policy.failure_threshold == 3
        assert policy.cooldown == timedelta(seconds=2)
        assert policy.max_concurrent == 5  # half the slots by default
        fixed = outage_policy(Settings(bulkhead_max_concurrent=7), max_concurrent_activities=10)
        assert fixed.max_concurrent == 7
