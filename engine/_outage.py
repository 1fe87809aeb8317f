"""Waiting out a participant's outage, inside the saga workflow.

When the worker's guard refuses an attempt (the participant's circuit is open, or its
bulkhead full: see ``engine._participants``), the attempt loop hands the refusal here. The
step waits on a durable timer until the guard's retry time, visibly (``waiting`` in the step's
state, an event on its span), without spending its retry budget, for at most its outage
patience in all; then it gives up as if its retries were exhausted. A compensation has no
patience limit: it waits as long as it takes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from opentelemetry.trace import Span
from temporalio import workflow

from engine._participants import Refusal
from engine._state import CompensationState, ParticipantWait, StepState

# Sagas refused together come back spread over this share of the wait, not all at once.
_JITTER = 0.2


class OutageExhausted(Exception):
    """The step has waited on the participant for its whole patience."""


class OutageWait:
    """The waits of one step (or compensation), across its attempts."""

    def __init__(
        self,
        counter: StepState | CompensationState,
        span: Span,
        patience: timedelta | None,
        on_change: Callable[[], None],
    ) -> None:
        self._counter = counter
        self._span = span
        self._on_change = on_change
        self._patience = patience
        self.waited = timedelta(0)

    async def wait(self, refusal: Refusal) -> None:
        """Sleep until the guard's retry time; raise OutageExhausted when patience is spent."""
        delay = refusal.retry_after * (1 + _JITTER * workflow.random().random())
        if self._patience is not None:
            left = self._patience - self.waited
            if left <= timedelta(0):
                raise OutageExhausted(
                    f"{refusal.participant} unavailable ({refusal.kind.replace('_', ' ')}) "
                    f"for the step's whole outage patience ({self._patience})"
                )
            delay = min(delay, left)
        now = workflow.now()
        waiting = self._counter.waiting
        if waiting is not None and waiting.participant == refusal.participant:
            waiting.reason = refusal.kind
            waiting.until = now + delay
            waiting.refusals += 1
        else:
            waiting = ParticipantWait(
                participant=refusal.participant, reason=refusal.kind, since=now, until=now + delay
            )
            self._counter.waiting = waiting
            workflow.logger.info(
                "waiting on participant",
                extra={"participant": refusal.participant, "reason": refusal.kind},
            )
        self._span.add_event(
            f"participant {refusal.kind.replace('_', ' ')}",
            {
                "saga.participant": refusal.participant,
                "saga.wait_until": waiting.until.isoformat(),
                "saga.refusals": waiting.refusals,
            },
        )
        self._on_change()
        await workflow.sleep(delay)
        self.waited += delay

    def answered(self) -> None:
        """An attempt reached the participant: the wait, if any, is over."""
        waiting = self._counter.waiting
        if waiting is None:
            return
        self._counter.waiting = None
        self._span.add_event(
            "participant available",
            {
                "saga.participant": waiting.participant,
                "saga.waited_seconds": (workflow.now() - waiting.since).total_seconds(),
            },
        )
