"""Every error as application/problem+json, from one place.

Every error raised on purpose is a ``SagaError`` (the engine's, and the API's own: a missing or
wrong key) that carries its HTTP status and a stable code, so one handler answers them all.
Beside it, the framework's own: request validation (names the field), HTTPException (an
unknown route, a wrong method), a body over the limit (413, from FastAPI's ``max_body_size``),
and anything unexpected (a 500 with no internals in it, and a log line with them).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.middleware.body_limit import MAX_BODY_SIZE_SCOPE_KEY as LIMIT
from temporalio.service import RPCError, RPCStatusCode

from engine import SagaError
from engine._errors import InvalidRequest

logger = logging.getLogger("api")
MEDIA_TYPE = "application/problem+json"


def problem(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def too_large(limit: int) -> JSONResponse:
    """A request body over the limit, whether declared (api.limits) or counted (FastAPI)."""
    return problem(413, "body_too_large", f"request body larger than {limit} bytes")


def _fields(errors: Sequence[Any]) -> list[dict[str, str]]:
    """Pydantic-style errors (``loc``, ``msg``) as the problem's ``errors``: field, message."""
    return [
        {"field": ".".join(str(p) for p in e.get("loc", ())) or "body", "message": e.get("msg", "")}
        for e in errors
    ]


def install(app: FastAPI) -> None:
    @app.exception_handler(SagaError)
    async def saga_error(request: Request, exc: SagaError) -> JSONResponse:
        extra = {"errors": _fields(exc.errors)} if isinstance(exc, InvalidRequest) else {}
        return problem(exc.http_status, exc.code, exc.message, **extra)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _fields(exc.errors())
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return problem(422, "invalid_request", detail, errors=errors)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        # FastAPI's max_body_size gone over while the body streamed in: its limiter raises a
        # plain 413 and leaves the limit that applied in the scope.
        if exc.status_code == 413 and isinstance(limit := request.scope.get(LIMIT), int):
            return too_large(limit)
        title = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_")
        return problem(exc.status_code, title, str(exc.detail))

    @app.exception_handler(RPCError)
    async def temporal_error(request: Request, exc: RPCError) -> JSONResponse:
        # Temporal's own message may name hosts and addresses: logged, never answered.
        logger.warning("Temporal error on %s %s: %s", request.method, request.url.path, exc)
        if exc.status == RPCStatusCode.DEADLINE_EXCEEDED:
            return problem(504, "temporal_timeout", "Temporal did not answer in time")
        if exc.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.RESOURCE_EXHAUSTED):
            return problem(503, "temporal_unavailable", "Temporal is unavailable; try again later")
        return problem(502, "temporal_error", "Temporal refused the request; it has been logged")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return problem(500, "internal_error", "an unexpected error; it has been logged")
