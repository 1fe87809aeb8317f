"""OpenTelemetry tracing: set-up from the standard ``OTEL_*`` variables, and the saga spans.

Every process calls :func:`configure_tracing` with its service name. Tracing is on when an OTLP
endpoint is configured (``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``..._TRACES_ENDPOINT``) and not
switched off (``OTEL_SDK_DISABLED=true``, ``OTEL_TRACES_EXPORTER=none``); the protocol is
``OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL`` (``http/protobuf`` by default, or ``grpc``); the
batch processor and the exporters read their own ``OTEL_BSP_*`` / ``OTEL_EXPORTER_OTLP_*``
settings. Off, nothing is installed and every span below is a no-op.

The provider is Temporal's replay-safe one (``create_tracer_provider``): inside a workflow its
span and trace ids come from the workflow's deterministic random, a span started while
replaying gets the time it first started, and nothing is exported while replaying. So a step
span opened by one worker and closed by another after a crash is exported once, whole.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode
from temporalio.contrib.opentelemetry import ReplaySafeTracerProvider as TracerProvider
from temporalio.contrib.opentelemetry import create_tracer_provider

from engine._step_info import COMPENSATION

if TYPE_CHECKING:
    from sqlalchemy import Engine

_providers: dict[str, TracerProvider] = {}


def tracing_requested(env: dict[str, str] | None = None) -> bool:
    """Whether the ``OTEL_*`` variables ask for traces to be exported."""
    env = dict(os.environ) if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def tracing_enabled() -> bool:
    """Whether :func:`configure_tracing` installed an exporting provider in this process."""
    return bool(_providers)


def configure_tracing(service_name: str) -> TracerProvider | None:
    """The tracer provider of ``service_name``, or None when tracing is not requested.

    The first service configured in a process owns the global provider (which Temporal's
    plugin and the workflow's spans use); another service in the same process (``sagas dev``
    runs them all) gets a provider of its own, to be passed to its instrumentations, so
    each span still names the component it comes from. ``OTEL_SERVICE_NAME``, when set,
    names every service of the process (the OpenTelemetry convention).
    """
    if not tracing_requested():
        return None
    found = _providers.get(service_name)
    if found is not None:
        return found
    resource = Resource.create(
        {"service.name": os.environ.get("OTEL_SERVICE_NAME") or service_name}
    )
    provider = create_tracer_provider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(_exporter()))
    if not _providers:
        trace.set_tracer_provider(provider)
    _providers[service_name] = provider
    return provider


def trace_engine(engine: Engine, tracer_provider: TracerProvider) -> None:
    """A client span for every statement ``engine`` runs, under the current span.

    Our own few lines on SQLAlchemy's public events rather than the contrib instrumentor:
    that one refuses SQLAlchemy 2.1 and instruments once per process, while ``sagas dev``
    runs several services, each with its own engines and provider. Statements are recorded
    with their placeholders, never their parameter values (which may hold personal data).
    """
    tracer = tracer_provider.get_tracer("sagas.sql")
    system = engine.dialect.name
    database = engine.url.database or ""
    spans: dict[int, Span] = {}

    def before(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        operation = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "SQL"
        spans[id(cursor)] = tracer.start_span(
            f"{operation} {Path(database).stem if system == 'sqlite' else database}".strip(),
            kind=SpanKind.CLIENT,
            attributes={
                "db.system.name": system,
                "db.namespace": database,
                "db.operation.name": operation,
                "db.query.text": statement,
            },
        )

    def after(conn: Any, cursor: Any, *_: Any) -> None:
        span = spans.pop(id(cursor), None)
        if span is not None:
            span.end()

    def failed(context: Any) -> None:
        span = spans.pop(id(context.cursor), None)
        if span is not None:
            span.set_status(Status(StatusCode.ERROR, type(context.original_exception).__name__))
            span.end()

    from sqlalchemy import event  # here: writing a saga must not load SQLAlchemy

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    event.listen(engine, "handle_error", failed)


def instrument_httpx() -> None:
    """Trace every httpx call (participant calls from activities) and pass the context on."""
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    instrumentor = HTTPXClientInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument()


def _exporter() -> SpanExporter:
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpExporter,
        )

        return HttpExporter()
    raise ValueError(
        f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported: use http/protobuf or grpc"
    )


def flush_tracing(timeout_millis: int = 5000) -> None:
    """Export what every provider of this process holds (before the process exits)."""
    for provider in _providers.values():
        provider.force_flush(timeout_millis)


def current_trace_id() -> str | None:
    """The current trace id as 32 hex digits, or None outside a recorded trace."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


# ----------------------------------------------------------------- saga spans


@contextmanager
def saga_span(
    *,
    saga_type: str,
    saga_id: str,
    step: str,
    phase: str,
    links: Sequence[SpanContext] = (),
) -> Iterator[Span]:
    """The span of one step (``phase`` forward) or one compensation, around all its attempts.

    Used inside the workflow; the activities of its attempts (and the participant calls they
    make) become its children. The caller sets the outcome with :func:`set_outcome`.
    """
    tracer = trace.get_tracer("sagas.engine")
    name = f"{'compensate' if phase == COMPENSATION else 'step'} {step}"
    with tracer.start_as_current_span(
        name,
        kind=SpanKind.INTERNAL,
        attributes={
            "saga.id": saga_id,
            "saga.type": saga_type,
            "saga.step": step,
            "saga.phase": phase,
        },
        links=[Link(c, {"saga.link": "undoes"}) for c in links if c.is_valid],
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield span


def record_failed_attempt(span: Span, *, attempt: int, error: str, retrying: bool) -> None:
    """One failed attempt, as an event on the step's span."""
    span.add_event(
        "attempt failed",
        {"saga.attempt": attempt, "error.message": error, "saga.retrying": retrying},
    )


def set_outcome(span: Span, outcome: str, *, attempts: int, error: str | None = None) -> None:
    """``saga.outcome`` (succeeded, failed, compensated, compensation_failed...) and status."""
    if not span.is_recording():
        return  # ended already: its run continued as new (engine._continue)
    span.set_attribute("saga.outcome", outcome)
    span.set_attribute("saga.attempts", attempts)
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, error))
