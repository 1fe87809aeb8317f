"""The FastAPI application: routers, error handling, limits, auth and the runtime it needs.

``create_app(settings)`` refuses unsafe production settings at once; the lifespan connects to
Temporal and opens (and migrates) the saga store.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.openapi.utils import get_openapi
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import problems
from api.auth import parse_keys, require_key
from api.limits import BodyLimit
from api.metrics import ApiMetrics
from api.models import Problem
from api.routes import health, saga_types, sagas
from api.runtime import Runtime
from engine import SagaClient, connect
from engine.config import Settings
from engine.store import SagaStore
from engine.telemetry import (
    configure_tracing,
    exporting_metrics,
    flush_tracing,
    temporal_runtime,
    trace_engine,
)
from engine.worker import load_modules


class UnsafeSettings(ValueError):
    """Settings that must not run in production."""


def create_app(settings: Settings, *, runtime: Runtime | None = None) -> FastAPI:
    """The API. ``runtime`` replaces the one the lifespan would build (tests)."""
    if settings.environment == "production" and not settings.api_keys:
        raise UnsafeSettings("production mode needs API keys: set SAGAS_API_KEYS")
    keys = parse_keys(settings.api_keys)
    metrics = runtime.metrics if runtime else ApiMetrics()
    tracer_provider = configure_tracing("sagas-api")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if runtime is not None:
            app.state.runtime = runtime
            yield
            return
        load_modules(settings.modules)
        store = SagaStore(settings.store_url())
        store.migrate()
        if tracer_provider is not None:
            trace_engine(store.engine, tracer_provider)
        client = await connect(settings.temporal_connection(), runtime=temporal_runtime())
        app.state.runtime = Runtime(
            settings, SagaClient(client, task_queue=settings.task_queue), store, metrics
        )
        try:
            async with exporting_metrics():
                yield
        finally:
            store.close()
            flush_tracing()

    app = FastAPI(
        title="Sagas",
        version="1",
        summary="Start, follow, cancel, approve and repair sagas running on Temporal.",
        lifespan=lifespan,
    )
    app.state.api_keys = keys
    if runtime is not None:
        app.state.runtime = runtime
    problems.install(app)
    authenticated = [Depends(require_key)]
    app.include_router(sagas.router, dependencies=authenticated)
    app.include_router(saga_types.router, dependencies=authenticated)
    app.include_router(health.router)
    app.add_middleware(MeasureRequests, metrics=metrics)
    app.add_middleware(BodyLimit, limit=settings.api_max_body_bytes)
    if tracer_provider is not None:
        # Probes and scrapes would be most of the spans and tell nothing about sagas.
        FastAPIInstrumentor.instrument_app(
            app, tracer_provider=tracer_provider, excluded_urls="healthz,readyz,metrics"
        )
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


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


AUTH_ERRORS = {401: "No API key", 403: "Wrong API key"}
COMMON_ERRORS = {
    413: "Request body too large",
    422: "Invalid request (the field is named)",
    500: "Unexpected error",
}
ROUTE_ERRORS: dict[str, dict[int, str]] = {
    "/sagas/{saga_type}": {
        404: "Unknown saga type",
        409: "Idempotency-Key reused with another body",
        503: "Temporal unavailable",
    },
    "/sagas/{saga_id}": {404: "No such saga"},
    "/sagas/{saga_id}/cancel": {404: "No such saga", 409: "Past the pivot, or finished"},
    "/sagas/{saga_id}/approve": {404: "No such saga", 409: "Nothing waits for a decision"},
    "/sagas/{saga_id}/reject": {404: "No such saga", 409: "Nothing waits for a decision"},
    "/sagas/{saga_id}/compensations/retry": {
        404: "No such saga",
        409: "The saga is not compensation_failed",
    },
    "/sagas/{saga_id}/steps/{step}/resolve": {
        404: "No such saga",
        409: "The step's compensation has not failed",
    },
    "/sagas/{saga_id}/events": {404: "No such saga"},
    "/saga-types/{saga_type}": {404: "Unknown saga type"},
}


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The generated schema, with every error documented as application/problem+json."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, summary=app.summary, routes=app.routes
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            errors = dict(COMMON_ERRORS)
            if "security" in operation or operation.get("tags") != ["health"]:
                errors.update(AUTH_ERRORS)
            errors.update(ROUTE_ERRORS.get(path, {}))
            if operation.get("tags") == ["health"]:
                errors = {500: COMMON_ERRORS[500], 413: COMMON_ERRORS[413]}
                if path == "/readyz":
                    responses["503"] = {
                        "description": "Not ready",
                        "content": {"application/json": {"schema": {}}},
                    }
            for code, description in errors.items():
                responses[str(code)] = {"description": description, "content": problem}
            if "security" not in operation and operation.get("tags") != ["health"]:
                operation["security"] = [{"bearer": []}]
    schema["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    app.openapi_schema = schema
    return schema
