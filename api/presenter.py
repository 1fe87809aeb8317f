"""Engine state as the API shows it: the saga resource and the saga type resource."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from api.models import (
    CompensationPublic,
    OperatorActionPublic,
    SagaPublic,
    SagaTypePublic,
    SagaTypeStep,
    StepPublic,
)
from engine import SagaDefinition, SagaState, StepState, UnknownSagaType
from engine.config import Settings
from engine.store import OperatorAction, StoredSaga, mask_data, mask_state, mask_text
from engine.worker import activity_name, get_definition


def saga_public(
    stored: StoredSaga,
    actions: Sequence[OperatorAction] = (),
    *,
    settings: Settings,
    fresher: SagaState | None = None,
) -> SagaPublic:
    """The saga resource; ``fresher`` is a state just returned by the saga itself.

    Masked (``engine.store.mask_state``) whatever it comes from: a state fresh from Temporal
    holds the card data that the store never keeps, and a row stored before masking existed
    may still hold it.
    """
    state = mask_state(fresher or stored.state)
    trace_id = stored.trace_id
    return SagaPublic(
        id=state.id,
        type=state.type,
        status=state.status,
        input=mask_data(stored.state.input) if state.input is None else state.input,
        result=state.result,
        error=state.error,
        cancel_reason=state.cancel_reason,
        awaiting_approval=state.awaiting_approval,
        past_pivot=state.past_pivot,
        steps=[step_public(s) for s in state.steps or _pending_steps(state)],
        actions=[
            OperatorActionPublic(**{**a.__dict__, "reason": mask_text(a.reason)}) for a in actions
        ],
        trace_id=trace_id,
        trace_url=f"{settings.jaeger_url}/trace/{trace_id}" if trace_id else None,
        temporal_url=(
            f"{settings.temporal_ui_url}/namespaces/{quote(settings.namespace)}"
            f"/workflows/{quote(state.id, safe='')}"
        ),
        created_at=stored.created_at,
        updated_at=state.updated_at,
    )


def step_public(step: StepState) -> StepPublic:
    compensation = None
    if step.compensation is not None:
        compensation = CompensationPublic(**step.compensation.model_dump())
    return StepPublic(
        name=step.name,
        kind=step.kind,
        status=step.status,
        attempts=step.attempts,
        started_at=step.started_at,
        ended_at=step.ended_at,
        error=step.error,
        idempotency_key=step.idempotency_key,
        approval=step.approval,
        compensation=compensation,
        waiting=step.waiting,
        served_by=step.served_by,
    )


def saga_type_public(definition: SagaDefinition[Any]) -> SagaTypePublic:
    """A definition: its declared steps (none if imperative), input schema and diagram."""
    schema = definition.input.model_json_schema()
    schema.setdefault("examples", [])
    return SagaTypePublic(
        name=definition.name,
        description=definition.description,
        steps=[
            SagaTypeStep(
                name=s.step_name,
                kind=s.kind.value,
                compensation=activity_name(s.compensate) if s.compensate else None,
            )
            for s in definition.steps
        ],
        input_schema=schema,
        diagram=definition.diagram(),
    )


def _pending_steps(state: SagaState) -> list[StepState]:
    """Before a worker has picked the saga up, its declared steps, all pending."""
    try:
        definition = get_definition(state.type)
    except UnknownSagaType:  # a saga that this process's modules do not define
        return []
    return definition.initial_step_states(state.id)
