"""The saga definitions this API can start."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import Caller, SagaType
from api.models import SagaTypePublic
from api.presenter import saga_type_public
from engine.worker import get_definition, registered

router = APIRouter(tags=["saga types"])


@router.get("/saga-types", response_model=list[SagaTypePublic])
async def list_saga_types(caller: Caller) -> list[SagaTypePublic]:
    """Every registered saga definition."""
    return [saga_type_public(d) for d in registered()]


@router.get("/saga-types/{saga_type}", response_model=SagaTypePublic)
async def get_saga_type(saga_type: SagaType, caller: Caller) -> SagaTypePublic:
    """One definition: steps and their kinds, the input's JSON Schema, a Mermaid diagram."""
    return saga_type_public(get_definition(saga_type))
