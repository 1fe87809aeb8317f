"""What the console reads from the saga store beyond the API's list: counts per status and
the sagas that need a person (parked, awaiting a decision, waiting on a participant)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func
from sqlmodel import col, select

from engine import SagaStatus
from engine._store_tables import SagaRow
from engine.store import SagaStore, StoredSaga, mask_text

#: How many sagas of each kind the "needs a person" panel shows at most.
ATTENTION_LIMIT = 50


@dataclass(frozen=True)
class Attention:
    """A saga that needs a person, and why (one line an operator reads first; masked like
    the API's errors: a participant's refusal may echo a card number)."""

    saga: StoredSaga
    why: str


def counts(
    store: SagaStore,
    *,
    saga_type: str | None,
    created_after: datetime | None,
    created_before: datetime | None,
) -> dict[str, int]:
    """Sagas per status under the list's filters (all but the status itself)."""
    query = select(SagaRow.status, func.count()).group_by(col(SagaRow.status))
    if saga_type is not None:
        query = query.where(col(SagaRow.type) == saga_type)
    if created_after is not None:
        query = query.where(col(SagaRow.created_at) >= created_after)
    if created_before is not None:
        query = query.where(col(SagaRow.created_at) < created_before)
    with store.session() as s:
        found = {status: int(n) for status, n in s.exec(query).all()}
    return {status.value: found.get(status.value, 0) for status in SagaStatus}


def needing_a_person(store: SagaStore, *, saga_type: str | None) -> list[Attention]:
    """Parked sagas first, then those awaiting a decision, then steps waiting on a participant.

    Waits live in the steps' JSON, which SQLite and PostgreSQL query differently: the running
    and compensating sagas (newest ATTENTION_LIMIT of each) are read and looked at here.
    """
    found: list[Attention] = []
    for status in (SagaStatus.COMPENSATION_FAILED, SagaStatus.AWAITING_APPROVAL):
        page = store.page(saga_type=saga_type, status=status.value, limit=ATTENTION_LIMIT)
        found += [Attention(saga, mask_text(_why(saga)) or "") for saga in page.items]
    for status in (SagaStatus.RUNNING, SagaStatus.COMPENSATING):
        page = store.page(saga_type=saga_type, status=status.value, limit=ATTENTION_LIMIT)
        found += [Attention(saga, why) for saga in page.items if (why := _waiting(saga))]
    return found


def _why(saga: StoredSaga) -> str:
    state = saga.state
    if state.status is SagaStatus.AWAITING_APPROVAL:
        return "awaiting a decision on " + ", ".join(state.awaiting_approval or ["a step"])
    failed = [
        f"{s.name}: {s.compensation.error or 'undo failed'}"
        for s in state.steps
        if s.compensation is not None and s.compensation.status.value == "failed"
    ]
    return "compensation failed: " + ("; ".join(failed) if failed else state.error or "")


def _waiting(saga: StoredSaga) -> str:
    for step in saga.state.steps:
        wait = step.waiting or (step.compensation.waiting if step.compensation else None)
        if wait is not None:
            reason = wait.reason.replace("_", " ")
            return f"{step.name} waits on {wait.participant} ({reason}) until {wait.until:%H:%M:%S}"
    return ""
