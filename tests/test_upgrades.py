"""Safe upgrades: a saga keeps the definition it started with while a new one rolls out.

The fleet before the upgrade is a ``sagas worker`` that knows version 1 of ``upgraded_order``
(a, b awaiting approval, c). A version-1 saga waits for approval; that worker stops and one
that knows versions 1 and 2 (b, a, d: reordered, one step removed, one added) takes over. The
waiting saga finishes as version 1, a new saga runs version 2, and every history recorded on
either side replays against the new code.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from engine import Saga, SagaClient, SagaDefinitionError, SagaStatus, _registry
from engine.worker import build_replayer, load_modules, registered
from tests.support import ledger
from tests.support.processes import Background
from tests.support.sagas import Order
from tests.support.upgrade_v2 import order_v1, order_v2

pytestmark = pytest.mark.temporal


async def start(sagas: SagaClient, amount: int) -> str:
    saga_id = f"upgraded-{uuid.uuid4()}"
    ledger.plan(saga_id)
    await sagas.start("upgraded_order", {"order_id": saga_id, "amount": amount}, saga_id=saga_id)
    return saga_id


def worker(module: str, env: dict[str, str], log: Path) -> Background:
    process = Background(["worker", "-m", module], env, log)
    process.wait_for("ready")
    return process


async def test_running_sagas_keep_their_version_through_a_rollout(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    load_modules(["tests.support.upgrade_v2"])  # the client validates inputs (same model)
    task_queue = f"upgrade-{uuid.uuid4()}"
    env = {
        **os.environ,
        "SAGAS_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "SAGAS_TASK_QUEUE": task_queue,
        "SAGAS_DATA_DIR": str(tmp_path),
    }
    sagas = SagaClient(dev_env.client, task_queue=task_queue)

    before = worker("tests.support.upgrade_v1", env, tmp_path / "v1.log")
    try:
        finished_v1 = await start(sagas, amount=10)
        waiting = await start(sagas, amount=500)
        assert (await sagas.result(finished_v1)).status is SagaStatus.COMPLETED
        await sagas.wait_for(waiting, until=SagaStatus.AWAITING_APPROVAL, timeout=30)
    finally:
        assert before.interrupt() == 0

    after = worker("tests.support.upgrade_v2", env, tmp_path / "v2.log")
    try:
        await sagas.approve(waiting, by="ops")
        resumed = await sagas.result(waiting)
        fresh = await start(sagas, amount=10)
        new = await sagas.result(fresh)
    finally:
        after.stop()

    # The saga that waited through the rollout finished as version 1 ...
    assert resumed.status is SagaStatus.COMPLETED
    assert [s.name for s in resumed.steps] == ["a", "b", "c"]
    assert [step for step, _, _ in ledger.calls(waiting, "forward")] == ["a", "b", "c"]
    # ... and a saga started after it runs version 2.
    assert new.status is SagaStatus.COMPLETED
    assert [s.name for s in new.steps] == ["b", "a", "d"]
    assert [step for step, _, _ in ledger.calls(fresh, "forward")] == ["b", "a", "d"]

    # Every history, recorded before, across and after the rollout, replays on the new code.
    replayer = build_replayer([order_v1, order_v2])
    for saga_id in (finished_v1, waiting, fresh):
        history = await dev_env.client.get_workflow_handle(saga_id).fetch_history()
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        assert result.replay_failure is None, f"{saga_id}: {result.replay_failure}"


class TestVersions:
    def test_new_sagas_run_the_newest_version(self) -> None:
        load_modules(["tests.support.upgrade_v2"])
        assert _registry.get("upgraded_order") is order_v2
        assert _registry.versions("upgraded_order") == [order_v2, order_v1]
        assert order_v2 in registered()
        assert order_v1 not in registered()

    def test_two_definitions_with_one_version_are_refused(self) -> None:
        clash = Saga("upgraded_order", input=Order, version=2, steps=order_v2.stages)
        with pytest.raises(SagaDefinitionError, match="give the new one a higher version"):
            _registry.register(clash)

    def test_a_version_is_a_positive_integer(self) -> None:
        with pytest.raises(SagaDefinitionError, match="version must be a positive integer"):
            Saga("versioned", input=Order, version=0, steps=order_v2.stages)
