"""The imperative form: a saga that branches in code, with the same rules as a declarative one.

    sagas worker --module examples.order_imperative
    sagas start gift_order --input examples/gift.json --module examples.order_imperative

If the warehouse has no gift wrap, the order ships unwrapped instead of failing; if the
customer wants it wrapped at any price, a refusal compensates the payment.
"""

from __future__ import annotations

from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

from engine import Compensation, ImperativeSaga, SagaRun, StepFailed


class GiftOrder(BaseModel):
    item: str = Field(examples=["teapot"])
    wrap: bool = True
    wrap_required: bool = False


@activity.defn
async def charge(order: GiftOrder) -> str:
    return f"charged for {order.item}"


@activity.defn
async def refund_charge(undo: Compensation[GiftOrder, str]) -> None:
    return None


@activity.defn
async def wrap(order: GiftOrder) -> str:
    if order.item == "piano":
        raise ApplicationError("too big to wrap", type="CannotWrap", non_retryable=True)
    return "wrapped"


@activity.defn
async def unwrap(undo: Compensation[GiftOrder, str]) -> None:
    return None


@activity.defn
async def ship(order: GiftOrder) -> str:
    return f"{order.item} shipped"


async def gift_order_flow(saga: SagaRun[GiftOrder]) -> None:
    await saga.step(charge, compensate=refund_charge)
    if saga.input.wrap:
        try:
            await saga.step(wrap, compensate=unwrap)
        except StepFailed:
            if saga.input.wrap_required:
                raise  # compensates the charge
    await saga.step(ship, pivot=True)


gift_order = ImperativeSaga(
    "gift_order",
    input=GiftOrder,
    run=gift_order_flow,
    activities=[charge, refund_charge, wrap, unwrap, ship],
    description="Charge, wrap if possible, ship.",
)
