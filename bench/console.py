"""How long the console's pages take to render, server side: a saga of 20 steps and a list of
200 sagas (with the "needs a person" panel and the counts), over a SQLite saga store.

The app is the real API (console included) called in-process through httpx's ASGI transport,
so the time is the server's: routing, auth, store reads, presenting and templating, without a
network. The store is filled with snapshots as workers write them. Not a test:

    python -m bench.console --rounds 30
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from engine import Saga, SagaState, SagaStatus, StepStatus
from engine.store import SagaStore
from tests.support.console import OPS, offline_app, secret
from tests.support.sagas import Order, fast, participant

#: A declared saga of 20 steps (activities from the test participant: never run here).
twenty_steps = Saga(
    "twenty_steps",
    input=Order,
    steps=[fast(*participant(f"s{i:02d}")) for i in range(20)],
)


def _step(name: str, status: StepStatus, at: datetime, i: int, **kw: Any) -> dict[str, Any]:
    return {"name": name, "kind": "compensatable", "status": status, "attempts": 1 + i % 3,
            "started_at": at + timedelta(seconds=i), "ended_at": at + timedelta(seconds=i + 1),
            "idempotency_key": f"k/{name}", **kw}  # fmt: skip


def fill(store: SagaStore, sagas: int) -> None:
    """``sagas`` three-step sagas in mixed statuses, and one of 20 steps that compensated."""
    at = datetime.now(UTC) - timedelta(hours=1)
    statuses = [SagaStatus.COMPLETED] * 6 + [SagaStatus.COMPENSATED, SagaStatus.RUNNING,
                SagaStatus.COMPENSATION_FAILED, SagaStatus.AWAITING_APPROVAL]  # fmt: skip
    snapshots: list[tuple[SagaState, int]] = []
    for n in range(sagas):
        status = statuses[n % len(statuses)]
        steps = [_step(s, StepStatus.SUCCEEDED, at, i) for i, s in enumerate("abc")]
        snapshots.append((_state(f"three_steps-{n:04d}", "three_steps", status, at, steps), 9))
    undo = {"status": "succeeded", "attempts": 1}
    steps = [
        _step(f"s{i:02d}", StepStatus.COMPENSATED, at, i, compensation=undo) for i in range(19)
    ]
    steps.append(_step("s19", StepStatus.FAILED, at, 19, error="s19 refused"))
    snapshots.append((_state("twenty_steps-1", "twenty_steps", SagaStatus.COMPENSATED, at,
                             steps), 9))  # fmt: skip
    store.apply(snapshots)


def _state(
    saga_id: str, saga_type: str, status: SagaStatus, at: datetime, steps: list[dict[str, Any]]
) -> SagaState:
    return SagaState.model_validate(
        {"id": saga_id, "type": saga_type, "status": status, "started_at": at,
         "updated_at": at + timedelta(seconds=30), "steps": steps,
         "input": {"order_id": saga_id, "amount": 10, "card_token": "tok_visa_4242"}}
    )  # fmt: skip


async def timed(http: httpx.AsyncClient, url: str, rounds: int) -> tuple[float, float, int]:
    """Median and max milliseconds of ``rounds`` GETs (after one warm-up), and the page size."""
    size = len((await http.get(url)).content)
    times = []
    for _ in range(rounds):
        began = time.perf_counter()
        answer = await http.get(url)
        times.append((time.perf_counter() - began) * 1000)
        assert answer.status_code == 200, answer.status_code
    return statistics.median(times), max(times), size


async def main(rounds: int, sagas: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = SagaStore(f"sqlite:///{Path(tmp) / 'sagas.sqlite'}")
        store.migrate()
        fill(store, sagas)
        app = offline_app(store, modules=["bench.console"])
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            await http.post("/console/login", data={"api_key": secret(OPS)})
            pages = {
                "saga of 20 steps": "/console/sagas/twenty_steps-1",
                f"list of {min(sagas, 200)} sagas": "/console?limit=200",
                "list, default page (50)": "/console",
            }
            for name, url in pages.items():
                median, worst, size = await timed(http, url, rounds)
                print(f"{name:28} median {median:6.1f} ms  max {worst:6.1f} ms  {size // 1024} KiB")
        store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--sagas", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.sagas))
