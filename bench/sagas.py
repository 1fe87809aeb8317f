"""The saga the benchmarks run: trip-style, three steps with compensations, trivial activities.

The activities do no I/O, so what is measured is the engine, Temporal and the start path.
"""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta

from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from engine import Approval, Compensation, Saga, Step


class Trip(BaseModel):
    trip_id: str
    amount: int = 100
    #: The step that refuses (flight, hotel or charge): the saga compensates what it did.
    fail_at: str | None = None
    #: Seconds the flight takes (bench/api_wait.py: sagas that stay running).
    hold_seconds: float = 0.0


#: ``bench.baseline --benign-refusals``: the activities mark their refusals BENIGN themselves,
#: as a hand-written workflow's team may (the engine marks them so either way).
BENIGN_REFUSALS = os.environ.get("BENCH_BENIGN_REFUSALS") == "1"


def _refuse_at(trip: Trip, step: str) -> None:
    if trip.fail_at == step:
        raise ApplicationError(
            f"{step} refused",
            type="Refused",
            non_retryable=True,
            category=(
                ApplicationErrorCategory.BENIGN
                if BENIGN_REFUSALS
                else ApplicationErrorCategory.UNSPECIFIED
            ),
        )


class Booked(BaseModel):
    what: str


@activity.defn
async def bench_reserve_flight(trip: Trip) -> Booked:
    if trip.hold_seconds:
        await asyncio.sleep(trip.hold_seconds)
    _refuse_at(trip, "flight")
    return Booked(what="flight")


@activity.defn
async def bench_cancel_flight(undo: Compensation[Trip, Booked]) -> None:
    return None


@activity.defn
async def bench_reserve_hotel(trip: Trip) -> Booked:
    _refuse_at(trip, "hotel")
    return Booked(what="hotel")


@activity.defn
async def bench_cancel_hotel(undo: Compensation[Trip, Booked]) -> None:
    return None


@activity.defn
async def bench_charge(trip: Trip) -> Booked:
    _refuse_at(trip, "charge")
    return Booked(what="charge")


@activity.defn
async def bench_refund(undo: Compensation[Trip, Booked]) -> None:
    return None


bench_trip = Saga(
    "bench_trip",
    input=Trip,
    steps=[
        Step(bench_reserve_flight, compensate=bench_cancel_flight),
        Step(bench_reserve_hotel, compensate=bench_cancel_hotel),
        Step(bench_charge, compensate=bench_refund),
    ],
)

# The same saga on the fast path: every step a local activity (bench/baseline.py --local).
bench_trip_local = Saga(
    "bench_trip_local",
    input=Trip,
    local_steps=True,
    steps=list(bench_trip.stages),
)


# For bench/memory.py: a saga that stays in flight, waiting for a decision after its first step.
bench_waiting = Saga(
    "bench_waiting",
    input=Trip,
    steps=[
        Step(bench_reserve_flight, compensate=bench_cancel_flight),
        Step(
            bench_reserve_hotel,
            compensate=bench_cancel_hotel,
            approval=Approval(timedelta(days=1)),
        ),
    ],
)
