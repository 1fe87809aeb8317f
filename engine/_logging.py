"""Logs: structlog for ours and the standard library's (uvicorn, temporalio, httpx), one pipeline.

Every line gets a timestamp, level and logger name; inside a trace, ``trace_id`` and
``span_id``; inside a saga (an activity or the saga workflow), ``saga_id`` and ``step``.
Secrets are masked before anything is rendered. Rendered as JSON in production (or when
asked), as readable colourless-or-coloured console lines in a terminal.

Workflow logs come through ``temporalio.workflow.logger``, which by default says nothing while
a workflow replays, so a line is written once however often a history is replayed.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, Literal, TextIO

import structlog
from opentelemetry import trace
from temporalio import activity, workflow

from engine._step_info import step_info

LogFormat = Literal["auto", "json", "console"]

#: Keys whose values never appear in a log line, whatever their nesting.
SECRET_KEYS = re.compile(
    r"card|token|secret|password|passwd|authorization|api[_-]?key|cvv|cvc"
    r"|(?:^|[_-])pan(?:$|[_-])",  # a card's PAN, but not "span_id" or "company"
    re.IGNORECASE,
)
#: Values that look like a card token or a card number, wherever they appear in text.
SECRET_VALUES = re.compile(r"\btok_[A-Za-z0-9_]+|\b\d(?:[ -]?\d){12,18}\b")
MASK = "[redacted]"


def redact_text(text: str) -> str:
    """``text`` with card tokens and card-number-like digit runs masked."""
    return SECRET_VALUES.sub(MASK, text)


def redact_value(value: Any) -> Any:
    """``value`` with secrets masked: by key (:data:`SECRET_KEYS`) in mappings and by shape
    (:func:`redact_text`) in strings, however deep they are nested.

    Mappings come back as dicts and sequences as lists; other values as they are. A walk with
    its own stack, not recursion: no depth at which a secret is let through, no recursion
    limit to hit; a container met a second time (a structure that contains itself) is masked,
    so the copy is a tree that any JSON renderer can write.
    """
    copies: dict[int, Any] = {}
    todo: list[tuple[Any, Any]] = []

    def copy(item: Any) -> Any:
        if isinstance(item, str):
            return redact_text(item)
        if not isinstance(item, Mapping | list | tuple):
            return item
        if id(item) in copies:  # met before: a cycle (or shared part), masked, not followed
            return MASK
        known = copies[id(item)] = {} if isinstance(item, Mapping) else []
        todo.append((item, known))
        return known

    root = copy(value)
    while todo:
        source, target = todo.pop()
        if isinstance(source, Mapping):
            for k, v in source.items():
                target[k] = MASK if isinstance(k, str) and SECRET_KEYS.search(k) else copy(v)
        else:
            target.extend(copy(v) for v in source)
    return root


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask secrets by key and by shape, in every field."""
    for key in list(event):
        if key.startswith("_"):
            continue  # structlog's own bookkeeping (the stdlib record)
        if SECRET_KEYS.search(key):
            event[key] = MASK
        else:
            event[key] = redact_value(event[key])
    return event


def add_trace_and_saga(
    _: Any, __: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: ``trace_id``/``span_id`` and ``saga_id``/``step`` where they apply."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event.setdefault("trace_id", format(context.trace_id, "032x"))
        event.setdefault("span_id", format(context.span_id, "016x"))
    workflow_info = event.pop("temporal_workflow", None)
    activity_info = event.pop("temporal_activity", None)
    if isinstance(workflow_info, Mapping):
        event.setdefault("saga_id", workflow_info.get("workflow_id"))
        event.setdefault("saga_type", workflow_info.get("workflow_type"))
    elif activity_info is not None or activity.in_activity():
        try:
            step = step_info()
        except RuntimeError:  # an activity that no saga started
            return event
        event.setdefault("saga_id", step.saga_id)
        event.setdefault("saga_type", step.saga_type)
        event.setdefault("step", step.step)
        event.setdefault("phase", step.phase)
        event.setdefault("attempt", step.attempt)
    return event


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        add_trace_and_saga,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        # Tracebacks rendered before masking, so that an exception's message is masked too.
        structlog.processors.format_exc_info,
        redact,
    ]


def configure_logging(
    *,
    log_format: LogFormat = "auto",
    production: bool = False,
    level: str = "INFO",
    stream: TextIO | None = None,
) -> None:
    """Route structlog and the standard library through one pipeline to ``stream`` (stderr).

    ``auto`` means JSON in production or when the stream is not a terminal, console lines
    otherwise.
    """
    out = stream or sys.stderr
    as_json = log_format == "json" or (log_format == "auto" and (production or not out.isatty()))
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    shared = _shared_processors()
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    # uvicorn installs its own handlers; send its records to ours instead.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
    # The SDK appends workflow and activity details to each message as text; the pipeline
    # carries them as fields (saga_id, step...) instead.
    workflow.logger.workflow_info_on_message = False
    activity.logger.activity_info_on_message = False
    # Per-request lines of the HTTP client and Alembic's start-up chatter are noise at INFO.
    for name in ("httpx", "alembic"):
        logging.getLogger(name).setLevel(max(root.level, logging.WARNING))
