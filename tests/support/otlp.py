"""A real OTLP trace receiver on loopback, for tests: http/protobuf and gRPC.

It decodes what the exporters send (``ExportTraceServiceRequest``, from opentelemetry-proto)
into :class:`ReceivedSpan` records, the way a collector or Jaeger would read them.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from tests.support.processes import free_port


@dataclass(frozen=True)
class ReceivedLink:
    trace_id: str
    span_id: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    links: list[ReceivedLink]
    status_code: int  # 0 unset, 1 ok, 2 error
    status_message: str
    start_ns: int
    end_ns: int


@dataclass
class Received:
    """Everything received, thread-safe; ``requests`` counts export calls by protocol."""

    spans: list[ReceivedSpan] = field(default_factory=list)
    requests: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, protocol: str, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        decoded = list(_decode(request))
        with self.lock:
            self.spans.extend(decoded)
            self.requests[protocol] = self.requests.get(protocol, 0) + 1

    def snapshot(self) -> list[ReceivedSpan]:
        with self.lock:
            return list(self.spans)

    def wait_for(
        self, condition: Callable[[list[ReceivedSpan]], bool], timeout: float = 30
    ) -> list[ReceivedSpan]:
        deadline = time.monotonic() + timeout
        while True:
            spans = self.snapshot()
            if condition(spans):
                return spans
            if time.monotonic() > deadline:
                names = sorted({f"{s.service}: {s.name}" for s in spans})
                raise AssertionError(f"condition not met; received {len(spans)} spans: {names}")
            time.sleep(0.2)


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind)


def _attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in pairs if isinstance(kv, KeyValue)}


def _decode(request: trace_service_pb2.ExportTraceServiceRequest) -> Iterator[ReceivedSpan]:
    for resource_spans in request.resource_spans:
        service = str(_attributes(resource_spans.resource.attributes).get("service.name", ""))
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield ReceivedSpan(
                    service=service,
                    name=span.name,
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_span_id=span.parent_span_id.hex(),
                    kind=span.kind,
                    attributes=_attributes(span.attributes),
                    events=[(e.name, _attributes(e.attributes)) for e in span.events],
                    links=[
                        ReceivedLink(
                            link.trace_id.hex(), link.span_id.hex(), _attributes(link.attributes)
                        )
                        for link in span.links
                    ],
                    status_code=span.status.code,
                    status_message=span.status.message,
                    start_ns=span.start_time_unix_nano,
                    end_ns=span.end_time_unix_nano,
                )


def _http_handler(received: Received) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # the name http.server dispatches to
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path != "/v1/traces":
                self.send_error(404)
                return
            request = trace_service_pb2.ExportTraceServiceRequest()
            request.ParseFromString(body)
            received.add("http/protobuf", request)
            answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: the test reads spans, not access logs

    return Handler


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, received: Received) -> None:
        self.received = received

    def Export(  # the gRPC method's name
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.received.add("grpc", request)
        return trace_service_pb2.ExportTraceServiceResponse()


@dataclass(frozen=True)
class Receiver:
    received: Received
    http_endpoint: str  # for OTEL_EXPORTER_OTLP_ENDPOINT with http/protobuf
    grpc_endpoint: str  # for OTEL_EXPORTER_OTLP_ENDPOINT with grpc


@contextmanager
def otlp_receiver() -> Iterator[Receiver]:
    """Listen for OTLP traces on two loopback ports (HTTP and gRPC) until the block ends."""
    received = Received()
    http_server = ThreadingHTTPServer(("127.0.0.1", 0), _http_handler(received))
    http_thread = threading.Thread(target=http_server.serve_forever, daemon=True)
    http_thread.start()
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(  # type: ignore[no-untyped-call]
        _TraceService(received), grpc_server
    )
    grpc_port = free_port()
    grpc_server.add_insecure_port(f"127.0.0.1:{grpc_port}")
    grpc_server.start()
    try:
        yield Receiver(
            received,
            http_endpoint=f"http://127.0.0.1:{http_server.server_address[1]}",
            grpc_endpoint=f"http://127.0.0.1:{grpc_port}",
        )
    finally:
        http_server.shutdown()
        http_server.server_close()
        grpc_server.stop(grace=None)
