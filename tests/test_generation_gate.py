"""How the generation gate lists a task queue's workers (engine._generation_gate), against a
stand-in for Temporal's DescribeTaskQueue: the root partition's description joined with the
description of every partition, and what each failure does. Against a real server:
tests/test_generation.py."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, cast

import pytest
from temporalio.api.enums.v1 import DescribeTaskQueueMode, TaskQueueType
from temporalio.api.taskqueue.v1 import PollerInfo, TaskQueueTypeInfo, TaskQueueVersionInfo
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest, DescribeTaskQueueResponse
from temporalio.service import RPCError, RPCStatusCode

from engine import _generation_gate
from engine._generation_gate import workflow_pollers

ENHANCED = DescribeTaskQueueMode.DESCRIBE_TASK_QUEUE_MODE_ENHANCED
NEWER, OLDER = "1@new sagas-generation=2", "2@old"


def pollers(*identities: str) -> list[PollerInfo]:
    return [PollerInfo(identity=i) for i in identities]


class Temporal:
    """Answers the default description with ``root`` and the enhanced one with ``every``
    (an RPCError is raised instead of answered)."""

    namespace = "default"

    def __init__(self, root: list[str] | RPCError, every: list[str] | RPCError | None) -> None:
        self.workflow_service = self
        self.root, self.every = root, every
        self.requests: list[DescribeTaskQueueRequest] = []

    async def describe_task_queue(
        self, request: DescribeTaskQueueRequest, timeout: timedelta | None = None
    ) -> DescribeTaskQueueResponse:
        self.requests.append(request)
        answer = self.every if request.api_mode == ENHANCED else self.root
        if isinstance(answer, RPCError):
            raise answer
        if request.api_mode != ENHANCED:
            return DescribeTaskQueueResponse(pollers=pollers(*(answer or [])))
        if answer is None:  # a server that ignores the mode: no versions
            return DescribeTaskQueueResponse()
        kind = TaskQueueTypeInfo(pollers=pollers(*answer))
        version = TaskQueueVersionInfo(types_info={TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW: kind})
        return DescribeTaskQueueResponse(versions_info={"": version})


def refused(status: RPCStatusCode) -> RPCError:
    return RPCError("no", status, b"")


async def ask(temporal: Temporal) -> list[str]:
    return await workflow_pollers(cast(Any, temporal), "q", timedelta(seconds=2))


@pytest.fixture(autouse=True)
def warn_anew(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_generation_gate, "_root_only_warned", False)


async def test_the_workers_of_every_partition_join_the_root_partitions() -> None:
    # The older worker polls a partition other than the root: only the enhanced answer has it.
    temporal = Temporal(root=[NEWER], every=[OLDER, NEWER, OLDER])
    assert await ask(temporal) == [NEWER, OLDER]
    enhanced = next(r for r in temporal.requests if r.api_mode == ENHANCED)
    assert enhanced.report_pollers
    assert list(enhanced.task_queue_types) == [TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW]


@pytest.mark.parametrize(
    "not_served",
    [refused(RPCStatusCode.INVALID_ARGUMENT), refused(RPCStatusCode.UNIMPLEMENTED), None],
)
async def test_a_server_without_the_enhanced_answer_leaves_the_root_partitions(
    not_served: RPCError | None, caplog: pytest.LogCaptureFixture
) -> None:
    temporal = Temporal(root=[NEWER], every=not_served)
    with caplog.at_level(logging.WARNING, logger="engine.generation"):
        assert await ask(temporal) == [NEWER]
        assert await ask(temporal) == [NEWER]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings
    assert "root partition only" in warnings[0]


@pytest.mark.parametrize("status", [RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.UNAVAILABLE])
async def test_a_failed_enhanced_answer_is_raised_not_taken_for_the_root_alone(
    status: RPCStatusCode,
) -> None:
    # The root alone may miss an older worker: the gate then starts sagas unstamped.
    with pytest.raises(RPCError) as failed:
        await ask(Temporal(root=[NEWER], every=refused(status)))
    assert failed.value.status is status


async def test_a_failed_root_answer_is_raised() -> None:
    with pytest.raises(RPCError):
        await ask(Temporal(root=refused(RPCStatusCode.UNAVAILABLE), every=[OLDER]))
