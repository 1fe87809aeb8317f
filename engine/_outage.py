"""Waiting out a participant's outage, inside the saga workflow.

When the worker's guard refuses an attempt (the participant's circuit is open, or its
bulkhead full: see ``engine._participants``), the attempt loop hands the refusal here. The
step waits on a durable timer until the guard's retry time, visibly (``waiting`` in the step's
state, an event on its span), without spending its retry budget, for at most its outage
patience in all; then it gives up as if its retries were exhausted. A compensation has no
patience limit: it waits as long as it takes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

from opentelemetry.trace import Span
from temporalio import workflow

from engine._participants import Refusal
from engine._state import CompensationState, ParticipantWait, StepState

# Sagas refused together come back spread over this share of the wait, not all at once.
_JITTER = 0.2
# Successive refusals by a full bulkhead wait 1, 2, 4... times its retry delay, up to this.
_BULKHEAD_BACKOFF_CAP = 16
# A compensation refused by an open circuit waits at least as long as it has waited so far
# (its waits double from the cool-down), up to this (plus jitter): see ``OutageWait._delay``.
COMPENSATION_WAIT_CAP = timedelta(minutes=5)


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
        if self._patience is not None and self.waited >= self._patience:
            self._counter.waiting = None
            raise OutageExhausted(
                f"{refusal.participant} unavailable ({refusal.kind.replace('_', ' ')}) "
                f"for the step's whole outage patience ({self._patience})"
            )
        waiting = self._counter.waiting
        if waiting is None or waiting.participant != refusal.participant:
            now = workflow.now()
            waiting = ParticipantWait(
                participant=refusal.participant, reason=refusal.kind, since=now, until=now
            )
            self._counter.waiting = waiting
            workflow.logger.info(
                "waiting on participant",
                extra={"participant": refusal.participant, "reason": refusal.kind},
            )
        else:
            waiting.refusals += 1
        waiting.reason = refusal.kind
        delay = self._delay(refusal, waiting.refusals)
        waiting.until = workflow.now() + delay
        self._span.add_event(
            f"participant {refusal.kind.replace('_', ' ')}",
            {
                "saga.participant": refusal.participant,
                "saga.wait_until": waiting.until.isoformat(),
                "saga.refusals": waiting.refusals,
            },
        )
        self._on_change()
        try:
            await workflow.sleep(delay)
        except asyncio.CancelledError:
            self._counter.waiting = None
            raise
        self.waited += delay

    def _delay(self, refusal: Refusal, refusals: int) -> timedelta:
        delay = refusal.retry_after
        if refusal.kind in ("bulkhead_full", "unreachable"):
            # The guard cannot tell when a slot frees, nor an activity when its participant
            # will answer again: back off, so that many waiting sagas do not keep a busy
            # worker busier with refused calls.
            delay *= min(2 ** (refusals - 1), _BULKHEAD_BACKOFF_CAP)
        if isinstance(self._counter, CompensationState) and refusal.kind != "bulkhead_full":
            # A compensation waits on an open circuit without limit and never continues as
            # new: at one refused attempt and one timer per cool-down (~11 history events per
            # 10 s), an outage of ~14 h would take it past Temporal's history limit. So each
            # wait lasts at least as long as all the waits before it (doubling from the
            # cool-down; ``waited`` spans the failed probes in between, which start a new
            # ``ParticipantWait``), up to the cap: days of outage fit (docs/operations.md).
            # Forward steps keep to the cool-down: their patience bounds them, and they can
            # continue as new.
            delay = max(delay, min(self.waited, COMPENSATION_WAIT_CAP))
        delay *= 1 + _JITTER * workflow.random().random()
        if self._patience is not None:
            delay = min(delay, self._patience - self.waited)
        return delay

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
