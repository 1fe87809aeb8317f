"""Prometheus metrics: saga outcomes and step durations by type, with the Temporal SDK's own."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from temporalio.testing import WorkflowEnvironment

from engine import SagaClient, SagaStatus, connect
from engine.telemetry import exporting_metrics, temporal_runtime
from engine.worker import build_worker
from tests.support import ledger
from tests.support.processes import Background, free_port
from tests.support.sagas import ALL

pytestmark = pytest.mark.temporal


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float:  # fmt: skip
    return sum(v for (n, ls), v in found.items() if n == name and set(labels.items()) <= set(ls))


async def test_outcomes_and_durations_are_counted_once_each(dev_env: WorkflowEnvironment) -> None:
    address = dev_env.client.service_client.config.target_host
    client = await connect(address, runtime=temporal_runtime())
    task_queue = f"tq-{uuid.uuid4()}"
    before = samples(generate_latest(REGISTRY).decode())
    # No workflow cache: each task replays the history, and must not count anything again.
    async with (
        exporting_metrics(),
        build_worker(client, task_queue=task_queue, sagas=ALL, max_cached_workflows=0),
    ):
        sagas = SagaClient(client, task_queue=task_queue)
        ids = []
        for refuse in (set(), {"c"}):
            saga_id = f"metrics-{uuid.uuid4()}"
            ledger.plan(saga_id, refuse=refuse)
            await sagas.start("three_steps", {"order_id": saga_id, "amount": 1}, saga_id=saga_id)
            ids.append(saga_id)
        states = [await sagas.result(i) for i in ids]
        assert [s.status for s in states] == [SagaStatus.COMPLETED, SagaStatus.COMPENSATED]
        await asyncio.sleep(2.5)  # the exporter drains the SDK's buffer every second
    after = samples(generate_latest(REGISTRY).decode())

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("sagas_started_total", saga_type="three_steps") == 2
    assert delta("sagas_ended_total", saga_type="three_steps", status="completed") == 1
    assert delta("sagas_ended_total", saga_type="three_steps", status="compensated") == 1
    step = {"saga_type": "three_steps", "step": "a"}
    assert delta("saga_step_duration_seconds_count", **step, phase="forward") == 2
    assert delta("saga_step_duration_seconds_count", **step, phase="compensation",
                 outcome="compensated") == 1  # fmt: skip
    assert delta("saga_step_duration_seconds_count", saga_type="three_steps", step="c",
                 outcome="failed") == 1  # fmt: skip
    # The Temporal SDK's own metrics come through the same registry: the essential ones
    # (SAGAS_SDK_METRICS), not a latency histogram per request.
    names = {name for name, _ in after}
    assert any(n.startswith("temporal_workflow_task_schedule_to_start_latency") for n in names)
    assert any(n.startswith("temporal_worker_task_slots_available") for n in names)
    assert not any(n.startswith("temporal_request_latency") for n in names), sorted(names)
    assert not any(n.startswith("temporal_workflow_task_execution_latency") for n in names)


def test_a_worker_serves_its_metrics(dev_env: WorkflowEnvironment, tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "SAGAS_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "SAGAS_TASK_QUEUE": f"metrics-{uuid.uuid4()}",
        "SAGAS_WORKER_METRICS_PORT": str(port),
        "SAGAS_DATA_DIR": str(tmp_path),
    }
    worker = Background(["worker", "-m", "workflows"], env, tmp_path / "worker.log")
    try:
        worker.wait_for("ready")
        assert f"metrics    http://127.0.0.1:{port}/metrics" in worker.log.read_text()
        found = ""
        for _ in range(30):  # the SDK reports its first metrics within a few seconds
            found = httpx.get(f"http://127.0.0.1:{port}/metrics").text
            if "temporal_" in found:
                break
            time.sleep(0.5)
        assert "temporal_" in found
        assert "process_cpu_seconds_total" in found
        # The same endpoint answers the probes (tests/test_worker_health.py has the rules).
        base = f"http://127.0.0.1:{port}"
        assert f"health: {base}/healthz" in worker.log.read_text()
        assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
        assert httpx.get(f"{base}/readyz").json() == {"worker": "ok", "temporal": "ok"}
    finally:
        worker.stop()
