"""Inventory: reserve and release stock."""

from temporalio import activity

from activities import _calls
from activities.models import Reservation, StockRequest
from engine import Compensation, participant


@participant("inventory")
@activity.defn(name="reserve_inventory")
async def reserve(request: StockRequest) -> Reservation:
    return await _calls.do("inventory", "reservations", request)


@participant("inventory")
@activity.defn(name="release_inventory")
async def release(undo: Compensation[StockRequest, Reservation]) -> None:
    await _calls.undo("inventory", "reservations", undo)
