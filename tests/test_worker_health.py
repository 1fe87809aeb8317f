"""A worker's probes answer from the worker's own event loop and its Temporal worker's state."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from engine._worker_health import WorkerHealth, serving
from engine.worker import build_worker
from tests.support.processes import free_port
from tests.support.sagas import ALL

pytestmark = pytest.mark.temporal


async def get(url: str, timeout: float = 5.0) -> httpx.Response:
    # From a thread, as a probe is another process: the loop under test must do the answering.
    return await asyncio.to_thread(httpx.get, url, timeout=timeout)


class TestProbes:
    """/healthz follows the worker's life; /readyz also needs Temporal; a stuck loop is silent."""

    async def test_health_follows_the_worker(self, dev_env: WorkflowEnvironment) -> None:
        worker = build_worker(dev_env.client, task_queue=f"h-{uuid.uuid4()}", sagas=ALL)
        port = free_port()
        async with serving(WorkerHealth(worker, dev_env.client), "127.0.0.1", port) as url:
            before = await get(f"{url}/healthz")
            assert before.status_code == 503
            assert before.json() == {"status": "the Temporal worker is not running"}
            async with worker:
                assert (await get(f"{url}/healthz")).status_code == 200
                ready = await get(f"{url}/readyz")
                assert ready.status_code == 200, ready.text
                assert ready.json() == {"worker": "ok", "temporal": "ok"}
                assert (await get(f"{url}/nope")).status_code == 404
            after = await get(f"{url}/healthz")
            assert after.status_code == 503
            assert after.json() == {"status": "the Temporal worker has stopped"}

    async def test_not_ready_without_temporal(self, dev_env: WorkflowEnvironment) -> None:
        worker = build_worker(dev_env.client, task_queue=f"h-{uuid.uuid4()}", sagas=ALL)
        # A client whose server has gone: Temporal's health check fails.
        gone = await WorkflowEnvironment.start_local(
            dev_server_existing_path=_temporal(), dev_server_log_level="error"
        )
        lost: Client = gone.client
        await gone.shutdown()
        async with (
            worker,
            serving(WorkerHealth(worker, lost), "127.0.0.1", free_port()) as url,
        ):
            ready = await get(f"{url}/readyz")
            assert ready.status_code == 503
            assert ready.json()["temporal"].startswith("unreachable")
            assert (await get(f"{url}/healthz")).status_code == 200

    async def test_a_blocked_loop_does_not_answer(self, dev_env: WorkflowEnvironment) -> None:
        worker = build_worker(dev_env.client, task_queue=f"h-{uuid.uuid4()}", sagas=ALL)
        async with (
            worker,
            serving(WorkerHealth(worker, dev_env.client), "127.0.0.1", free_port()) as url,
        ):
            probe = asyncio.ensure_future(get(f"{url}/healthz", timeout=1.0))
            await asyncio.sleep(0)  # the probe's thread is on its way
            time.sleep(2.5)  # noqa: ASYNC251 - the loop is stuck, as a blocking call leaves it
            with pytest.raises(httpx.TimeoutException):
                await probe
            assert (await get(f"{url}/healthz")).status_code == 200  # free again


def _temporal() -> str:
    from tests.conftest import binary

    return binary("temporal")
