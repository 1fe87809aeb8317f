"""``sagas explore`` and ``sagas replay``: the testing kit and the replay gate from a shell.

Kept apart from engine/cli.py, which only registers them (``register(app)``).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any

import typer
from temporalio.client import WorkflowHistory

from engine._definition import SagaDefinition
from engine._process import CliError, errors_as_messages, run
from engine._registry import get as get_definition
from engine._registry import registered
from engine.config import Settings, get_settings

ModuleOpt = Annotated[
    list[str] | None,
    typer.Option("--module", "-m", help="Module or package with saga definitions (repeatable)."),
]


def register(
    app: typer.Typer,
    load: Callable[[list[str] | None, Settings], list[SagaDefinition[Any]]],
    client_for: Callable[[Settings], Any],
    connection_options: Callable[..., Callable[[Callable[..., None]], Callable[..., None]]],
) -> None:
    """Add ``explore`` and ``replay`` to the ``sagas`` command line (engine.cli passes its
    module loader, its client and its ``--address``/``--namespace`` options)."""

    @app.command()
    def explore(
        saga_type: Annotated[str, typer.Argument(metavar="TYPE", help="The saga type.")],
        input: Annotated[
            str | None,
            typer.Option("--input", "-i", help="JSON file (default: the input model's example)."),
        ] = None,
        participants: Annotated[
            bool,
            typer.Option(
                help="Call the real activities against the demo participants, checked "
                "by the consistency checker."
            ),
        ] = False,
        returns: Annotated[
            str | None,
            typer.Option(help='JSON file of fake answers by step, e.g. {"price_trip": {...}}.'),
        ] = None,
        module: ModuleOpt = None,
    ) -> None:
        """Run a saga through every failure point (with fakes) and print the table."""
        settings = get_settings()
        with errors_as_messages():
            load(module, settings)
            definition = get_definition(saga_type)
        data = _input(definition, input)
        answers = _read_json(returns) if returns is not None else {}
        if not isinstance(answers, dict):
            raise CliError(f"--returns {returns!r}: a JSON object of answers by step", 2)
        code = run(_explore(definition, data, answers, participants, settings))
        raise typer.Exit(code)

    @app.command()
    @connection_options(task_queue=False)
    def replay(
        files: Annotated[
            list[Path] | None, typer.Argument(help="History files (JSON, as exported).")
        ] = None,
        query: Annotated[
            str | None,
            typer.Option(
                help="Visibility query for histories in Temporal (default: every "
                "registered saga type)."
            ),
        ] = None,
        limit: Annotated[int, typer.Option(min=1, max=100_000)] = 200,
        module: ModuleOpt = None,
        *,
        settings: Settings,
    ) -> None:
        """Replay saga histories with the current definitions: the gate before deploying."""
        with errors_as_messages():
            sagas = load(module, settings)
        code = run(_replay(sagas or registered(), files or [], query, limit, settings, client_for))
        raise typer.Exit(code)


def _read_json(path: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except OSError as exc:
        raise CliError(f"cannot read file {path!r}: {exc.strerror}", 2) from None
    except json.JSONDecodeError as exc:
        raise CliError(f"file {path!r} is not valid JSON: {exc}", 2) from None


def _input(definition: SagaDefinition[Any], path: str | None) -> Any:
    if path is not None:
        return _read_json(path)
    examples = definition.input.model_json_schema().get("examples") or []
    if not examples:
        raise CliError(f"saga {definition.name!r} has no input example: pass --input FILE", 2)
    return examples[0]


async def _explore(
    definition: SagaDefinition[Any],
    data: Any,
    answers: dict[str, Any],
    participants: bool,
    settings: Settings,
) -> int:
    from engine._kit_explore import explore

    # The fakes' injected failures are the point here, not news: keep the table readable.
    for name in ("temporalio.activity", "temporalio.workflow", "temporalio.worker"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    check = None
    async with contextlib.AsyncExitStack() as stack:
        if participants:
            check = await stack.enter_async_context(_participants(settings))
        table = await explore(
            definition,
            data,
            returns=answers,
            check=check,
            passthrough=participants,
            raise_on_failure=False,
        )
    typer.echo(str(table))
    return 1 if table.failed else 0


@contextlib.asynccontextmanager
async def _participants(settings: Settings) -> AsyncIterator[Any]:
    """The demo participants in this process, and the consistency checker as the check."""
    found = {e.name: e for e in entry_points(group="sagas.checks")}
    components = {e.name: e for e in entry_points(group="sagas.components")}
    if "participants" not in found or "participants" not in components:
        raise CliError("--participants needs the participants package installed", 2)
    async with components["participants"].load()(settings):
        yield found["participants"].load()(settings.participants_url)


async def _replay(
    sagas: list[SagaDefinition[Any]],
    files: list[Path],
    query: str | None,
    limit: int,
    settings: Settings,
    client_for: Callable[[Settings], Any],
) -> int:
    from engine._worker import build_replayer

    replayer = build_replayer(sagas)
    histories: list[WorkflowHistory] = []
    for file in files:
        try:
            histories.append(WorkflowHistory.from_json(file.stem, file.read_text()))
        except (OSError, ValueError) as exc:
            raise CliError(f"cannot read history {str(file)!r}: {exc}", 2) from None
    if not files or query is not None:
        types = " OR ".join(f"WorkflowType = '{s.name}'" for s in sagas)
        client = (await client_for(settings)).client
        found = client.list_workflows(query or types, limit=limit)
        async for history in found.map_histories():
            histories.append(history)
    failed = 0
    for history in histories:
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        verdict = "ok" if result.replay_failure is None else f"FAILED: {result.replay_failure}"
        failed += result.replay_failure is not None
        typer.echo(f"{history.workflow_id}  {verdict}")
    typer.echo(f"{len(histories)} histories replayed, {failed} failed")
    return 1 if failed else 0
