"""Waiting for a task queue's workers to be seen by Temporal, so that the sagas a new
SagaClient starts there carry the generation stamp (engine._generation_gate)."""

from __future__ import annotations

import asyncio

from temporalio.client import Client

from engine._generation_gate import workflow_pollers


async def polled(client: Client, task_queue: str, count: int = 1) -> list[str]:
    """Once ``count`` workers poll ``task_queue`` (at most ten seconds), their identities."""
    for _ in range(200):
        found = await workflow_pollers(client, task_queue)
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {count} workers poll {task_queue}: {found}")
