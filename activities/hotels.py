"""Hotels: reserve and cancel rooms."""

from temporalio import activity

from activities import _calls
from activities.models import HotelRequest, Reservation
from engine import Compensation


@activity.defn(name="reserve_hotel")
async def reserve(request: HotelRequest) -> Reservation:
    return await _calls.do("hotels", "reservations", request)


@activity.defn(name="cancel_hotel")
async def cancel(undo: Compensation[HotelRequest, Reservation]) -> None:
    await _calls.undo("hotels", "reservations", undo)
