"""What each demo participant offers, and how its documented test inputs behave.

DESIGN.md's table, with the inputs added since for the outage tactics:

    hotel.hotel_id == "sold-out"          the hotel refuses (409)
    hotel.hotel_id == "slow"              the hotel answers after ``slow_seconds``
    hotel.hotel_id == "unreachable"       the hotel answers 503 every time: trip_booking's
                                          fallback books the room through ``hotel_broker``
    car.car_class == "unavailable"        the car rental refuses (409): trip_booking's car is
                                          optional, so the trip completes without it
    payment.card_token == "tok_declined"  the payment is declined (402)
    payment.card_token == "tok_flaky"     two 503s, then the charge
    flight.flight_number == "CANCEL-FAILS"  the airline refuses to cancel (409, a business
                                          refusal): the saga is parked at once
    items[].sku == "out-of-stock"         the stock is refused; address "nowhere": the carrier
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Body = dict[str, Any]


class Refused(Exception):
    """A business refusal: a 4xx the caller must not retry."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Unavailable(Exception):
    """A transient failure: a 5xx the caller may retry."""


@dataclass(frozen=True)
class Rules:
    #: Raise Refused or Unavailable for the "do" call; ``attempt`` counts calls with this key.
    do: Callable[[Body, int], None] = lambda body, attempt: None
    #: Raise Refused or Unavailable for the "undo" call (the request body of the original "do").
    undo: Callable[[Body], None] = lambda body: None
    #: Seconds the "do" call takes.
    delay: Callable[[Body], float] = lambda body: 0.0


@dataclass(frozen=True)
class Collection:
    name: str
    done: str
    undone: str | None = None
    price: Callable[[Body], int] = lambda body: 0
    rules: Rules = field(default_factory=Rules)


@dataclass(frozen=True)
class Participant:
    name: str
    collections: tuple[Collection, ...]


def _refuse_if(
    test: Callable[[Body], bool], status: int, reason: str
) -> Callable[[Body, int], None]:
    def rule(body: Body, attempt: int) -> None:
        if test(body):
            raise Refused(status, reason)

    return rule


def _card(body: Body, attempt: int) -> None:
    token = body.get("card_token")
    if token == "tok_declined":
        raise Refused(402, "card declined")
    if token == "tok_flaky" and attempt <= 2:
        raise Unavailable("payment processor timeout")


def _cancel_fails(body: Body) -> None:
    # A business refusal, not an outage: retrying cannot help, an operator must act.
    if body.get("flight_number") == "CANCEL-FAILS":
        raise Refused(409, "the airline no longer cancels this ticket")


def _hotel(body: Body, attempt: int) -> None:
    if body.get("hotel_id") == "sold-out":
        raise Refused(409, "sold out")
    if body.get("hotel_id") == "unreachable":
        raise Unavailable("the hotel's booking system does not answer")


def _out_of_stock(body: Body) -> bool:
    return any(item.get("sku") == "out-of-stock" for item in body.get("items", []))


def participants(*, slow_seconds: float) -> list[Participant]:
    return [
        Participant("flights", (
            Collection("reservations", "reserved", "cancelled", price=lambda b: 300,
                       rules=Rules(undo=_cancel_fails)),
        )),
        Participant("hotels", (
            Collection(
                "reservations", "reserved", "cancelled",
                price=lambda b: 120 * int(b.get("nights", 1)),
                rules=Rules(
                    do=_hotel,
                    delay=lambda b: slow_seconds if b.get("hotel_id") == "slow" else 0.0,
                ),
            ),
        )),
        # A broker that books rooms when the hotel's own system is down (the hotel step's
        # fallback): dearer, but the trip goes on.
        Participant("hotel_broker", (
            Collection("reservations", "reserved", "cancelled",
                       price=lambda b: 150 * int(b.get("nights", 1))),
        )),
        Participant("cars", (
            Collection(
                "reservations", "reserved", "cancelled",
                price=lambda b: 50 * int(b.get("days", 1)),
                rules=Rules(do=_refuse_if(lambda b: b.get("car_class") == "unavailable", 409,
                                          "no car of that class")),
            ),
        )),
        Participant("payments", (
            Collection("charges", "charged", "refunded", price=lambda b: int(b.get("amount", 0)),
                       rules=Rules(do=_card)),
            Collection("authorizations", "authorized", "voided",
                       price=lambda b: int(b.get("amount", 0)), rules=Rules(do=_card)),
            Collection("captures", "captured", price=lambda b: int(b.get("amount", 0))),
        )),
        Participant("inventory", (
            Collection("reservations", "reserved", "released",
                       rules=Rules(do=_refuse_if(_out_of_stock, 409, "out of stock"))),
        )),
        Participant("shipping", (
            Collection("shipments", "shipped",
                       rules=Rules(do=_refuse_if(lambda b: b.get("address") == "nowhere", 422,
                                                 "cannot deliver to that address"))),
        )),
        Participant("notifications", (Collection("messages", "sent"),)),
    ]  # fmt: skip
