"""What every request needs: settings, the Temporal client, the store, metrics."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request

from api.auth import require_key
from api.metrics import ApiMetrics
from api.models import CompensationPublic, OperatorActionPublic, SagaPublic, StepPublic
from engine import Saga, SagaClient, SagaDefinition, SagaNotFound, SagaState, StepState
from engine.config import Settings
from engine.store import OperatorAction, SagaStore, StoredSaga, read_from_temporal
from engine.worker import idempotency_key_for, registered


@dataclass
class Runtime:
    settings: Settings
    sagas: SagaClient
    store: SagaStore
    metrics: ApiMetrics

    async def stored(self, saga_id: str) -> StoredSaga:
        """The saga from the store; from Temporal (and then stored) if the store lacks it."""
        found = await asyncio.to_thread(self.store.get, saga_id)
        if found is not None:
            return found
        live = await read_from_temporal(self.sagas.client, saga_id)
        if live is None:
            raise SagaNotFound(f"no saga with id {saga_id!r}")
        await asyncio.to_thread(self.store.apply, [live])
        found = await asyncio.to_thread(self.store.get, saga_id)
        assert found is not None
        return found

    async def resource(self, saga_id: str, *, fresher: SagaState | None = None) -> SagaPublic:
        """The saga resource; ``fresher`` is a state just returned by the saga itself."""
        stored = await self.stored(saga_id)
        actions = await asyncio.to_thread(self.store.actions, saga_id)
        return self.render(stored, actions, fresher=fresher)

    def render(
        self,
        stored: StoredSaga,
        actions: list[OperatorAction] | None = None,
        *,
        fresher: SagaState | None = None,
    ) -> SagaPublic:
        state = fresher or stored.state
        steps = state.steps or _pending_steps(state)
        trace_id = stored.trace_id
        return SagaPublic(
            id=state.id,
            type=state.type,
            status=state.status,
            input=stored.state.input if state.input is None else _plain(state.input),
            result=_plain(state.result),
            error=state.error,
            cancel_reason=state.cancel_reason,
            awaiting_approval=state.awaiting_approval,
            past_pivot=state.past_pivot,
            steps=[_step(s) for s in steps],
            actions=[OperatorActionPublic(**a.__dict__) for a in actions or []],
            trace_id=trace_id,
            trace_url=f"{self.settings.jaeger_url}/trace/{trace_id}" if trace_id else None,
            temporal_url=(
                f"{self.settings.temporal_ui_url}/namespaces/{quote(self.settings.namespace)}"
                f"/workflows/{quote(state.id, safe='')}"
            ),
            created_at=stored.created_at,
            updated_at=state.updated_at,
        )


def _plain(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    if dump is not None:
        return dump(mode="json")
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _pending_steps(state: SagaState) -> list[StepState]:
    """Before a worker has picked the saga up, its declared steps, all pending."""
    definition = find_definition(state.type)
    if not isinstance(definition, Saga):
        return []
    return [
        StepState(
            name=s.step_name,
            kind=s.kind.value,
            idempotency_key=idempotency_key_for(state.id, s.step_name),
        )
        for s in definition.steps
    ]


def find_definition(name: str) -> SagaDefinition[Any] | None:
    return next((d for d in registered() if d.name == name), None)


def _step(step: StepState) -> StepPublic:
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
    )


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
CallerDep = Annotated[str, Depends(require_key)]
