"""The FastAPI application: routers, error handling, limits, auth and the services it needs.

``create_app(settings)`` refuses unsafe production settings at once; the lifespan connects to
Temporal and opens (and migrates) the saga store.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from temporalio.service import RetryConfig

from api import console, openapi, problems
from api.auth import Authenticate, parse_keys, require_key
from api.hosts import HostCheck, allowed_hosts
from api.limits import DeclaredLengthLimit
from api.metrics import ApiMetrics, MeasureRequests
from api.routes import codec, health, saga_types, sagas
from api.service import SagaService
from engine import SagaClient, SagaError, connect
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


def retries_within(deadline: float) -> RetryConfig:
    """The SDK's retries of an unanswered call, given up in half the API's deadline: an
    unreachable Temporal is then a 503 (unavailable), not a 504 (no answer in time)."""
    return RetryConfig(max_elapsed_time_millis=int(deadline * 500), max_interval_millis=1000)


class UnsafeSettings(SagaError, ValueError):
    """Settings that must not run in production."""

    code = "unsafe_settings"


def create_app(settings: Settings, *, service: SagaService | None = None) -> FastAPI:
    """The API. ``service`` replaces the one the lifespan would build (tests)."""
    if settings.environment == "production" and not settings.api_keys:
        raise UnsafeSettings(
            "unsafe for production: SAGAS_API_KEYS is empty (the API would be open to anyone)"
        )
    keys = parse_keys(settings.api_keys, settings.api_key_roles, four_eyes=settings.api_four_eyes)
    production = settings.environment == "production"
    docs = settings.api_docs if settings.api_docs != "auto" else "key" if production else "open"
    metrics = service.metrics if service is not None else ApiMetrics()
    tracer_provider = configure_tracing("sagas-api")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if service is not None:
            yield
            return
        load_modules(settings.modules)
        store = SagaStore(settings.store_url())
        store.migrate()
        if tracer_provider is not None:
            trace_engine(store.engine, tracer_provider)
        connection = settings.temporal_connection()
        client = await connect(
            connection,
            runtime=temporal_runtime(),
            data_converter=settings.data_converter(),
            retry_config=retries_within(settings.api_temporal_timeout_seconds),
        )
        sagas = SagaClient(
            client,
            task_queue=settings.task_queue,
            rpc_timeout=timedelta(seconds=settings.api_temporal_timeout_seconds),
            update_timeout=timedelta(seconds=settings.api_action_timeout_seconds),
            history_events_limit=settings.history_events_limit,
        )
        # Links into the Temporal UI name the namespace the connection resolved to.
        resolved = settings.model_copy(update={"namespace": connection.namespace})
        app.state.service = SagaService(resolved, sagas, store, metrics)
        try:
            async with exporting_metrics(all_sdk_metrics=settings.sdk_metrics == "all"):
                yield
        finally:
            app.state.service.streams.close()
            store.close()
            flush_tracing()

    app = FastAPI(
        title="Sagas",
        version="1",
        summary="Start, follow, cancel, approve and repair sagas running on Temporal.",
        lifespan=lifespan,
        docs_url=None if docs == "off" else "/docs",
        redoc_url=None if docs == "off" else "/redoc",
        openapi_url=None if docs == "off" else "/openapi.json",
    )
    app.state.api_keys = keys
    app.state.service = service
    problems.install(app)
    openapi.install(app)
    authenticated = [Depends(require_key)]
    # FastAPI's body limit, on each router rather than on FastAPI(...): see api/limits.py.
    # A router included without it would take chunked bodies of any size.
    limit = settings.api_max_body_bytes
    app.include_router(sagas.router, dependencies=authenticated, max_body_size=limit)
    app.include_router(saga_types.router, dependencies=authenticated, max_body_size=limit)
    # The Temporal UI posts whole payloads (up to Temporal's own limits) to be opened.
    codec_limit = settings.codec_max_body_bytes
    app.include_router(codec.router, dependencies=authenticated, max_body_size=codec_limit)
    app.include_router(health.router, max_body_size=limit)
    console.install(app, max_body_size=limit)
    app.add_middleware(DeclaredLengthLimit, limit=limit, limits={codec.router.prefix: codec_limit})
    # Keys and roles from the headers, before any body is read (see api/auth.py).
    open_paths = {"/healthz", "/readyz", "/metrics"}
    if docs == "open":
        open_paths |= {"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
    routers = (sagas.router, saga_types.router, codec.router)
    routes = [route for router in routers for route in router.routes]
    # The console checks keys and roles itself: a browser carries its key in a cookie.
    app.add_middleware(
        Authenticate, keys=keys, routes=routes, open_paths=open_paths, open_prefixes=("/console",)
    )
    hosts = allowed_hosts(settings.api_allowed_hosts, production=production)
    app.add_middleware(HostCheck, hosts=hosts, open_paths={"/healthz", "/readyz", "/metrics"})
    # Outside the checks, so that refused requests (401, 403, 400, 413) are counted too.
    app.add_middleware(MeasureRequests, metrics=metrics)
    # The Temporal UI calls the codec routes from the browser, on its own origin. Outermost,
    # so that every answer (a 413 too) carries the headers the browser needs to read it.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins(),
        allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "Content-Type", "X-Namespace"],
        allow_credentials=True,
        max_age=600,
    )
    if tracer_provider is not None:
        # Probes and scrapes would be most of the spans and tell nothing about sagas.
        FastAPIInstrumentor.instrument_app(
            app, tracer_provider=tracer_provider, excluded_urls="healthz,readyz,metrics"
        )
    return app
