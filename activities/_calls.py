"""Do and undo against a participant collection; the participant modules are thin names."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from activities._http import call
from activities.models import Reservation
from engine import Compensation


async def do(participant: str, collection: str, request: BaseModel) -> Reservation:
    answer = await call(participant, collection, request.model_dump(mode="json"))
    return Reservation.model_validate(answer)


async def undo(participant: str, collection: str, undo: Compensation[Any, Reservation]) -> None:
    # The compensation carries the action's key: the participant finds (or tombstones) by it.
    await call(participant, f"{collection}/cancel", key=undo.idempotency_key)
