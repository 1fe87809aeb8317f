"""When a saga continues as new, so that its history stays bounded however long it retries.

Every attempt is an activity in the saga's history, and a retriable step retries for ever: a
participant down for days would take the saga past Temporal's history limits, and Temporal
would terminate it. So the saga continues as new (a fresh run of the same workflow id, which
carries its state: ``engine._carry``) when Temporal suggests it, or when its history reaches
the limit it was started with (``SAGAS_HISTORY_EVENTS_LIMIT``; kept in the saga's memo, so
that every replay of the saga decides the same way).

Retries are what grows a history, so the attempt loops (``engine._attempts``) drive it:

* before each attempt a loop passes a *checkpoint*: once a continue-as-new is wanted, it parks
  there instead of starting the attempt;
* while an attempt is in flight it is counted, and the loop's own counters (attempts tried,
  the end of its time budget) are kept here for the carried state.

The workflow continues as new once a loop has parked, no attempt is in flight and no update
handler is running: the parked loops end with their run, and the next run resumes each of them
from its counters. Only the forward phase continues as new (the workflow enables it for that
phase only): a compensation retries transient errors for about an hour, and its waits on an
open circuit back off up to minutes (``engine._outage``), so its history stays within Temporal's
limits for days of outage (docs/operations.md); a saga waiting for an operator adds nothing.
The undos that the forward phase runs at once (a failed optional step's, a replaced
action's) are compensations too: their loops never park, and the run waits for them to end
(``undivided``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span
from temporalio import workflow

from engine._patches import CONTINUE_AS_NEW, later
from engine._step_info import FORWARD

#: The saga's memo keys: its history limit (set at the start), and how many history events
#: its earlier runs had (the store's revisions go on rising across runs).
LIMIT_MEMO = "sagas_history_limit"
BASE_MEMO = "sagas_revision_base"
# Sagas started by an engine that could not continue as new replay as they ran: a history
# without this marker never continues as new.
PATCH = CONTINUE_AS_NEW
#: The loop of a step's fallback (``{step}/fallback``): its counters are not its action's.
FALLBACK_LOOP = "fallback"


@dataclass
class LoopState:
    """An attempt loop's counters: what the next run needs to go on where this one stopped."""

    tried: int = 0
    budget_end: datetime | None = None
    waited: timedelta = timedelta(0)  # on participants that refused it (engine._outage)


class Continuation:
    """One saga run's continue-as-new: whether it is wanted, and whether it can happen now."""

    def __init__(self, limit: int | None = None, loops: dict[str, LoopState] | None = None):
        self.limit = limit
        self.enabled = False  # only while the forward phase runs
        self.draining = False  # wanted: loops park instead of starting attempts
        self.in_flight = 0
        # Checkpoints passed in this run (each followed by an attempt, or by whatever else the
        # loop waits for): a run goes once round a loop before it may continue as new, so each
        # run makes progress however small the limit.
        self.passed = 0
        self.loops: dict[str, LoopState] = {}  # the live loops' counters, by step/phase
        self.resumed: dict[str, LoopState] = dict(loops or {})  # from the previous run
        self.parked_spans: list[Span] = []
        self.held = 0  # undos under way in the forward phase (``hold``)
        self._refused = False

    def wanted(self) -> bool:
        if not self.enabled or self.passed == 0 or self._refused:
            return False
        info = workflow.info()
        if info.is_continue_as_new_suggested():
            return True
        return self.limit is not None and info.get_current_history_length() >= self.limit

    def ready(self) -> bool:
        """Continue as new now: a loop has parked, nothing is in flight, no handler runs."""
        return (
            self.draining
            and self.in_flight == 0
            and self.held == 0
            and workflow.all_handlers_finished()
        )

    @contextmanager
    def hold(self) -> Iterator[None]:
        """No continue-as-new until this block ends (see ``undivided``)."""
        self.held += 1
        try:
            yield
        finally:
            self.held -= 1

    def stop(self) -> None:
        """Leave the forward phase (finished, or cancelled): parked loops go on."""
        self.enabled = False
        self.draining = False

    async def checkpoint(self) -> None:
        """Before an attempt: park if the saga is to continue as new (returns at once if not)."""
        if not self.draining:
            if not self.wanted():
                self.passed += 1
                return
            if not later(PATCH):
                self._refused = True
                self.passed += 1
                return
            self.draining = True
        # The step's span (current in this loop's task) ends when the run continues as new.
        span = trace.get_current_span()
        self.parked_spans.append(span)
        await workflow.wait_condition(lambda: not self.draining)
        if span in self.parked_spans:
            self.parked_spans.remove(span)

    def end_parked_spans(self) -> None:
        for span in self.parked_spans:
            span.set_attribute("saga.outcome", "continued_as_new")
            span.end()
        self.parked_spans.clear()


class AttemptLoop:
    """What one attempt loop sees of its run's continuation (see ``attempt_loop``)."""

    def __init__(self, continuation: Continuation | None, key: str, *, parks: bool = True) -> None:
        self._continuation = continuation
        self._key = key
        self._parks = parks

    def resume(self, budget: timedelta | None) -> LoopState:
        """The loop's counters from the previous run, when the loop was running when the saga
        continued as new; else a new loop's (its time budget ending ``budget`` from now)."""
        carried = self._continuation.resumed.pop(self._key, None) if self._continuation else None
        if carried is not None:
            return carried
        return LoopState(budget_end=workflow.now() + budget if budget else None)

    def keep(self, state: LoopState) -> None:
        """The loop's counters as they are now, for the next run if the saga continues as new
        before the loop's next attempt (which keeps them again)."""
        if self._continuation is not None:
            self._continuation.loops[self._key] = state

    async def checkpoint(self) -> None:
        if self._continuation is not None and self._parks:
            await self._continuation.checkpoint()

    @contextmanager
    def attempt(self, state: LoopState) -> Iterator[None]:
        """Around one attempt's activity: counted in flight, the loop's counters kept."""
        continuation = self._continuation
        if continuation is None:
            yield
            return
        self.keep(state)
        continuation.in_flight += 1
        try:
            yield
        finally:
            continuation.in_flight -= 1


def revision_base(memo: Mapping[str, Any]) -> int:
    """The revision base a saga's memo holds (0 for a saga that never continued as new)."""
    value = memo.get(BASE_MEMO, 0)
    return value if isinstance(value, int) else 0


def attempt_loop(step: str, loop: str) -> AttemptLoop:
    """The continuation of the saga workflow running this loop (none in other workflows);
    ``loop``: the phase, or ``FALLBACK_LOOP`` (the key is ``{step}/{loop}``)."""
    # Only the forward phase's loops park: a compensation's loop never does, so that an undo
    # run in the forward phase (a failed optional step's, a replaced action's) goes to its
    # end in the run it started in (``undivided``); the next run could not resume it.
    parks = loop in (FORWARD, FALLBACK_LOOP)
    return AttemptLoop(_continuation(), f"{step}/{loop}", parks=parks)


@contextmanager
def undivided() -> Iterator[None]:
    """Around an undo that the forward phase runs (``engine._forward``): the saga does not
    continue as new before it ends. Its loops do not park, and while it sleeps between
    attempts (no attempt in flight) the run waits for it; the loops of other steps that
    parked meanwhile wait with the run."""
    continuation = _continuation()
    if continuation is None:
        yield
        return
    with continuation.hold():
        yield


def _continuation() -> Continuation | None:
    """The continuation of the saga workflow running (none in other workflows)."""
    continuation = getattr(workflow.instance(), "continuation", None)
    return continuation if isinstance(continuation, Continuation) else None
