"""The failure points of a saga, found from its definition and from a first run.

A first run with every fake succeeding (the baseline) shows the steps a saga reaches with the
given input: all the declared ones for a declarative saga (less those whose ``when`` is false),
and for an imperative saga the path its code takes with the fakes' answers. Every reached step
then gives scenarios; what each must end in follows from the steps' kinds and stages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from engine._kit_fakes import FALLBACK, FALLBACK_COMPENSATION, Behaviour, Fault
from engine._state import SagaStatus
from engine._step import StepKind
from engine._step_info import COMPENSATION, FORWARD

COMPLETED = frozenset({SagaStatus.COMPLETED})

#: How often a retriable step is refused or loses its answer before it succeeds.
RETRIABLE_FAULTS = 2
#: How often a compensation fails (after taking effect) before it succeeds.
UNDO_FAULTS = 2


@dataclass(frozen=True)
class Scenario:
    name: str
    expected: frozenset[SagaStatus]
    faults: dict[tuple[str, str], Behaviour] = field(default_factory=dict)
    #: Cancel once this step's fake is hanging.
    cancel_at: str | None = None
    #: The cancel must be refused (the pivot has started): the fake is then let go.
    cancel_refused: bool = False
    #: What the kit answers a step awaiting approval: approve, reject, or let it time out.
    approval: str = "approve"
    #: Stop the worker once these steps' fakes hang, then start another.
    restart_after: tuple[str, ...] = ()
    #: Compensations failing for good: the saga must park; the kit then heals and retries.
    failing_undos: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Shape:
    """What the baseline run showed: reached steps, their stage, kind and compensation."""

    steps: tuple[str, ...]
    stage_of: dict[str, int]
    kinds: dict[str, StepKind]
    has_undo: frozenset[str]
    approvals: tuple[str, ...]
    #: Steps whose retries never give up (maximum_attempts=0, no schedule-to-close).
    endless: frozenset[str]
    imperative: bool
    #: ``optional=True`` steps: when they fail for good the saga goes on.
    optional: frozenset[str] = frozenset()
    #: Steps with a fallback (by name: the fallback's activity name).
    fallbacks: dict[str, str] = field(default_factory=dict)
    #: Steps whose fallback declares a compensation.
    fallback_undo: frozenset[str] = frozenset()
    #: Steps that ran as local activities (the fast path).
    local: frozenset[str] = frozenset()

    @property
    def pivot(self) -> str | None:
        return next((s for s in self.steps if self.kinds[s] is StepKind.PIVOT), None)

    @property
    def stages(self) -> list[tuple[str, ...]]:
        found: dict[int, list[str]] = {}
        for step in self.steps:
            found.setdefault(self.stage_of[step], []).append(step)
        return [tuple(found[i]) for i in sorted(found)]

    def past_pivot(self, step: str) -> bool:
        """Whether ``step`` starts past the point of no return (a cancel is refused there):
        the pivot, or else the first retriable step (the definition's own rule)."""
        ends = [s for s in self.steps if self.kinds[s] in (StepKind.PIVOT, StepKind.RETRIABLE)]
        return bool(ends) and self.stage_of[step] >= min(self.stage_of[s] for s in ends)

    def failing(self, step: str, *, undone_itself: bool) -> frozenset[SagaStatus]:
        """The end of a saga whose ``step`` fails for good before the point of no return."""
        if self.imperative:
            # Its code may catch the failure and go on, and it declares its compensations
            # only as it runs: any end will do, the rules judge the run.
            return frozenset({SagaStatus.COMPENSATED, SagaStatus.FAILED, SagaStatus.COMPLETED})
        stage = self.stage_of[step]
        undo = any(
            s in self.has_undo and self.stage_of[s] <= stage and (s != step or undone_itself)
            for s in self.steps
        )
        return frozenset({SagaStatus.COMPENSATED if undo else SagaStatus.FAILED})

    def gives_up(self, step: str, *, undone_itself: bool) -> frozenset[SagaStatus]:
        """The end of a saga whose ``step`` fails for good (refused, or its retries spent):
        an optional step's saga goes on and completes; else as ``failing``. (A rejected
        approval or a cancel is not the step failing: an optional step does not save those.)
        """
        if step in self.optional and not self.imperative:
            return COMPLETED
        return self.failing(step, undone_itself=undone_itself)


def forward_scenarios(shape: Shape) -> list[Scenario]:
    """Each step refused, each step's outcome unknown, a cancel before and during each."""
    found = [Scenario("completes", COMPLETED)]
    for step in shape.steps:
        kind = shape.kinds[step]
        if kind is StepKind.RETRIABLE:
            found.append(
                Scenario(
                    f"{step} refused {RETRIABLE_FAULTS}x (retriable)",
                    COMPLETED,
                    {(step, FORWARD): Behaviour(Fault.REFUSE, times=RETRIABLE_FAULTS)},
                )
            )
            found.append(
                Scenario(
                    f"{step} outcome unknown {RETRIABLE_FAULTS}x (retriable)",
                    COMPLETED,
                    {(step, FORWARD): Behaviour(Fault.TIME_OUT, RETRIABLE_FAULTS, True)},
                )
            )
        else:
            found.append(
                Scenario(
                    f"{step} refused",
                    shape.gives_up(step, undone_itself=False),
                    {(step, FORWARD): Behaviour(Fault.REFUSE, message="refused by the kit")},
                )
            )
            if step not in shape.endless:
                lost = {(step, FORWARD): Behaviour(Fault.TIME_OUT, None, True)}
                # Failed for good, not refused: its fallback (if any) serves, and the saga
                # completes; else the step fails with its outcome unknown.
                served = COMPLETED if step in shape.fallbacks else None
                found.append(
                    Scenario(
                        f"{step} outcome unknown",
                        served or shape.gives_up(step, undone_itself=True),
                        lost,
                    )
                )
                if served:
                    found += fallback_scenarios(shape, step, lost)
    for step in shape.steps:
        for after_effect, label in ((False, "before it takes effect"), (True, "mid-call")):
            refused = shape.past_pivot(step)
            found.append(
                Scenario(
                    f"cancel {label}: {step}" + (" (refused)" if refused else ""),
                    COMPLETED if refused else shape.failing(step, undone_itself=True),
                    {(step, FORWARD): Behaviour(Fault.HANG, 1, after_effect)},
                    cancel_at=step,
                    cancel_refused=refused,
                )
            )
    return found


def fallback_scenarios(
    shape: Shape, step: str, lost: dict[tuple[str, str], Behaviour]
) -> list[Scenario]:
    """The action failed for good (``lost``), and its fallback refuses, or fails for good
    too (after taking effect): the step fails, its action's outcome unknown (undone by its
    own compensation), and whatever the fallback did undone by the fallback's."""
    end = shape.gives_up(step, undone_itself=True)
    refuse = Behaviour(Fault.REFUSE, message="refused by the kit")
    unknown = Behaviour(Fault.TIME_OUT, None, True)
    return [
        Scenario(f"{step} outcome unknown, its fallback refused", end,
                 {**lost, (step, FALLBACK): refuse}),
        Scenario(f"{step} outcome unknown, its fallback's outcome unknown", end,
                 {**lost, (step, FALLBACK): unknown}),
    ]  # fmt: skip


def approval_scenarios(shape: Shape, *, timeout: bool) -> list[Scenario]:
    how = "times out" if timeout else "rejected"
    return [
        Scenario(
            f"approval of {step} {how}",
            shape.failing(step, undone_itself=False),
            approval="time_out" if timeout else "reject",
        )
        for step in shape.approvals
    ]


def restart_scenarios(shape: Shape) -> list[Scenario]:
    stages = shape.stages
    return [
        Scenario(
            f"worker restarted after {', '.join(stage)}",
            COMPLETED,
            {(step, FORWARD): Behaviour(Fault.HANG, 1, False) for step in stage},
            restart_after=stage,
        )
        for stage in stages[:-1]
    ]


def undo_scenarios(
    step: str, trigger: Scenario, seen: SagaStatus, *, fallback: bool = False
) -> list[Scenario]:
    """``step``'s compensation (or its fallback's) failing, in a run (``trigger``) that
    compensates it."""
    base = dict(trigger.faults)
    flaky = Behaviour(Fault.FAIL, UNDO_FAULTS, True)
    # For good: refused (the participant says it can no longer be undone), which parks the
    # saga at once. Transient failures park it too, once the compensation's budget (about an
    # hour of patient retries) is spent: the same end, 65 attempts later.
    for_good = Behaviour(Fault.REFUSE, message="the kit refuses to undo")
    phase = FALLBACK_COMPENSATION if fallback else COMPENSATION
    name = f"{step}'s fallback" if fallback else step
    return [
        Scenario(
            f"undo of {name} fails {UNDO_FAULTS}x, then succeeds ({trigger.name})",
            frozenset({seen}),
            {**base, (step, phase): flaky},
            cancel_at=trigger.cancel_at,
            approval=trigger.approval,
        ),
        Scenario(
            f"undo of {name} fails for good ({trigger.name})",
            frozenset({seen}),
            {**base, (step, phase): for_good},
            cancel_at=trigger.cancel_at,
            approval=trigger.approval,
            failing_undos=frozenset({step}),
        ),
    ]


def pick_trigger(
    step: str, candidates: Sequence[tuple[Scenario, bool, SagaStatus]]
) -> tuple[Scenario, SagaStatus] | None:
    """The first scenario whose run undid ``step`` and met its rules: a later step's refusal
    preferred, then its own unknown outcome, then anything else."""
    good = [(s, seen) for s, undone, seen in candidates if undone]

    def rank(item: tuple[Scenario, SagaStatus]) -> int:
        name = item[0].name
        if name.endswith(" refused") and not name.startswith(step):
            return 0
        if name == f"{step} outcome unknown":
            return 1
        return 2

    return min(good, key=rank) if good else None


def approval_wait(step_timeout: timedelta) -> timedelta:
    return step_timeout + timedelta(seconds=1)
