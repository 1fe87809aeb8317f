"""Running sagas: the worker, the replayer and the registry of saga definitions.

    from engine.worker import build_worker, load_modules

    sagas = load_modules(["my_sagas"])
    worker = build_worker(client, task_queue="sagas", sagas=sagas)
    await worker.run()

``sagas worker --module my_sagas`` does the same from the command line. Writing and calling
sagas needs only :mod:`engine`; this tier is for the processes that run them.
"""

from engine._participants import OutagePolicy
from engine._registry import get as get_definition
from engine._registry import load_modules, registered
from engine._step import activity_name
from engine._step_info import idempotency_key_for
from engine._worker import build_replayer, build_worker, outage_policy, saga_activities

__all__ = [
    "OutagePolicy",
    "activity_name",
    "build_replayer",
    "build_worker",
    "get_definition",
    "idempotency_key_for",
    "load_modules",
    "outage_policy",
    "registered",
    "saga_activities",
]
