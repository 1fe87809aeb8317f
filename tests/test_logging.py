"""Logs: one structlog pipeline for our lines and the standard library's, with trace and saga ids.

The tests render JSON into a buffer and assert on the decoded event dicts.
"""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider
from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from engine import RetryPolicy, Saga, SagaClient, SagaStatus, Step, step_info
from engine._logging import redact_value
from engine.telemetry import configure_logging
from engine.worker import build_worker


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    """Logging configured as JSON into a buffer; the default configuration again afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    buffer = io.StringIO()
    configure_logging(log_format="json", stream=buffer)
    yield buffer
    root.handlers, root.level = handlers, level
    structlog.reset_defaults()


def events(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


class TestPipeline:
    """structlog and standard-library records come out the same way."""

    def test_ours_and_the_standard_librarys_lines_are_json(self, lines: io.StringIO) -> None:
        structlog.get_logger("sagas.test").info("saga started", saga_type="trip")
        logging.getLogger("uvicorn.error").warning("port %d busy", 8000)
        ours, theirs = events(lines)
        assert ours["event"] == "saga started"
        assert ours["saga_type"] == "trip"
        assert (ours["level"], ours["logger"]) == ("info", "sagas.test")
        assert theirs["event"] == "port 8000 busy"
        assert (theirs["level"], theirs["logger"]) == ("warning", "uvicorn.error")
        assert all("timestamp" in e for e in (ours, theirs))

    def test_a_console_renders_readable_lines(self) -> None:
        buffer = io.StringIO()
        try:
            configure_logging(log_format="console", stream=buffer)
            structlog.get_logger("sagas.test").info("saga started", saga_type="trip")
        finally:
            structlog.reset_defaults()
            logging.getLogger().handlers = []
        text = buffer.getvalue()
        assert "saga started" in text
        assert "saga_type=trip" in text
        with pytest.raises(json.JSONDecodeError):
            json.loads(text)

    def test_lines_inside_a_span_carry_its_ids(self, lines: io.StringIO) -> None:
        tracer = TracerProvider().get_tracer("test")
        with tracer.start_as_current_span("request") as span:
            logging.getLogger("api").info("inside")
        context = span.get_span_context()
        (event,) = events(lines)
        assert event["trace_id"] == format(context.trace_id, "032x")
        assert event["span_id"] == format(context.span_id, "016x")

    def test_secrets_never_reach_a_line(self, lines: io.StringIO) -> None:
        log = structlog.get_logger("sagas.test")
        log.info("charging", card_token="tok_visa", payment={"card_number": "4242424242424242"})
        log.info("declined for tok_declined and card 4000 0000 0000 0002", amount=12,
                 company="Acme")  # fmt: skip
        logging.getLogger("httpx").warning("Authorization: %s", "Bearer s3cret-key-123456")
        logging.getLogger("api").info("request", extra={"api_key": "ops:abcdefghijklmnop"})
        text = lines.getvalue()
        for secret in ("tok_visa", "4242424242424242", "tok_declined", "4000 0000 0000 0002",
                       "abcdefghijklmnop"):  # fmt: skip
            assert secret not in text
        first, second, *_ = events(lines)
        assert first["card_token"] == "[redacted]"
        assert first["payment"]["card_number"] == "[redacted]"
        assert (second["amount"], second["company"]) == (12, "Acme")  # not secrets

    def test_secrets_are_masked_however_deep(self, lines: io.StringIO) -> None:
        """No depth past which a secret goes through (there was one: 7 levels)."""
        for depth in (8, 50):
            structlog.get_logger("sagas.test").info("deep", payload=nested(depth))
        assert "tok_deep" not in lines.getvalue()
        # Deeper than Python's recursion limit (no JSON renderer goes there; the walk does).
        bottom = redact_value(nested(5000))
        for _ in range(5000):
            bottom = bottom["level"][0]
        assert bottom == {"card_token": "[redacted]", "note": "paid with [redacted]"}

    def test_a_structure_that_contains_itself_is_masked_where_it_loops(self) -> None:
        loop: dict[str, Any] = {"card": "4242 4242 4242 4242", "note": "tok_visa"}
        loop["self"] = loop
        masked = redact_value(loop)
        assert (masked["card"], masked["note"]) == ("[redacted]", "[redacted]")
        assert masked["self"] == "[redacted]"


def nested(depth: int) -> dict[str, Any]:
    """A card token ``depth`` levels down, by key and in text."""
    value: dict[str, Any] = {"card_token": "tok_deep", "note": "paid with tok_deep"}
    for _ in range(depth):
        value = {"level": [value]}
    return value


class Item(BaseModel):
    item_id: str


_attempts: dict[str, int] = {}


@activity.defn(name="logging_noisy_step")
async def noisy(item: Item) -> str:
    info = step_info()
    _attempts[info.saga_id] = _attempts.get(info.saga_id, 0) + 1
    structlog.get_logger("sagas.test").info("reserving", card_token="tok_visa")
    if _attempts[info.saga_id] == 1:
        raise ApplicationError("try again", type="Unavailable")
    return item.item_id


logged_saga = Saga(
    "logging_saga",
    input=Item,
    steps=[Step(noisy, retry=RetryPolicy(initial_interval=timedelta(milliseconds=50)))],
)


@pytest.mark.temporal
async def test_saga_lines_carry_the_saga_and_are_not_repeated_on_replay(
    dev_env: WorkflowEnvironment, lines: io.StringIO
) -> None:
    task_queue = f"tq-{uuid.uuid4()}"
    saga_id = f"logging-{uuid.uuid4()}"
    # No workflow cache: every workflow task replays the whole history.
    async with build_worker(
        dev_env.client, task_queue=task_queue, sagas=[logged_saga], max_cached_workflows=0
    ):
        sagas = SagaClient(dev_env.client, task_queue=task_queue)
        await sagas.start("logging_saga", {"item_id": "i-1"}, saga_id=saga_id)
        state = await sagas.result(saga_id)
    assert state.status is SagaStatus.COMPLETED
    mine = [e for e in events(lines) if e.get("saga_id") == saga_id]

    reserving = [e for e in mine if e["event"] == "reserving"]
    assert [(e["step"], e["phase"], e["attempt"]) for e in reserving] == [
        ("logging_noisy_step", "forward", 1),
        ("logging_noisy_step", "forward", 2),
    ]
    assert all(e["card_token"] == "[redacted]" for e in reserving)
    # The workflow's own line, written once although the history was replayed for each task.
    failed = [e for e in mine if e["event"] == "attempt failed"]
    assert len(failed) == 1
    assert failed[0]["step"] == "logging_noisy_step"
    assert failed[0]["saga_type"] == "logging_saga"
    assert "tok_visa" not in lines.getvalue()


@activity.defn(name="logging_refusing_step")
async def refusing(item: Item) -> str:
    if activity.info().activity_id.endswith("/1"):
        raise ApplicationError("card tok_visa (4242 4242 4242 4242) unavailable")
    raise ApplicationError("card tok_visa (4242 4242 4242 4242) refused", non_retryable=True)


refused_saga = Saga(
    "logging_refused_saga",
    input=Item,
    steps=[Step(refusing, retry=RetryPolicy(initial_interval=timedelta(milliseconds=50)))],
)


@pytest.mark.temporal
async def test_an_error_that_echoes_a_card_is_recorded_masked(
    dev_env: WorkflowEnvironment, lines: io.StringIO
) -> None:
    task_queue = f"tq-{uuid.uuid4()}"
    async with build_worker(dev_env.client, task_queue=task_queue, sagas=[refused_saga]):
        sagas = SagaClient(dev_env.client, task_queue=task_queue)
        saga_id = await sagas.start("logging_refused_saga", {"item_id": "i-2"})
        state = await sagas.result(saga_id)
    assert state.status is SagaStatus.FAILED
    recorded = f"{state.error} {state.steps[0].error}"
    assert "refused" in recorded
    assert "[redacted]" in recorded
    assert "tok_visa" not in recorded
    assert "4242" not in recorded
    # The SDK logs the transient failure with its traceback: masked there too. The refusal
    # is an answer, not an incident (BENIGN): no warning, no traceback.
    failed = [
        e
        for e in events(lines)
        if e.get("saga_id") == saga_id and e.get("event") == "Completing activity as failed"
    ]
    assert [e["level"] for e in failed] == ["warning"], failed
    assert "unavailable" in failed[0]["exception"]
    assert not any("refused" in e["exception"] for e in failed)
    assert "tok_visa" not in lines.getvalue()
