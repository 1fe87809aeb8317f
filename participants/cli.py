"""``sagas participants``, ``sagas check`` and the participants' part of ``sagas dev``.

They plug into the engine's CLI by entry point (pyproject.toml), so the engine never imports
this package.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated

import httpx
import typer
import uvicorn

from engine import SagaClient, connect
from engine.cli import CliError, errors_as_messages, fail, run, until_stopped
from engine.config import Settings, get_settings
from engine.telemetry import flush_tracing
from engine.worker import load_modules
from participants.app import create_app
from participants.checker import CHECKED
from participants.checker import check as check_sagas


@contextlib.asynccontextmanager
async def component(settings: Settings) -> AsyncIterator[str]:
    """Serve the participants until the block exits; yield a line saying where."""
    config = uvicorn.Config(
        create_app(settings),
        host=settings.participants_host,
        port=settings.participants_port,
        log_level="warning",
        log_config=None,  # our logging pipeline (engine.telemetry) handles uvicorn's records
        lifespan="off",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            fail(f"participants could not listen on port {settings.participants_port}")
        await asyncio.sleep(0.05)
    try:
        url = f"http://{settings.participants_host}:{settings.participants_port}"
        yield f"participants {url} (records at /flights/reservations?saga_id=...)"
    finally:
        server.should_exit = True
        await task
        flush_tracing()


def serve() -> None:
    """Run the demo participants (flights, hotels, cars, payments, inventory, shipping)."""
    settings = get_settings()

    async def main() -> None:
        async with component(settings) as where:
            typer.echo(where)
            typer.echo("ready      press Ctrl-C to stop")
            await until_stopped()
        typer.echo("stopped")

    run(main())


def check(
    saga_type: Annotated[
        list[str] | None, typer.Option("--type", help="Saga types to check (repeatable).")
    ] = None,
    saga_id: Annotated[
        list[str] | None, typer.Option("--id", help="Check these sagas only (repeatable).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="Newest sagas per type.")] = 200,
) -> None:
    """Compare finished sagas with the participants' records; exit 1 on any mismatch."""
    settings = get_settings()
    types = saga_type or ["trip_booking", "order_fulfillment"]
    with errors_as_messages():
        load_modules(["workflows"])

    async def main() -> int:
        sagas = SagaClient(
            await connect(settings.temporal_address, namespace=settings.namespace),
            task_queue=settings.task_queue,
        )
        ids = saga_id or [
            s.id for name in types for s in await sagas.list(saga_type=name, limit=limit)
        ]
        states = [s for s in [await sagas.state(one) for one in ids] if s.status in CHECKED]
        try:
            mismatches = await check_sagas(states, settings.participants_url)
        except httpx.HTTPError as exc:
            raise CliError(
                f"cannot read the participants at {settings.participants_url}: {exc}"
            ) from None
        for mismatch in mismatches:
            typer.echo(str(mismatch))
        typer.echo(f"{len(states)} sagas checked, {len(mismatches)} mismatches")
        return 1 if mismatches else 0

    code = run(main())
    raise typer.Exit(code)
