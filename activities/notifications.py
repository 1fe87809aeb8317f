"""Notifications: itineraries and invoices (retriable steps: sent once, retried until sent)."""

from temporalio import activity

from activities import _calls
from activities.models import Message, Reservation
from engine import participant


@participant("notifications")
@activity.defn(name="send_itinerary")
async def send_itinerary(message: Message) -> Reservation:
    return await _calls.do("notifications", "messages", message)


@participant("notifications")
@activity.defn(name="send_invoice")
async def send_invoice(message: Message) -> Reservation:
    return await _calls.do("notifications", "messages", message)
