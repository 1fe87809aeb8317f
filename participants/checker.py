"""The consistency checker: does each finished saga agree with what the participants hold?

    completed            every succeeded step's record is active
    compensated, failed  nothing of the saga is left reserved, charged or shipped
    compensation_failed  exactly the steps whose compensation failed (and are unresolved)
                         are left active

Tests and the chaos and crash suites use it as their oracle; ``sagas check`` runs it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from engine import SagaState, SagaStatus, StepStatus
from engine.store import FINAL_STATUSES
from engine.testing import Run

#: Which participant collection each shipped saga's step writes to.
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


async def records_of(http: httpx.AsyncClient, saga_id: str) -> dict[str, str]:
    """Idempotency key -> status, across every collection the shipped sagas use."""
    found: dict[str, str] = {}
    for participant, collection in sorted(set(STEP_RECORDS.values())):
        response = await http.get(f"/{participant}/{collection}", params={"saga_id": saga_id})
        response.raise_for_status()
        for record in response.json():
            found[record["key"]] = record["status"]
    return found


def compare(state: SagaState, records: dict[str, str]) -> list[Mismatch]:
    """The mismatches between one finished saga and its participants' records."""
    if state.status not in CHECKED:
        return []
    mismatches = []
    for step in state.steps:
        if step.name not in STEP_RECORDS:
            continue
        status = records.get(step.idempotency_key, "nothing")
        active = status in ACTIVE
        if state.status is SagaStatus.COMPLETED:
            expect_active = step.status is StepStatus.SUCCEEDED
        elif step.status is StepStatus.RESOLVED:
            continue  # an operator settled it by hand, outside the participants' view
        else:
            expect_active = step.status is StepStatus.COMPENSATION_FAILED
        if active != expect_active:
            mismatches.append(
                Mismatch(
                    state.id,
                    step.name,
                    "an active record" if expect_active else "nothing active",
                    status,
                )
            )
    return mismatches


async def check(states: list[SagaState], participants_url: str) -> list[Mismatch]:
    async with httpx.AsyncClient(base_url=participants_url, timeout=30) as http:
        found: list[Mismatch] = []
        for state in states:
            found += compare(state, await records_of(http, state.id))
        return found


def kit_check(participants_url: str) -> Callable[[Run], Awaitable[None]]:
    """The consistency checker as a check of ``sagas explore --participants`` (entry point
    ``sagas.checks``): each run's records must agree with how its saga ended."""

    async def check_run(run: Run) -> None:
        mismatches = await check([run.state], participants_url)
        assert not mismatches, "; ".join(str(m) for m in mismatches)

    return check_run
