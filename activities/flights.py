"""Flights: reserve and cancel seats."""

from temporalio import activity

from activities import _calls
from activities.models import FlightRequest, Reservation
from engine import Compensation, participant


@participant("flights")
@activity.defn(name="reserve_flight")
async def reserve(request: FlightRequest) -> Reservation:
    return await _calls.do("flights", "reservations", request)


@participant("flights")
@activity.defn(name="cancel_flight")
async def cancel(undo: Compensation[FlightRequest, Reservation]) -> None:
    await _calls.undo("flights", "reservations", undo)
