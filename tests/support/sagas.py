"""Sagas used by the engine's tests, over the ledger participant.

Each step's action and compensation are activities named after the step (``a``/``undo_a``);
what they do for a given saga is scripted in the ledger (refuse, transient faults, slowness).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

from engine import (
    Approval,
    Compensation,
    ImperativeSaga,
    Parallel,
    RetryPolicy,
    Saga,
    SagaDefinition,
    SagaRun,
    Step,
    StepFailed,
    step_info,
)
from tests.support import ledger

FAST = RetryPolicy(
    initial_interval=timedelta(milliseconds=50),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(milliseconds=200),
    maximum_attempts=3,
)
FAST_FOREVER = RetryPolicy(
    initial_interval=timedelta(milliseconds=50),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(milliseconds=200),
    maximum_attempts=0,
)


class Order(BaseModel):
    order_id: str = Field(default="o-1", examples=["o-1"])
    amount: int = Field(default=10, ge=0)
    express: bool = False


class Receipt(BaseModel):
    step: str
    key: str
    amount: int


def participant(step: str) -> tuple[Any, Any]:
    """The action and compensation activities for one step."""

    @activity.defn(name=step)
    async def do(order: Order) -> Receipt:
        info = step_info()
        ledger.record_call(info.saga_id, info.step, "forward", info.attempt)
        planned = ledger.plan_key(info.saga_id, order.order_id)
        spec = ledger.get_plan(planned)
        if info.step in spec["refuse"] or ledger.take_fault(planned, "refusals", info.step):
            raise ApplicationError(f"{info.step} refused", type="Refused", non_retryable=True)
        if ledger.take_fault(planned, "transient", info.step):
            raise ApplicationError(f"{info.step} temporarily unavailable", type="Unavailable")
        slow = spec["slow"].get(info.step)
        if slow:
            for _ in range(int(slow * 10)):
                activity.heartbeat()
                await asyncio.sleep(0.1)
        if ledger.apply(info.idempotency_key, info.saga_id, info.step) == "refused":
            raise ApplicationError("already cancelled", type="Refused", non_retryable=True)
        hang = spec["act_then_hang"].get(info.step)
        if hang and info.attempt == 1:
            await asyncio.sleep(hang)  # took effect, but the answer never arrives in time
        return Receipt(step=info.step, key=info.idempotency_key, amount=order.amount)

    @activity.defn(name=f"undo_{step}")
    async def undo(c: Compensation[Order, Receipt]) -> None:
        info = step_info()
        ledger.record_call(info.saga_id, info.step, "compensation", info.attempt)
        assert c.idempotency_key == info.idempotency_key
        planned = ledger.plan_key(info.saga_id, c.input.order_id)
        if ledger.take_fault(planned, "compensation_failures", info.step):
            raise ApplicationError(f"cannot undo {info.step} right now", type="Unavailable")
        ledger.undo(c.idempotency_key, info.saga_id, info.step)

    return do, undo


a, undo_a = participant("a")
b, undo_b = participant("b")
c, undo_c = participant("c")
d, undo_d = participant("d")
p1, undo_p1 = participant("p1")
p2, undo_p2 = participant("p2")
p3, undo_p3 = participant("p3")


def fast(action: Any, undo: Any = None, **options: Any) -> Step:
    options.setdefault("retry", FAST)
    if undo is not None:
        options.setdefault("compensation_retry", FAST)
    return Step(action, compensate=undo, **options)


three_steps = Saga(
    "three_steps",
    input=Order,
    steps=[
        fast(a, undo_a),
        fast(b, undo_b, heartbeat=timedelta(seconds=2)),
        fast(c, undo_c),
    ],
)

# three_steps with every step a local activity (no heartbeat: a local step cannot).
three_local = Saga(
    "three_local",
    input=Order,
    local_steps=True,
    steps=[fast(a, undo_a), fast(b, undo_b), fast(c, undo_c)],
)

parallel_group = Saga(
    "parallel_group",
    input=Order,
    steps=[
        fast(a, undo_a),
        Parallel(fast(p1, undo_p1), fast(p2, undo_p2), fast(p3, undo_p3)),
        fast(d, undo_d),
    ],
)

timed_out_step = Saga(
    "timed_out_step",
    input=Order,
    steps=[
        fast(a, undo_a),
        fast(b, undo_b, start_to_close=timedelta(seconds=1), retry=RetryPolicy(maximum_attempts=1)),
    ],
)

pivoted = Saga(
    "pivoted",
    input=Order,
    steps=[
        fast(a, undo_a),
        fast(b, pivot=True),
        Step(c, retriable=True, retry=FAST_FOREVER, heartbeat=timedelta(seconds=2)),
        Step(d, retriable=True, retry=FAST_FOREVER),
    ],
)

with_deadline = Saga(
    "with_deadline",
    input=Order,
    deadline=timedelta(seconds=2),
    steps=[fast(a, undo_a), fast(b, undo_b, heartbeat=timedelta(seconds=2))],
)

approval = Saga(
    "approval",
    input=Order,
    steps=[
        fast(a, undo_a),
        fast(b, undo_b, approval=Approval(timedelta(hours=1), when=lambda o: o.amount > 100)),
    ],
)

long_deadline = Saga(
    "long_deadline",
    input=Order,
    deadline=timedelta(days=1),
    steps=[fast(a, undo_a), fast(b, undo_b, approval=Approval(timedelta(days=7)))],
)

conditional = Saga(
    "conditional",
    input=Order,
    steps=[
        fast(a, undo_a),
        fast(b, undo_b, when=lambda o: o.express),
        fast(c, undo_c, input=lambda o, done: Order(order_id="c", amount=done["a"].amount * 2)),
    ],
)

crash_safe = Saga(
    "crash_safe",
    input=Order,
    steps=[fast(a, undo_a), fast(b, undo_b, start_to_close=timedelta(seconds=3)), fast(c, undo_c)],
)


async def _branching(saga: SagaRun[Order]) -> None:
    await saga.step(a, compensate=undo_a, retry=FAST, compensation_retry=FAST)
    try:
        await saga.step(b, compensate=undo_b, retry=FAST, compensation_retry=FAST)
    except StepFailed:
        # A refused b is not the end: take the other branch.
        await saga.step(c, compensate=undo_c, retry=FAST, compensation_retry=FAST)
    if saga.input.express:
        await saga.step(d, Order(order_id="x", amount=saga.input.amount + 1), pivot=True)
    await saga.step(p1, retriable=True, retry=FAST_FOREVER)


branching = ImperativeSaga(
    "branching",
    input=Order,
    run=_branching,
    activities=[a, undo_a, b, undo_b, c, undo_c, d, p1],
)


class Payment(BaseModel):
    order_id: str = Field(default="o-1", examples=["o-1"])
    card_token: str = Field(default="tok_visa", max_length=100, examples=["tok_visa"])


@activity.defn(name="check_card")
async def check_card(payment: Payment) -> Receipt:
    """A participant that echoes what it was given in its refusal (some do): the card token is
    in the error's message."""
    raise ApplicationError(
        f"card {payment.card_token} declined for order {payment.order_id}",
        type="Declined",
        non_retryable=True,
    )


card_declined = Saga(
    "card_declined",
    input=Payment,
    steps=[fast(a, undo_a, input=lambda p: Order(order_id=p.order_id)), fast(check_card)],
)

ALL: list[SagaDefinition[Any]] = [
    three_steps,
    three_local,
    parallel_group,
    timed_out_step,
    pivoted,
    with_deadline,
    approval,
    long_deadline,
    conditional,
    crash_safe,
    branching,
    card_declined,
]
