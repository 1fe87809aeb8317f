"""Shipping: hand an order to the carrier (no undo: it is the order saga's pivot)."""

from temporalio import activity

from activities import _calls
from activities.models import Reservation, ShipmentRequest
from engine import participant


@participant("shipping")
@activity.defn(name="ship_order")
async def ship(request: ShipmentRequest) -> Reservation:
    return await _calls.do("shipping", "shipments", request)
