"""What an activity knows about the saga step it is running for.

The workflow encodes the step into the activity id (``{step}/{phase}/{attempt}``), so an
activity needs no extra parameter to learn its idempotency key, and the key is stable across
retries and worker restarts: it depends only on the saga id (the workflow id) and the step.
"""

from __future__ import annotations

from dataclasses import dataclass

import temporalio.activity

FORWARD = "forward"
COMPENSATION = "compensation"


def idempotency_key_for(saga_id: str, step: str) -> str:
    return f"{saga_id}/{step}"


def activity_id_for(step: str, phase: str, attempt: int) -> str:
    return f"{step}/{phase}/{attempt}"


@dataclass(frozen=True)
class StepInfo:
    saga_id: str
    saga_type: str
    step: str
    phase: str
    attempt: int

    @property
    def idempotency_key(self) -> str:
        """The step's key: the same for every attempt of the action and of its compensation."""
        return idempotency_key_for(self.saga_id, self.step)


def step_info() -> StepInfo:
    """The saga step the current activity runs for. Call it only inside an activity."""
    try:
        info = temporalio.activity.info()
    except RuntimeError:
        raise RuntimeError("step_info() can only be called inside an activity") from None
    parts = info.activity_id.rsplit("/", 2)
    if len(parts) != 3 or not parts[2].isdigit():
        raise RuntimeError(
            f"activity {info.activity_type!r} (id {info.activity_id!r}) was not started by a saga"
        )
    step, phase, attempt = parts
    return StepInfo(
        saga_id=info.workflow_id or "",
        saga_type=info.workflow_type or "",
        step=step,
        phase=phase,
        attempt=int(attempt),
    )


def idempotency_key() -> str:
    """Shorthand for ``step_info().idempotency_key``."""
    return step_info().idempotency_key
