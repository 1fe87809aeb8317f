"""The ``sagas`` command line, run as a user runs it: real processes, a real Temporal server.

The parts of the processes that need no server (engine._process, the connection options) are
tested in-process first.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner

from engine import _process
from engine._errors import UnknownSagaType
from engine.cli import connection_options
from engine.config import Settings, get_settings
from tests.support.processes import SAGAS, Background, free_port, sagas

ROOT = Path(__file__).resolve().parent.parent


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0]


class TestConnectionOptions:
    """--address, --namespace and --task-queue, declared once, override the settings."""

    def app(self, *, task_queue: bool) -> tuple[typer.Typer, list[Settings]]:
        seen: list[Settings] = []
        app = typer.Typer()

        @app.command()
        @connection_options(task_queue=task_queue)
        def show(saga_id: str, verbose: bool = False, *, settings: Settings) -> None:
            seen.append(settings)

        @app.command()
        def other() -> None:  # two commands, so that typer expects a command name
            pass

        return app, seen

    def test_given_options_replace_the_settings_and_the_rest_stay(self) -> None:
        app, seen = self.app(task_queue=True)
        args = ["show", "s-1", "--address", "h:1", "--task-queue", "q", "--verbose"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        (settings,) = seen
        assert (settings.temporal_address, settings.task_queue) == ("h:1", "q")
        assert settings.namespace == get_settings().namespace
        assert get_settings().temporal_address != "h:1"  # the cached settings are untouched

    def test_a_command_may_go_without_task_queue(self) -> None:
        app, _ = self.app(task_queue=False)
        help_text = CliRunner().invoke(app, ["show", "--help"]).output
        assert "--address" in help_text
        assert "--namespace" in help_text
        assert "--task-queue" not in help_text
        assert CliRunner().invoke(app, ["show", "s-1", "--task-queue", "q"]).exit_code == 2


class TestProcessParts:
    """What every process does around its work, checked without a server."""

    def test_expected_failures_are_one_line_and_an_exit_code(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        async def refused(exc: Exception) -> None:
            raise exc

        async def answer() -> int:
            return 42

        for exc, code in [
            (UnknownSagaType("unknown saga type 'x'"), 2),
            (_process.CliError("cannot do it"), 1),
            (_process.CliError("bad input", 2), 2),
        ]:
            with pytest.raises(typer.Exit) as exited:
                _process.run(refused(exc))
            assert exited.value.exit_code == code
            assert capsys.readouterr().err == f"error: {exc}\n"
        assert _process.run(answer()) == 42  # and the rest is the coroutine's result

    def test_a_store_that_cannot_open_is_named_without_its_password(self) -> None:
        settings = Settings(database_url="postgresql+psycopg://u:s3cret@127.0.0.1:1/db")
        with pytest.raises(_process.CliError) as refused:
            _process.open_store(settings)
        assert "cannot open the saga store at postgresql+psycopg://u:***@127.0.0.1:1/db" in str(
            refused.value
        )
        assert "s3cret" not in str(refused.value)

    def test_nothing_extra_is_served_unless_asked(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
            monkeypatch.delenv(name, raising=False)
        assert _process.start_tracing("sagas-test") is None

    async def test_serve_asgi_serves_while_the_block_runs(self) -> None:
        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            assert scope["type"] == "http"
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"up"})

        port = free_port()
        url = f"http://127.0.0.1:{port}/"
        serving = _process.serve_asgi(
            app, host="127.0.0.1", port=port, failure="cannot", lifespan="off"
        )
        async with httpx.AsyncClient() as client:
            async with serving:
                assert (await client.get(url)).text == "up"
            with pytest.raises(httpx.ConnectError):
                await client.get(url)


class TestDescribe:
    """`sagas describe TYPE` prints what the engine knows of a saga, its diagram included."""

    def test_steps_kinds_and_diagram(self) -> None:
        result = sagas("describe", "order_fulfillment", "-m", "workflows")
        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert "order_fulfillment (version" in out
        assert "ship_order: pivot" in out
        assert "capture_payment: retriable" in out
        assert "flowchart LR" in out
        assert "(pivot)" in out

    def test_unknown_type_names_the_registered_ones(self) -> None:
        result = sagas("describe", "nope", "-m", "workflows")
        assert_one_line_error(result, "unknown saga type 'nope'", "trip_booking")


class TestBadInput:
    """Every mistake a user can make is one error line and a non-zero exit, no traceback."""

    def test_unknown_saga_type(self) -> None:
        result = sagas("start", "nope", "--input", "examples/transfer.json", "-m", "examples")
        assert_one_line_error(result, "unknown saga type 'nope'", "money_transfer")
        assert result.returncode == 2

    def test_input_that_fails_validation_names_the_field(self) -> None:
        bad = json.dumps({"from_account": "a", "to_account": "b", "amount": -1})
        result = sagas("start", "money_transfer", "--input", "-", "-m", "examples", stdin=bad)
        assert_one_line_error(result, "amount", "greater than 0")
        assert result.returncode == 2

    def test_missing_input_file(self, tmp_path: Path) -> None:
        result = sagas("start", "money_transfer", "--input", str(tmp_path / "no.json"),
                       "-m", "examples")  # fmt: skip
        assert_one_line_error(result, "cannot read input file", "No such file")

    def test_input_that_is_not_json(self) -> None:
        result = sagas("start", "money_transfer", "--input", "-", "-m", "examples", stdin="{oops")
        assert_one_line_error(result, "not valid JSON")

    def test_production_refuses_unsafe_settings_in_one_line(self) -> None:
        env = {**os.environ, "SAGAS_ENVIRONMENT": "production", "SAGAS_API_KEYS": ""}
        result = sagas("api", env=env)
        assert_one_line_error(result, "unsafe for production", "SAGAS_ENCRYPTION_KEY", "SQLite")
        assert result.returncode == 2

    def test_only_the_api_asks_for_api_keys_in_production(self, tmp_path: Path) -> None:
        from tests.test_encryption import new_key

        env = {**os.environ, "SAGAS_ENVIRONMENT": "production", "SAGAS_API_KEYS": "",
               "SAGAS_ENCRYPTION_KEY": new_key(),
               "SAGAS_DATABASE_URL": "postgresql://sagas@127.0.0.1:1/sagas"}  # fmt: skip
        api = sagas("api", env=env)
        assert_one_line_error(api, "SAGAS_API_KEYS")
        # The CLI loads these settings; it fails only for want of a Temporal server.
        listed = sagas("list", "--address", f"127.0.0.1:{free_port()}", env=env)
        assert_one_line_error(listed, "cannot reach Temporal")
        assert "SAGAS_API_KEYS" not in listed.stderr

    def test_a_malformed_encryption_key_is_named(self) -> None:
        result = sagas("list", env={**os.environ, "SAGAS_ENCRYPTION_KEY": "c2hvcnQ="})
        assert_one_line_error(result, "SAGAS_ENCRYPTION_KEY", "5 bytes; AES-256 needs 32")
        assert result.returncode == 2

    def test_a_short_api_key_is_refused(self) -> None:
        result = sagas("api", env={**os.environ, "SAGAS_API_KEYS": "ops:short"})
        assert_one_line_error(result, "API key 'ops' is shorter than 16 characters")

    def test_migrate_creates_the_store(self, tmp_path: Path) -> None:
        env = {**os.environ, "SAGAS_DATABASE_URL": f"sqlite:///{tmp_path}/s.sqlite"}
        result = sagas("migrate", env=env)
        assert result.returncode == 0, result.stderr
        assert "saga store up to date" in result.stdout
        bad = sagas(
            "migrate", env={**os.environ, "DATABASE_URL": "postgresql+psycopg://x@127.0.0.1:1/db"}
        )
        assert_one_line_error(
            bad, "cannot open the saga store at postgresql+psycopg://x@127.0.0.1:1/db"
        )

    def test_unknown_module(self) -> None:
        result = sagas("worker", "--module", "no_such_module_here")
        assert_one_line_error(result, "cannot import saga module 'no_such_module_here'")

    def test_no_server(self) -> None:
        result = sagas("start", "money_transfer", "--input", "examples/transfer.json",
                       "-m", "examples", "--address", "127.0.0.1:1")  # fmt: skip
        assert_one_line_error(result, "cannot reach Temporal at 127.0.0.1:1")
        result = sagas("status", "some-id", "--address", "127.0.0.1:1")
        assert_one_line_error(result, "cannot reach Temporal")


@pytest.fixture
def stack_env(tmp_path: Path) -> dict[str, str]:
    port, ui_port, participants_port, api_port = (free_port() for _ in range(4))
    return {
        **os.environ,
        "SAGAS_DATA_DIR": str(tmp_path / "data"),
        "SAGAS_TEMPORAL_PORT": str(port),
        "SAGAS_TEMPORAL_UI_PORT": str(ui_port),
        "SAGAS_TEMPORAL_ADDRESS": f"127.0.0.1:{port}",
        "SAGAS_TASK_QUEUE": "cli-test",
        "SAGAS_PARTICIPANTS_PORT": str(participants_port),
        "SAGAS_API_PORT": str(api_port),
    }


@pytest.mark.temporal
def test_a_saga_survives_a_server_restart(stack_env: dict[str, str], tmp_path: Path) -> None:
    """server, worker, start, status, approve, list, and a Temporal restart in the middle."""
    server = Background(["server"], stack_env, tmp_path / "server.log")
    worker = None
    try:
        server.wait_for("ready")
        assert f"127.0.0.1:{stack_env['SAGAS_TEMPORAL_PORT']}" in server.log.read_text()
        worker = Background(["worker", "-m", "examples"], stack_env, tmp_path / "worker.log")
        worker.wait_for("ready")
        assert "money_transfer" in worker.log.read_text()

        big = json.dumps({"from_account": "a", "to_account": "b", "amount": 50_000})
        started = subprocess.run(
            [*SAGAS, "start", "money_transfer", "--input", "-", "-m", "examples", "--id", "t-1"],
            cwd=ROOT, env=stack_env, input=big, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        assert started.stdout.strip() == "t-1"

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*SAGAS, *args], cwd=ROOT, env=stack_env, capture_output=True, text=True,
                timeout=60,
            )  # fmt: skip

        deadline = time.monotonic() + 30
        while (
            json.loads(cli("status", "t-1", "--json").stdout or "{}").get("status")
            != "awaiting_approval"
        ):
            assert time.monotonic() < deadline
            time.sleep(0.2)

        # Stop Temporal (Ctrl-C) and start it again on the same data directory.
        assert server.interrupt() == 0
        assert "stopped" in server.log.read_text()
        server = Background(["server"], stack_env, tmp_path / "server2.log")
        server.wait_for("ready")

        status = cli("status", "t-1")
        assert status.returncode == 0, status.stderr
        assert "awaiting_approval" in status.stdout
        assert "awaiting approval: credit" in status.stdout

        approved = cli("approve", "t-1", "--comment", "fine")
        assert approved.returncode == 0, approved.stderr
        deadline = time.monotonic() + 60
        while (state := json.loads(cli("status", "t-1", "--json").stdout))["status"] != "completed":
            assert time.monotonic() < deadline, state
            time.sleep(0.3)
        assert state["steps"][1]["approval"]["comment"] == "fine"

        listed = cli("list")
        assert "t-1  money_transfer  completed" in listed.stdout
        refused = cli("cancel", "t-1")
        assert_one_line_error(refused, "already finished")
        assert worker.interrupt() == 0
    finally:
        if worker is not None:
            worker.stop()
        server.stop()


@pytest.mark.temporal
def test_dev_runs_a_saga_and_stops_on_ctrl_c(stack_env: dict[str, str], tmp_path: Path) -> None:
    """`sagas dev`: embedded Temporal and a worker in one process, as `make dev` runs it."""
    dev = Background(["dev", "-m", "examples"], stack_env, tmp_path / "dev.log")
    try:
        dev.wait_for("ready")
        log = dev.log.read_text()
        assert f"temporal   127.0.0.1:{stack_env['SAGAS_TEMPORAL_PORT']}" in log
        assert f"ui         http://127.0.0.1:{stack_env['SAGAS_TEMPORAL_UI_PORT']}" in log
        assert f"participants http://127.0.0.1:{stack_env['SAGAS_PARTICIPANTS_PORT']}" in log
        assert f"api        http://127.0.0.1:{stack_env['SAGAS_API_PORT']}" in log
        assert "no API keys" in log  # make dev says that it runs open
        assert "store      sqlite:///" in log
        started = subprocess.run(
            [*SAGAS, "start", "gift_order", "--input", "examples/gift.json", "-m", "examples",
             "--wait"],
            cwd=ROOT, env=stack_env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        assert started.stdout.splitlines()[-1] == "completed"
        assert dev.interrupt() == 0
        assert dev.log.read_text().rstrip().endswith("stopped")
    finally:
        dev.stop()
    assert (tmp_path / "data" / "temporal.sqlite").exists()
