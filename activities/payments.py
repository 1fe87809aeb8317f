"""Payments: charge and refund (trips); authorize, void and capture (orders)."""

from temporalio import activity

from activities import _calls
from activities.models import CaptureRequest, ChargeRequest, Reservation
from engine import Compensation, participant


@participant("payments")
@activity.defn(name="charge_payment")
async def charge(request: ChargeRequest) -> Reservation:
    return await _calls.do("payments", "charges", request)


@participant("payments")
@activity.defn(name="refund_payment")
async def refund(undo: Compensation[ChargeRequest, Reservation]) -> None:
    await _calls.undo("payments", "charges", undo)


@participant("payments")
@activity.defn(name="authorize_payment")
async def authorize(request: ChargeRequest) -> Reservation:
    return await _calls.do("payments", "authorizations", request)


@participant("payments")
@activity.defn(name="void_payment")
async def void(undo: Compensation[ChargeRequest, Reservation]) -> None:
    await _calls.undo("payments", "authorizations", undo)


@participant("payments")
@activity.defn(name="capture_payment")
async def capture(request: CaptureRequest) -> Reservation:
    return await _calls.do("payments", "captures", request)
