"""One trace per saga, across three processes, into a real OTLP receiver.

``sagas api``, ``sagas worker -m workflows`` and ``sagas participants`` run as processes that
export over OTLP (the standard ``OTEL_*`` variables) to a receiver on loopback, which decodes
the protobuf requests as a collector would. The worker keeps no workflow in its cache, so every
workflow task replays the saga's history: a span emitted again on replay would show up twice.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from tests.support.otlp import Received, ReceivedSpan, otlp_receiver
from tests.support.processes import ROOT, Background, free_port

pytestmark = pytest.mark.temporal

SERVER = 2  # SpanKind.SERVER in OTLP
ERROR = 2  # Status.STATUS_CODE_ERROR


@dataclass(frozen=True)
class TracedStack:
    api_url: str
    received: Received
    logs: list[Path]


@pytest.fixture(scope="module")
def traced(
    dev_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TracedStack]:
    folder = tmp_path_factory.mktemp("traced")
    participants_port, api_port = free_port(), free_port()
    with otlp_receiver() as receiver:
        env = {
            **os.environ,
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.http_endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "SAGAS_DATA_DIR": str(folder / "data"),
            "SAGAS_PARTICIPANTS_PORT": str(participants_port),
            "SAGAS_PARTICIPANTS_URL": f"http://127.0.0.1:{participants_port}",
            "SAGAS_API_HOST": "127.0.0.1",
            "SAGAS_API_PORT": str(api_port),
            "SAGAS_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
            "SAGAS_TASK_QUEUE": f"traced-{uuid.uuid4()}",
            "SAGAS_MAX_CACHED_WORKFLOWS": "0",
            "SAGAS_LOG_LEVEL": "DEBUG",  # the most lines a secret could slip into
        }
        env.pop("OTEL_SERVICE_NAME", None)
        processes = [
            Background(["participants"], env, folder / "participants.log"),
            Background(["worker", "-m", "workflows"], env, folder / "worker.log"),
            Background(["api"], env, folder / "api.log"),
        ]
        try:
            for process in processes:
                process.wait_for("ready")
            yield TracedStack(
                f"http://127.0.0.1:{api_port}", receiver.received, [p.log for p in processes]
            )
        finally:
            for process in reversed(processes):
                process.stop()


def example(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((ROOT / "examples" / "demo" / f"{name}.json").read_text())
    return loaded


def run_saga(stack: TracedStack, name: str, until: str) -> dict[str, Any]:
    with httpx.Client(base_url=stack.api_url, timeout=30) as http:
        started = http.post("/sagas/trip_booking", json=example(name))
        assert started.status_code == 202, started.text
        saga: dict[str, Any] = started.json()
        deadline = time.monotonic() + 60
        while saga["status"] != until:
            assert time.monotonic() < deadline, saga
            time.sleep(0.3)
            saga = http.get(f"/sagas/{saga['id']}").json()
        return saga


class Tree:
    """The spans of one trace, by id, with their ancestry."""

    def __init__(self, spans: list[ReceivedSpan]) -> None:
        self.spans = spans
        self.by_id = {s.span_id: s for s in spans}

    def named(self, name: str) -> list[ReceivedSpan]:
        return [s for s in self.spans if s.name == name]

    def one(self, name: str) -> ReceivedSpan:
        found = self.named(name)
        assert len(found) == 1, f"{len(found)} spans named {name!r}"
        return found[0]

    def ancestors(self, span: ReceivedSpan) -> list[ReceivedSpan]:
        chain = []
        while span.parent_span_id:
            span = self.by_id[span.parent_span_id]
            chain.append(span)
        return chain


def saga_trace(received: Received, trace_id: str, *, expect: list[str]) -> Tree:
    """The saga's trace once the named spans and the workflow's own span have arrived."""

    def complete(spans: list[ReceivedSpan]) -> bool:
        names = {s.name for s in spans if s.trace_id == trace_id}
        return all(n in names for n in expect) and any(n.startswith("RunWorkflow:") for n in names)

    received.wait_for(complete)
    time.sleep(0.5)  # the last batches of the other processes
    return Tree([s for s in received.snapshot() if s.trace_id == trace_id])


class TestOneTracePerSaga:
    def test_a_sold_out_hotel_traces_steps_compensations_and_participants(
        self, traced: TracedStack
    ) -> None:
        saga = run_saga(traced, "trip-sold-out", until="compensated")
        trace_id = saga["trace_id"]
        assert len(trace_id or "") == 32
        assert saga["trace_url"].endswith(f"/trace/{trace_id}")
        tree = saga_trace(
            traced.received,
            trace_id,
            expect=["compensate reserve_flight", "compensate reserve_car", "step reserve_hotel"],
        )

        # Three processes, one trace, one root: the API's request span.
        assert {s.service for s in tree.spans} == {
            "sagas-api",
            "sagas-worker",
            "sagas-participants",
        }
        roots = [s for s in tree.spans if not s.parent_span_id]
        assert [(r.service, r.name) for r in roots] == [("sagas-api", "POST /sagas/{saga_type}")]
        assert all(s.parent_span_id in tree.by_id for s in tree.spans if s.parent_span_id)

        # Each step and compensation is a span with the saga attributes, exactly once
        # (the worker replayed the history for every workflow task).
        for name, phase, outcome in [
            ("step reserve_flight", "forward", "succeeded"),
            ("step reserve_car", "forward", "succeeded"),
            ("step reserve_hotel", "forward", "failed"),
            ("compensate reserve_flight", "compensation", "compensated"),
            ("compensate reserve_car", "compensation", "compensated"),
        ]:
            span = tree.one(name)
            assert span.service == "sagas-worker"
            assert span.attributes["saga.id"] == saga["id"]
            assert span.attributes["saga.type"] == "trip_booking"
            assert span.attributes["saga.step"] == name.split()[1]
            assert span.attributes["saga.phase"] == phase
            assert span.attributes["saga.outcome"] == outcome
            assert span.end_ns >= span.start_ns
            workflow_span = next(a for a in tree.ancestors(span) if a.name.startswith("Run"))
            assert workflow_span.name == "RunWorkflow:trip_booking"
        assert tree.named("step price_trip") == []  # never reached
        assert tree.named("compensate reserve_hotel") == []  # refused: nothing to undo

        # The refusal is an error on the hotel's span, with the failed attempt recorded.
        hotel = tree.one("step reserve_hotel")
        assert hotel.status_code == ERROR
        assert "sold out" in hotel.status_message
        assert [e for e, _ in hotel.events] == ["attempt failed"]
        assert hotel.events[0][1]["saga.retrying"] is False

        # A compensation links to the span of the step it undoes.
        flight = tree.one("step reserve_flight")
        undo = tree.one("compensate reserve_flight")
        assert [(link.trace_id, link.span_id) for link in undo.links] == [
            (trace_id, flight.span_id)
        ]

        # The participants' HTTP server spans sit under their step or compensation, and
        # their database spans under them.
        served = [s for s in tree.spans if s.service == "sagas-participants" and s.kind == SERVER]
        under = {
            (s.name, next(a.name for a in tree.ancestors(s) if a.name.split()[0] in
                          ("step", "compensate")))
            for s in served
        }  # fmt: skip
        assert ("POST /flights/reservations", "step reserve_flight") in under
        assert ("POST /hotels/reservations", "step reserve_hotel") in under
        assert any(step == "compensate reserve_flight" for _, step in under)
        database = [s for s in tree.spans if "db.system.name" in s.attributes]
        in_participants = [d for d in database if d.service == "sagas-participants"]
        assert in_participants, "no database spans in the participants"
        assert all(any(a in served for a in tree.ancestors(d)) for d in in_participants)
        # The API's writes to the saga store (the claim of the saga and its key) are in the
        # request's span too.
        in_api = [d for d in database if d.service == "sagas-api"]
        assert in_api, "no database spans in the API"
        assert all(roots[0] in tree.ancestors(d) for d in in_api)


class TestRedaction:
    def test_no_card_token_in_any_span_or_log(self, traced: TracedStack) -> None:
        """A paid trip and a declined one: the card tokens appear in no span and no log line."""
        paid = run_saga(traced, "trip", until="completed")
        declined = run_saga(traced, "trip-declined", until="compensated")
        tokens = [example(name)["payment"]["card_token"] for name in ("trip", "trip-declined")]
        spans = []
        for saga in (paid, declined):
            spans += saga_trace(traced.received, saga["trace_id"],
                                expect=["step charge_payment"]).spans  # fmt: skip
        assert any(s.service == "sagas-participants" for s in spans)
        captured = [repr(span) for span in spans]
        captured += [log.read_text() for log in traced.logs]
        assert "charge_payment" in "".join(captured)  # the scan does see the payment
        for token in tokens:
            assert not [text[:200] for text in captured if token in text]


def test_the_grpc_exporter_reaches_the_receiver(tmp_path: Path) -> None:
    """``OTEL_EXPORTER_OTLP_PROTOCOL=grpc`` exports the same spans over gRPC."""
    with otlp_receiver() as receiver:
        port = free_port()
        env = {
            **os.environ,
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "SAGAS_DATA_DIR": str(tmp_path),
            "SAGAS_PARTICIPANTS_PORT": str(port),
        }
        participants = Background(["participants"], env, tmp_path / "participants.log")
        try:
            participants.wait_for("ready")
            answer = httpx.get(f"http://127.0.0.1:{port}/flights/reservations?saga_id=x")
            assert answer.status_code == 200
            spans = receiver.received.wait_for(
                lambda spans: any(s.name == "GET /flights/reservations" for s in spans)
            )
        finally:
            participants.stop()
    assert receiver.received.requests.get("grpc", 0) >= 1
    assert {s.service for s in spans} == {"sagas-participants"}
