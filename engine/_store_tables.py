"""The saga store's tables: the SQLModel classes that Alembic's migrations follow.

Four tables: ``sagas`` (one row per saga, the newest snapshot a worker wrote), ``saga_steps``
(its steps, in order), ``idempotency_keys`` and ``operator_actions``. :data:`TABLES` is what
the migrations (``engine/migrations``) and the schema test compare against. Datetimes are
stored in UTC; SQLite gives them back naive, :func:`aware` puts the zone back.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Index, Table, Text
from sqlmodel import Field, SQLModel


def now() -> datetime:
    return datetime.now(UTC)


def aware(value: datetime) -> datetime:
    """A datetime read back from the store, in UTC (SQLite drops the zone)."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class SagaRow(SQLModel, table=True):
    __tablename__ = "sagas"
    __table_args__ = (
        Index("ix_sagas_created", "created_at", "id"),
        Index("ix_sagas_type_created", "type", "created_at", "id"),
        Index("ix_sagas_status_created", "status", "created_at", "id"),
    )

    id: str = Field(primary_key=True, max_length=200)
    type: str = Field(max_length=100)
    status: str = Field(max_length=30)
    input: Any = Field(default=None, sa_column=Column(JSON))
    result: Any = Field(default=None, sa_column=Column(JSON))
    error: str | None = Field(default=None, sa_type=Text)
    cancel_reason: str | None = Field(default=None, sa_type=Text)
    awaiting_approval: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    past_pivot: bool = False
    trace_id: str | None = Field(default=None, max_length=32)
    #: History length of the snapshot this row holds; 0 until a worker has written it.
    revision: int = 0
    created_at: datetime = Field(default_factory=now, sa_type=DateTime(timezone=True))
    updated_at: datetime = Field(default_factory=now, sa_type=DateTime(timezone=True))


class StepRow(SQLModel, table=True):
    __tablename__ = "saga_steps"

    saga_id: str = Field(primary_key=True, foreign_key="sagas.id", max_length=200)
    position: int = Field(primary_key=True)
    name: str = Field(max_length=200)
    #: The whole step state (status, attempts, times, error, compensation, approval, output).
    state: Any = Field(sa_column=Column(JSON, nullable=False))


class IdempotencyKeyRow(SQLModel, table=True):
    __tablename__ = "idempotency_keys"

    key: str = Field(primary_key=True, max_length=300)
    saga_id: str = Field(max_length=200)
    #: sha256 of the saga type and the canonical JSON of the validated input.
    fingerprint: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=now, sa_type=DateTime(timezone=True))


class OperatorActionRow(SQLModel, table=True):
    __tablename__ = "operator_actions"

    id: int | None = Field(default=None, primary_key=True)
    saga_id: str = Field(index=True, max_length=200)
    action: str = Field(max_length=30)
    step: str | None = Field(default=None, max_length=200)
    actor: str | None = Field(default=None, max_length=200)
    reason: str | None = Field(default=None, sa_type=Text)
    at: datetime = Field(default_factory=now, sa_type=DateTime(timezone=True))


#: SQLAlchemy Core views of the tables, for the store's hot paths (no ORM).
SAGAS: Table = SQLModel.metadata.tables["sagas"]
STEPS: Table = SQLModel.metadata.tables["saga_steps"]
IDEMPOTENCY_KEYS: Table = SQLModel.metadata.tables["idempotency_keys"]
OPERATOR_ACTIONS: Table = SQLModel.metadata.tables["operator_actions"]

#: The store's tables. SQLModel shares one MetaData with every model in the process (the demo
#: participants' too): migrations and schema checks look at these only.
TABLES = [SAGAS, STEPS, IDEMPOTENCY_KEYS, OPERATOR_ACTIONS]
