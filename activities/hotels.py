"""Hotels: reserve and cancel rooms, at the hotel or (its fallback) through a broker."""

from temporalio import activity

from activities import _calls
from activities.models import HotelRequest, Reservation
from engine import Compensation, participant


@participant("hotels")
@activity.defn(name="reserve_hotel")
async def reserve(request: HotelRequest) -> Reservation:
    return await _calls.do("hotels", "reservations", request)


@participant("hotels")
@activity.defn(name="cancel_hotel")
async def cancel(undo: Compensation[HotelRequest, Reservation]) -> None:
    await _calls.undo("hotels", "reservations", undo)


@participant("hotel_broker")
@activity.defn(name="reserve_hotel_via_broker")
async def reserve_via_broker(request: HotelRequest) -> Reservation:
    return await _calls.do("hotel_broker", "reservations", request)


@participant("hotel_broker")
@activity.defn(name="cancel_hotel_via_broker")
async def cancel_via_broker(undo: Compensation[HotelRequest, Reservation]) -> None:
    await _calls.undo("hotel_broker", "reservations", undo)
