"""The generation stamp of a saga's start memo (engine._patches), on a real dev server.

A saga started by the engine's client, once every worker polling its task queue runs a
generation, is stamped with the oldest: it is listed as running from its start and runs the
behaviour changes of its generation without patch markers, a first memo update, or a last one
when it completes (or, from generation 2, compensates); from generation 2 its start memo names
its local steps, which then run with no patch marker. A saga started without the stamp (by an
older client, or by hand through Temporal) records them as before. All replay.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import BaseModel
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from engine import Compensation, Saga, SagaClient, SagaStatus, Step
from engine._client import _listed_status
from engine._patches import (
    GENERATION,
    GENERATION_MEMO,
    LOCAL_MEMO,
    LOCAL_STEPS,
    PATIENT_COMPENSATIONS,
    identity_generation,
    start_memo,
    worker_identity,
)
from engine._workflow import SagaWorkflow
from engine.worker import build_replayer, build_worker
from tests.support import ledger
from tests.support import sagas as support
from tests.support.generation import polled
from tests.support.ledger import ALWAYS
from tests.test_execution_rules import status_is, wait_for

pytestmark = pytest.mark.temporal


class Order(BaseModel):
    refuse: bool = False


@activity.defn(name="g_reserve")
async def reserve(order: Order) -> str:
    return "reserved"


@activity.defn(name="g_release")
async def release(undo: Compensation[Order, str]) -> None:
    return None


@activity.defn(name="g_charge")
async def charge(order: Order) -> str:
    if order.refuse:
        raise ApplicationError("card declined", type="Declined", non_retryable=True)
    return "charged"


order_saga = Saga(
    "g_order",
    input=Order,
    steps=[Step(reserve, compensate=release, name="reserve"), Step(charge, name="charge")],
)
# The same saga with its steps local, under another name.
local_order_saga = Saga(
    "g_local_order",
    input=Order,
    local_steps=True,
    steps=[Step(reserve, compensate=release, name="reserve"), Step(charge, name="charge")],
)
SAGAS = [order_saga, local_order_saga]


@pytest.fixture
async def sagas(dev_env: WorkflowEnvironment) -> AsyncIterator[SagaClient]:
    task_queue = f"generation-{uuid.uuid4()}"
    async with build_worker(dev_env.client, task_queue=task_queue, sagas=SAGAS):
        await polled(dev_env.client, task_queue)  # a client stamps once it sees the worker
        yield SagaClient(dev_env.client, task_queue=task_queue)


async def start_unstamped(sagas: SagaClient, order: Order) -> str:
    """Start the saga as a client before the stamp did: no memo."""
    saga_id = f"g_order-{uuid.uuid4().hex[:10]}"
    await sagas.client.start_workflow("g_order", order, id=saga_id, task_queue=sagas.task_queue)
    return saga_id


async def finish(sagas: SagaClient, saga_id: str) -> tuple[Any, list[Any]]:
    """The saga's final state and its history's events, once the history has replayed."""
    state = await asyncio.wait_for(sagas.result(saga_id), timeout=60)
    history = await sagas.client.get_workflow_handle(saga_id).fetch_history()
    replayed = await build_replayer(SAGAS).replay_workflow(history, raise_on_replay_failure=False)
    assert replayed.replay_failure is None, replayed.replay_failure
    return state, list(history.events)


def patch_markers(events: list[Any]) -> list[str]:
    """Each patch marker's details, as text (they name the patch)."""
    return [
        str(dict(e.marker_recorded_event_attributes.details))
        for e in events
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
        and e.marker_recorded_event_attributes.marker_name == "core_patch"
    ]


def memo_updates(events: list[Any]) -> list[str]:
    return [
        e.workflow_properties_modified_event_attributes.upserted_memo.fields["saga_status"]
        .data.decode()
        .strip('"')
        for e in events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED
    ]


async def listed(sagas: SagaClient, saga_id: str, expected: str) -> str:
    """The saga's status in the listing, once Temporal's visibility shows ``expected`` (it is
    updated asynchronously), or what it shows after five seconds."""
    status = "absent"
    for _ in range(100):
        found = [s for s in await sagas.list(limit=0) if s.id == saga_id]
        status = found[0].status if found else "absent"
        if status == expected:
            break
        await asyncio.sleep(0.05)
    return status


async def test_a_stamped_saga_compensates_without_markers_or_a_first_memo_update(
    sagas: SagaClient,
) -> None:
    saga_id = await sagas.start("g_order", {"refuse": True})
    state, events = await finish(sagas, saga_id)
    assert state.status is SagaStatus.COMPENSATED
    assert patch_markers(events) == []
    assert not any(
        e.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES for e in events
    )
    # The start memo listed it as running, and its workflow completing while it is listed
    # compensating lists it compensated: one memo update.
    assert memo_updates(events) == ["compensating"]
    started = events[0].workflow_execution_started_event_attributes.memo.fields
    assert started[GENERATION_MEMO].data == str(GENERATION).encode()
    assert await listed(sagas, saga_id, "compensated") == "compensated"


async def test_an_unstamped_saga_records_its_markers_and_first_memo_as_before(
    sagas: SagaClient,
) -> None:
    saga_id = await start_unstamped(sagas, Order(refuse=True))
    state, events = await finish(sagas, saga_id)
    assert state.status is SagaStatus.COMPENSATED
    assert [PATIENT_COMPENSATIONS in m for m in patch_markers(events)] == [True]
    assert memo_updates(events) == ["running", "compensating", "compensated"]


async def test_both_complete_alike_and_are_listed_as_completed(sagas: SagaClient) -> None:
    stamped_id = await sagas.start("g_order", {})
    stamped, stamped_events = await finish(sagas, stamped_id)
    unstamped_id = await start_unstamped(sagas, Order())
    unstamped, unstamped_events = await finish(sagas, unstamped_id)
    assert stamped.status is unstamped.status is SagaStatus.COMPLETED
    assert [s.status for s in stamped.steps] == [s.status for s in unstamped.steps]
    # A stamped saga that completes leaves its memo as it started: the workflow's status says
    # it completed.
    assert memo_updates(stamped_events) == []
    assert memo_updates(unstamped_events) == ["running", "completed"]
    assert await listed(sagas, stamped_id, "completed") == "completed"
    assert await listed(sagas, unstamped_id, "completed") == "completed"


async def start_memo_of(client: SagaClient, saga_id: str) -> dict[str, Any]:
    """The saga's memo now."""
    described = await client.client.get_workflow_handle(saga_id).describe()
    return dict(await described.memo())


async def test_a_saga_started_where_no_worker_polls_is_not_stamped(
    dev_env: WorkflowEnvironment,
) -> None:
    idle = SagaClient(dev_env.client, task_queue=f"generation-idle-{uuid.uuid4()}")
    saga_id = await idle.start("g_order", {})
    assert await start_memo_of(idle, saga_id) == {}
    assert await listed(idle, saga_id, "running") == "running"
    await dev_env.client.get_workflow_handle(saga_id).terminate("test")
    assert await listed(idle, saga_id, "terminated") == "terminated"


async def start_beside(
    dev_env: WorkflowEnvironment, generation: int, saga_type: str
) -> tuple[SagaClient, str, Any, list[Any]]:
    """Start a refused saga through the engine's client while a worker of this engine and one
    whose identity says ``generation`` (0: an older engine's, naming none) both poll; return
    the client, the saga's id, its final state and its history's events. The newer worker's
    polls are autoscaled (the engine's default) and the older one's are Temporal's fixed five:
    then the older worker is often missing from the root partition's pollers, and only the
    description of every partition (engine._generation_gate.workflow_pollers) shows it."""
    task_queue = f"generation-{generation}-{uuid.uuid4()}"
    newer = build_worker(dev_env.client, task_queue=task_queue, sagas=SAGAS)
    # Its own connection: one client takes one worker per task queue.
    other = await Client.connect(
        dev_env.client.service_client.config.target_host, data_converter=pydantic_data_converter
    )
    identity = "1234@older-host" + (f" sagas-generation={generation}" if generation else "")
    older = Worker(
        other,
        task_queue=task_queue,
        workflows=[SagaWorkflow],
        activities=[reserve, release, charge],
        identity=identity,
        workflow_runner=UnsandboxedWorkflowRunner(),
    )
    async with newer, older:
        identities = await polled(dev_env.client, task_queue, count=2)
        assert sorted(identity_generation(i) for i in identities) == [generation, GENERATION]
        client = SagaClient(dev_env.client, task_queue=task_queue)
        saga_id = await client.start(saga_type, {"refuse": True})
        state, events = await finish(client, saga_id)
    return client, saga_id, state, events


async def test_a_saga_is_not_stamped_while_an_older_worker_polls(
    dev_env: WorkflowEnvironment,
) -> None:
    """An older engine's worker (its identity names no generation) could take the saga: it
    would record what a stamped saga leaves out, and a newer worker could not replay it."""
    client, saga_id, state, events = await start_beside(dev_env, 0, "g_order")
    assert state.status is SagaStatus.COMPENSATED
    assert await start_memo_of(client, saga_id) == {"saga_status": "compensated"}
    assert [PATIENT_COMPENSATIONS in m for m in patch_markers(events)] == [True]


async def test_a_saga_is_stamped_once_every_worker_runs_the_generation(
    sagas: SagaClient,
) -> None:
    saga_id = await sagas.start("g_order", {})
    await finish(sagas, saga_id)
    assert await start_memo_of(sagas, saga_id) == start_memo(local_steps=[])
    # Not a bare list: Temporal drops a memo field that is an empty list.
    assert start_memo(local_steps=[])[LOCAL_MEMO] == {"names": []}


def local_markers(events: list[Any]) -> int:
    return sum(
        1
        for e in events
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
        and e.marker_recorded_event_attributes.marker_name == "core_local_activity"
    )


async def test_a_stamped_saga_runs_its_listed_local_steps_without_a_patch_marker(
    sagas: SagaClient,
) -> None:
    saga_id = await sagas.start("g_local_order", {"refuse": True})
    state, events = await finish(sagas, saga_id)
    assert state.status is SagaStatus.COMPENSATED
    assert (await start_memo_of(sagas, saga_id))[LOCAL_MEMO] == {"names": ["charge", "reserve"]}
    assert patch_markers(events) == []  # no local-steps patch
    assert not any(
        e.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES for e in events
    )
    assert local_markers(events) == 3  # reserve, charge (refused), release
    assert not any(e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED for e in events)


async def start_with_memo(sagas: SagaClient, saga_type: str, memo: dict[str, Any]) -> str:
    saga_id = f"{saga_type}-{uuid.uuid4().hex[:10]}"
    await sagas.client.start_workflow(
        saga_type, Order(), id=saga_id, task_queue=sagas.task_queue, memo=memo
    )
    return saga_id


async def test_the_start_memo_not_the_definition_says_which_steps_run_local(
    sagas: SagaClient,
) -> None:
    """A client whose definition differs from the workers' (a rollout of the user's code) or
    a definition changed while the saga runs: the saga runs the steps its start memo lists
    local, and replays so on any worker."""
    listed = await start_with_memo(sagas, "g_order", start_memo(local_steps=["reserve"]))
    _, events = await finish(sagas, listed)
    assert local_markers(events) == 1  # reserve; charge is a regular activity
    assert [e.event_type for e in events].count(EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED) == 1
    none = await start_with_memo(sagas, "g_local_order", start_memo(local_steps=[]))
    _, events = await finish(sagas, none)
    assert local_markers(events) == 0
    assert patch_markers(events) == []


async def test_a_worker_of_an_older_generation_gets_its_generations_stamp(
    dev_env: WorkflowEnvironment,
) -> None:
    """While a worker of generation 1 polls, sagas are stamped 1: no list of local steps, so
    their local steps are consulted through the patch, as that worker would."""
    client, saga_id, state, events = await start_beside(dev_env, 1, "g_local_order")
    assert state.status is SagaStatus.COMPENSATED
    memo = await start_memo_of(client, saga_id)
    assert (memo[GENERATION_MEMO], LOCAL_MEMO in memo) == (1, False)
    assert [LOCAL_STEPS in m for m in patch_markers(events)] == [True]
    assert local_markers(events) == 3
    # Generation 1 lists the compensated saga itself.
    assert memo_updates(events) == ["compensating", "compensated"]


async def test_a_saga_resolved_by_an_operator_is_listed_compensated(
    dev_env: WorkflowEnvironment,
) -> None:
    """Resolved, a saga goes from compensation_failed to compensated at once: its memo, left
    at compensation_failed, and its completed workflow list it compensated."""
    task_queue = f"generation-resolve-{uuid.uuid4()}"
    async with build_worker(dev_env.client, task_queue=task_queue, sagas=support.ALL):
        await polled(dev_env.client, task_queue)
        client = SagaClient(dev_env.client, task_queue=task_queue)
        saga_id = f"g-resolved-{uuid.uuid4().hex[:8]}"
        ledger.plan(saga_id, refuse={"c"}, compensation_failures={"a": ALWAYS})
        await client.start("three_steps", {"order_id": saga_id, "amount": 1}, saga_id=saga_id)
        await wait_for(client, saga_id, status_is(SagaStatus.COMPENSATION_FAILED))
        await client.resolve(saga_id, "a", reason="undone by hand")
        state = await asyncio.wait_for(client.result(saga_id), timeout=60)
        history = await dev_env.client.get_workflow_handle(saga_id).fetch_history()
    assert state.status is SagaStatus.COMPENSATED
    assert memo_updates(list(history.events))[-1] == "compensation_failed"
    assert await listed(client, saga_id, "compensated") == "compensated"


def test_a_workers_identity_names_its_generation() -> None:
    assert identity_generation(worker_identity("77@host")) == GENERATION
    assert identity_generation("77@host") == 0
    assert identity_generation("77@host sagas-generation=12") == 12


@pytest.mark.parametrize(
    ("memo", "temporal", "shown"),
    [
        ({"saga_status": "running"}, "running", "running"),
        ({"saga_status": "compensating"}, "running", "compensating"),
        ({"saga_status": "compensated"}, "completed", "compensated"),
        ({"saga_status": "compensating"}, "completed", "compensated"),
        # Resolved by an operator: compensated at once, with no compensating between.
        ({"saga_status": "compensation_failed"}, "completed", "compensated"),
        ({"saga_status": "compensation_failed"}, "running", "compensation_failed"),
        ({"saga_status": "compensating"}, "terminated", "terminated"),
        ({"saga_status": "running"}, "completed", "completed"),
        ({"saga_status": "awaiting_approval"}, "completed", "completed"),
        ({"saga_status": "failed"}, "completed", "failed"),
        ({"saga_status": "running"}, "terminated", "terminated"),
        ({"saga_status": "compensation_failed"}, "terminated", "terminated"),
        ({"saga_status": "running"}, "continued_as_new", "continued_as_new"),
        ({}, "failed", "failed"),
        ({"saga_status": 3}, "running", "running"),
    ],
)
def test_the_listed_status(memo: dict[str, Any], temporal: str, shown: str) -> None:
    assert _listed_status(memo, temporal) == shown


async def test_a_server_that_cannot_list_workers_gets_unstamped_sagas_and_one_warning(
    skipping_env: WorkflowEnvironment, caplog: pytest.LogCaptureFixture
) -> None:
    """The time-skipping test server does not list a task queue's workers."""
    client = SagaClient(skipping_env.client, task_queue=f"generation-skipping-{uuid.uuid4()}")
    gate = client._generation
    with caplog.at_level(logging.DEBUG, logger="engine.generation"):
        assert await gate.start_memo() == {}
        gate._until = 0.0  # ask again at once
        assert await gate.start_memo() == {}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, caplog.text
    assert "without the generation stamp" in warnings[0].getMessage()
