"""Waiting for a task queue's workers to be seen by Temporal, so that the sagas a new
SagaClient starts there carry the generation stamp (engine._generation_gate)."""

from __future__ import annotations

import asyncio

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client


async def pollers(client: Client, task_queue: str) -> list[str]:
    """The identities of the workers polling ``task_queue`` for workflow tasks."""
    described = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    return [p.identity for p in described.pollers]


async def polled(client: Client, task_queue: str, count: int = 1) -> list[str]:
    """Once ``count`` workers poll ``task_queue`` (at most ten seconds), their identities."""
    for _ in range(200):
        found = await pollers(client, task_queue)
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {count} workers poll {task_queue}: {found}")
