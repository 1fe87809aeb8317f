"""Liveness, readiness and metrics: open without an API key."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from api.runtime import RuntimeDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Temporal or the database is unreachable"}})
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    """Temporal and the database answer."""
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(runtime.sagas.client.service_client.check_health(), timeout=3)
        checks["temporal"] = "ok"
    except Exception as exc:
        checks["temporal"] = f"unreachable: {type(exc).__name__}"
    try:
        await asyncio.wait_for(asyncio.to_thread(runtime.store.ping), timeout=3)
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", **checks}, status_code=200 if ready else 503
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text"}},
)
async def metrics(runtime: RuntimeDep) -> Response:
    """Prometheus metrics: the API's, sagas in flight, the Temporal SDK's and the sagas' own."""
    in_flight = await asyncio.to_thread(runtime.store.in_flight)
    runtime.metrics.in_flight.clear()
    for (saga_type, status), count in in_flight.items():
        runtime.metrics.in_flight.labels(saga_type, status).set(count)
    body = generate_latest(runtime.metrics.registry) + generate_latest(REGISTRY)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
