"""``sagas api`` and the API's part of ``sagas dev`` (plugged in by entry point)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import typer
import uvicorn
import uvloop
from fastapi import FastAPI

from api.main import UnsafeSettings, create_app
from engine.cli import CliError, fail, run, until_stopped
from engine.config import Settings, get_settings


def _app_or_error(settings: Settings) -> FastAPI:
    try:
        return create_app(settings)
    except (UnsafeSettings, ValueError) as exc:
        raise CliError(str(exc), 2) from None


@contextlib.asynccontextmanager
async def component(settings: Settings) -> AsyncIterator[str]:
    """Serve the API until the block exits; yield a line saying where."""
    config = uvicorn.Config(
        _app_or_error(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_level="warning",
        log_config=None,  # our logging pipeline (engine.telemetry) handles uvicorn's records
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            fail(f"the API could not start on port {settings.api_port}")
        await asyncio.sleep(0.05)
    try:
        url = f"http://{settings.api_host}:{settings.api_port}"
        keys = "" if settings.api_keys else "; no API keys: open to anyone who can reach it"
        yield f"api        {url} (docs {url}/docs{keys})"
    finally:
        server.should_exit = True
        await task


def serve() -> None:
    """Run the REST API (port 8000)."""
    settings = get_settings()

    async def main() -> None:
        async with component(settings) as where:
            typer.echo(where)
            typer.echo("ready      press Ctrl-C to stop")
            await until_stopped()
        typer.echo("stopped")

    # uvloop: less CPU per request on the API's hot path (bench/api_start.py).
    run(main(), loop_factory=uvloop.new_event_loop)
