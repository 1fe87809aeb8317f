"""The participants as one FastAPI application: a router per participant, a database each."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, FastAPI, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from starlette.concurrency import run_in_threadpool

from engine.config import Settings
from engine.telemetry import configure_tracing, trace_engine
from participants.services import Collection, Participant, Refused, Unavailable, participants
from participants.store import Conflict, Record, Store

KeyHeader = Annotated[str, Header(alias="Idempotency-Key", min_length=1, max_length=300)]
SagaHeader = Annotated[str, Header(alias="Saga-Id", min_length=1, max_length=200)]


class Chaos:
    """Seeded, bounded faults and latency for chaos runs (off by default)."""

    def __init__(self, rate: float, latency_ms: int, seed: int) -> None:
        self.rate = rate
        self.latency_ms = latency_ms
        self.rng = random.Random(seed)

    async def strike(self) -> None:
        if self.latency_ms:
            await asyncio.sleep(self.rng.uniform(0, self.latency_ms) / 1000)
        if self.rate and self.rng.random() < self.rate:
            raise Unavailable("injected fault (chaos)")


def database_url(settings: Settings, name: str) -> str:
    if settings.participants_database_url:
        return settings.participants_database_url.format(name=name)
    folder = Path(settings.data_dir) / "participants"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / name}.sqlite"


def problem(status: int, title: str, detail: str) -> JSONResponse:
    return JSONResponse(
        {"type": "about:blank", "title": title, "status": status, "detail": detail},
        status_code=status,
        media_type="application/problem+json",
    )


def create_app(settings: Settings) -> FastAPI:
    app = FastAPI(title="Demo participants", version="1")
    chaos = Chaos(
        settings.participants_fault_rate,
        settings.participants_latency_ms,
        settings.participants_seed,
    )
    tracer_provider = configure_tracing("sagas-participants")
    for participant in participants(slow_seconds=settings.participants_slow_seconds):
        store = Store(database_url(settings, participant.name))
        if tracer_provider is not None:
            trace_engine(store.engine, tracer_provider)
        app.include_router(router_for(participant, store, chaos))
    if tracer_provider is not None:
        FastAPIInstrumentor.instrument_app(
            app, tracer_provider=tracer_provider, excluded_urls="healthz"
        )

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> JSONResponse:
        return problem(exc.status, "refused", exc.reason)

    @app.exception_handler(Unavailable)
    async def unavailable(request: Request, exc: Unavailable) -> JSONResponse:
        return problem(503, "unavailable", str(exc))

    @app.exception_handler(Conflict)
    async def conflict(request: Request, exc: Conflict) -> JSONResponse:
        return problem(409, "conflict", str(exc))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def router_for(participant: Participant, store: Store, chaos: Chaos) -> APIRouter:
    router = APIRouter(prefix=f"/{participant.name}", tags=[participant.name])
    for collection in participant.collections:
        _add_collection(router, participant, collection, store, chaos)
    return router


def _public(record: Record) -> dict[str, Any]:
    return {
        "key": record.key,
        "saga_id": record.saga_id,
        "status": record.status,
        "created_at": record.created_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
    }


def _add_collection(
    router: APIRouter, participant: Participant, c: Collection, store: Store, chaos: Chaos
) -> None:
    what = f"{participant.name}/{c.name}"

    @router.post(f"/{c.name}", status_code=201, summary=f"create ({c.done})", name=f"{what}:do")
    async def do(
        body: Annotated[dict[str, Any], Body()],
        key: KeyHeader,
        saga_id: SagaHeader,
        response: Response,
    ) -> dict[str, Any]:
        await chaos.strike()
        attempt = await run_in_threadpool(store.attempt, key)
        existing = await run_in_threadpool(store.find, key)
        if existing is None:  # the rules apply to new requests, not to replays of answered ones
            c.rules.do(body, attempt)
            delay = c.rules.delay(body)
            if delay:
                await asyncio.sleep(delay)
        answer = {
            "key": key,
            "saga_id": saga_id,
            "participant": participant.name,
            "status": c.done,
            "price": c.price(body),
        }
        stored, created = await run_in_threadpool(
            lambda: store.do(key=key, saga_id=saga_id, collection=c.name, status=c.done,
                             body=body, response=answer)
        )  # fmt: skip
        if not created:
            response.status_code = 200
        return stored

    if c.undone is not None:
        undone = c.undone

        @router.post(f"/{c.name}/cancel", summary=f"undo ({undone})", name=f"{what}:undo")
        async def undo(key: KeyHeader, saga_id: SagaHeader) -> dict[str, Any]:
            await chaos.strike()
            existing = await run_in_threadpool(store.find, key)
            if existing is not None and not existing.undone_first:
                c.rules.undo(json.loads(existing.request))
            record = await run_in_threadpool(
                lambda: store.undo(key=key, saga_id=saga_id, collection=c.name, status=undone)
            )
            return _public(record)

    @router.get(f"/{c.name}", summary="records of one saga", name=f"{what}:list")
    async def records(
        saga_id: Annotated[str, Query(min_length=1, max_length=200)],
    ) -> list[dict[str, Any]]:
        return [_public(r) for r in await run_in_threadpool(store.records, saga_id, c.name)]
