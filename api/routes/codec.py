"""Temporal's codec server protocol: the Temporal UI and CLI open sealed payloads here.

Point the UI at ``{api}/codec`` (``TEMPORAL_CODEC_ENDPOINT``) and it shows a saga's inputs
and results instead of ``binary/encrypted``, to people who hold an API key. The browser calls
it from the UI's origin, which ``SAGAS_CODEC_CORS_ORIGINS`` allows (see api/main.py).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.deps import Caller, ServiceDep
from engine.codec import transcode

router = APIRouter(prefix="/codec", tags=["codec"])


class PayloadJSON(BaseModel):
    """One payload in protobuf JSON: metadata values and data are base64."""

    metadata: dict[str, str] = Field(
        default_factory=dict, examples=[{"encoding": "anNvbi9wbGFpbg=="}]
    )
    data: str = Field(default="", examples=["eyJhIjogMX0="])


class PayloadsJSON(BaseModel):
    payloads: list[PayloadJSON] = Field(max_length=1000)


@router.post("/decode", response_model=PayloadsJSON)
async def decode(body: PayloadsJSON, service: ServiceDep, caller: Caller) -> dict[str, Any]:
    """Open sealed payloads (the codec server protocol's /decode)."""
    return await transcode(service.codec, body.model_dump(), encode=False)


@router.post("/encode", response_model=PayloadsJSON)
async def encode(body: PayloadsJSON, service: ServiceDep, caller: Caller) -> dict[str, Any]:
    """Seal payloads with the newest key (the codec server protocol's /encode)."""
    return await transcode(service.codec, body.model_dump(), encode=True)
