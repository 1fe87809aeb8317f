"""The long-running processes, composed: a worker, an ASGI app, the embedded stack.

The command lines stay thin: ``engine.cli`` (``sagas worker``, ``server``, ``dev``),
``api.cli`` (``sagas api``) and ``participants.cli`` (``sagas participants``) read their flags
and call this module. :func:`run` runs a process's (or a command's) coroutine; the failures
a user can cause end as one ``error: ...`` line and an exit code (2 for what they typed, 1
otherwise), never a traceback. Around its real work, each process gets:

* logging (:func:`set_up_logging`) and tracing from the ``OTEL_*`` variables
  (:func:`start_tracing`); a worker also serves its metrics (``SAGAS_WORKER_METRICS_PORT``);
* one line per thing it serves, aligned (``worker     task queue 'sagas' on ...``), then
  ``ready`` and, once stopped, ``stopped``;
* Ctrl-C or SIGTERM (:func:`until_stopped`) stops it in order: a worker stops polling and
  gives running activities ``SAGAS_WORKER_SHUTDOWN_SECONDS``, uvicorn finishes its requests,
  the store is closed and the spans still held are exported.

A process that cannot start (the store cannot be opened, a port is taken) raises
:class:`CliError`, which :func:`run` prints as that one line.

``sagas dev`` also runs components of packages the engine does not import (the API, the
participants; entry points ``sagas.components`` in pyproject.toml): a :data:`Component` is
called with the settings and serves until its ``async with`` block exits, yielding the line
that says where it listens. :func:`serve_asgi` is how such a component serves its app.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from datetime import timedelta
from typing import Any, Literal, TypeVar

import typer
import uvicorn
from sqlalchemy import make_url
from sqlalchemy.exc import SQLAlchemyError
from temporalio.client import Client
from temporalio.worker import Worker

from engine import _worker_health as worker_health
from engine._client import connect
from engine._definition import SagaDefinition
from engine._embedded import EmbeddedTemporal, embedded_temporal
from engine._errors import (
    InvalidSagaInput,
    SagaDefinitionError,
    SagaError,
    TemporalConfigError,
    UnknownSagaType,
)
from engine._logging import configure_logging
from engine._metrics import exporting_metrics, temporal_runtime
from engine._store import SagaStore
from engine._tracing import configure_tracing, flush_tracing, instrument_httpx
from engine._worker import build_worker, outage_policy
from engine.config import Settings

#: A part of ``sagas dev`` from outside the engine: serves while its block runs, says where.
Component = Callable[[Settings], contextlib.AbstractAsyncContextManager[str]]

READY = "ready      press Ctrl-C to stop"

T = TypeVar("T")

# Exit codes: 2 for what the user typed (usage, input, unknown names), 1 for everything else.
USAGE_ERRORS = (InvalidSagaInput, UnknownSagaType, SagaDefinitionError, TemporalConfigError)


class CliError(Exception):
    """What ends a command, or a process that cannot start: one line and an exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def errors_as_messages() -> Iterator[None]:
    """Turn every expected failure into one error line and an exit code."""
    try:
        yield
    except USAGE_ERRORS as exc:
        fail(exc.message, 2)
    except SagaError as exc:
        fail(exc.message, 1)
    except CliError as exc:
        fail(str(exc), exc.code)


def run(
    coro: Coroutine[Any, Any, T],
    *,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> T:
    """Run a command's or a process's coroutine; its expected failures end as one line."""
    with errors_as_messages(), asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(coro)
    raise AssertionError("unreachable")


def set_up_logging(settings: Settings) -> None:
    """structlog for this process's lines and the libraries', as the settings ask."""
    configure_logging(
        log_format=settings.log_format,
        production=settings.environment == "production",
        level=settings.log_level,
    )


def start_tracing(service_name: str) -> str | None:
    """Tracing for this process if ``OTEL_*`` asks for it; the line that says where it goes."""
    if configure_tracing(service_name) is None:
        return None
    instrument_httpx()
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    return f"traces     OTLP to {endpoint}"


async def until_stopped() -> None:
    """Wait for Ctrl-C or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def safe_url(url: str) -> str:
    """A database URL fit to print: the password masked."""
    return make_url(url).render_as_string(hide_password=True)


def open_store(settings: Settings) -> SagaStore:
    """The saga store, its schema brought up to date."""
    store = SagaStore(settings.store_url())
    try:
        store.migrate()
    except SQLAlchemyError as exc:
        store.close()
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise CliError(f"cannot open the saga store at {safe_url(store.url)}: {reason}") from None
    return store


@contextlib.asynccontextmanager
async def serve_worker_endpoint(
    settings: Settings, worker: Worker, client: Client
) -> AsyncIterator[str | None]:
    """The worker's /healthz, /readyz and /metrics on its own loop, if the settings ask for a
    port (``SAGAS_WORKER_METRICS_PORT``); yields the line that says where, or None."""
    host, port = settings.worker_metrics_host, settings.worker_metrics_port
    if port is None:
        yield None
        return
    health = worker_health.WorkerHealth(worker, client)
    async with contextlib.AsyncExitStack() as stack:
        try:  # only the start is translated: errors of the block pass as they are
            url = await stack.enter_async_context(worker_health.serving(health, host, port))
        except OSError as exc:
            raise CliError(f"cannot serve worker metrics on {host}:{port}: {exc}") from None
        yield f"metrics    {url}/metrics (health: {url}/healthz, {url}/readyz)"


def worker_tuning(settings: Settings) -> dict[str, Any]:
    """``build_worker``'s options from the settings: slots, cache, shutdown, sandbox, outages,
    polls."""
    return {
        "max_concurrent_activities": settings.max_concurrent_activities,
        "max_concurrent_workflow_tasks": settings.max_concurrent_workflow_tasks,
        "max_cached_workflows": settings.max_cached_workflows,
        "graceful_shutdown_timeout": timedelta(seconds=settings.worker_shutdown_seconds),
        "sandbox": settings.workflow_sandbox,
        "outage": outage_policy(settings, settings.max_concurrent_activities),
        "workflow_task_pollers": settings.workflow_task_pollers,
        "activity_task_pollers": settings.activity_task_pollers,
    }


async def run_worker(settings: Settings, sagas: Sequence[SagaDefinition[Any]]) -> None:
    """A worker for ``sagas`` until Ctrl-C or SIGTERM, then a graceful shutdown."""
    tracing = start_tracing("sagas-worker")
    connection = settings.temporal_connection()
    runtime = temporal_runtime(metrics=settings.worker_metrics_port is not None)
    client = await connect(connection, runtime=runtime, data_converter=settings.data_converter())
    store = open_store(settings) if settings.store_enabled else None
    worker = build_worker(
        client,
        task_queue=settings.task_queue,
        sagas=sagas,
        store=store,
        **worker_tuning(settings),
    )
    names = ", ".join(s.name for s in sagas) or "none (no saga definitions found)"
    typer.echo(f"worker     task queue {settings.task_queue!r} on {connection.describe()}")
    typer.echo(f"sagas      {names}")
    if store is not None:
        typer.echo(f"store      {safe_url(store.url)}")
    if tracing is not None:
        typer.echo(tracing)
    try:
        # The endpoint outlives the worker's graceful shutdown: probes keep their answers.
        async with (
            serve_worker_endpoint(settings, worker, client) as endpoint,
            exporting_metrics(all_sdk_metrics=settings.sdk_metrics == "all"),
            worker,
        ):
            if endpoint is not None:
                typer.echo(endpoint)
            typer.echo(READY)
            await until_stopped()
    finally:
        if store is not None:
            store.close()
        flush_tracing()
    typer.echo("stopped")


@contextlib.asynccontextmanager
async def running_temporal(settings: Settings) -> AsyncIterator[EmbeddedTemporal]:
    """The embedded Temporal server while the block runs, its lines printed."""
    async with embedded_temporal(
        data_dir=settings.data_dir,
        port=settings.temporal_port,
        ui_port=settings.temporal_ui_port,
        host=settings.temporal_host,
    ) as temporal:
        typer.echo(f"temporal   {temporal.address} (data {temporal.database})")
        typer.echo(f"ui         {temporal.ui_url}")
        yield temporal


async def run_server(settings: Settings) -> None:
    """Only the embedded Temporal server, until Ctrl-C or SIGTERM."""
    async with running_temporal(settings):
        typer.echo(READY)
        await until_stopped()
    typer.echo("stopped")


async def run_dev(
    settings: Settings, sagas: Sequence[SagaDefinition[Any]], components: Sequence[Component]
) -> None:
    """The whole stack in this process: embedded Temporal, the components, and a worker."""
    # The worker owns the process's global tracer provider (Temporal's plugin uses it);
    # the components get providers of their own.
    tracing = start_tracing("sagas-worker")
    async with running_temporal(settings) as temporal:
        if tracing is not None:
            typer.echo(tracing)
        # The embedded server speaks plaintext in the default namespace, whatever Temporal
        # profile the user's shell has.
        local = settings.model_copy(
            update={
                "temporal_address": temporal.address,
                "namespace": "default",
                "temporal_tls": False,
                "temporal_api_key": None,
                "temporal_use_env_config": False,
                "temporal_ui_url": temporal.ui_url,
            }
        )
        async with contextlib.AsyncExitStack() as running:
            for component in components:
                typer.echo(await running.enter_async_context(component(local)))
            await run_worker(local, sagas)


async def serve_until_stopped(component: contextlib.AbstractAsyncContextManager[str]) -> None:
    """One component on its own (``sagas api``, ``sagas participants``) until stopped."""
    async with component as where:
        typer.echo(where)
        typer.echo(READY)
        await until_stopped()
    typer.echo("stopped")


@contextlib.asynccontextmanager
async def serve_asgi(
    app: Any,
    *,
    host: str,
    port: int,
    failure: str,
    lifespan: Literal["auto", "on", "off"] = "auto",
) -> AsyncIterator[None]:
    """Serve ``app`` with uvicorn while the block runs; ``failure`` if it cannot start.

    Then uvicorn finishes the requests it has, and the spans they made are exported.
    """
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        log_config=None,  # our logging pipeline (set_up_logging) handles uvicorn's records
        lifespan=lifespan,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise CliError(failure)
        await asyncio.sleep(0.05)
    try:
        yield
    finally:
        server.should_exit = True
        await task
        flush_tracing()
