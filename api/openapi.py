"""The OpenAPI schema as FastAPI generates it, with every error documented.

Errors are application/problem+json (``Problem``), FastAPI's own validation error schemas give
way to it, and every route but health and metrics names the bearer scheme.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api.models import Problem

AUTH_ERRORS = {401: "No API key", 403: "Wrong API key, or a key without the route's role"}
COMMON_ERRORS = {
    400: "Host not served (SAGAS_API_ALLOWED_HOSTS)",
    413: "Request body too large",
    422: "Invalid request (the field is named)",
    500: "Unexpected error",
    502: "Temporal refused the request",
    503: "Temporal unavailable",
    504: "Temporal did not answer in time (the request may still take effect)",
}
HEALTH_ERRORS = {500: COMMON_ERRORS[500], 413: COMMON_ERRORS[413]}
ROUTE_ERRORS: dict[str, dict[int, str]] = {
    "/sagas/{saga_type}": {
        404: "Unknown saga type",
        409: "Idempotency-Key reused with another body",
        413: "Request body, or the input for this saga type, too large",
    },
    "/sagas/{saga_id}": {404: "No such saga"},
    "/sagas/{saga_id}/cancel": {404: "No such saga", 409: "Past the pivot, or finished"},
    "/sagas/{saga_id}/approve": {
        403: "Wrong API key, a key without the approve role, or the key that started it "
        "(four eyes)",
        404: "No such saga",
        409: "Nothing waits for a decision",
    },
    "/sagas/{saga_id}/reject": {404: "No such saga", 409: "Nothing waits for a decision"},
    "/sagas/{saga_id}/compensations/retry": {
        404: "No such saga",
        409: "The saga is not compensation_failed",
    },
    "/sagas/{saga_id}/steps/{step}/resolve": {
        404: "No such saga",
        409: "The step's compensation has not failed",
    },
    "/sagas/{saga_id}/events": {404: "No such saga", 429: "Too many event streams open"},
    "/saga-types/{saga_type}": {404: "Unknown saga type"},
}
PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}


def install(app: FastAPI) -> None:
    """Serve the documented schema at /openapi.json and /docs (built once, on first use)."""
    app.openapi = lambda: app.openapi_schema or _document(app)  # type: ignore[method-assign]


def _document(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(
        title=app.title, version=app.version, summary=app.summary, routes=app.routes
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            _document_errors(path, operation)
    schema["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    app.openapi_schema = schema
    return schema


def _document_errors(path: str, operation: dict[str, Any]) -> None:
    """Every error the operation can answer, as a problem; and its security, if it has none."""
    responses = operation.setdefault("responses", {})
    if operation.get("tags") == ["health"]:
        errors = HEALTH_ERRORS
        if path == "/readyz":
            responses["503"] = {
                "description": "Not ready",
                "content": {"application/json": {"schema": {}}},
            }
    else:
        errors = {**COMMON_ERRORS, **AUTH_ERRORS, **ROUTE_ERRORS.get(path, {})}
        operation.setdefault("security", [{"bearer": []}])
    for code, description in errors.items():
        responses[str(code)] = {"description": description, "content": PROBLEM}
