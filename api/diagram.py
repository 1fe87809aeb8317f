"""A saga definition drawn as a Mermaid flowchart (for GET /saga-types/{type})."""

from __future__ import annotations

from typing import Any

from engine import Parallel, Saga, SagaDefinition, StepKind
from engine.worker import activity_name


def mermaid(definition: SagaDefinition[Any]) -> str:
    lines = ["flowchart LR", "    start((start))"]
    if not isinstance(definition, Saga):
        names = ", ".join(activity_name(fn) for fn in definition.activities)
        lines += [
            f'    run["{definition.name}: imperative, may call {names}"]',
            "    start --> run --> done((done))",
        ]
        return "\n".join(lines)
    previous = ["start"]
    for number, stage in enumerate(definition.stages):
        steps = stage.steps if isinstance(stage, Parallel) else (stage,)
        if isinstance(stage, Parallel):
            lines.append(f'    subgraph parallel_{number}["in parallel"]')
        for step in steps:
            name = step.step_name
            label = name
            if step.compensate is not None:
                label += f"<br/><i>undo: {activity_name(step.compensate)}</i>"
            if step.kind is StepKind.PIVOT:
                lines.append(f'    {name}{{{{"{label}<br/>(pivot)"}}}}')
            elif step.kind is StepKind.RETRIABLE:
                lines.append(f'    {name}(["{label}<br/>(retried until done)"])')
            else:
                lines.append(f'    {name}["{label}"]')
        if isinstance(stage, Parallel):
            lines.append("    end")
        current = [step.step_name for step in steps]
        lines.append(f"    {' & '.join(previous)} --> {' & '.join(current)}")
        previous = current
    lines.append(f"    {' & '.join(previous)} --> done((done))")
    return "\n".join(lines)
