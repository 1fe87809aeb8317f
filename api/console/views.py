"""The saga page's pieces, computed here so that templates only lay them out: the diagram's
stages, the timeline's lanes and the operator actions that apply now."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from api.models import SagaPublic, StepPublic
from api.roles import Role, role_for
from engine import SagaStatus, UnknownSagaType
from engine.worker import get_definition


@dataclass(frozen=True)
class Node:
    """A step in the diagram: its name, kind and the state that colours it."""

    name: str
    kind: str
    status: str
    compensation: str | None


@dataclass(frozen=True)
class Bar:
    """A lane's bar on the timeline, as percentages of the saga's span."""

    left: float
    width: float
    status: str
    label: str


@dataclass(frozen=True)
class Lane:
    step: StepPublic
    forward: Bar | None
    compensation: Bar | None


@dataclass(frozen=True)
class Choice:
    """An operator action that applies now: the form's action, the role it needs, the step
    it is for (resolve) and whether it needs a reason."""

    action: str
    label: str
    role: Role
    step: str | None = None
    reason_required: bool = False


#: Each console action's API route, whose role (api.roles) the console requires too.
ROUTES = {
    "approve": "/sagas/{saga_id}/approve",
    "reject": "/sagas/{saga_id}/reject",
    "cancel": "/sagas/{saga_id}/cancel",
    "retry": "/sagas/{saga_id}/compensations/retry",
    "resolve": "/sagas/{saga_id}/steps/{step}/resolve",
}


def role_of(action: str) -> Role:
    return role_for("POST", ROUTES[action])


def stages(saga: SagaPublic) -> list[list[Node]]:
    """The definition's steps in the groups that run together, coloured by the saga's steps.

    Imperative sagas declare no steps: their steps as they ran, one per stage.
    """
    by_name = {s.name: s for s in saga.steps}
    try:
        groups = [[s.step_name for s in group] for group in get_definition(saga.type).groups]
    except UnknownSagaType:
        groups = []
    declared = {name for group in groups for name in group}
    groups += [[s.name] for s in saga.steps if s.name not in declared]
    return [[_node(name, by_name.get(name)) for name in group] for group in groups]


def _node(name: str, step: StepPublic | None) -> Node:
    if step is None:  # declared but not in this run (a newer definition): shown as pending
        return Node(name, "", "pending", None)
    compensation = step.compensation.status.value if step.compensation else None
    return Node(name, step.kind, step.status.value, compensation)


def timeline(saga: SagaPublic, now: datetime | None = None) -> tuple[list[Lane], float]:
    """One lane pair per step, placed on the saga's span; and the span in seconds."""
    now = now or datetime.now(UTC)
    starts = [saga.created_at]
    ends = [saga.updated_at]
    for s in saga.steps:
        for part in (s, s.compensation):
            if part is not None and part.started_at is not None:
                starts.append(part.started_at)
                ends.append(part.ended_at or now)
    t0, t1 = min(starts), max(ends)
    span = max((t1 - t0).total_seconds(), 0.001)

    def bar(
        started: datetime | None, ended: datetime | None, status: str, attempts: int
    ) -> Bar | None:
        if started is None:
            return None
        end = ended or now
        left = (started - t0).total_seconds() / span * 100
        width = max((end - started).total_seconds() / span * 100, 0.5)
        took = (end - started).total_seconds()
        label = f"{status}, {attempts} attempt{'s' if attempts != 1 else ''}, {took:.2f} s"
        return Bar(round(left, 2), round(min(width, 100 - left), 2), status, label)

    lanes = []
    for s in saga.steps:
        c = s.compensation
        lanes.append(
            Lane(
                s,
                bar(s.started_at, s.ended_at, _forward_outcome(s), s.attempts),
                bar(c.started_at, c.ended_at, c.status.value, c.attempts) if c else None,
            )
        )
    return lanes, span


#: Step statuses after the compensation began: the forward action itself had succeeded.
_UNDONE = {"compensating", "compensated", "compensation_failed", "resolved"}


def _forward_outcome(step: StepPublic) -> str:
    undone = step.status.value in _UNDONE and step.error is None
    return "succeeded" if undone else step.status.value


def choices(saga: SagaPublic) -> list[Choice]:
    """The operator actions that apply to the saga as it is now."""
    found: list[Choice] = []
    if saga.status is SagaStatus.AWAITING_APPROVAL:
        found += [
            Choice("approve", "Approve", role_of("approve")),
            Choice("reject", "Reject", role_of("reject")),
        ]
    if saga.status in (SagaStatus.RUNNING, SagaStatus.AWAITING_APPROVAL) and not saga.past_pivot:
        found.append(Choice("cancel", "Cancel and compensate", role_of("cancel")))
    if saga.status is SagaStatus.COMPENSATION_FAILED:
        found.append(Choice("retry", "Retry failed compensations", role_of("retry")))
        for step in saga.steps:
            if step.compensation is not None and step.compensation.status.value == "failed":
                found.append(
                    Choice(
                        "resolve",
                        f"Resolve {step.name} by hand",
                        role_of("resolve"),
                        step=step.name,
                        reason_required=True,
                    )
                )
    return found


def version(saga: SagaPublic) -> str:
    """What changes whenever the page would: the live script reloads when it differs."""
    return f"{saga.status.value}|{saga.updated_at.isoformat()}|{len(saga.actions)}"


def pretty(data: Any) -> str:
    """The (masked) input or result as indented JSON."""
    return json.dumps(data, indent=2, sort_keys=True, default=str, ensure_ascii=False)
