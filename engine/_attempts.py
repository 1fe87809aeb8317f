"""The attempt loop: one Temporal activity per attempt, retries and backoff owned by the saga.

Temporal could retry an activity by itself, but then the saga could not show how many
attempts a step has taken and its last error while it is still being retried, and an
operator's retry of a compensation that gave up could not start a fresh budget. So every
attempt is its own activity (``{step}/{phase}/{attempt}``, at most one try), and this loop
applies the step's retry policy:

* a business refusal (a non-retryable ``ApplicationError``, or an error type the policy or
  the step names) ends the loop at once where the caller says refusals are final;
* ``maximum_attempts`` (0: no limit) and the schedule-to-close budget end it otherwise;
* between attempts the loop sleeps on a durable timer, with capped exponential backoff;
* an attempt that the worker's guard refused without calling the participant (its circuit is
  open, its bulkhead full: ``engine._participants``) is not counted: the loop waits on the
  participant instead (``engine._outage``), up to ``patience``; after a wait on an open
  circuit the retry budget starts afresh, since the failures before it were the outage's.

The pure parts (``backoff``, ``gives_up``, ``is_refusal``) need no workflow and are unit
tested on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from opentelemetry.trace import Span
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    FailureError,
    TimeoutError,
    is_cancelled_exception,
)

from engine._continue import LoopState, attempt_loop
from engine._logging import redact_text
from engine._outage import OutageExhausted, OutageWait
from engine._participants import participant_refusal
from engine._patches import runs_local
from engine._state import CompensationState, StepState
from engine._step import Step
from engine._step_info import activity_id_for
from engine._tracing import record_failed_attempt

# One attempt per activity: the loop below decides about the next one.
_ONE_TRY = RetryPolicy(maximum_attempts=1)


class GaveUp(Exception):
    """The loop stopped trying; ``business_refusal`` says nothing took effect."""

    def __init__(self, message: str, *, business_refusal: bool) -> None:
        super().__init__(message)
        self.business_refusal = business_refusal


async def run_attempts(
    fn: Callable[..., Any],
    arg: Any,
    *,
    step: Step,
    phase: str,
    policy: RetryPolicy,
    counter: StepState | CompensationState,
    give_up_on_refusal: bool,
    span: Span,
    on_change: Callable[[], None],
    budget: timedelta | None = None,
    patience: timedelta | None = None,
    loop_name: str | None = None,
) -> Any:
    """Run ``fn(arg)`` until it succeeds or ``policy`` says stop; raise ``GaveUp`` then.

    ``counter`` records the attempts and the last error (the state the API shows);
    ``on_change`` is called whenever it changes. ``budget`` is the schedule-to-close timeout:
    the time all attempts together may take; ``patience`` the time the step may wait on a
    participant that its worker refuses to call (None: no limit); ``loop_name`` the loop's
    name for continue-as-new if not ``phase``. A cancelled attempt raises ``CancelledError``.
    """
    # Continue-as-new (engine._continue): the loop's counters go on in the next run.
    loop = attempt_loop(step.step_name, loop_name or phase)
    resumed = loop.resume(budget)
    budget_end, tried = resumed.budget_end, resumed.tried
    outage = OutageWait(counter, span, patience, on_change)
    outage.waited = resumed.waited  # the patience spent in earlier runs counts

    def counters() -> LoopState:
        return LoopState(tried=tried, budget_end=budget_end, waited=outage.waited)

    while True:
        await loop.checkpoint()
        start_to_close = step.start_to_close
        if budget_end is not None:
            left = budget_end - workflow.now()
            if left <= timedelta(0):
                raise GaveUp(
                    f"schedule-to-close timeout after {tried} attempts: {counter.error}",
                    business_refusal=False,
                )
            start_to_close = min(start_to_close, left)
        counter.attempts += 1
        tried += 1
        on_change()
        try:
            with loop.attempt(counters()):
                result = await _execute(fn, arg, step, phase, counter.attempts, start_to_close)
            outage.answered()
            return result
        except ActivityError as exc:
            if is_cancelled_exception(exc):
                raise asyncio.CancelledError() from None
            counter.error = describe(exc)
            refused = participant_refusal(exc)
            if refused is not None:
                # The participant was not called: not an attempt of the budget. And once its
                # circuit is open, the failures that led here belong to the outage, not to
                # this step: the budget starts afresh after the wait (the outage patience
                # still bounds how long the step waits in all).
                tried = 0 if refused.kind == "circuit_open" else tried - 1
                # Kept at once, for a continue-as-new during the wait or at the next
                # checkpoint: the counters kept before the attempt are stale now.
                loop.keep(counters())
                try:
                    await outage.wait(refused)
                except OutageExhausted as gave_up:
                    raise GaveUp(str(gave_up), business_refusal=False) from None
                loop.keep(counters())  # with the time waited
                continue
            outage.answered()
            refusal = is_refusal(
                exc, [*(policy.non_retryable_error_types or ()), *step.non_retryable]
            )
            workflow.logger.info(
                "attempt failed",
                extra={"step": step.step_name, "phase": phase, "attempt": counter.attempts},
            )
            reason = gives_up(
                policy, tried=tried, refusal=refusal, give_up_on_refusal=give_up_on_refusal
            )
            record_failed_attempt(
                span, attempt=counter.attempts, error=counter.error, retrying=reason is None
            )
            if reason is not None:
                message = counter.error if reason == "" else f"{reason}: {counter.error}"
                raise GaveUp(message, business_refusal=reason == "") from None
            on_change()
            await workflow.sleep(backoff(policy, tried))


async def _execute(
    fn: Callable[..., Any],
    arg: Any,
    step: Step,
    phase: str,
    attempt: int,
    start_to_close: timedelta,
) -> Any:
    """One attempt: a regular activity, or a local one for a ``local`` step (the fast path).

    A local activity runs in this worker without a round trip through the server's task
    queue: its result is recorded as a marker when the workflow task completes. The loop
    around it is the same, so attempts, backoff on durable timers, refusals and unknown
    outcomes behave as for regular steps. Steps that are not local keep exactly the commands
    they always issued (recorded histories replay unchanged).
    """
    activity_id = activity_id_for(step.step_name, phase, attempt)
    cancellation = workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED
    # A saga started with its list of local steps (engine._patches, generation 2) runs those
    # local, whatever the definition says now. Otherwise the patch lets a definition turn
    # steps local while sagas that had no local step are in flight: replaying their
    # histories, a step is regular where it was. It is one marker per saga, not per step:
    # turning one more step local in a saga that already has local steps takes a new
    # definition version (``Saga(..., version=2)``).
    if runs_local(step.step_name, step.local):
        try:
            return await _run_local(fn, arg, activity_id, start_to_close)
        except ActivityError as exc:
            if not is_cancelled_exception(exc):
                raise
            # Not the saga's cancel (that one comes as CancelledError, once the attempt has
            # ended): the worker cancelled the local activity, shutting down. Its outcome is
            # unknown: a failed attempt, retried by the policy, not a cancel of the saga.
            interrupted = ApplicationError(
                "the worker stopped the local attempt", type="LocalAttemptInterrupted"
            )
            raise _attempt_error(activity_id) from interrupted
        except FailureError as exc:
            # A local activity's failure may come back bare (the ApplicationError or timeout
            # itself): wrap it as a regular activity's would be, for the loop to read alike.
            raise _attempt_error(activity_id) from exc
    return await workflow.execute_activity(
        fn,
        arg,
        activity_id=activity_id,
        start_to_close_timeout=start_to_close,
        heartbeat_timeout=step.heartbeat,
        retry_policy=_ONE_TRY,
        cancellation_type=cancellation,
    )


def _attempt_error(activity_id: str) -> ActivityError:
    """An ActivityError for a local attempt's failure (its cause: what it is raised from)."""
    return ActivityError(
        "local activity failed",
        scheduled_event_id=0,
        started_event_id=0,
        identity="",
        activity_type=activity_id,
        activity_id=activity_id,
        retry_state=None,
    )


async def _run_local(
    fn: Callable[..., Any], arg: Any, activity_id: str, start_to_close: timedelta
) -> Any:
    """A local attempt that a cancel does not interrupt: the cancel takes effect once the
    attempt has ended (a local step is short, and bounded by its start-to-close timeout).

    Cancelling a running local activity is where the SDK's replay can order its resolution
    differently from the live run (a query or a worker restart then fails the saga as
    nondeterministic, found by engine.testing's explore); and Temporal's time-skipping test
    server does not deliver the cancel while the local activity holds the workflow task. An
    attempt that ends after the cancel is treated as a cancelled regular attempt is: outcome
    unknown, so the step is compensated.
    """
    attempt = asyncio.ensure_future(
        workflow.execute_local_activity(
            fn,
            arg,
            activity_id=activity_id,
            start_to_close_timeout=start_to_close,
            retry_policy=_ONE_TRY,
        )
    )
    try:
        return await asyncio.shield(attempt)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await attempt
        raise


def gives_up(
    policy: RetryPolicy, *, tried: int, refusal: bool, give_up_on_refusal: bool
) -> str | None:
    """Whether to stop after a failed attempt: None to go on, else why ("" for a refusal)."""
    if refusal and give_up_on_refusal:
        return ""
    if policy.maximum_attempts and tried >= policy.maximum_attempts:
        return f"gave up after {tried} attempts"
    return None


def backoff(policy: RetryPolicy, attempts_done: int) -> timedelta:
    """The wait before the next attempt: exponential from the initial interval, capped."""
    seconds = policy.initial_interval.total_seconds() * (
        policy.backoff_coefficient ** (attempts_done - 1)
    )
    if policy.maximum_interval is not None:
        seconds = min(seconds, policy.maximum_interval.total_seconds())
    return timedelta(seconds=seconds)


def is_refusal(exc: ActivityError, non_retryable_types: Sequence[str]) -> bool:
    """A business refusal: the participant said no, so retrying cannot help."""
    cause = exc.cause
    if isinstance(cause, ApplicationError):
        return cause.non_retryable or (cause.type or "") in non_retryable_types
    return False


def describe(exc: ActivityError) -> str:
    """The attempt's error as the saga records it: shown by the API, in spans and logs, so
    card tokens and numbers that a participant echoed are masked first."""
    cause = exc.cause
    if isinstance(cause, TimeoutError):
        return f"timed out ({cause.type.name.lower() if cause.type else 'timeout'})"
    if isinstance(cause, ApplicationError):
        kind = f"{cause.type}: " if cause.type else ""
        return redact_text(f"{kind}{cause.message}")
    return redact_text(str(cause or exc))
