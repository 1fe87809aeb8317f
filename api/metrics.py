"""Prometheus metrics of the API process, served at /metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


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
