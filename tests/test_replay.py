"""Every path of the saga workflow replays deterministically from its recorded history, and
histories recorded by earlier versions of the engine replay with the current code."""

from __future__ import annotations

import os
import uuid
from collections import Counter
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory

from engine import SagaClient, SagaStatus
from engine.worker import build_replayer
from tests.support import ledger
from tests.support.generation import polled
from tests.support.ledger import ALWAYS
from tests.support.sagas import ALL
from tests.test_execution_rules import running, status_is, wait_for

pytestmark = pytest.mark.temporal


async def test_histories_of_every_path_replay(sagas: SagaClient) -> None:
    # The client sees the worker first: its sagas carry the generation stamp, as in production
    # once the workers run this engine (engine._generation_gate).
    await polled(sagas.client, sagas.task_queue)

    async def start(saga_type: str, amount: int = 10, **faults: object) -> str:
        saga_id = f"replay-{saga_type}-{uuid.uuid4().hex[:8]}"
        ledger.plan(saga_id, **faults)  # type: ignore[arg-type]
        await sagas.start(saga_type, {"order_id": saga_id, "amount": amount}, saga_id=saga_id)
        return saga_id

    paths = {
        "completed": await start("three_steps"),
        "refused-retried": await start("three_steps", refuse={"c"}, transient={"b": 1}),
        "parallel-refused": await start("parallel_group", refuse={"p2"}),
        "pivot-forward": await start("pivoted", transient={"c": 2}),
        "imperative-branch": await start("branching", refuse={"b"}),
        "conditional": await start("conditional"),
        "local-refused-retried": await start("three_local", refuse={"c"}, transient={"b": 1}),
    }
    cancelled = await start("three_steps", slow={"b": 30})
    await wait_for(sagas, cancelled, running("b"))
    await sagas.cancel(cancelled)
    rejected = await start("approval", amount=500)
    await wait_for(sagas, rejected, status_is(SagaStatus.AWAITING_APPROVAL))
    await sagas.reject(rejected, by="x")
    repaired = await start("three_steps", refuse={"c"}, compensation_failures={"a": ALWAYS})
    await wait_for(sagas, repaired, status_is(SagaStatus.COMPENSATION_FAILED))
    await sagas.resolve(repaired, "a", reason="done by hand")
    paths |= {"cancelled-mid-call": cancelled, "rejected": rejected, "resolved": repaired}
    for saga_id in paths.values():
        await sagas.result(saga_id)

    replayer = build_replayer(ALL)
    # SAGAS_RECORD_HISTORIES=tests/histories/<commit>: keep them for later engines to replay.
    keep = os.environ.get("SAGAS_RECORD_HISTORIES")
    for name, saga_id in paths.items():
        history = await sagas.client.get_workflow_handle(saga_id).fetch_history()
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        assert result.replay_failure is None, f"{saga_id}: {result.replay_failure}"
        if keep:
            folder = Path(keep)
            folder.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - a test's small files
            (folder / f"{name}.json").write_text(history.to_json())


RECORDED = sorted((Path(__file__).parent / "histories").glob("*/*.json"))


@pytest.mark.parametrize("recorded", RECORDED, ids=lambda p: f"{p.parent.name}/{p.stem}")
async def test_histories_recorded_by_earlier_engines_replay(recorded: Path) -> None:
    """A saga started before an upgrade of the engine finishes after it (tests/histories)."""
    text = recorded.read_text()  # noqa: ASYNC240 - a small file of the repository
    history = WorkflowHistory.from_json(recorded.stem, text)
    result = await build_replayer(ALL).replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{recorded.name}: {result.replay_failure}"


def test_there_are_recorded_histories() -> None:
    # Each engine's set whole: losing a folder, or a path of it, must not go unnoticed.
    per_folder = Counter(path.parent.name for path in RECORDED)
    assert per_folder == {"0147ca1": 11, "347be2c": 9, "9585717": 10}
