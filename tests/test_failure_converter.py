"""engine._failure_converter: a BENIGN answer goes to Temporal without a stack trace; every
other failure keeps its own."""

from __future__ import annotations

from temporalio.api.failure.v1 import Failure
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from engine._codec import data_converter
from engine._failure_converter import FailureConverter, SealedFailureConverter
from engine._participants import as_benign


def raised(error: BaseException) -> BaseException:
    """``error`` as an activity hands it over: raised, so with a traceback."""
    try:
        raise error
    except BaseException as caught:
        return caught


def converted(error: BaseException, converter: FailureConverter | None = None) -> Failure:
    failure = Failure()
    (converter or FailureConverter()).to_failure(
        error, pydantic_data_converter.payload_converter, failure
    )
    return failure


def test_a_refusal_goes_without_a_stack_trace_and_keeps_the_rest() -> None:
    refusal = raised(as_benign(ApplicationError("no seats", {"left": 0}, type="Refused",
                                                non_retryable=True)))  # fmt: skip
    traceback = refusal.__traceback__
    failure = converted(refusal)
    assert failure.stack_trace == ""
    info = failure.application_failure_info
    assert (failure.message, info.type, info.non_retryable) == ("no seats", "Refused", True)
    assert info.category == ApplicationErrorCategory.BENIGN.value
    assert len(info.details.payloads) == 1
    # Only the conversion does without it: the error itself is left as it was.
    assert traceback is not None
    assert refusal.__traceback__ is traceback


def test_an_incident_keeps_its_stack_trace() -> None:
    for error in (
        ApplicationError("boom", type="Boom"),
        ApplicationError("no", type="Refused", non_retryable=True),  # not marked benign
        RuntimeError("a bug"),
    ):
        failure = converted(raised(error))
        assert "in raised" in failure.stack_trace, error


def test_the_cause_of_a_failure_is_judged_on_its_own() -> None:
    try:
        raise ApplicationError("step failed", type="StepFailed") from raised(
            as_benign(ApplicationError("no", type="Refused", non_retryable=True))
        )
    except ApplicationError as caught:
        failure = converted(caught)
    assert "in test_the_cause" in failure.stack_trace
    assert failure.cause.message == "no"
    assert failure.cause.stack_trace == ""


def test_sealed_failures_do_the_same() -> None:
    refusal = raised(as_benign(ApplicationError("no", type="Refused", non_retryable=True)))
    failure = converted(refusal, SealedFailureConverter())
    # The message goes into the encoded attributes (sealed by the codec), with no stack trace.
    assert (failure.message, failure.stack_trace) == ("Encoded failure", "")
    (attributes,) = pydantic_data_converter.payload_converter.from_payloads(
        [failure.encoded_attributes]
    )
    assert attributes["message"] == "no"
    assert attributes.get("stack_trace", "") == ""
    incident = converted(raised(ApplicationError("boom")), SealedFailureConverter())
    (attributes,) = pydantic_data_converter.payload_converter.from_payloads(
        [incident.encoded_attributes]
    )
    assert "in raised" in attributes["stack_trace"]


def test_the_engine_converters_use_it() -> None:
    assert data_converter().failure_converter_class is FailureConverter
    assert data_converter([b"k" * 32]).failure_converter_class is SealedFailureConverter
