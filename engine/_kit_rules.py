"""The execution rules, checked on one run of a saga: its states and the fakes' call log.

Each rule is a function of a :class:`Run` that returns what it found wrong (nothing: the rule
holds). They judge behaviour, not a snapshot: which effects were taken and undone, in which
order, with which keys, and the status the saga reached (DESIGN.md, "Execution rules").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from engine._kit_fakes import Call
from engine._state import SagaState, SagaStatus, StepStatus
from engine._step_info import COMPENSATION, FORWARD, idempotency_key_for


@dataclass
class Run:
    """One run of a scenario, as a check sees it."""

    scenario: str
    saga_id: str
    #: The final state (for a saga that parked in compensation_failed: after the kit's retry).
    state: SagaState
    #: Every call of the saga's fakes, in the order they started.
    calls: list[Call]
    #: The state seen when the saga parked in compensation_failed, if it did.
    parked: SagaState | None = None
    #: Whether the kit's cancel was refused (the pivot had started).
    cancel_refused: bool = False
    #: Steps whose compensation the scenario made fail for good.
    failing_undos: frozenset[str] = frozenset()
    #: The stage each step ran in (steps of one Parallel group share one): undo order.
    stage_of: dict[str, int] = field(default_factory=dict)
    #: Steps that declare a compensation.
    has_undo: frozenset[str] = frozenset()
    pivot: str | None = None
    #: Retriable steps: they come after the point of no return and are never undone.
    retriable: frozenset[str] = frozenset()
    #: Steps whose fallback declares a compensation (by step name).
    fallback_undo: frozenset[str] = frozenset()
    #: The activity of each step's fallback (by step name), for ``served_by``.
    fallbacks: dict[str, str] = field(default_factory=dict)

    def forward(self, step: str, fallback: bool | None = None) -> list[Call]:
        """The step's forward calls: the action's (``fallback=False``), its fallback's
        (``True``) or both (None)."""
        return [
            c
            for c in self.calls
            if c.step == step and c.phase == FORWARD and fallback in (None, c.fallback)
        ]

    def undos(self, step: str, fallback: bool | None = None) -> list[Call]:
        """The step's compensation calls: the action's, its fallback's, or both."""
        return [
            c
            for c in self.calls
            if c.step == step and c.phase == COMPENSATION and fallback in (None, c.fallback)
        ]

    def took_effect(self, step: str, fallback: bool | None = None) -> bool:
        return any(c.effect for c in self.forward(step, fallback))

    @property
    def steps_called(self) -> list[str]:
        return list(dict.fromkeys(c.step for c in self.calls if c.phase == FORWARD))

    @property
    def effects(self) -> list[tuple[str, bool]]:
        """What may take effect, per activity: (step, whether its fallback), as called."""
        return list(dict.fromkeys((c.step, c.fallback) for c in self.calls if c.phase == FORWARD))

    def undoable(self, step: str, fallback: bool) -> bool:
        """Whether that activity has a compensation."""
        return step in (self.fallback_undo if fallback else self.has_undo)

    def failed_optional(self, step: str) -> bool:
        """An optional step that failed: it undoes itself (if it may hold something) as the
        saga goes on, not as part of the saga's compensation."""
        try:
            return self.state.step(step).status is StepStatus.FAILED_OPTIONAL
        except KeyError:
            return False

    def served_by_fallback(self, step: str) -> bool:
        return any(c.outcome == "succeeded" for c in self.forward(step, True))

    def undone_at_once(self, step: str, fallback: bool) -> bool:
        """Effects a saga undoes as it goes on, not when it compensates: a failed optional
        step's, and the action a fallback replaced (its outcome unknown)."""
        return self.failed_optional(step) or (not fallback and self.served_by_fallback(step))

    def saga_undos(self) -> list[Call]:
        """The compensation calls of the saga's compensation (undos at once left out)."""
        return [
            c
            for c in self.calls
            if c.phase == COMPENSATION and not self.undone_at_once(c.step, c.fallback)
        ]


def effect_name(step: str, fallback: bool) -> str:
    return f"{step}'s fallback" if fallback else step


Rule = Callable[[Run], list[str]]


def effects_match_status(run: Run) -> list[str]:
    """Completed: nothing undone but what the saga does not keep (a failed optional step's
    effect, the action a fallback replaced: those undone once, as the saga went on).
    Compensated: every effect undone exactly once. Failed: nothing was done that needed
    undoing. Counted per activity: a step served by its fallback has two effects (the
    fallback's, and the action's whose outcome is unknown), each undone by its own
    compensation."""
    status = run.state.status
    problems = []
    if status is SagaStatus.COMPLETED:
        for step in dict.fromkeys(c.step for c in run.saga_undos()):
            problems.append(f"completed, yet {step}'s compensation was called")
    for step, fallback in run.effects:
        name = effect_name(step, fallback)
        done = [c for c in run.undos(step, fallback) if c.outcome == "succeeded"]
        if len(done) > 1:
            problems.append(f"{name} was undone {len(done)} times")
        if not run.undoable(step, fallback) or not run.took_effect(step, fallback):
            continue
        if run.undone_at_once(step, fallback):
            if not done and not resolved(run, step):
                why = "failed (optional)" if run.failed_optional(step) else "was replaced"
                problems.append(f"{name} took effect, {why} and was left active")
            continue
        if status is SagaStatus.FAILED:
            problems.append(f"failed (nothing to compensate), yet {name} took effect")
        elif status is SagaStatus.COMPENSATED and not done and not resolved(run, step):
            problems.append(f"{name} took effect and was never undone")
    return problems


def resolved(run: Run, step: str) -> bool:
    """An operator resolved the step's compensation by hand."""
    return run.state.step(step).status is StepStatus.RESOLVED


def undone_in_reverse_order(run: Run) -> list[str]:
    """A step's compensation starts only once the compensations of every later stage have
    been tried (a parallel group's in any order)."""
    first: dict[str, Call] = {}
    for call in run.saga_undos():
        first.setdefault(call.step, call)
    problems = []
    for early, early_call in first.items():
        for late, _ in first.items():
            if run.stage_of.get(late, -1) <= run.stage_of.get(early, -1):
                continue
            before = [c for c in run.undos(late) if c.seq < early_call.seq]
            if not before or any(c.ended is None or c.ended > early_call.seq for c in before):
                problems.append(f"{early} was undone before {late} (which ran after it)")
    return problems


def nothing_undone_after_the_pivot(run: Run) -> list[str]:
    """Once the pivot has succeeded, or a retriable step (which is never undone, so comes after
    the point of no return) has been called, nothing is compensated."""
    undos = run.saga_undos()
    if not undos:
        return []
    first = undos[0].seq
    problems = []
    if run.pivot is not None and any(c.outcome == "succeeded" for c in run.forward(run.pivot)):
        problems.append(f"compensated after the pivot {run.pivot} succeeded")
    for step in sorted(run.retriable):
        if any(c.seq < first for c in run.forward(step)):
            problems.append(f"compensated after the retriable step {step} was called")
    return problems


def no_undo_without_a_call(run: Run) -> list[str]:
    """An activity never called, or only refused, has nothing to undo (a fallback's
    compensation needs the fallback's own call; the action's, the action's)."""
    problems = []
    undone = dict.fromkeys((c.step, c.fallback) for c in run.calls if c.phase == COMPENSATION)
    for step, fallback in undone:
        name = effect_name(step, fallback)
        forward = run.forward(step, fallback)
        if not forward:
            problems.append(f"{name} was compensated but never called")
        elif all(c.outcome == "refused" for c in forward):
            problems.append(f"{name} was compensated after a refusal")
    return problems


def fallbacks_serve_only_for_good_failures(run: Run) -> list[str]:
    """A fallback runs only once its step's action has failed for good, not by a refusal,
    and the step then records it (``served_by``)."""
    problems = []
    for step in dict.fromkeys(c.step for c in run.calls if c.fallback and c.phase == FORWARD):
        action = run.forward(step, False)
        first = min(c.seq for c in run.forward(step, True))
        if any(c.outcome == "refused" for c in action):
            problems.append(f"{step}'s fallback ran although its action was refused")
        if any(c.ended is None or c.ended > first for c in action):
            problems.append(f"{step}'s fallback ran before its action had failed")
        try:
            served = run.state.step(step).served_by
        except KeyError:
            served = None
        expected = run.fallbacks.get(step)
        if expected is not None and served != expected:
            problems.append(f"{step}'s fallback ran, yet served_by is {served!r}")
    for state in run.state.steps:
        if state.served_by is not None and not run.forward(state.name, True):
            problems.append(f"{state.name} says {state.served_by} served, yet it was not called")
    return problems


def parked_with_exactly_the_failed_undos(run: Run) -> list[str]:
    if not run.failing_undos:
        if run.parked is not None:
            return ["parked in compensation_failed, yet no compensation was made to fail"]
        return []
    if run.parked is None:
        return [f"never parked in compensation_failed ({', '.join(sorted(run.failing_undos))})"]
    left = {s.name for s in run.parked.steps if s.status is StepStatus.COMPENSATION_FAILED}
    problems = []
    if left != set(run.failing_undos):
        problems.append(f"parked with {sorted(left)} failed, expected {sorted(run.failing_undos)}")
    for state in run.parked.steps:
        undone = state.status is StepStatus.COMPENSATED
        undoable = run.undoable(state.name, False) or run.undoable(state.name, True)
        if state.name in left or not undoable or run.failed_optional(state.name):
            continue
        if run.took_effect(state.name) and not undone:
            problems.append(f"parked before {state.name} was undone ({state.status.value})")
    return problems


def keys_are_stable(run: Run) -> list[str]:
    """Every attempt of a step, forward or compensation, carries the step's one key."""
    problems = []
    for call in run.calls:
        expected = idempotency_key_for(run.saga_id, call.step)
        keys = {call.idempotency_key} | ({call.arg_key} if call.arg_key else set())
        if keys != {expected}:
            problems.append(
                f"{call.step} {call.phase} attempt {call.attempt} carried {sorted(keys)}, "
                f"not {expected}"
            )
    for state in run.state.steps:
        if state.idempotency_key != idempotency_key_for(run.saga_id, state.name):
            problems.append(f"{state.name}'s recorded key is {state.idempotency_key}")
    return problems


RULES: list[tuple[str, Rule]] = [
    ("effects", effects_match_status),
    ("order", undone_in_reverse_order),
    ("pivot", nothing_undone_after_the_pivot),
    ("refusals", no_undo_without_a_call),
    ("fallbacks", fallbacks_serve_only_for_good_failures),
    ("parked", parked_with_exactly_the_failed_undos),
    ("keys", keys_are_stable),
]


def check_rules(run: Run) -> list[str]:
    return [f"{name}: {problem}" for name, rule in RULES for problem in rule(run)]
