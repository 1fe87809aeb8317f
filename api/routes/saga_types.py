"""The saga definitions this API can start."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.diagram import mermaid
from api.models import SagaTypePublic, SagaTypeStep
from api.routes.sagas import SagaType
from api.runtime import CallerDep, find_definition
from engine import Saga, SagaDefinition, UnknownSagaType
from engine.worker import activity_name, registered

router = APIRouter(tags=["saga types"])


def describe(definition: SagaDefinition[Any]) -> SagaTypePublic:
    steps = []
    if isinstance(definition, Saga):
        steps = [
            SagaTypeStep(
                name=s.step_name,
                kind=s.kind.value,
                compensation=activity_name(s.compensate) if s.compensate else None,
            )
            for s in definition.steps
        ]
    schema = definition.input.model_json_schema()
    schema.setdefault("examples", [])
    return SagaTypePublic(
        name=definition.name,
        description=definition.description,
        steps=steps,
        input_schema=schema,
        diagram=mermaid(definition),
    )


@router.get("/saga-types", response_model=list[SagaTypePublic])
async def list_saga_types(caller: CallerDep) -> list[SagaTypePublic]:
    """Every registered saga definition."""
    return [describe(d) for d in registered()]


@router.get("/saga-types/{saga_type}", response_model=SagaTypePublic)
async def get_saga_type(saga_type: SagaType, caller: CallerDep) -> SagaTypePublic:
    """One definition: steps and their kinds, the input's JSON Schema, a Mermaid diagram."""
    definition = find_definition(saga_type)
    if definition is None:
        raise UnknownSagaType(f"unknown saga type {saga_type!r}")
    return describe(definition)
