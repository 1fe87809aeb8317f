"""Settings for every process, from ``SAGAS_*`` environment variables (or a ``.env`` file).

Later issues add the API's and the store's settings here; each process reads the one class.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SAGAS_", env_file=".env", extra="ignore")

    temporal_address: str = Field(default="localhost:7233", description="Temporal frontend")
    namespace: str = "default"
    task_queue: str = "sagas"
    #: Modules (or packages) whose saga definitions the worker and CLI load.
    modules: Annotated[list[str], NoDecode] = ["workflows"]
    #: Where the embedded Temporal server keeps its SQLite file.
    data_dir: Path = Path(".sagas")
    temporal_port: int = Field(default=7233, ge=1, le=65535)
    temporal_ui_port: int = Field(default=8233, ge=1, le=65535)
    max_concurrent_activities: int = Field(default=100, ge=1)
    max_concurrent_workflow_tasks: int = Field(default=100, ge=1)
    log_level: str = "INFO"

    # Demo participants (participants/) and the activities that call them (activities/).
    participants_url: str = "http://127.0.0.1:8001"
    participants_host: str = "127.0.0.1"
    participants_port: int = Field(default=8001, ge=1, le=65535)
    #: SQLAlchemy URL with a ``{name}`` placeholder, one database per participant;
    #: default: a SQLite file per participant under ``data_dir``.
    participants_database_url: str | None = None
    #: Chaos runs: share of calls answered 503 before doing anything, extra latency, seed.
    participants_fault_rate: float = Field(default=0.0, ge=0.0, le=0.5)
    participants_latency_ms: int = Field(default=0, ge=0, le=5000)
    participants_seed: int = 0
    #: How long the hotel "slow" answers (DESIGN.md: 20 s).
    participants_slow_seconds: float = Field(default=20.0, ge=0.0, le=300.0)
    #: Trips whose total is above this amount wait for approval before the payment.
    trip_approval_above: int = Field(default=2000, ge=0)

    @field_validator("modules", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [m.strip() for m in value.split(",") if m.strip()]
        return value


@lru_cache
def get_settings() -> Settings:
    return Settings()
