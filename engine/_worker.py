"""Build a Temporal worker that runs sagas."""

from __future__ import annotations

import concurrent.futures
import inspect
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, Literal

from temporalio.client import Client
from temporalio.plugin import SimplePlugin
from temporalio.runtime import Runtime
from temporalio.worker import (
    PollerBehavior,
    PollerBehaviorAutoscaling,
    PollerBehaviorSimpleMaximum,
    Replayer,
    UnsandboxedWorkflowRunner,
    Worker,
)
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from engine import _registry
from engine._definition import SagaDefinition
from engine._errors import SagaDefinitionError
from engine._participants import OutagePolicy, ParticipantGuard, activity_participants
from engine._patches import worker_identity
from engine._projection import Projector
from engine._step import activity_name
from engine._store import SagaStore
from engine._workflow import SagaWorkflow
from engine.config import Settings, get_settings

# The engine is passed through the sandbox so that the workflow sees the registry this process
# filled, and so that saga definitions are not re-imported for every workflow run.
_RESTRICTIONS = SandboxRestrictions.default.with_passthrough_modules("engine", "opentelemetry")


def saga_activities(sagas: Sequence[SagaDefinition[Any]]) -> list[Callable[..., Any]]:
    """The activities that the given sagas call, each once."""
    by_name: dict[str, Callable[..., Any]] = {}
    for saga in sagas:
        for fn in saga.activities:
            name = activity_name(fn)
            known = by_name.setdefault(name, fn)
            if known is not fn:
                # Temporal dispatches by name: one of the two would silently never run.
                raise SagaDefinitionError(
                    f"saga {saga.name!r}: activity name {name!r} is used by two functions, "
                    f"{_where(known)} and {_where(fn)}; give one @activity.defn(name=...)"
                )
    return list(by_name.values())


def _where(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', fn)}"


def build_worker(
    client: Client,
    *,
    task_queue: str,
    sagas: Sequence[SagaDefinition[Any]],
    max_concurrent_activities: int = 100,
    max_concurrent_workflow_tasks: int = 100,
    extra_activities: Sequence[Callable[..., Any]] = (),
    store: SagaStore | None = None,
    sandbox: bool = True,
    outage: OutagePolicy | None = None,
    workflow_task_pollers: int | Literal["auto"] = "auto",
    activity_task_pollers: int | Literal["auto"] = 5,
    **worker_options: Any,
) -> Worker:
    """A worker for ``sagas``: the generic saga workflow plus every activity the sagas call.

    The client should use the pydantic data converter (``engine.connect`` sets it up).
    Synchronous activities run in a thread pool sized to ``max_concurrent_activities``.
    With a ``store``, the worker keeps the saga store in step with the sagas it runs
    (see ``engine._projection``). ``sandbox=False`` runs the saga workflow outside Temporal's
    workflow sandbox: less CPU per saga, but nothing then stops a ``when`` or ``input``
    callable of a saga definition from doing I/O or reading the clock (it must not).
    ``outage`` sets the participants' circuit breakers and bulkheads (default: from the
    settings, see :func:`outage_policy`). ``workflow_task_pollers``: how many polls for
    workflow tasks stay open, "auto" (scaled by the server's feedback) or a fixed maximum
    (``sagas worker`` passes ``SAGAS_WORKFLOW_TASK_POLLERS``); a ``workflow_task_poller_behavior``
    or the SDK's older ``max_concurrent_workflow_task_polls`` among ``worker_options`` overrides
    it. ``activity_task_pollers`` is the same for activity tasks.
    """
    _registry.register(*sagas)
    activities = saga_activities(sagas) + list(extra_activities)
    guard = ParticipantGuard(
        activity_participants(sagas),
        outage or outage_policy(get_settings(), max_concurrent_activities),
        meter=(client.service_client.config.runtime or Runtime.default()).metric_meter,
    )
    interceptors = [*worker_options.pop("interceptors", ()), guard]
    executor = None
    if any(not inspect.iscoroutinefunction(fn) for fn in activities):
        executor = concurrent.futures.ThreadPoolExecutor(max_workers=max_concurrent_activities)
    plugins = list(worker_options.pop("plugins", ()))
    # Each guard's breakers leave their open state as their cool-down ends, call or no call.
    guards = [i for i in interceptors if isinstance(i, ParticipantGuard)]
    plugins += [
        SimplePlugin(f"sagas.circuit-breakers-{n}", run_context=g.running)
        for n, g in enumerate(guards)
    ]
    if store is not None:
        plugins.append(projection_plugin(Projector(store, client, task_queue)))
    # The generation it runs, for the clients' GenerationGate.
    identity = worker_identity(worker_options.pop("identity", None) or client.identity)
    if not worker_options.get("max_concurrent_workflow_task_polls"):  # the SDK's older option
        worker_options.setdefault(
            "workflow_task_poller_behavior", poller_behavior(workflow_task_pollers)
        )
    if not worker_options.get("max_concurrent_activity_task_polls"):
        worker_options.setdefault(
            "activity_task_poller_behavior", poller_behavior(activity_task_pollers)
        )
    return Worker(
        client,
        task_queue=task_queue,
        identity=identity,
        workflows=[SagaWorkflow],
        activities=activities,
        activity_executor=executor,
        workflow_runner=(
            SandboxedWorkflowRunner(restrictions=_RESTRICTIONS)
            if sandbox
            else UnsandboxedWorkflowRunner()
        ),
        max_concurrent_activities=max_concurrent_activities,
        max_concurrent_workflow_tasks=max_concurrent_workflow_tasks,
        plugins=plugins,
        interceptors=interceptors,
        **worker_options,
    )


def poller_behavior(pollers: int | Literal["auto"]) -> PollerBehavior:
    """Temporal's poller behaviour for a worker's ``workflow_task_pollers`` (or activity) setting.

    Temporal's own default is a fixed five polls, one of them on the task queue and four on the
    worker's sticky queue. A saga's first workflow task always comes from the task queue, and a
    saga of local steps does all its work there, so a few polls there cap how many such sagas
    a worker takes up (bench/baseline.py, local steps against the hand-written saga: 1.45x
    with one poll there or five, 1.6x with twenty or "auto"; docs/benchmarks.md).
    """
    if pollers == "auto":
        return PollerBehaviorAutoscaling()
    return PollerBehaviorSimpleMaximum(pollers)


def outage_policy(settings: Settings, max_concurrent_activities: int) -> OutagePolicy:
    """The breakers' and bulkheads' policy from the ``SAGAS_CIRCUIT_*``/``BULKHEAD_*`` settings."""
    share = max(1, int(max_concurrent_activities * settings.bulkhead_share))
    return OutagePolicy(
        failure_threshold=settings.circuit_failure_threshold,
        cooldown=timedelta(seconds=settings.circuit_cooldown_seconds),
        max_concurrent=settings.bulkhead_max_concurrent or share,
        bulkhead_retry=timedelta(seconds=settings.bulkhead_retry_seconds),
    )


def projection_plugin(projector: Projector) -> SimplePlugin:
    """Runs the saga store's projector for as long as the worker runs (Temporal's plugin API,
    so the worker stays a plain ``Worker`` that other plugins can wrap too)."""
    return SimplePlugin("sagas.store-projection", run_context=projector.running)


def build_replayer(sagas: Sequence[SagaDefinition[Any]]) -> Replayer:
    """A replayer configured like the worker: replays saga histories to check determinism.

    Use it before deploying a changed definition: replay histories recorded from the running
    version, and any step the new code would take differently fails the replay.
    """
    _registry.register(*sagas)
    return Replayer(
        workflows=[SagaWorkflow],
        data_converter=get_settings().data_converter(),
        workflow_runner=SandboxedWorkflowRunner(restrictions=_RESTRICTIONS),
    )
