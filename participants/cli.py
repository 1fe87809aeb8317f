"""``sagas participants``, ``sagas check`` and the participants' part of ``sagas dev``.

They plug into the engine's CLI by entry point (pyproject.toml), so the engine never imports
this package.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated

import httpx
import typer

from engine._process import CliError, errors_as_messages, run, serve_asgi, serve_until_stopped
from engine.cli import client_for
from engine.config import Settings, get_settings
from engine.worker import load_modules
from participants.app import create_app
from participants.checker import CHECKED
from participants.checker import check as check_sagas


@contextlib.asynccontextmanager
async def component(settings: Settings) -> AsyncIterator[str]:
    """Serve the participants until the block exits; yield a line saying where."""
    host, port = settings.participants_host, settings.participants_port
    failure = f"participants could not listen on port {port}"
    async with serve_asgi(
        create_app(settings), host=host, port=port, failure=failure, lifespan="off"
    ):
        url = f"http://{host}:{port}"
        yield f"participants {url} (records at /flights/reservations?saga_id=...)"


def serve() -> None:
    """Run the demo participants (flights, hotels, cars, payments, inventory, shipping)."""
    run(serve_until_stopped(component(get_settings())))


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
        sagas = await client_for(settings)
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
