"""The ``sagas`` command line: run the stack, run workers, start and steer sagas.

Every failure a user can cause (unknown type, bad input, no server, unknown saga, a refused
operation) ends in one ``error: ...`` line on stderr and a non-zero exit, never a traceback.

Commands only read their flags and print: the long-running processes (worker, embedded
Temporal, ``dev``) are composed in :mod:`engine._process`. The options that say which Temporal
to talk to are declared once, by :func:`connection_options`. Packages the engine must not
import (api/, participants/) add commands and ``dev`` components by entry point.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import sys
from collections.abc import Awaitable, Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from engine import _kit_cli, _process
from engine._client import SagaClient, connect
from engine._definition import SagaDefinition
from engine._process import CliError, errors_as_messages, run
from engine._registry import get as get_definition
from engine._registry import load_modules
from engine._state import SagaState
from engine.config import Settings, get_settings, settings_problems

app = typer.Typer(
    name="sagas",
    help="Saga orchestration on Temporal.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ModuleOpt = Annotated[
    list[str] | None,
    typer.Option("--module", "-m", help="Module or package with saga definitions (repeatable)."),
]
IdArg = Annotated[str, typer.Argument(metavar="ID", help="The saga id.")]


def _keyword(name: str, option: Any) -> inspect.Parameter:
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[str | None, option]
    )


# The Temporal connection options, declared once (see connection_options), by settings field.
_CONNECTION = {
    "temporal_address": _keyword("address", typer.Option(help="Temporal frontend host:port.")),
    "namespace": _keyword("namespace", typer.Option(help="Temporal namespace.")),
    "task_queue": _keyword(
        "task_queue", typer.Option("--task-queue", help="Task queue of the worker.")
    ),
}


def connection_options(
    *, task_queue: bool = True
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command ``--address``, ``--namespace`` and (unless told not to) ``--task-queue``.

    The decorated function takes a keyword argument ``settings`` instead: the settings with
    the options given on the command line in place of theirs.
    """
    options = {k: v for k, v in _CONNECTION.items() if task_queue or k != "task_queue"}

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != "settings"]

        @functools.wraps(command)
        def with_settings(**kwargs: Any) -> None:
            given = {field: kwargs.pop(option.name) for field, option in options.items()}
            update = {field: value for field, value in given.items() if value is not None}
            command(**kwargs, settings=get_settings().model_copy(update=update))

        # Typer reads the options from the signature.
        with_settings.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[*own, *options.values()]
        )
        return with_settings

    return decorate


def load(modules: list[str] | None, settings: Settings) -> list[SagaDefinition[Any]]:
    # Like uvicorn and celery: the user's own modules in the current directory are importable.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    return load_modules(modules or settings.modules)


async def client_for(settings: Settings) -> SagaClient:
    client = await connect(settings.temporal_connection(), data_converter=settings.data_converter())
    return SagaClient(
        client, task_queue=settings.task_queue, history_events_limit=settings.history_events_limit
    )


def _plugins(group: str) -> list[tuple[str, Any]]:
    """Commands and components of packages outside the engine (entry points in pyproject)."""
    found = []
    for entry in sorted(entry_points(group=group), key=lambda e: e.name):
        try:
            found.append((entry.name, entry.load()))
        except ImportError as exc:  # a plugin whose package is not installed: say so, go on
            typer.echo(f"warning: plugin {entry.name!r} not loaded: {exc}", err=True)
    return found


# ------------------------------------------------------------------ long-running commands


@app.command()
def dev(module: ModuleOpt = None) -> None:
    """Run the stack on embedded defaults: Temporal (SQLite) and a worker."""
    settings = get_settings()
    with errors_as_messages():
        sagas = load(module, settings)
    components = [component for _, component in _plugins("sagas.components")]
    run(_process.run_dev(settings, sagas, components))


@app.command()
def server() -> None:
    """Run only the embedded Temporal server (SQLite in the data directory)."""
    run(_process.run_server(get_settings()))


@app.command()
def migrate() -> None:
    """Create or upgrade the saga store's schema (SAGAS_DATABASE_URL or DATABASE_URL)."""
    settings = get_settings()
    with errors_as_messages():
        store = _process.open_store(settings)
    typer.echo(f"saga store up to date: {_process.safe_url(store.url)}")
    store.close()


@app.command()
@connection_options()
def worker(module: ModuleOpt = None, *, settings: Settings) -> None:
    """Run a worker for the sagas in the given modules."""
    with errors_as_messages():
        sagas = load(module, settings)
    run(_process.run_worker(settings, sagas))


# ------------------------------------------------------------------------- saga commands


def read_input(path: str) -> Any:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise CliError(f"cannot read input file {path!r}: {exc.strerror}", 2) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"input file {path!r} is not valid JSON: {exc}", 2) from None


@app.command()
@connection_options()
def start(
    saga_type: Annotated[str, typer.Argument(metavar="TYPE", help="Saga type, e.g. trip_booking")],
    input: Annotated[str, typer.Option("--input", "-i", help="JSON file, or - for stdin.")],
    saga_id: Annotated[
        str | None, typer.Option("--id", help="Saga id (default: generated).")
    ] = None,
    wait: Annotated[
        bool,
        typer.Option(help="Wait until the saga has ended or waits for a person (no polling)."),
    ] = False,
    module: ModuleOpt = None,
    *,
    settings: Settings,
) -> None:
    """Start a saga; print its id."""

    async def go() -> None:
        load(module, settings)
        data = read_input(input)
        get_definition(saga_type).validate_input(data)  # before needing a server
        sagas = await client_for(settings)
        new_id = await sagas.start(saga_type, data, saga_id=saga_id)
        typer.echo(new_id)
        if wait:
            state = await sagas.settled(new_id)
            typer.echo(state.status.value + (f": {state.error}" if state.error else ""))

    run(go())


@app.command()
@connection_options(task_queue=False)
def status(
    saga_id: IdArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full state as JSON.")] = False,
    *,
    settings: Settings,
) -> None:
    """Show a saga's status and its steps."""

    async def show() -> None:
        state = await (await client_for(settings)).state(saga_id)
        typer.echo(state.model_dump_json(indent=2) if as_json else render(state))

    run(show())


def render(state: SagaState) -> str:
    lines = [f"{state.id}  {state.type}  {state.status.value}"]
    if state.error:
        lines.append(f"error: {state.error}")
    if state.awaiting_approval:
        lines.append(f"awaiting approval: {', '.join(state.awaiting_approval)}")
    rows = [("STEP", "STATUS", "ATTEMPTS", "COMPENSATION", "ERROR")]
    for step in state.steps:
        comp = step.compensation
        comp_text = f"{comp.status.value} ({comp.attempts})" if comp else "-"
        error = (comp.error if comp and comp.error else step.error) or ""
        waiting = (comp.waiting if comp else None) or step.waiting
        if waiting is not None:
            until = waiting.until.isoformat(timespec="seconds")
            error = f"waiting on {waiting.participant} ({waiting.reason}) until {until}"
        elif step.served_by:
            error = f"served by the fallback {step.served_by}"
        rows.append((step.name, step.status.value, str(step.attempts), comp_text, error))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        cells = [c.ljust(w) for c, w in zip(row[:4], widths, strict=True)]
        lines.append("  ".join([*cells, row[4]]).rstrip())
    return "\n".join(lines)


def steer(
    saga_id: str, action: Callable[[SagaClient], Awaitable[SagaState]], settings: Settings
) -> None:
    async def act() -> None:
        state = await action(await client_for(settings))
        typer.echo(f"{saga_id}  {state.status.value}")

    run(act())


@app.command()
@connection_options(task_queue=False)
def cancel(
    saga_id: IdArg,
    reason: Annotated[str, typer.Option(help="Why; kept in the saga.")] = "cancelled from CLI",
    *,
    settings: Settings,
) -> None:
    """Cancel a running saga and compensate what it did (refused after the pivot)."""
    steer(saga_id, lambda s: s.cancel(saga_id, reason=reason, by="cli"), settings)


@app.command()
@connection_options(task_queue=False)
def approve(
    saga_id: IdArg,
    comment: Annotated[str | None, typer.Option(help="Kept with the decision.")] = None,
    *,
    settings: Settings,
) -> None:
    """Approve the step that waits for a decision."""
    steer(saga_id, lambda s: s.approve(saga_id, by="cli", comment=comment), settings)


@app.command()
@connection_options(task_queue=False)
def reject(
    saga_id: IdArg,
    comment: Annotated[str | None, typer.Option(help="Kept with the decision.")] = None,
    *,
    settings: Settings,
) -> None:
    """Reject the step that waits for a decision (the saga compensates)."""
    steer(saga_id, lambda s: s.reject(saga_id, by="cli", comment=comment), settings)


@app.command()
@connection_options()
def retry(
    saga_id: Annotated[str | None, typer.Argument(metavar="[ID]", help="The saga id.")] = None,
    every: Annotated[
        bool, typer.Option("--all", help="Every parked saga on the task queue (after an outage).")
    ] = False,
    saga_type: Annotated[str | None, typer.Option("--type", help="With --all: this type.")] = None,
    module: ModuleOpt = None,
    *,
    settings: Settings,
) -> None:
    """Retry the failed compensations of a compensation_failed saga (or, --all, of each)."""
    if every == (saga_id is not None) or (saga_type is not None and not every):
        raise typer.BadParameter("give a saga ID, or --all [--type T]")
    if saga_id is not None:
        steer(saga_id, lambda s: s.retry_compensations(saga_id), settings)
        return

    async def retry_all() -> None:
        if saga_type is not None:
            load(module, settings)
        retried = await (await client_for(settings)).retry_parked(saga_type=saga_type)
        for retried_id in retried:
            typer.echo(f"{retried_id}  compensating")
        typer.echo(f"retried {len(retried)} saga(s)")

    run(retry_all())


@app.command()
@connection_options(task_queue=False)
def resolve(
    saga_id: IdArg,
    step: Annotated[str, typer.Argument(metavar="STEP")],
    reason: Annotated[str, typer.Option(help="What was done by hand; kept in the record.")],
    *,
    settings: Settings,
) -> None:
    """Mark a failed compensation as resolved by hand."""
    steer(saga_id, lambda s: s.resolve(saga_id, step, reason=reason, by="cli"), settings)


@app.command()
def describe(
    saga_type: Annotated[str, typer.Argument(metavar="TYPE", help="The saga type.")],
    module: ModuleOpt = None,
) -> None:
    """A registered saga: its steps and their kinds, and its diagram (Mermaid)."""
    settings = get_settings()
    with errors_as_messages():
        load(module, settings)
        definition = get_definition(saga_type)
    typer.echo(f"{definition.name} (version {definition.version})")
    if definition.description:
        typer.echo(definition.description)
    for group in definition.groups:
        together = " (in parallel)" if len(group) > 1 else ""
        for step in group:
            typer.echo(f"  {step.step_name}: {step.kind.value}{together}")
    typer.echo("")
    typer.echo(definition.diagram())


@app.command("list")
@connection_options()
def list_sagas(
    saga_type: Annotated[str | None, typer.Option("--type", help="Only this saga type.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    module: ModuleOpt = None,
    *,
    settings: Settings,
) -> None:
    """List recent sagas with their status."""

    async def show() -> None:
        if saga_type is not None:
            load(module, settings)
        sagas = await client_for(settings)
        for s in await sagas.list(saga_type=saga_type, limit=limit):
            started = s.started_at.isoformat(timespec="seconds") if s.started_at else "-"
            typer.echo(f"{s.id}  {s.type}  {s.status}  {started}")

    run(show())


# The testing kit's explore and the replay gate live in a module of their own.
_kit_cli.register(app, load, client_for, connection_options)


def main() -> None:
    for name, command in _plugins("sagas.commands"):
        app.command(name)(command)
    try:
        settings = get_settings()
    except ValidationError as exc:
        typer.echo(f"error: invalid settings: {settings_problems(exc)}", err=True)
        sys.stderr.flush()
        os._exit(2)
    _process.set_up_logging(settings)
    code = 0
    try:
        app()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        code = 130
    sys.stdout.flush()
    sys.stderr.flush()
    # The Temporal SDK's Rust threads can abort CPython's finalizer after a clean run
    # ("PyGILState_Release ... finalizing", temporalio/sdk-python#300); everything is
    # flushed and stopped by now, so leave without finalizing.
    os._exit(code)


if __name__ == "__main__":
    main()
