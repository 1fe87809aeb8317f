"""Alembic environment: runs on the engine the store hands over (see engine/_migrate.py)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from engine._store_tables import TABLES

target_metadata = TABLES[0].metadata
config = context.config
engine = config.attributes.get("engine") or create_engine(
    config.get_main_option("sqlalchemy.url", "")
)

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # Other sqlmodel tables (the demo participants') share the metadata: only ours count.
        include_name=lambda name, type_, parent: (
            type_ != "table" or name in {t.name for t in TABLES} | {"alembic_version"}
        ),
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
