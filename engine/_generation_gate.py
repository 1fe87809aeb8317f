"""Which generation a client may stamp the sagas it starts with (engine._patches).

A stamped saga leaves out markers and memo updates that an older worker would record: taken
by an older worker and then replayed by a newer one, it would fail as nondeterministic. So a
client stamps a saga with the oldest generation among the workers polling the saga's task
queue for workflow tasks, as each says in its identity (engine._worker sets it), and at most
its own. Temporal lists the pollers of the last few minutes: during a rolling upgrade, while a
worker of an older generation still polls, and for a few minutes after, sagas start with that
generation's stamp, or none (a worker that names no generation), as before. This gate is
the only protection: an older worker that took a stamped saga would record a first memo update
that no newer worker replays. (Temporal's default description of a task queue lists the
pollers of its root partition only, where a worker may not show for minutes: the gate asks for
the description of every partition as well, see workflow_pollers; a server that does not give
it leaves the root partition's list, with a warning.)

The answer is kept for a while (a minute when it is this engine's generation, a few seconds
when older), so that starts do not each cost a round trip to Temporal.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection
from datetime import timedelta
from typing import Any

from temporalio.api.enums.v1 import DescribeTaskQueueMode, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from engine._patches import GENERATION, identity_generation, start_memo

_log = logging.getLogger("engine.generation")

#: How long an answer holds: this generation changes only when an older worker comes back
#: (which the upgrade docs rule out); an older one changes as the rollout ends.
_KEEP_YES = 60.0
_KEEP_NO = 5.0
#: A start waits at most this for the answer (no answer: unstamped), within the client's own
#: RPC timeout.
_RPC_TIMEOUT = timedelta(seconds=2)
#: Answers that asking again will not change: warn once.
_REFUSED = frozenset({RPCStatusCode.PERMISSION_DENIED, RPCStatusCode.UNIMPLEMENTED})


class GenerationGate:
    """The generation stamp sagas started on ``task_queue`` may carry (0: none); ``known``:
    the generation of every worker on the queue, told by a caller that started them itself
    (then Temporal is not asked, and it holds for good)."""

    def __init__(
        self,
        client: Client,
        task_queue: str,
        rpc_timeout: timedelta | None = None,
        *,
        known: int | None = None,
    ) -> None:
        self._client = client
        self._task_queue = task_queue
        self._rpc_timeout = rpc_timeout
        self._warned = False
        self._answer = 0 if known is None else min(known, GENERATION)
        self._until = 0.0 if known is None else float("inf")
        self._asking = asyncio.Lock()  # one question at a time, whatever the starts in flight

    async def start_memo(self, local_steps: Collection[str] | None = None) -> dict[str, Any]:
        """The stamp for the start memo of a saga whose local steps are ``local_steps`` (None:
        not known before it runs), or nothing while a worker may be older than generation 1."""
        generation = await self.generation()
        return start_memo(generation, local_steps) if generation else {}

    async def generation(self) -> int:
        """The generation every worker polling the task queue runs (0: not every one runs one)."""
        if time.monotonic() < self._until:
            return self._answer
        async with self._asking:
            if time.monotonic() >= self._until:
                self._answer = await self._oldest_generation()
                # Stamped with this engine's own: only an older worker coming back changes it.
                done = self._answer >= GENERATION
                self._until = time.monotonic() + (_KEEP_YES if done else _KEEP_NO)
        return self._answer

    async def _oldest_generation(self) -> int:
        timeout = min(_RPC_TIMEOUT, self._rpc_timeout or _RPC_TIMEOUT)
        try:
            identities = await workflow_pollers(self._client, self._task_queue, timeout)
        except RPCError as exc:  # not allowed, or Temporal is away: start unstamped
            if exc.status in _REFUSED and not self._warned:
                self._warned = True  # once: it will not change by asking again
                _log.warning(
                    "cannot list the workers of task queue %s (%s): sagas start without the "
                    "generation stamp, with more history events (docs/operations.md)",
                    self._task_queue,
                    exc.message,
                )
            else:
                _log.debug("cannot list the workers of %s: %s", self._task_queue, exc)
            return 0
        generations = [identity_generation(identity) for identity in identities]
        return min([*generations, GENERATION]) if generations else 0


#: What a server answers that does not give the enhanced description (deprecated by Temporal).
_NOT_SERVED = frozenset(
    {
        RPCStatusCode.INVALID_ARGUMENT,
        RPCStatusCode.UNIMPLEMENTED,
        RPCStatusCode.FAILED_PRECONDITION,
    }
)
_root_only_warned = False


async def workflow_pollers(
    client: Client, task_queue: str, rpc_timeout: timedelta | None = None
) -> list[str]:
    """The identities of the workers that polled ``task_queue`` for workflow tasks lately.

    Temporal's default answer lists the pollers of the queue's root partition only. A worker
    whose polls wait on another partition may stay out of it for minutes: found with a worker
    of Temporal's fixed five polls beside one whose polls are autoscaled (engine._worker), in
    three tries of eight. The enhanced answer (deprecated by Temporal, still served) gathers
    every partition, so both are asked and their workers joined. A server that does not give
    the enhanced answer leaves the default one (with a warning, once); any other failure of
    either question is raised (the gate then starts sagas unstamped and asks again soon).
    """
    global _root_only_warned
    service = client.workflow_service
    root, every = await asyncio.gather(
        service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=task_queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            ),
            timeout=rpc_timeout,
        ),
        service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=task_queue),
                api_mode=DescribeTaskQueueMode.DESCRIBE_TASK_QUEUE_MODE_ENHANCED,
                task_queue_types=[TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW],
                report_pollers=True,
            ),
            timeout=rpc_timeout,
        ),
        return_exceptions=True,
    )
    if isinstance(root, BaseException):
        raise root
    seen = dict.fromkeys(poller.identity for poller in root.pollers)
    if isinstance(every, BaseException):
        if not isinstance(every, RPCError) or every.status not in _NOT_SERVED:
            raise every
        versions = {}
    else:
        versions = dict(every.versions_info)  # empty: a server that ignored the mode
    if not versions:
        if not _root_only_warned:
            _root_only_warned = True
            _log.warning(
                "Temporal does not describe every partition of task queue %s: the generation "
                "gate sees the pollers of its root partition only (docs/operations.md)",
                task_queue,
            )
        return list(seen)
    for version in versions.values():
        for kind in version.types_info.values():
            seen.update(dict.fromkeys(poller.identity for poller in kind.pollers))
    return list(seen)
