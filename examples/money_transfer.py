"""A declarative saga: move money between two banks that know nothing of each other.

Run it (see README.md, "Your first saga"):

    sagas worker --module examples.money_transfer
    sagas start money_transfer --input examples/transfer.json --module examples.money_transfer

The "banks" are in-memory so the example needs no other service; a real participant would be
an HTTP call that passes ``idempotency_key()`` along. Test inputs:
``to_account == "closed"`` makes the credit fail (the debit is refunded) and
``amount > 10000`` waits for an approval first.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

from engine import Approval, Compensation, Saga, Step, idempotency_key


class Transfer(BaseModel):
    from_account: str = Field(min_length=1, examples=["alice"])
    to_account: str = Field(min_length=1, examples=["bob"])
    amount: int = Field(gt=0, le=1_000_000, examples=[250])


class Receipt(BaseModel):
    account: str
    amount: int
    reference: str


# Each bank deduplicates by idempotency key: a retried call returns the first answer.
_ledger: dict[str, Receipt] = {}


@activity.defn
async def debit(t: Transfer) -> Receipt:
    key = idempotency_key()
    if key not in _ledger:
        _ledger[key] = Receipt(account=t.from_account, amount=-t.amount, reference=key)
    return _ledger[key]


@activity.defn
async def refund(undo: Compensation[Transfer, Receipt]) -> None:
    # Also called when the debit's outcome is unknown: succeed when there is nothing to undo.
    _ledger.pop(undo.idempotency_key, None)


@activity.defn
async def credit(t: Transfer) -> Receipt:
    if t.to_account == "closed":
        raise ApplicationError("account is closed", type="AccountClosed", non_retryable=True)
    key = idempotency_key()
    _ledger.setdefault(key, Receipt(account=t.to_account, amount=t.amount, reference=key))
    return _ledger[key]


@activity.defn
async def reverse_credit(undo: Compensation[Transfer, Receipt]) -> None:
    _ledger.pop(undo.idempotency_key, None)


@activity.defn
async def notify(t: Transfer) -> str:
    activity.logger.info(
        "transfer of %s from %s to %s done", t.amount, t.from_account, t.to_account
    )
    return "sent"


money_transfer = Saga(
    "money_transfer",
    input=Transfer,
    description="Debit one account, credit another, then tell the customer.",
    steps=[
        Step(debit, compensate=refund),
        Step(
            credit,
            compensate=reverse_credit,
            approval=Approval(timedelta(hours=24), when=lambda t: t.amount > 10_000),
        ),
        Step(notify, retriable=True),
    ],
)
