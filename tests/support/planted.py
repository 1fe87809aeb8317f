"""Sagas with planted bugs for the testing kit to find, over an in-memory bank.

``wallet`` debits an account, books points, then notifies; its activities really move money
in ``BANK`` (the kit runs them with ``passthrough=True``), so a check can compare the books:
* ``wallet`` is correct: every call deduplicates by its idempotency key;
* ``wallet_double_refund``'s refund is not idempotent: each call credits the money back;
* ``wallet_no_undo``'s points booking has no compensation.
"""

from __future__ import annotations

from collections import defaultdict

from pydantic import BaseModel
from temporalio import activity

from engine import Compensation, Saga, Step, idempotency_key
from engine.testing import Run

START = 100


class Topup(BaseModel):
    amount: int = 30


class Bank:
    def __init__(self) -> None:
        self.balance: dict[str, int] = defaultdict(lambda: START)
        self.points: dict[str, int] = defaultdict(int)
        self.seen: set[str] = set()

    def once(self, key: str) -> bool:
        """True the first time ``key`` is seen: a participant's deduplication."""
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


BANK = Bank()


def _saga(key: str) -> str:
    return key.rsplit("/", 1)[0]


@activity.defn(name="wallet_debit")
async def debit(t: Topup) -> int:
    key = idempotency_key()
    if BANK.once(key):
        BANK.balance[_saga(key)] -= t.amount
    return BANK.balance[_saga(key)]


@activity.defn(name="wallet_refund")
async def refund(undo: Compensation[Topup, int]) -> None:
    key = undo.idempotency_key
    if key in BANK.seen and BANK.once(f"{key}/undo"):
        BANK.balance[_saga(key)] += undo.input.amount


@activity.defn(name="wallet_refund_every_time")
async def refund_every_time(undo: Compensation[Topup, int]) -> None:
    key = undo.idempotency_key
    if key in BANK.seen:  # there was a debit: give the money back (every time!)
        BANK.balance[_saga(key)] += undo.input.amount


@activity.defn(name="wallet_book_points")
async def book_points(t: Topup) -> int:
    key = idempotency_key()
    if BANK.once(key):
        BANK.points[_saga(key)] += t.amount
    return BANK.points[_saga(key)]


@activity.defn(name="wallet_revoke_points")
async def revoke_points(undo: Compensation[Topup, int]) -> None:
    key = undo.idempotency_key
    if key in BANK.seen and BANK.once(f"{key}/undo"):
        BANK.points[_saga(key)] -= undo.input.amount


@activity.defn(name="wallet_notify")
async def notify(t: Topup) -> None:
    return None


def _steps(refund_fn: object, revoke: object | None) -> list[Step]:
    return [
        Step(debit, compensate=refund_fn),  # type: ignore[arg-type]
        Step(book_points, compensate=revoke),  # type: ignore[arg-type]
        Step(notify, retriable=True),
    ]


wallet = Saga("wallet", input=Topup, steps=_steps(refund, revoke_points))
wallet_double_refund = Saga(
    "wallet_double_refund", input=Topup, steps=_steps(refund_every_time, revoke_points)
)
wallet_no_undo = Saga("wallet_no_undo", input=Topup, steps=_steps(refund, None))


def books_balance(run: Run) -> None:
    """The user's check: the books agree with how the saga ended."""
    saga_id = run.saga_id
    balance, points = BANK.balance[saga_id], BANK.points[saga_id]
    if run.state.status.value == "completed":
        assert (balance, points) == (START - 30, 30), f"completed with {balance=} {points=}"
    else:
        assert (balance, points) == (START, 0), (
            f"{run.state.status.value} with {balance=} {points=}"
        )
