"""Riding out a participant's outage, on a real Temporal dev server (DESIGN.md, "Outages").

The activities here run in the test process with the worker, so a module-level script says
how each participant behaves for each saga and what it holds.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel
from structlog.testing import capture_logs
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from engine import (
    PARTICIPANT_UNREACHABLE,
    Compensation,
    RetryPolicy,
    Saga,
    SagaClient,
    SagaDefinition,
    SagaState,
    SagaStatus,
    Step,
    StepStatus,
    participant,
    step_info,
)
from engine.worker import OutagePolicy, build_replayer, build_worker
from tests.support import ledger

pytestmark = pytest.mark.temporal

ALWAYS = -1
#: (saga id, activity) -> transient failures still to give (ALWAYS: every call).
FAULTS: dict[tuple[str, str], int] = {}
REFUSE: set[tuple[str, str]] = set()
#: (saga id, activity) -> calls still to fail as unreachable (never reaching the participant).
UNREACHABLE: dict[tuple[str, str], int] = {}
#: (saga id, activity) whose every call takes effect, then fails transiently (outcome unknown).
LOST: set[tuple[str, str]] = set()
#: saga id -> activities whose effect is held; and every call made, in order.
HELD: dict[str, set[str]] = defaultdict(set)
CALLS: dict[str, list[str]] = defaultdict(list)


class Job(BaseModel):
    n: int = 0


def _fault(saga_id: str, name: str) -> None:
    CALLS[saga_id].append(name)
    if (saga_id, name) in REFUSE:
        raise ApplicationError(f"{name} refused", type="Refused", non_retryable=True)
    left = FAULTS.get((saga_id, name), 0)
    if left:
        FAULTS[saga_id, name] = left - 1 if left > 0 else ALWAYS
        raise ApplicationError(f"{name} unavailable", type="Unavailable")
    down = UNREACHABLE.get((saga_id, name), 0)
    if down:
        UNREACHABLE[saga_id, name] = down - 1 if down > 0 else ALWAYS
        # An activity may say when to try again (retry_after, seconds; 1 s if it does not).
        raise ApplicationError(
            f"{name} unreachable", {"retry_after": 0.05}, type=PARTICIPANT_UNREACHABLE
        )


def service(name: str, participant_name: str) -> tuple[Any, Any]:
    @participant(participant_name)
    @activity.defn(name=name)
    async def do(job: Job) -> str:
        saga_id = step_info().saga_id
        if (saga_id, name) in LOST:
            HELD[saga_id].add(name)
        _fault(saga_id, name)
        HELD[saga_id].add(name)
        return name

    @participant(participant_name)
    @activity.defn(name=f"undo_{name}")
    async def undo(c: Compensation[Job, str]) -> None:
        _fault(c.saga_id, f"undo_{name}")
        HELD[c.saga_id].discard(name)

    return do, undo


book, unbook = service("o_book", "hotels")
book_alt, unbook_alt = service("o_book_alt", "broker")
pay, unpay = service("o_pay", "payments")
extra, unextra = service("o_extra", "extras")
refused, _ = service("o_refused", "other")


def policy(attempts: int, interval_ms: int = 50) -> RetryPolicy:
    return RetryPolicy(
        initial_interval=timedelta(milliseconds=interval_ms),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(milliseconds=200),
        maximum_attempts=attempts,
    )


pay_four_times = Saga(
    "o_pay_four_times",
    input=Job,
    steps=[Step(pay, compensate=unpay, name="pay", retry=policy(4))],
)
impatient = Saga(
    "o_impatient",
    input=Job,
    outage_patience=timedelta(seconds=1),
    steps=[
        Step(book, compensate=unbook, name="book", retry=policy(3)),
        Step(pay, compensate=unpay, name="pay", retry=policy(0)),
    ],
)
undo_waits = Saga(
    "o_undo_waits",
    input=Job,
    outage_patience=timedelta(milliseconds=100),  # forward steps only: undo waits regardless
    steps=[
        Step(pay, compensate=unpay, name="pay", compensation_retry=policy(2)),
        Step(refused, name="refused"),
    ],
)
degrading = Saga(
    "o_degrading",
    input=Job,
    steps=[
        Step(book, compensate=unbook, name="book", retry=policy(3),
             fallback=book_alt, fallback_compensate=unbook_alt),
        Step(extra, compensate=unextra, name="extra", retry=policy(2), optional=True),
        Step(pay, compensate=unpay, name="pay", retry=policy(2)),
    ],
)  # fmt: skip
tried_once = Saga("o_tried_once", input=Job, steps=[Step(extra, name="extra", retry=policy(1))])
SAGAS: Sequence[SagaDefinition[Any]] = [
    pay_four_times, impatient, undo_waits, degrading, tried_once,
]  # fmt: skip


async def saga_client(
    env: WorkflowEnvironment, outage: OutagePolicy, **options: Any
) -> AsyncIterator[SagaClient]:
    task_queue = f"outage-{uuid.uuid4()}"
    worker = build_worker(env.client, task_queue=task_queue, sagas=SAGAS, outage=outage, **options)
    async with worker:
        yield SagaClient(env.client, task_queue=task_queue)


async def start(
    sagas: SagaClient,
    saga_type: str,
    lost: Sequence[str] = (),
    unreachable: dict[str, int] | None = None,
    **faults: int,
) -> str:
    saga_id = f"{saga_type}-{uuid.uuid4().hex[:10]}"
    LOST.update((saga_id, name) for name in lost)
    UNREACHABLE.update({(saga_id, name): n for name, n in (unreachable or {}).items()})
    for name, count in faults.items():
        if count == 0:
            REFUSE.add((saga_id, name))
        else:
            FAULTS[saga_id, name] = count
    await sagas.start(saga_type, {"n": 1}, saga_id=saga_id)
    return saga_id


async def finished(sagas: SagaClient, saga_id: str) -> SagaState:
    """The saga's end; its history (waits, fallbacks...) must replay deterministically."""
    state = await asyncio.wait_for(sagas.result(saga_id), timeout=60)
    history = await sagas.client.get_workflow_handle(saga_id).fetch_history()
    replayed = await build_replayer(SAGAS).replay_workflow(history, raise_on_replay_failure=False)
    assert replayed.replay_failure is None, replayed.replay_failure
    return state


class TestUnreachable:
    """A call that never reached its participant (PARTICIPANT_UNREACHABLE) is not an attempt
    of the step's budget: the step waits on the participant, up to its outage patience."""

    @pytest.fixture
    async def sagas(self, dev_env: WorkflowEnvironment) -> AsyncIterator[SagaClient]:
        # Breakers that never open: only the activity's word says the participant is down.
        async for client in saga_client(dev_env, OutagePolicy(failure_threshold=1000)):
            yield client

    async def test_an_outage_longer_than_the_budget_costs_time_not_the_outcome(
        self, sagas: SagaClient
    ) -> None:
        # Six calls fail to connect, against a budget of 4.
        saga_id = await start(sagas, "o_pay_four_times", unreachable={"o_pay": 6})
        waiting = await sagas.wait_for(
            saga_id, until=lambda s: s.step("pay").waiting is not None, timeout=20,
            interval=0.05,
        )  # fmt: skip
        state = await finished(sagas, saga_id)
        wait = waiting.step("pay").waiting
        assert wait is not None
        assert (wait.participant, wait.reason) == ("o_pay", "unreachable")
        assert state.status is SagaStatus.COMPLETED
        assert CALLS[saga_id] == ["o_pay"] * 7

    async def test_patience_bounds_the_wait(self, sagas: SagaClient) -> None:
        saga_id = await start(sagas, "o_impatient", unreachable={"o_pay": ALWAYS})
        state = await finished(sagas, saga_id)
        assert state.status is SagaStatus.COMPENSATED
        assert "outage patience" in (state.step("pay").error or "")


class TestCircuitBreaker:
    """An attempt refused by an open circuit waits, visibly, and is not counted."""

    @pytest.fixture
    async def sagas(self, dev_env: WorkflowEnvironment) -> AsyncIterator[SagaClient]:
        outage = OutagePolicy(failure_threshold=2, cooldown=timedelta(seconds=1.5))
        async for client in saga_client(dev_env, outage):
            yield client

    async def test_a_refused_attempt_waits_without_spending_the_budget(
        self, sagas: SagaClient
    ) -> None:
        with capture_logs() as logs:
            # Two failures open the circuit; the next call is refused without reaching the
            # participant; the probe after the cool-down fails and opens it again; after
            # another refusal, the second probe succeeds: four calls, the step's budget.
            # Counted, the refusals would have ended the step after its third call.
            saga_id = await start(sagas, "o_pay_four_times", o_pay=3)
            waiting = await sagas.wait_for(
                saga_id, until=lambda s: s.step("pay").waiting is not None, timeout=20,
                interval=0.05,
            )  # fmt: skip
            state = await finished(sagas, saga_id)
        wait = waiting.step("pay").waiting
        assert wait is not None
        assert (wait.participant, wait.reason) == ("payments", "circuit_open")
        assert timedelta(0) < wait.until - wait.since <= timedelta(seconds=1.5 * 1.2)
        assert waiting.step("pay").status is StepStatus.RUNNING
        assert state.status is SagaStatus.COMPLETED
        assert state.step("pay").waiting is None
        assert CALLS[saga_id] == ["o_pay"] * 4  # the refused calls never reached it
        assert state.step("pay").attempts > 4  # the refusals show as attempts all the same
        events = [e["event"] for e in logs if e.get("participant") == "payments"]
        assert events == [
            "circuit open", "circuit half_open", "circuit open", "circuit half_open",
            "circuit closed",
        ]  # fmt: skip

    async def test_the_failures_that_opened_the_circuit_do_not_spend_the_budget(
        self, sagas: SagaClient
    ) -> None:
        # Five failures against a budget of four: the first two open the circuit, each probe
        # after a cool-down fails and opens it again, the fourth probe succeeds. Counted
        # across the waits (as before), the step would have given up at its fourth call
        # and the saga compensated; after each wait on the open circuit the budget starts
        # afresh, so the outage costs the saga time, not its outcome.
        saga_id = await start(sagas, "o_pay_four_times", o_pay=5)
        state = await finished(sagas, saga_id)
        assert state.status is SagaStatus.COMPLETED
        assert CALLS[saga_id] == ["o_pay"] * 6

    async def test_patience_ends_the_wait_as_if_retries_were_exhausted(
        self, sagas: SagaClient
    ) -> None:
        saga_id = await start(sagas, "o_impatient", o_pay=ALWAYS)
        state = await finished(sagas, saga_id)
        assert state.status is SagaStatus.COMPENSATED
        pay_step = state.step("pay")
        assert pay_step.status is StepStatus.COMPENSATED  # outcome unknown: undone anyway
        assert "outage patience" in (pay_step.error or "")
        assert HELD[saga_id] == set()

    async def test_a_compensation_waits_on_an_open_circuit(self, sagas: SagaClient) -> None:
        # The refund fails twice (opening the circuit) with a budget of two attempts: only
        # because the refusal in between is not counted, and the saga's patience of 0.1 s
        # does not apply to compensations, does the probe get to succeed.
        saga_id = await start(sagas, "o_undo_waits", o_refused=0, undo_o_pay=1)
        FAULTS[saga_id, "o_pay"] = 1  # together with the refund's failure: the circuit opens
        state = await finished(sagas, saga_id)
        assert state.status is SagaStatus.COMPENSATED
        assert state.step("pay").status is StepStatus.COMPENSATED
        assert HELD[saga_id] == set()


class TestLongOutage:
    """A compensation rides out days of outage within Temporal's history limits."""

    @staticmethod
    def waits(
        counter: Any, outage_days: float, kind: str = "circuit_open", seconds: float = 10
    ) -> list[timedelta]:
        """The waits of one step on a circuit that stays open (a 10 s cool-down), or on a
        participant that stays unreachable."""
        import random
        from unittest import mock

        from opentelemetry.trace import INVALID_SPAN

        from engine._outage import OutageWait
        from engine._participants import Refusal

        wait = OutageWait(counter, INVALID_SPAN, None, lambda: None)
        refusal = Refusal("payments", kind, timedelta(seconds=seconds))
        waits: list[timedelta] = []
        with mock.patch("engine._outage.workflow.random", return_value=random.Random(7)):
            while wait.waited < timedelta(days=outage_days):
                # Each wait is one refusal; a failed probe in between starts a new
                # ParticipantWait (refusals back to 1): the backoff must survive it.
                waits.append(wait._delay(refusal, refusals=1))
                wait.waited += waits[-1]
        return waits

    def test_a_compensations_waits_double_up_to_the_cap(self) -> None:
        from engine import CompensationState

        waits = self.waits(CompensationState(), outage_days=3)
        assert timedelta(seconds=10) <= waits[0] <= timedelta(seconds=12)
        assert waits[3] >= timedelta(seconds=40)  # 10, 10+, 20+, 40+...
        assert max(waits) <= timedelta(minutes=6)  # the cap, plus its jitter
        assert min(waits[20:]) >= timedelta(minutes=5)
        # Three days of outage in under a thousand waits: at ~11 history events each (and
        # as many again for a failed probe after each), far below the 51,200 events limit.
        assert len(waits) < 1000

    def test_a_compensation_waits_on_an_unreachable_participant_as_long_and_as_rarely(
        self,
    ) -> None:
        # No patience bounds a compensation: its waits must double to the cap here too, or a
        # day of outage would take its history past Temporal's limit.
        from engine import CompensationState

        waits = self.waits(CompensationState(), outage_days=3, kind="unreachable", seconds=1)
        assert min(waits[30:]) >= timedelta(minutes=5)
        assert len(waits) < 1000

    def test_a_forward_step_keeps_to_the_cool_down(self) -> None:
        # Its patience bounds it (or, retriable, it continues as new): no need to back off.
        from engine import StepState

        step = StepState(name="pay", kind="retriable", idempotency_key="s/pay")
        waits = self.waits(step, outage_days=0.01)
        assert max(waits) <= timedelta(seconds=12)


class TestAcrossRuns:
    """Sagas that continue as new before every attempt but their first (a tiny history
    limit): the outage's counters go on from run to run."""

    @pytest.fixture
    async def sagas(self, dev_env: WorkflowEnvironment) -> AsyncIterator[SagaClient]:
        outage = OutagePolicy(failure_threshold=2, cooldown=timedelta(seconds=1.5))
        task_queue = f"outage-{uuid.uuid4()}"
        async with build_worker(dev_env.client, task_queue=task_queue, sagas=SAGAS, outage=outage):
            yield SagaClient(dev_env.client, task_queue=task_queue, history_events_limit=10)

    async def test_a_refused_attempt_is_not_carried_as_tried(self, sagas: SagaClient) -> None:
        # As in TestCircuitBreaker: five failures against a budget of four, the circuit open
        # twice. Carried as counted before the refusal reset it, the budget ran out.
        saga_id = await start(sagas, "o_pay_four_times", o_pay=5)
        state = await finished(sagas, saga_id)
        assert state.status is SagaStatus.COMPLETED, state.error
        assert CALLS[saga_id] == ["o_pay"] * 6
        handle = sagas.client.get_workflow_handle(saga_id)
        started = (await handle.fetch_history()).events[0]
        assert started.workflow_execution_started_event_attributes.continued_execution_run_id

    async def test_the_outage_patience_is_not_restarted_by_a_new_run(
        self, sagas: SagaClient
    ) -> None:
        saga_id = await start(sagas, "o_impatient", o_pay=ALWAYS)
        state = await finished(sagas, saga_id)
        assert state.status is SagaStatus.COMPENSATED
        assert "outage patience" in (state.step("pay").error or "")


class TestGracefulDegradation:
    """A fallback serves when a step fails for good; an optional step may fail."""

    @pytest.fixture
    async def sagas(self, dev_env: WorkflowEnvironment) -> AsyncIterator[SagaClient]:
        async for client in saga_client(dev_env, OutagePolicy(failure_threshold=100)):
            yield client

    async def test_the_fallback_serves_when_the_action_fails_for_good(
        self, sagas: SagaClient
    ) -> None:
        saga_id = await start(sagas, "o_degrading", o_book=ALWAYS)
        state = await finished(sagas, saga_id)
        assert state.status is SagaStatus.COMPLETED
        assert state.step("book").status is StepStatus.SUCCEEDED
        assert state.step("book").served_by == "o_book_alt"
        assert state.step("book").output == "o_book_alt"
        assert HELD[saga_id] == {"o_book_alt", "o_extra", "o_pay"}

    async def test_compensation_undoes_the_fallback_that_served(self, sagas: SagaClient) -> None:
        saga_id = await start(sagas, "o_degrading", o_book=ALWAYS, o_pay=0)
        state = await finished(sagas, saga_id)
        assert state.status is SagaStatus.COMPENSATED
        # The action's undo as the fallback served (its outcome was unknown: it never
        # answered), then, as the saga compensates, the fallback's.
        undos = [call for call in CALLS[saga_id] if call.startswith("undo_o_book")]
        assert undos == ["undo_o_book", "undo_o_book_alt"]
        assert HELD[saga_id] == set()

    async def test_a_refusal_is_not_a_reason_to_fall_back(self, sagas: SagaClient) -> None:
        saga_id = await start(sagas, "o_degrading", o_book=0)
        state = await finished(sagas, saga_id)
        assert state.status is SagaStatus.FAILED
        assert state.step("book").served_by is None
        assert "o_book_alt" not in CALLS[saga_id]

    async def test_the_action_a_fallback_replaced_is_undone_as_it_serves(
        self, sagas: SagaClient
    ) -> None:
        # The hotel took the booking but never answered; the broker booked. Found by
        # engine.testing's explore against the participants: the completed trip held both.
        saga_id = await start(sagas, "o_degrading", ["o_book"], o_book=ALWAYS)
        state = await finished(sagas, saga_id)
        assert state.status is SagaStatus.COMPLETED
        book_step = state.step("book")
        assert (book_step.status, book_step.served_by) == (StepStatus.SUCCEEDED, "o_book_alt")
        assert book_step.compensation is not None
        assert book_step.compensation.status.value == "succeeded"
        assert HELD[saga_id] == {"o_book_alt", "o_extra", "o_pay"}

    async def test_a_refused_fallback_leaves_the_actions_unknown_outcome_undone(
        self, sagas: SagaClient
    ) -> None:
        # The hotel took the booking but never answered; the broker said no. Found by
        # engine.testing's explore: the hotel's booking was left in place.
        saga_id = await start(sagas, "o_degrading", ["o_book"], o_book=ALWAYS, o_book_alt=0)
        state = await finished(sagas, saga_id)
        assert state.status is SagaStatus.COMPENSATED
        assert state.step("book").status is StepStatus.COMPENSATED
        undos = [call for call in CALLS[saga_id] if call.startswith("undo_")]
        assert undos == ["undo_o_book"]  # the broker refused: nothing of it to undo
        assert HELD[saga_id] == set()

    async def test_an_optional_step_of_unknown_outcome_is_undone_as_the_saga_goes_on(
        self, sagas: SagaClient
    ) -> None:
        # Found by engine.testing's explore: a completed saga kept what the step may hold.
        saga_id = await start(sagas, "o_degrading", ["o_extra"], o_extra=ALWAYS)
        state = await finished(sagas, saga_id)
        assert state.status is SagaStatus.COMPLETED
        extra_step = state.step("extra")
        assert extra_step.status is StepStatus.FAILED_OPTIONAL
        assert extra_step.compensation is not None
        assert extra_step.compensation.status.value == "succeeded"
        assert [c for c in CALLS[saga_id] if c.startswith("undo_")] == ["undo_o_extra"]
        assert HELD[saga_id] == {"o_book", "o_pay"}

    async def test_an_optional_step_fails_without_failing_the_saga(self, sagas: SagaClient) -> None:
        saga_id = await start(sagas, "o_degrading", o_extra=ALWAYS)
        state = await finished(sagas, saga_id)
        assert state.status is SagaStatus.COMPLETED
        assert state.step("extra").status is StepStatus.FAILED_OPTIONAL
        assert "extra" not in (state.result or {})
        assert HELD[saga_id] == {"o_book", "o_pay"}


# ------------------------------------------------------------------ timeouts

#: How the calls to the hanging participant ended, as the activity saw them.
HUNG: list[str] = []


@participant("silent")
@activity.defn(name="o_hang")
async def hang(job: Job) -> str:
    """A participant that accepts the call and never answers."""
    try:
        if job.n == 2:
            activity.heartbeat()  # once: then silence, until the heartbeat timeout
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        details = activity.cancellation_details()
        HUNG.append("timed_out" if details is not None and details.timed_out else str(details))
        raise
    return "answered"


hanging = Saga(
    "o_hanging",
    input=Job,
    steps=[Step(hang, name="hang", retry=policy(0), start_to_close=timedelta(seconds=1))],
)
hanging_heartbeat = Saga(
    "o_hanging_heartbeat",
    input=Job,
    steps=[
        Step(hang, name="hang", retry=policy(0), start_to_close=timedelta(seconds=30),
             heartbeat=timedelta(seconds=1)),
    ],
)  # fmt: skip


class TestTimeouts:
    """A participant that never answers opens its circuit: Temporal's timeouts are failures."""

    @pytest.mark.parametrize(("saga_type", "n"), [("o_hanging", 1), ("o_hanging_heartbeat", 2)])
    async def test_timed_out_calls_open_the_circuit(
        self, dev_env: WorkflowEnvironment, saga_type: str, n: int
    ) -> None:
        HUNG.clear()
        task_queue = f"timeouts-{uuid.uuid4()}"
        outage = OutagePolicy(failure_threshold=2, cooldown=timedelta(seconds=60))
        worker = build_worker(
            dev_env.client, task_queue=task_queue, sagas=[hanging, hanging_heartbeat],
            outage=outage,
        )  # fmt: skip
        async with worker:
            sagas = SagaClient(dev_env.client, task_queue=task_queue)
            saga_id = f"{saga_type}-{uuid.uuid4().hex[:10]}"
            with capture_logs() as logs:
                await sagas.start(saga_type, {"n": n}, saga_id=saga_id)
                waiting = await sagas.wait_for(
                    saga_id, until=lambda s: s.step("hang").waiting is not None, timeout=30,
                    interval=0.1,
                )  # fmt: skip
            await sagas.client.get_workflow_handle(saga_id).terminate("test over")
        wait = waiting.step("hang").waiting
        assert wait is not None
        assert (wait.participant, wait.reason) == ("silent", "circuit_open")
        # The worker cancels a timed-out call a few seconds after Temporal timed it out (its
        # grace period), so more attempts may have started by then: they are refused once
        # the second cancellation has opened the circuit.
        assert HUNG[:2] == ["timed_out", "timed_out"]
        events = [e["event"] for e in logs if e.get("participant") == "silent"]
        assert events == ["circuit open"]


# ------------------------------------------------------------------ bulkheads

RELEASE: dict[str, asyncio.Event] = {}
RUNNING: dict[str, int] = defaultdict(int)
PEAK: dict[str, int] = defaultdict(int)


@participant("slow_hotel")
@activity.defn(name="o_slow")
async def slow(job: Job) -> str:
    key = "slow"
    RUNNING[key] += 1
    PEAK[key] = max(PEAK[key], RUNNING[key])
    try:
        while not RELEASE[key].is_set():
            activity.heartbeat()
            await asyncio.sleep(0.05)
    finally:
        RUNNING[key] -= 1
    return "slow"


slow_saga = Saga(
    "o_slow",
    input=Job,
    steps=[Step(slow, name="slow", heartbeat=timedelta(seconds=5))],
)
pay_saga = Saga("o_pay_only", input=Job, steps=[Step(pay, compensate=unpay, name="pay")])


class TestBulkhead:
    """A slow participant cannot take every activity slot: the others keep theirs."""

    async def test_a_slow_participant_gets_its_share_and_no_more(
        self, dev_env: WorkflowEnvironment
    ) -> None:
        RELEASE["slow"] = asyncio.Event()
        task_queue = f"bulkhead-{uuid.uuid4()}"
        outage = OutagePolicy(max_concurrent=2, bulkhead_retry=timedelta(milliseconds=200))
        worker = build_worker(
            dev_env.client, task_queue=task_queue, sagas=[slow_saga, pay_saga],
            outage=outage, max_concurrent_activities=4,
        )  # fmt: skip
        async with worker:
            sagas = SagaClient(dev_env.client, task_queue=task_queue)
            slow_ids = [await start(sagas, "o_slow") for _ in range(6)]
            await sagas.wait_for(
                slow_ids[0], until=lambda s: PEAK["slow"] >= 2, timeout=20, interval=0.05
            )
            # Six slow calls want the four slots and never finish until released; the
            # payments still get slots and complete meanwhile.
            pay_ids = [await start(sagas, "o_pay_only") for _ in range(4)]
            paid = await asyncio.wait_for(
                asyncio.gather(*(sagas.result(i) for i in pay_ids)), timeout=30
            )
            assert [s.status for s in paid] == [SagaStatus.COMPLETED] * 4
            assert RUNNING["slow"] == 2
            waiting = [(await sagas.state(i)).step("slow").waiting for i in slow_ids]
            assert sum(w is not None and w.reason == "bulkhead_full" for w in waiting) >= 1
            RELEASE["slow"].set()
            done = await asyncio.wait_for(
                asyncio.gather(*(sagas.result(i) for i in slow_ids)), timeout=60
            )
        assert [s.status for s in done] == [SagaStatus.COMPLETED] * 6
        assert PEAK["slow"] == 2


class TestBulkRetry:
    """Parked sagas are retried in bulk after an outage (the CLI's ``sagas retry --all``)."""

    async def test_every_parked_saga_of_a_type_is_retried(self, sagas: SagaClient) -> None:
        parked = []
        for _ in range(2):
            saga_id = f"bulk-{uuid.uuid4().hex[:10]}"
            ledger.plan(saga_id, refuse={"c"}, compensation_failures={"a": ledger.ALWAYS})
            await sagas.start("three_steps", {"order_id": saga_id}, saga_id=saga_id)
            parked.append(saga_id)
        for saga_id in parked:
            await sagas.wait_for(saga_id, until=SagaStatus.COMPENSATION_FAILED, timeout=30)
            ledger.fix(saga_id)
        assert await sagas.retry_parked(saga_type="parallel_group") == []
        assert sorted(await sagas.retry_parked(saga_type="three_steps")) == sorted(parked)
        for saga_id in parked:
            assert (await finished(sagas, saga_id)).status is SagaStatus.COMPENSATED

    def test_the_cli_takes_an_id_or_all(self) -> None:
        from typer.testing import CliRunner

        from engine.cli import app

        for args in (["retry"], ["retry", "s-1", "--all"], ["retry", "s-1", "--type", "t"]):
            assert CliRunner().invoke(app, args).exit_code == 2, args


def circuit_state(participant_name: str = "payments") -> list[float]:
    from prometheus_client import REGISTRY, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    return [
        sample.value
        for family in text_string_to_metric_families(generate_latest(REGISTRY).decode())
        for sample in family.samples
        if sample.name == "sagas_circuit_state"
        and sample.labels.get("participant") == participant_name
    ]


async def test_the_circuit_state_is_a_metric(dev_env: WorkflowEnvironment) -> None:
    from engine import connect
    from engine.telemetry import exporting_metrics, temporal_runtime

    client = await connect(dev_env.client.service_client.config.target_host,
                           runtime=temporal_runtime())  # fmt: skip
    outage = OutagePolicy(failure_threshold=1, cooldown=timedelta(seconds=3))
    async with exporting_metrics():
        async for sagas in _with(client, outage):
            saga_id = await start(sagas, "o_pay_four_times", o_pay=1)
            await sagas.wait_for(
                saga_id, until=lambda s: s.step("pay").waiting is not None, timeout=20,
                interval=0.05,
            )  # fmt: skip
            await asyncio.sleep(1.5)  # the exporter drains the SDK's buffer every second
            assert circuit_state() == [2]  # open
            assert (await finished(sagas, saga_id)).status is SagaStatus.COMPLETED
            await asyncio.sleep(1.5)
            assert circuit_state() == [0]  # closed again by the probe

            # A saga fails for good at its first failure, which opens another circuit; nothing
            # calls that participant afterwards. The gauge must still leave "open" once the
            # cool-down is over, or SagaCircuitOpen fires for as long as the worker runs.
            # (Here, not in a test of its own: the exporter, restarted, exports nothing new.)
            saga_id = await start(sagas, "o_tried_once", o_extra=ALWAYS)
            assert (await finished(sagas, saga_id)).status is SagaStatus.FAILED
            await asyncio.sleep(1.5)
            assert circuit_state("extras") == [2]  # open
            for _ in range(80):
                if circuit_state("extras") != [2]:
                    break
                await asyncio.sleep(0.1)
            assert circuit_state("extras") == [1]  # half-open: the next call is the probe
            assert CALLS[saga_id] == ["o_extra"]


async def _with(client: Any, outage: OutagePolicy) -> AsyncIterator[SagaClient]:
    task_queue = f"outage-{uuid.uuid4()}"
    async with build_worker(client, task_queue=task_queue, sagas=SAGAS, outage=outage):
        yield SagaClient(client, task_queue=task_queue)


def test_the_saga_resource_shows_the_wait_and_the_fallback() -> None:
    from datetime import UTC, datetime

    from api.presenter import step_public
    from engine import CompensationState, ParticipantWait, StepState

    now = datetime(2026, 1, 1, tzinfo=UTC)
    wait = ParticipantWait(participant="payments", reason="circuit_open", since=now, until=now)
    step = StepState(name="pay", kind="compensatable", idempotency_key="s/pay", waiting=wait,
                     served_by="pay_alt", compensation=CompensationState(waiting=wait))  # fmt: skip
    shown = step_public(step).model_dump(mode="json")
    assert shown["waiting"]["participant"] == "payments"
    assert shown["waiting"]["reason"] == "circuit_open"
    assert shown["served_by"] == "pay_alt"
    assert shown["compensation"]["waiting"]["until"] == "2026-01-01T00:00:00Z"
