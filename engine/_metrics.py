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
from typing import Any

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from temporalio import workflow
from temporalio.contrib.opentelemetry import MetricsExporter
from temporalio.runtime import (
    BufferedMetricUpdate,
    MetricBuffer,
    MetricBufferDurationFormat,
    Runtime,
    TelemetryConfig,
)

_BUFFER_SIZE = 200_000  # updates between drains (every second): far above what 2 cores make

#: The SDK's own metrics kept by default (``SAGAS_SDK_METRICS=essential``): backlogs, failed
#: tasks, free slots, the workflow cache, failed requests. The SDK records a latency histogram
#: for every request and every task besides; carried from the buffer into Prometheus one by
#: one, they cost a worker about a tenth of its CPU under load (docs/benchmarks.md).
ESSENTIAL_SDK_METRICS = frozenset(
    {
        "temporal_workflow_task_schedule_to_start_latency",
        "temporal_activity_schedule_to_start_latency",
        "temporal_workflow_task_execution_failed",
        "temporal_activity_execution_failed",
        "temporal_local_activity_execution_failed",
        "temporal_worker_task_slots_available",
        "temporal_worker_task_slots_used",
        "temporal_sticky_cache_size",
        "temporal_request_failure",
        "temporal_long_request_failure",
    }
)


class _Exporter(MetricsExporter):
    """Temporal's exporter, keeping the saga metrics and the essential SDK ones only."""

    def __init__(self, *args: Any, keep_all: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._keep_all = keep_all

    def _apply_update(self, update: BufferedMetricUpdate) -> None:
        name = update.metric.name
        if self._keep_all or not name.startswith("temporal_") or name in ESSENTIAL_SDK_METRICS:
            super()._apply_update(update)


class _ProcessMetrics:
    def __init__(self, *, recording: bool) -> None:
        self.buffer = MetricBuffer(_BUFFER_SIZE, duration_format=MetricBufferDurationFormat.SECONDS)
        # A process that serves no metrics records none: the buffer would be drained for no one.
        telemetry = TelemetryConfig(metrics=self.buffer if recording else None)
        self.runtime = Runtime(telemetry=telemetry)
        self.recording = recording
        self.meter_provider = MeterProvider(metric_readers=[PrometheusMetricReader()])
        self.exporting = 0
        self.exporter: MetricsExporter | None = None


_process: _ProcessMetrics | None = None


def temporal_runtime(*, metrics: bool = True) -> Runtime:
    """The process's Temporal runtime, whose metrics reach Prometheus (see the module doc);
    ``metrics=False``: the process serves no metrics, so records none (the first call of a
    process decides)."""
    global _process
    if _process is None:
        _process = _ProcessMetrics(recording=metrics)
    return _process.runtime


@contextlib.asynccontextmanager
async def exporting_metrics(*, all_sdk_metrics: bool = False) -> AsyncIterator[None]:
    """Drain the runtime's metrics into Prometheus while the block runs (nestable): the saga
    metrics, and the SDK's essential ones unless ``all_sdk_metrics``."""
    temporal_runtime()
    assert _process is not None
    process = _process
    if process.exporting == 0 and process.recording:
        process.exporter = _Exporter(
            process.buffer,
            process.meter_provider,
            poll_interval=timedelta(seconds=1),
            keep_all=all_sdk_metrics,
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
