"""Tracing and logging set-up for the processes that run sagas.

Public names: :func:`configure_logging` (structlog for every logger), :func:`redact_text`,
:func:`configure_tracing` (from the standard ``OTEL_*`` variables), :func:`trace_engine`,
:func:`instrument_httpx`, :func:`flush_tracing`, :func:`current_trace_id`,
:func:`tracing_enabled`, :func:`tracing_requested`.
"""

from engine._logging import configure_logging, redact_text
from engine._metrics import exporting_metrics, temporal_runtime
from engine._tracing import (
    configure_tracing,
    current_trace_id,
    flush_tracing,
    instrument_httpx,
    trace_engine,
    tracing_enabled,
    tracing_requested,
)

__all__ = [
    "configure_logging",
    "configure_tracing",
    "current_trace_id",
    "exporting_metrics",
    "flush_tracing",
    "instrument_httpx",
    "redact_text",
    "temporal_runtime",
    "trace_engine",
    "tracing_enabled",
    "tracing_requested",
]
