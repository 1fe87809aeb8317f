"""Liveness, readiness and metrics: open without an API key."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from api.deps import ServiceDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Temporal or the database is unreachable"}})
async def readyz(service: ServiceDep) -> JSONResponse:
    """Temporal and the database answer."""
    checks = await service.readiness()
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", **checks}, status_code=200 if ready else 503
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text"}},
)
async def metrics(service: ServiceDep) -> Response:
    """Prometheus metrics: the API's, sagas in flight, the Temporal SDK's and the sagas' own."""
    in_flight = await asyncio.to_thread(service.store.in_flight)
    service.metrics.in_flight.clear()
    for (saga_type, status), count in in_flight.items():
        service.metrics.in_flight.labels(saga_type, status).set(count)
    quietest = await asyncio.to_thread(service.store.quietest_in_flight)
    service.metrics.unchanged.clear()
    now = datetime.now(UTC)
    for (saga_type, status), changed in quietest.items():
        quiet = (now - changed).total_seconds()
        service.metrics.unchanged.labels(saga_type, status).set(quiet)
    body = generate_latest(service.metrics.registry) + generate_latest(REGISTRY)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
