"""A saga drawn as a Mermaid flowchart: what ``sagas describe`` prints and the API serves."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from engine._step import Step, StepKind, activity_name


def mermaid(
    name: str, groups: Sequence[Sequence[Step]], activities: Sequence[Callable[..., Any]]
) -> str:
    """The flowchart of a saga's groups of steps; an imperative saga (no groups) is one box."""
    lines = ["flowchart LR", "    start((start))"]
    if not groups:
        names = ", ".join(activity_name(fn) for fn in activities)
        lines += [
            f'    run["{name}: imperative, may call {names}"]',
            "    start --> run --> done((done))",
        ]
        return "\n".join(lines)
    previous = ["start"]
    for number, group in enumerate(groups):
        parallel = len(group) > 1
        if parallel:
            lines.append(f'    subgraph parallel_{number}["in parallel"]')
        lines.extend(f"    {_node(step)}" for step in group)
        if parallel:
            lines.append("    end")
        current = [step.step_name for step in group]
        lines.append(f"    {' & '.join(previous)} --> {' & '.join(current)}")
        previous = current
    lines.append(f"    {' & '.join(previous)} --> done((done))")
    return "\n".join(lines)


def _node(step: Step) -> str:
    name = label = step.step_name
    if step.compensate is not None:
        label += f"<br/><i>undo: {activity_name(step.compensate)}</i>"
    if step.kind is StepKind.PIVOT:
        return f'{name}{{{{"{label}<br/>(pivot)"}}}}'
    if step.kind is StepKind.RETRIABLE:
        return f'{name}(["{label}<br/>(retried until done)"])'
    return f'{name}["{label}"]'
