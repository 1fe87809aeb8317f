"""The consistency checker: does each finished saga agree with what the participants hold?

    completed            every succeeded step's record is active (exactly one: the action's,
                         or its fallback's when that served); nothing else is
    compensated, failed  nothing of the saga is left reserved, charged or shipped
    compensation_failed  exactly the steps whose compensation failed (and are unresolved)
                         are left active; but a step whose outcome is unknown (its calls timed
                         out or its participant was unreachable: it has no output) may hold
                         nothing, so there the rule is "at most one active record"

Tests and the chaos and crash suites use it as their oracle; ``sagas check`` runs it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from engine import SagaState, SagaStatus, StepStatus
from engine.store import FINAL_STATUSES
from engine.testing import Run

#: Which participant collection each shipped saga's step writes to (its fallback's: below).
STEP_RECORDS: dict[str, tuple[str, str]] = {
    "reserve_flight": ("flights", "reservations"),
    "reserve_hotel": ("hotels", "reservations"),
    "reserve_car": ("cars", "reservations"),
    "charge_payment": ("payments", "charges"),
    "send_itinerary": ("notifications", "messages"),
    "reserve_inventory": ("inventory", "reservations"),
    "authorize_payment": ("payments", "authorizations"),
    "ship_order": ("shipping", "shipments"),
    "capture_payment": ("payments", "captures"),
    "send_invoice": ("notifications", "messages"),
}
#: Where a step's fallback writes (under the same idempotency key).
FALLBACK_RECORDS: dict[str, tuple[str, str]] = {
    "reserve_hotel": ("hotel_broker", "reservations"),
}
ACTIVE = frozenset({"reserved", "charged", "authorized", "captured", "shipped", "sent"})
#: The statuses the checker judges: the final ones, and compensation_failed (parked).
CHECKED = FINAL_STATUSES | {SagaStatus.COMPENSATION_FAILED}


@dataclass(frozen=True)
class Mismatch:
    saga_id: str
    step: str
    expected: str
    found: str

    def __str__(self) -> str:
        return f"{self.saga_id} {self.step}: expected {self.expected}, found {self.found}"


async def all_records(http: httpx.AsyncClient, saga_id: str) -> list[tuple[str, str]]:
    """(idempotency key, status) of every record of the saga, in every collection it uses."""
    found: list[tuple[str, str]] = []
    collections = set(STEP_RECORDS.values()) | set(FALLBACK_RECORDS.values())
    for participant, collection in sorted(collections):
        response = await http.get(f"/{participant}/{collection}", params={"saga_id": saga_id})
        response.raise_for_status()
        found += [(record["key"], record["status"]) for record in response.json()]
    return found


async def records_of(http: httpx.AsyncClient, saga_id: str) -> dict[str, str]:
    """Idempotency key -> status (an active one where a key has several)."""
    found: dict[str, str] = {}
    for key, status in await all_records(http, saga_id):
        if key not in found or status in ACTIVE:
            found[key] = status
    return found


def compare(state: SagaState, records: list[tuple[str, str]]) -> list[Mismatch]:
    """The mismatches between one finished saga and its participants' records."""
    if state.status not in CHECKED:
        return []
    mismatches = []
    for step in state.steps:
        if step.name not in STEP_RECORDS:
            continue
        statuses = [status for key, status in records if key == step.idempotency_key]
        active = sum(status in ACTIVE for status in statuses)
        if state.status is SagaStatus.COMPLETED:
            allowed = {1} if step.status is StepStatus.SUCCEEDED else {0}
        elif step.status is StepStatus.RESOLVED:
            continue  # an operator settled it by hand, outside the participants' view
        elif step.status is StepStatus.COMPENSATION_FAILED:
            # No output: the action never answered, so it may or may not have acted.
            allowed = {0, 1} if step.output is None else {1}
        else:
            allowed = {0}
        if active not in allowed:
            expected = {
                frozenset({0}): "nothing active",
                frozenset({1}): "an active record",
                frozenset({0, 1}): "at most one active record",
            }[frozenset(allowed)]
            found = ", ".join(statuses) or "nothing"
            mismatches.append(Mismatch(state.id, step.name, expected, found))
    return mismatches


async def check(states: list[SagaState], participants_url: str) -> list[Mismatch]:
    async with httpx.AsyncClient(base_url=participants_url, timeout=30) as http:
        found: list[Mismatch] = []
        for state in states:
            found += compare(state, await all_records(http, state.id))
        return found


def kit_check(participants_url: str) -> Callable[[Run], Awaitable[None]]:
    """The consistency checker as a check of ``sagas explore --participants`` (entry point
    ``sagas.checks``): each run's records must agree with how its saga ended."""

    async def check_run(run: Run) -> None:
        mismatches = await check([run.state], participants_url)
        assert not mismatches, "; ".join(str(m) for m in mismatches)

    return check_run
