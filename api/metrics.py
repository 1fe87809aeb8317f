"""Prometheus metrics of the API process, served at /metrics, and the middleware that times
requests."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Histogram(
            "sagas_api_request_seconds",
            "HTTP requests by route, method and status, with their duration.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.started = Counter(
            "sagas_api_started",
            "Sagas started through the API, by type.",
            ["type"],
            registry=self.registry,
        )
        self.actions = Counter(
            "sagas_api_operator_actions",
            "Operator actions taken through the API.",
            ["action"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "sagas_in_flight",
            "Sagas not yet in a final status, by type and status (from the saga store).",
            ["saga_type", "status"],
            registry=self.registry,
        )
        self.unchanged = Gauge(
            "sagas_unchanged_seconds",
            "Sagas not yet final: the longest time one has gone without a change, by type and "
            "status (from the saga store).",
            ["saga_type", "status"],
            registry=self.registry,
        )


class MeasureRequests:
    """Count and time requests by route template (pure ASGI: bodies stream through untouched)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(path, scope["method"], str(status)).observe(
                time.perf_counter() - began
            )
