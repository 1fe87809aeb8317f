"""The pytest plugin of ``engine.testing`` (entry point ``pytest11``: installed with the package).

Fixtures:

* ``saga_env``: an embedded Temporal for the session, the time-skipping test server (or a dev
  server with ``--saga-dev-server``);
* ``saga_kit``: a :class:`engine.testing.SagaKit` on it, which runs workers for your sagas (with
  or without fakes) on task queues of their own.

The async fixtures need pytest-asyncio; without it the plugin adds nothing.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from typing import Any

import pytest

from engine._kit_env import SagaKit, temporal_for_tests


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--saga-dev-server",
        action="store_true",
        help="engine.testing: run sagas on a Temporal dev server, not the time-skipping one",
    )


if importlib.util.find_spec("pytest_asyncio") is not None:
    import pytest_asyncio

    @pytest_asyncio.fixture(scope="session", loop_scope="session")
    async def saga_env(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
        """An embedded Temporal for the session (time-skipping unless --saga-dev-server)."""
        dev = bool(request.config.getoption("--saga-dev-server"))
        async with temporal_for_tests(time_skipping=not dev) as env:
            yield env

    @pytest_asyncio.fixture(loop_scope="session")
    async def saga_kit(saga_env: Any) -> SagaKit:
        """Runs workers for sagas under test on ``saga_env``."""
        return SagaKit(saga_env)
