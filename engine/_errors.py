"""The engine's exceptions.

    SagaError                      base of everything the engine raises on purpose
    ├── SagaDefinitionError        a definition is malformed (raised when it is built)
    ├── UnknownSagaType            no registered definition has that name
    ├── InvalidRequest             a request is malformed; ``errors`` names the fields
    │   ├── InvalidSagaInput       the input does not validate against the saga's model
    │   └── InvalidCursor          a list cursor that this API did not hand out
    ├── SagaNotFound               no saga with that id
    ├── SagaAlreadyExists          a saga with that id was started before
    ├── SagaConflict               the request does not fit the saga's state (cancel after the
    │                              pivot, retry when nothing failed, resolve a healthy step...)
    ├── KeyConflict                an idempotency key was used before with another request
    ├── StepFailed                 a forward step failed for good (inside a saga's workflow)
    ├── TemporalUnavailable        the Temporal server cannot be reached
    │   └── TemporalTimeout        a call to Temporal did not answer within its deadline
    ├── TemporalConfigError        the Temporal connection settings cannot be used
    ├── EmbeddedTemporalError      the embedded dev server cannot start
    └── EncryptionKeyError         a configured encryption key is malformed or unknown

Each carries an ``http_status`` and a stable ``code`` so that the API turns any of them into
a problem response with one handler; ``errors`` (field, message) is what a 422 lists.
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


class InvalidRequest(SagaError):
    """A request is malformed; ``errors`` holds pydantic-style errors (``loc``, ``msg``)."""

    http_status = 422
    code = "invalid_request"

    def __init__(self, message: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(message, errors=errors)
        self.errors = errors


class InvalidSagaInput(InvalidRequest):
    """The input failed validation; ``errors`` holds pydantic's error list."""

    code = "invalid_input"


class InvalidCursor(InvalidRequest, ValueError):
    """A list cursor that this API did not hand out."""

    def __init__(self, message: str) -> None:
        super().__init__(message, errors=[{"loc": ("query", "cursor"), "msg": message}])


class SagaNotFound(SagaError):
    http_status = 404
    code = "saga_not_found"


class SagaAlreadyExists(SagaError):
    http_status = 409
    code = "saga_exists"


class SagaConflict(SagaError):
    http_status = 409
    code = "conflict"


class KeyConflict(SagaError):
    """An idempotency key was used before with another request."""

    http_status = 409
    code = "idempotency_key_conflict"


class StepFailed(SagaError):
    """A forward step failed for good; the saga must compensate.

    Raised inside a saga's workflow; imperative sagas may catch it to take another branch.
    """

    code = "step_failed"

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"step {step!r} failed: {message}", step=step)
        self.step = step


class TemporalUnavailable(SagaError):
    http_status = 503
    code = "temporal_unavailable"


class TemporalTimeout(TemporalUnavailable):
    """A call to Temporal got no answer within its deadline: it may still take effect."""

    http_status = 504
    code = "temporal_timeout"


class TemporalConfigError(SagaError):
    """The Temporal connection settings cannot be used (a file missing, a key without cert)."""

    code = "temporal_config"


class EmbeddedTemporalError(SagaError):
    """The embedded Temporal dev server cannot start (binary missing, port taken...)."""

    code = "embedded_temporal"


class EncryptionKeyError(SagaError, ValueError):
    """A configured encryption key is not 32 bytes of base64, or a payload's key is unknown.

    A ValueError too, so that pydantic's settings validators report it as a bad setting.
    """

    code = "encryption_key"


# The types of the ApplicationErrors that the saga workflow raises, which the client maps back.
CONFLICT = SagaConflict.__name__
INVALID_INPUT = InvalidSagaInput.__name__
