"""mask the card data that the store kept before it masked what it keeps

Revision ID: 0002
Revises: 0001

Data only: every saga, step and operator action written before masking (``engine/_masking``)
is rewritten masked, in batches. A finished saga is never written again, so without this its
card token would stay in the database for good. On SQLite, ``secure_delete`` overwrites the
old contents instead of leaving them in free pages; PostgreSQL keeps dead row versions until
``VACUUM`` (``VACUUM FULL`` to rewrite the files): run it after upgrading.
"""

from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from alembic import op

from engine._masking import mask_data, mask_step, mask_text

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_BATCH = 500

_sagas = sa.table(
    "sagas",
    sa.column("id", sa.String),
    sa.column("input", sa.JSON),
    sa.column("result", sa.JSON),
    sa.column("error", sa.Text),
    sa.column("cancel_reason", sa.Text),
)
_steps = sa.table(
    "saga_steps",
    sa.column("saga_id", sa.String),
    sa.column("position", sa.Integer),
    sa.column("state", sa.JSON),
)
_actions = sa.table("operator_actions", sa.column("id", sa.Integer), sa.column("reason", sa.Text))


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("PRAGMA secure_delete = ON")
    for row in _rows(conn, _sagas, _sagas.c.id):
        masked = {
            "input": None if row.input is None else mask_data(row.input),
            "result": None if row.result is None else mask_data(row.result),
            "error": mask_text(row.error),
            "cancel_reason": mask_text(row.cancel_reason),
        }
        if masked != {k: getattr(row, k) for k in masked}:
            conn.execute(sa.update(_sagas).where(_sagas.c.id == row.id).values(**masked))
    for row in _rows(conn, _steps, _steps.c.saga_id, _steps.c.position):
        state = mask_step(row.state)
        if state != row.state:
            conn.execute(
                sa.update(_steps)
                .where(_steps.c.saga_id == row.saga_id, _steps.c.position == row.position)
                .values(state=state)
            )
    for row in _rows(conn, _actions, _actions.c.id):
        reason = mask_text(row.reason)
        if reason != row.reason:
            conn.execute(sa.update(_actions).where(_actions.c.id == row.id).values(reason=reason))
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("PRAGMA secure_delete = OFF")


def downgrade() -> None:
    pass  # what was masked is gone


def _rows(conn: sa.Connection, table: sa.TableClause, *key: sa.ColumnClause[Any]) -> Iterator[Any]:
    """Every row of ``table``, in batches in key order (keyset pagination: rows rewritten
    meanwhile are not read twice, and no batch holds the whole table)."""
    last: tuple[Any, ...] | None = None
    while True:
        query = sa.select(table).order_by(*key).limit(_BATCH)
        if last is not None:
            query = query.where(sa.tuple_(*key) > sa.tuple_(*last))
        batch = conn.execute(query).all()
        yield from batch
        if len(batch) < _BATCH:
            return
        last = tuple(getattr(batch[-1], c.name) for c in key)
