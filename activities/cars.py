"""Car rental: reserve and cancel cars."""

from temporalio import activity

from activities import _calls
from activities.models import CarRequest, Reservation
from engine import Compensation, participant


@participant("cars")
@activity.defn(name="reserve_car")
async def reserve(request: CarRequest) -> Reservation:
    return await _calls.do("cars", "reservations", request)


@participant("cars")
@activity.defn(name="cancel_car")
async def cancel(undo: Compensation[CarRequest, Reservation]) -> None:
    await _calls.undo("cars", "reservations", undo)
