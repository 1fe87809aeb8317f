"""Trip pricing and the approval threshold.

The threshold is configuration, so it is read here, in an activity: the decision is recorded in
the saga's history and a configuration change never alters a running saga on replay.
"""

from pydantic import BaseModel
from temporalio import activity

from activities.models import Reservation
from engine.config import get_settings


class TripPrices(BaseModel):
    flight: Reservation
    hotel: Reservation
    car: Reservation | None = None


class TripTotal(BaseModel):
    total: int
    needs_approval: bool
    approval_above: int


@activity.defn(name="price_trip")
async def price_trip(prices: TripPrices) -> TripTotal:
    total = prices.flight.price + prices.hotel.price + (prices.car.price if prices.car else 0)
    above = get_settings().trip_approval_above
    return TripTotal(total=total, needs_approval=total > above, approval_above=above)
