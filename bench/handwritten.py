"""The bench saga written by hand as a plain Temporal workflow: the baseline for the engine.

Same activities as ``bench.sagas.bench_trip``, one ``execute_activity`` per step, compensations
in reverse order on failure: what a careful team writes without the engine. Run as a worker:

    python -m bench.handwritten --address 127.0.0.1:7233 --task-queue bench-handwritten
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import FailureError
from temporalio.worker import UnsandboxedWorkflowRunner, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

with workflow.unsafe.imports_passed_through():
    from bench.sagas import (
        Booked,
        Trip,
        bench_cancel_flight,
        bench_cancel_hotel,
        bench_charge,
        bench_refund,
        bench_reserve_flight,
        bench_reserve_hotel,
    )
    from engine import Compensation
    from engine._worker import poller_behavior  # for --pollers, as the engine's workers poll

STEPS = [
    ("reserve_flight", bench_reserve_flight, bench_cancel_flight),
    ("reserve_hotel", bench_reserve_hotel, bench_cancel_hotel),
    ("charge", bench_charge, bench_refund),
]
TIMEOUT = timedelta(seconds=30)


async def _execute(local: bool, fn: Any, arg: Any, activity_id: str) -> Any:
    if local:
        return await workflow.execute_local_activity(
            fn, arg, start_to_close_timeout=TIMEOUT, activity_id=activity_id
        )
    return await workflow.execute_activity(
        fn, arg, start_to_close_timeout=TIMEOUT, activity_id=activity_id
    )


async def _trip(trip: Trip, *, local: bool) -> dict[str, str]:
    saga_id = workflow.info().workflow_id
    done: list[tuple[str, Any, Booked]] = []
    try:
        for name, action, undo in STEPS:
            booked = await _execute(local, action, trip, f"{name}/forward/1")
            done.append((name, undo, booked))
    except FailureError:  # a local activity's failure may come back bare, not as ActivityError
        for name, undo, booked in reversed(done):
            compensation: Compensation[Trip, Booked] = Compensation(
                saga_id=saga_id, step=name, idempotency_key=f"{saga_id}/{name}",
                input=trip, output=booked,
            )  # fmt: skip
            await _execute(local, undo, compensation, f"{name}/compensation/1")
        raise
    return {name: booked.what for name, _, booked in done}


@workflow.defn(name="handwritten_trip")
class HandwrittenTrip:
    @workflow.run
    async def run(self, trip: Trip) -> dict[str, str]:
        return await _trip(trip, local=False)


@workflow.defn(name="handwritten_trip_local")
class HandwrittenTripLocal:
    """The same with local activities: Temporal's own fast path, for reference."""

    @workflow.run
    async def run(self, trip: Trip) -> dict[str, str]:
        return await _trip(trip, local=True)


@workflow.defn(name="handwritten_waiting")
class HandwrittenWaiting:
    """bench_waiting by hand: reserve the flight, then wait for a decision signal."""

    def __init__(self) -> None:
        self.approved: bool | None = None

    @workflow.run
    async def run(self, trip: Trip) -> str:
        await workflow.execute_activity(
            bench_reserve_flight, trip, start_to_close_timeout=TIMEOUT,
            activity_id="reserve_flight/forward/1",
        )  # fmt: skip
        await workflow.wait_condition(lambda: self.approved is not None, timeout=timedelta(days=1))
        return "approved" if self.approved else "rejected"

    @workflow.signal
    def decide(self, approved: bool) -> None:
        self.approved = approved


async def serve(
    address: str, task_queue: str, *, sandbox: bool = True, pollers: str | None = None
) -> None:
    client = await Client.connect(address, data_converter=pydantic_data_converter)
    polls: dict[str, Any] = {}  # None: the SDK's default (a fixed 5, one on the task queue)
    if pollers:  # the same mapping as the engine's workers
        polls["workflow_task_poller_behavior"] = poller_behavior(
            "auto" if pollers == "auto" else int(pollers)
        )
    worker = Worker(
        client,
        task_queue=task_queue,
        workflows=[HandwrittenTrip, HandwrittenTripLocal, HandwrittenWaiting],
        activities=[fn for _, action, undo in STEPS for fn in (action, undo)],
        max_concurrent_activities=100,
        max_concurrent_workflow_tasks=100,
        workflow_runner=SandboxedWorkflowRunner() if sandbox else UnsandboxedWorkflowRunner(),
        **polls,
    )
    async with worker:
        print("ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True)
    parser.add_argument("--task-queue", required=True)
    parser.add_argument("--unsandboxed", action="store_true", help="outside the sandbox")
    parser.add_argument("--pollers", help="polls for workflow tasks: auto or a number")
    options = parser.parse_args()
    asyncio.run(
        serve(
            options.address,
            options.task_queue,
            sandbox=not options.unsandboxed,
            pollers=options.pollers,
        )
    )
