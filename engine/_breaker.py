"""A circuit breaker for one participant: the pure state machine, with no clock of its own.

    closed ──(threshold consecutive transient failures)──> open
    open ──(cool-down over)──> half-open: the next call is the probe
    half-open ──(probe succeeds)──> closed
    half-open ──(probe fails)──> open again, for another cool-down

While open (and while a half-open probe is out) calls are refused with the time at which to
try again, so a saga can wait for that long on a durable timer instead of spending its retry
budget on a participant known to be down. A business refusal is an answer: the participant is
up, so it counts as a success here. Every method takes ``now`` (monotonic seconds), which
keeps the machine deterministic and unit-testable. The cool-down ends on the first of a call
(``admit``) or the worker's periodic ``tick``, so that the state (and its gauge) does not stay
open for ever on a worker that gets no more calls for the participant.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"

    @property
    def gauge(self) -> int:
        """The value of the ``sagas_circuit_state`` gauge: 0 closed, 1 half-open, 2 open."""
        return {CircuitState.CLOSED: 0, CircuitState.HALF_OPEN: 1, CircuitState.OPEN: 2}[self]


@dataclass(frozen=True)
class Transition:
    """A change of state, for the caller to log and count."""

    participant: str
    old: CircuitState
    new: CircuitState
    failures: int


class Breaker:
    """The breaker of one participant in one worker (not thread-safe: one event loop)."""

    def __init__(self, participant: str, *, threshold: int, cooldown: float) -> None:
        if threshold < 1 or cooldown <= 0:
            raise ValueError("a breaker needs threshold >= 1 and a positive cool-down")
        self.participant = participant
        self.threshold = threshold
        self.cooldown = cooldown
        self.state = CircuitState.CLOSED
        self.failures = 0  # consecutive transient failures
        self.open_until = 0.0
        self._probe_out = False

    def admit(self, now: float) -> tuple[float | None, Transition | None]:
        """Whether a call may go: ``(None, ...)`` if so, else the time to try again.

        The second item is the transition this caused (open -> half-open), if any.
        """
        if self.state is CircuitState.CLOSED:
            return None, None
        transition = self.tick(now)
        if self.state is CircuitState.OPEN:
            return self.open_until, None
        # Half-open: one probe at a time; the others come back after a cool-down (by then the
        # probe has decided, and a closed circuit lets them through).
        if self._probe_out:
            return now + self.cooldown, transition
        self._probe_out = True
        return None, transition

    def tick(self, now: float) -> Transition | None:
        """Time passes: an open circuit whose cool-down is over is half-open (the next call
        is its probe)."""
        if self.state is CircuitState.OPEN and now >= self.open_until:
            self._probe_out = False
            return self._move(CircuitState.HALF_OPEN)
        return None

    def succeeded(self) -> Transition | None:
        """The participant answered (a success or a business refusal)."""
        self.failures = 0
        self._probe_out = False
        if self.state is CircuitState.CLOSED:
            return None
        return self._move(CircuitState.CLOSED)

    def failed(self, now: float) -> Transition | None:
        """A transient failure (5xx, timeout, unreachable)."""
        self.failures += 1
        self._probe_out = False
        if self.state is CircuitState.HALF_OPEN or (
            self.state is CircuitState.CLOSED and self.failures >= self.threshold
        ):
            self.open_until = now + self.cooldown
            return self._move(CircuitState.OPEN)
        return None

    def released(self) -> None:
        """The call ended without telling anything (cancelled): a new probe may go."""
        self._probe_out = False

    def _move(self, new: CircuitState) -> Transition:
        old, self.state = self.state, new
        return Transition(self.participant, old, new, self.failures)
