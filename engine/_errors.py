"""The engine's exceptions.

    SagaError                      base of everything the engine raises on purpose
    ├── SagaDefinitionError        a definition is malformed (raised when it is built)
    ├── UnknownSagaType            no registered definition has that name
    ├── InvalidSagaInput           the input does not validate against the saga's model
    ├── SagaNotFound               no saga with that id
    ├── SagaAlreadyExists          a saga with that id was started before
    ├── SagaConflict               the request does not fit the saga's state (cancel after the
    │                              pivot, retry when nothing failed, resolve a healthy step...)
    └── TemporalUnavailable        the Temporal server cannot be reached

Each carries an ``http_status`` so that the API can turn any of them into a problem response
with one handler.
"""

from __future__ import annotations

from typing import Any


class SagaError(Exception):
    """Base of the engine's errors."""

    http_status = 500
    code = "saga_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class SagaDefinitionError(SagaError):
    """A saga definition is malformed; the message names the saga and the step."""

    code = "invalid_definition"


class UnknownSagaType(SagaError):
    http_status = 404
    code = "unknown_saga_type"


class InvalidSagaInput(SagaError):
    """The input failed validation; ``errors`` holds pydantic's error list."""

    http_status = 422
    code = "invalid_input"

    def __init__(self, message: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(message, errors=errors)
        self.errors = errors


class SagaNotFound(SagaError):
    http_status = 404
    code = "saga_not_found"


class SagaAlreadyExists(SagaError):
    http_status = 409
    code = "saga_exists"


class SagaConflict(SagaError):
    http_status = 409
    code = "conflict"


class TemporalUnavailable(SagaError):
    http_status = 503
    code = "temporal_unavailable"
