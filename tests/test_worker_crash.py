"""A worker process killed mid-saga: a new worker finishes the saga, and every action took
effect once, as the participant (deduplicating by idempotency key) saw it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from engine import SagaClient, SagaStatus
from engine.worker import load_modules
from tests.support import ledger

pytestmark = pytest.mark.temporal

ROOT = Path(__file__).resolve().parent.parent


def spawn_worker(
    target: str, task_queue: str, log: Path, **settings: str
) -> subprocess.Popen[bytes]:
    """`sagas worker` as a user runs it, in its own process."""
    command = [
        sys.executable, "-m", "engine.cli", "worker", "--module", "tests.support.sagas",
        "--address", target, "--task-queue", task_queue,
    ]  # fmt: skip
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **settings},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def wait_until(check: object, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while not check():  # type: ignore[operator]
            await asyncio.sleep(0.1)


async def test_saga_survives_a_killed_worker(dev_env: WorkflowEnvironment, tmp_path: Path) -> None:
    load_modules(["tests.support.sagas"])
    target = dev_env.client.service_client.config.target_host
    task_queue = f"crash-{uuid.uuid4()}"
    sagas = SagaClient(dev_env.client, task_queue=task_queue)
    saga_id = f"crash-{uuid.uuid4().hex[:12]}"
    # b takes effect, then hangs: the worker is killed while the answer is still owed.
    ledger.plan(saga_id, act_then_hang={"b": 60})

    first = spawn_worker(target, task_queue, tmp_path / "worker1.log")
    second = None
    try:
        await sagas.start("crash_safe", {"order_id": saga_id}, saga_id=saga_id)
        await wait_until(lambda: "b" in ledger.effects(saga_id))
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)

        second = spawn_worker(target, task_queue, tmp_path / "worker2.log")
        async with asyncio.timeout(60):
            state = await sagas.result(saga_id)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=15)

    assert state.status is SagaStatus.COMPLETED, (tmp_path / "worker2.log").read_text()
    assert state.step("b").attempts == 2, "the lost attempt timed out and was retried"
    assert ledger.effects(saga_id) == {
        "a": ("active", 1),
        "b": ("active", 1),
        "c": ("active", 1),
    }


@pytest.mark.parametrize(("grace", "b_attempts"), [("10", 1), ("0", 2)])
async def test_a_stopping_worker_lets_running_activities_finish(
    dev_env: WorkflowEnvironment, tmp_path: Path, grace: str, b_attempts: int
) -> None:
    """SIGTERM with SAGAS_WORKER_SHUTDOWN_SECONDS: the running step finishes, not retried.

    With no grace (0) the same stop cancels the step, which is then tried again: the
    comparison shows the setting is what makes the difference.
    """
    load_modules(["tests.support.sagas"])
    target = dev_env.client.service_client.config.target_host
    task_queue = f"graceful-{uuid.uuid4()}"
    sagas = SagaClient(dev_env.client, task_queue=task_queue)
    saga_id = f"graceful-{uuid.uuid4().hex[:12]}"
    ledger.plan(saga_id, slow={"b": 3})
    first = spawn_worker(
        target, task_queue, tmp_path / "worker1.log", SAGAS_WORKER_SHUTDOWN_SECONDS=grace
    )
    second = None
    try:
        await sagas.start("three_steps", {"order_id": saga_id}, saga_id=saga_id)
        await wait_until(lambda: ("b", "forward", 1) in ledger.calls(saga_id))
        first.send_signal(signal.SIGTERM)
        await asyncio.to_thread(first.wait, 30)
        second = spawn_worker(target, task_queue, tmp_path / "worker2.log")
        state = await asyncio.wait_for(sagas.result(saga_id), timeout=60)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
            if proc is not None:
                proc.wait(timeout=10)
    assert state.status is SagaStatus.COMPLETED
    assert state.step("b").attempts == b_attempts
    assert ledger.active(saga_id) == {"a", "b", "c"}
