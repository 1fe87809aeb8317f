"""The README's examples run as documented."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from engine import SagaClient, SagaStatus, StepStatus
from engine.worker import build_worker
from examples.money_transfer import money_transfer
from examples.order_imperative import gift_order

pytestmark = pytest.mark.temporal

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
async def client(dev_env: WorkflowEnvironment) -> AsyncIterator[SagaClient]:
    task_queue = f"examples-{uuid.uuid4()}"
    async with build_worker(
        dev_env.client, task_queue=task_queue, sagas=[money_transfer, gift_order]
    ):
        yield SagaClient(dev_env.client, task_queue=task_queue)


class TestMoneyTransfer:
    async def test_input_file_from_the_readme_completes(self, client: SagaClient) -> None:
        transfer = json.loads((EXAMPLES / "transfer.json").read_text())
        state = await client.result(await client.start("money_transfer", transfer))
        assert state.status is SagaStatus.COMPLETED
        assert state.step("notify").output == "sent"

    async def test_closed_account_refunds_the_debit(self, client: SagaClient) -> None:
        transfer = {"from_account": "a", "to_account": "closed", "amount": 5}
        state = await client.result(await client.start("money_transfer", transfer))
        assert state.status is SagaStatus.COMPENSATED
        assert state.step("debit").status is StepStatus.COMPENSATED
        assert "account is closed" in (state.step("credit").error or "")


class TestGiftOrder:
    async def test_ships_unwrapped_when_wrapping_fails(self, client: SagaClient) -> None:
        state = await client.result(await client.start("gift_order", {"item": "piano"}))
        assert state.status is SagaStatus.COMPLETED
        assert state.step("wrap").status is StepStatus.FAILED
        assert state.step("ship").status is StepStatus.SUCCEEDED

    async def test_refunds_when_wrapping_is_required(self, client: SagaClient) -> None:
        order = {"item": "piano", "wrap_required": True}
        state = await client.result(await client.start("gift_order", order))
        assert state.status is SagaStatus.COMPENSATED
        assert state.step("charge").status is StepStatus.COMPENSATED


class TestReadme:
    async def test_the_from_python_snippet_runs(self, client: SagaClient) -> None:
        """The README's "From Python" block, run as written against the test's server and
        task queue (the two values a reader changes for their own stack)."""
        readme = (EXAMPLES.parent / "README.md").read_text()
        section = readme.split("## From Python", 1)[1]
        code = section.split("```python\n", 1)[1].split("```", 1)[0]
        target = client.client.service_client.config.target_host
        assert '"localhost:7233"' in code
        assert 'task_queue="sagas"' in code
        code = code.replace('"localhost:7233"', repr(target))
        code = code.replace('task_queue="sagas"', f"task_queue={client.task_queue!r}")
        body = "".join(f"    {line}\n" for line in code.splitlines())
        namespace: dict[str, Any] = {}
        exec(f"async def snippet():\n{body}", namespace)
        await namespace["snippet"]()
