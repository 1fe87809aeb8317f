"""Metrics: the Temporal SDK's and the sagas' own, in Prometheus format.

One Temporal ``Runtime`` per long-running process records the SDK's metrics and what the saga
workflow records through ``workflow.metric_meter()`` (which stays silent while replaying, so a
replayed history counts nothing twice) into a buffer; Temporal's ``MetricsExporter`` drains it
into an OpenTelemetry meter provider whose Prometheus reader registers with
``prometheus_client``'s default registry. The API serves that registry at ``/metrics``; a
worker serves it on ``SAGAS_WORKER_METRICS_PORT``.

Saga metrics (names as Prometheus shows them):

* ``sagas_started_total{saga_type}``
* ``sagas_ended_total{saga_type, status}``: completed, compensated, failed, and
  compensation_failed (counted when a saga enters it, though it stays open)
* ``saga_step_duration_seconds{saga_type, step, phase, outcome}``: a histogram per step and
  per compensation, all attempts included
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from temporalio import workflow
from temporalio.contrib.opentelemetry import MetricsExporter
from temporalio.runtime import MetricBuffer, MetricBufferDurationFormat, Runtime, TelemetryConfig

_BUFFER_SIZE = 200_000  # updates between drains (every second): far above what 2 cores make


class _ProcessMetrics:
    def __init__(self) -> None:
        self.buffer = MetricBuffer(_BUFFER_SIZE, duration_format=MetricBufferDurationFormat.SECONDS)
        self.runtime = Runtime(telemetry=TelemetryConfig(metrics=self.buffer))
        self.meter_provider = MeterProvider(metric_readers=[PrometheusMetricReader()])
        self.exporting = 0
        self.exporter: MetricsExporter | None = None


_process: _ProcessMetrics | None = None


def temporal_runtime() -> Runtime:
    """The process's Temporal runtime, whose metrics reach Prometheus (see the module doc)."""
    global _process
    if _process is None:
        _process = _ProcessMetrics()
    return _process.runtime


@contextlib.asynccontextmanager
async def exporting_metrics() -> AsyncIterator[None]:
    """Drain the runtime's metrics into Prometheus while the block runs (nestable)."""
    temporal_runtime()
    assert _process is not None
    process = _process
    if process.exporting == 0:
        process.exporter = MetricsExporter(
            process.buffer, process.meter_provider, poll_interval=timedelta(seconds=1)
        )
        await process.exporter.__aenter__()
    process.exporting += 1
    try:
        yield
    finally:
        process.exporting -= 1
        if process.exporting == 0 and process.exporter is not None:
            await process.exporter.__aexit__(None, None, None)
            process.exporter = None


# ------------------------------------------------------- inside the saga workflow


def saga_started(saga_type: str) -> None:
    workflow.metric_meter().create_counter("sagas_started", "Sagas started, by type.").add(
        1, {"saga_type": saga_type}
    )


def saga_status(saga_type: str, status: str) -> None:
    workflow.metric_meter().create_counter(
        "sagas_ended", "Sagas that reached a final status (or compensation_failed), by type."
    ).add(1, {"saga_type": saga_type, "status": status})


def step_duration(saga_type: str, step: str, phase: str, outcome: str, took: timedelta) -> None:
    workflow.metric_meter().create_histogram_timedelta(
        "saga_step_duration",
        "Time from a step's (or compensation's) first attempt to its outcome.",
        "s",
    ).record(took, {"saga_type": saga_type, "step": step, "phase": phase, "outcome": outcome})
