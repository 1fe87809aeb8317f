"""How the engine's failures go to Temporal: as the SDK sends them, but an answer without a stack.

A BENIGN application error (engine._participants: a participant's refusal, an open circuit, a
full bulkhead) is an answer, not an incident: the saga records its type, message and details,
and where in the worker it passed says nothing an operator needs. The SDK formats a stack trace
for every failure, reading each frame's source line; for refusals that was about 3 % of a
worker's CPU on a mix where three sagas in four are refused (docs/benchmarks.md). Such an
error is sent without one; every other failure keeps its stack trace.
"""

from __future__ import annotations

from typing import TypeGuard

from temporalio.api.failure.v1 import Failure
from temporalio.converter import (
    DefaultFailureConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadConverter,
)
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory


def replica(error: ApplicationError, *, category: ApplicationErrorCategory) -> ApplicationError:
    """``error`` again, never raised (so without a traceback), with ``category``: the same
    message, details, type, retry decision and delay."""
    return ApplicationError(
        error.message,
        *error.details,
        type=error.type,
        non_retryable=error.non_retryable,
        next_retry_delay=error.next_retry_delay,
        category=category,
    )


def _is_answer(exception: BaseException) -> TypeGuard[ApplicationError]:
    return (
        isinstance(exception, ApplicationError)
        and exception.category == ApplicationErrorCategory.BENIGN
        and exception.__traceback__ is not None
        and exception.failure is None  # one decoded from Temporal is sent as it came
    )


def _without_traceback(error: ApplicationError) -> ApplicationError:
    """The same answer, with its causes, never raised: the SDK formats no stack for it. A
    copy, since a converter must leave what it is given as it was (whoever holds the error
    still sees where it was raised, and an error object may be shared)."""
    copy = replica(error, category=error.category)
    copy.__cause__ = error.__cause__
    copy.__context__ = error.__context__
    copy.__suppress_context__ = error.__suppress_context__
    return copy


class FailureConverter(DefaultFailureConverter):
    """The SDK's failure converter; a BENIGN application error goes without its stack trace."""

    def to_failure(
        self, exception: BaseException, payload_converter: PayloadConverter, failure: Failure
    ) -> None:
        if _is_answer(exception):
            exception = _without_traceback(exception)
        super().to_failure(exception, payload_converter, failure)


class SealedFailureConverter(FailureConverter, DefaultFailureConverterWithEncodedAttributes):
    """The same, with each failure's message and stack trace moved into a payload (sealed by
    engine._codec's codec)."""
