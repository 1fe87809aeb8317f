"""Load for the chaos suites: sagas started over REST as a careful client starts them.

Each saga has its own Idempotency-Key, and a start that gets no answer (the API was killed
mid-request, Temporal is restarting) is sent again with the same key until the API answers:
that is how a client gets exactly one saga per key through a crash. The outcome is then read
from Temporal and judged by the consistency checker.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from engine import SagaClient, SagaState, SagaStatus
from engine.store import FINAL_STATUSES
from participants.checker import CHECKED, Mismatch, check
from tests.support.processes import ROOT

EXAMPLES = ROOT / "examples" / "demo"
#: Inputs that go through (the approval threshold and the slow hotel are left out: a chaos
#: run must not wait for a person or for 20 s answers).
GOOD = ["trip", "trip-no-car", "trip-flaky", "order", "order-flaky"]
#: Inputs a participant refuses: business refusals, compensated by the rules.
REFUSED = [
    "trip-sold-out",
    "trip-declined",
    "trip-car-unavailable",
    "order-out-of-stock",
    "order-declined",
    "order-nowhere",
]


def example(name: str) -> tuple[str, dict[str, Any]]:
    saga_type = "order_fulfillment" if name.startswith("order") else "trip_booking"
    payload: dict[str, Any] = json.loads((EXAMPLES / f"{name}.json").read_text())
    return saga_type, payload


def mix(count: int, *, refusals: float, seed: int) -> list[tuple[str, dict[str, Any]]]:
    """``count`` inputs of both saga types, ``refusals`` of them refused by a participant."""
    rng = random.Random(seed)
    return [example(rng.choice(REFUSED if rng.random() < refusals else GOOD)) for _ in range(count)]


@dataclass
class Run:
    """What a load run saw: the sagas started and how many tries their starts took."""

    ids: dict[str, str] = field(default_factory=dict)  # idempotency key -> saga id
    retried_starts: int = 0
    duplicates: int = 0


async def start_all(
    api_url: str,
    inputs: list[tuple[str, dict[str, Any]]],
    *,
    rate: float,
    run: Run,
    give_up_after: float = 180,
) -> Run:
    """Start every input at ``rate`` per second (open loop), each retried until answered."""
    async with httpx.AsyncClient(base_url=api_url, timeout=10) as http:

        async def one(index: int, saga_type: str, payload: dict[str, Any]) -> None:
            await asyncio.sleep(index / rate)
            key = f"chaos-{index}"
            deadline = time.monotonic() + give_up_after
            while True:
                try:
                    response = await http.post(
                        f"/sagas/{saga_type}", json=payload, headers={"Idempotency-Key": key}
                    )
                    if response.status_code in (200, 202):
                        saga_id = response.json()["id"]
                        if run.ids.setdefault(key, saga_id) != saga_id:
                            run.duplicates += 1
                        return
                    assert response.status_code >= 500, response.text
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, f"start {key} never answered"
                run.retried_starts += 1
                await asyncio.sleep(0.5)

        await asyncio.gather(*(one(i, t, p) for i, (t, p) in enumerate(inputs)))
    return run


async def final_states(
    sagas: SagaClient, ids: list[str], *, timeout: float, final: frozenset[Any] = CHECKED
) -> list[SagaState]:
    """Every saga's state once it is final (or parked); fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    states: dict[str, SagaState] = {}
    while True:
        for saga_id in ids:
            if saga_id in states:
                continue
            try:
                state = await sagas.state(saga_id)
            except Exception:  # Temporal restarting: ask again on the next round
                continue
            if state.status in final:
                states[saga_id] = state
        if len(states) == len(ids):
            return [states[i] for i in ids]
        if time.monotonic() > deadline:
            stuck = Counter(
                str(s.status) for s in [await sagas.state(i) for i in ids if i not in states]
            )
            raise AssertionError(f"{len(ids) - len(states)} sagas never ended: {dict(stuck)}")
        await asyncio.sleep(1)


@dataclass(frozen=True)
class Verdict:
    statuses: dict[str, int]
    mismatches: list[Mismatch]
    #: Why each saga that did not complete or compensate ended as it did.
    unusual: list[str]

    def __str__(self) -> str:
        lines = [f"statuses: {self.statuses}", f"mismatches: {len(self.mismatches)}"]
        return "\n".join(lines + [str(m) for m in self.mismatches[:20]] + self.unusual[:20])


async def judge(states: list[SagaState], participants_url: str) -> Verdict:
    statuses = Counter(str(s.status) for s in states)
    unusual = [
        f"{s.id} {s.status}: {s.error}"
        for s in states
        if s.status not in (SagaStatus.COMPLETED, SagaStatus.COMPENSATED)
    ]
    return Verdict(dict(sorted(statuses.items())), await check(states, participants_url), unusual)


__all__ = ["FINAL_STATUSES", "Run", "Verdict", "final_states", "judge", "mix", "start_all"]
