"""The projection's write: a batch of saga snapshots in one upsert, the newest revision wins.

A snapshot carries a *revision*, the saga's history length when it was taken. One statement
per batch writes every saga of it::

    INSERT INTO sagas (...) VALUES (...), (...)
    ON CONFLICT (id) DO UPDATE SET status = excluded.status, ...
    WHERE sagas.revision <= excluded.revision
    RETURNING id

so a snapshot older than the stored row changes nothing, whatever the order in which workers
and the reconciler write. An equal revision is written: one workflow activation may publish
twice at the same history length (its last step done, then the saga completed), and the later
snapshot is the newer word. Only the sagas that statement returned (those inserted or
rewritten) get their steps rewritten, in the same transaction, and the saga
row the upsert holds locked keeps two writers of one saga's steps apart on PostgreSQL (on
SQLite every write transaction is exclusive). SQLite and PostgreSQL both have this upsert;
SQLAlchemy spells it per dialect.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import ColumnElement, Connection, Table, delete, func, insert, null
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert

from engine._masking import mask_snapshot
from engine._state import SagaState
from engine._store_tables import SAGAS, STEPS

Snapshot = tuple[SagaState | dict[str, Any], int]

_INSERTS: dict[str, Callable[[Table], sqlite.Insert | postgresql.Insert]] = {
    "sqlite": sqlite.insert,
    "postgresql": postgresql.insert,
}
#: What a newer snapshot rewrites: everything but the key, the creation time (the API's, when
#: it claimed the saga) and the trace id (only the API knows it).
_REWRITTEN = ("type", "status", "input", "result", "error", "cancel_reason",
              "awaiting_approval", "past_pivot", "revision", "updated_at")  # fmt: skip


def newest(snapshots: Sequence[Snapshot]) -> dict[str, tuple[dict[str, Any], int]]:
    """Each saga's newest snapshot in JSON form (of equal revisions, the later one)."""
    latest: dict[str, tuple[dict[str, Any], int]] = {}
    for snapshot, revision in snapshots:
        data = snapshot.model_dump(mode="json") if isinstance(snapshot, SagaState) else snapshot
        known = latest.get(data["id"])
        if known is None or known[1] <= revision:
            latest[data["id"]] = (data, revision)
    return latest


def write(conn: Connection, snapshots: Sequence[Snapshot]) -> int:
    """Write the snapshots that are newer than what is stored; return how many were."""
    # Masked here, the one way into the sagas and steps tables: card data never reaches them.
    latest = {i: (mask_snapshot(data), rev) for i, (data, rev) in newest(snapshots).items()}
    if not latest:
        return 0
    # In id order: concurrent writers lock the rows they share in the same order.
    rows = [_saga_values(data, revision) for _, (data, revision) in sorted(latest.items())]
    written = list(conn.execute(_upsert(conn.dialect.name), rows).scalars())
    if not written:
        return 0
    conn.execute(delete(STEPS).where(STEPS.c.saga_id.in_(written)))
    step_rows = [
        {"saga_id": saga_id, "position": n, "name": step["name"], "state": step}
        for saga_id in written
        for n, step in enumerate(latest[saga_id][0].get("steps") or [])
    ]
    if step_rows:
        conn.execute(insert(STEPS), step_rows)
    return len(written)


@cache
def _upsert(dialect: str) -> Insert:
    try:
        statement = _INSERTS[dialect](SAGAS)
    except KeyError:
        raise ValueError(f"the saga store runs on SQLite or PostgreSQL, not {dialect}") from None
    new = statement.excluded
    values: dict[str, ColumnElement[Any]] = {c: new[c] for c in _REWRITTEN}
    # A saga that failed at the Temporal level has no input in its snapshot: keep the stored one.
    values["input"] = func.coalesce(new.input, SAGAS.c.input)
    return statement.on_conflict_do_update(
        index_elements=[SAGAS.c.id], set_=values, where=SAGAS.c.revision <= new.revision
    ).returning(SAGAS.c.id)


def _saga_values(data: dict[str, Any], revision: int) -> dict[str, Any]:
    given = data.get("input")
    return {
        "id": data["id"],
        "type": data["type"],
        "status": data["status"],
        # SQL NULL, not JSON null, so that the upsert's coalesce keeps the stored input.
        "input": null() if given is None else given,
        "result": data.get("result"),
        "error": data.get("error"),
        "cancel_reason": data.get("cancel_reason"),
        "awaiting_approval": list(data.get("awaiting_approval") or []),
        "past_pivot": bool(data.get("past_pivot")),
        "revision": revision,
        "updated_at": datetime.fromisoformat(data["updated_at"]),
        "created_at": datetime.fromisoformat(data["started_at"]),
    }
