"""``sagas api`` and the API's part of ``sagas dev`` (plugged in by entry point)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import uvloop
from fastapi import FastAPI

from api.main import UnsafeSettings, create_app
from engine._process import CliError, run, serve_asgi, serve_until_stopped
from engine.config import Settings, get_settings


def _app_or_error(settings: Settings) -> FastAPI:
    try:
        return create_app(settings)
    except (UnsafeSettings, ValueError) as exc:
        raise CliError(str(exc), 2) from None


@contextlib.asynccontextmanager
async def component(settings: Settings) -> AsyncIterator[str]:
    """Serve the API until the block exits; yield a line saying where."""
    host, port = settings.api_host, settings.api_port
    failure = f"the API could not start on port {port}"
    async with serve_asgi(_app_or_error(settings), host=host, port=port, failure=failure):
        url = f"http://{host}:{port}"
        keys = "" if settings.api_keys else "; no API keys: open to anyone who can reach it"
        yield f"api        {url} (docs {url}/docs{keys})"


def serve() -> None:
    """Run the REST API (port 8000)."""
    # uvloop: less CPU per request on the API's hot path (bench/api_start.py).
    run(serve_until_stopped(component(get_settings())), loop_factory=uvloop.new_event_loop)
