"""The saga store: what the API lists and shows, kept outside Temporal with sqlmodel.

Temporal stays the source of truth for running sagas; the store is their projection (written by
the workers as sagas change, see ``_projection``) plus what only the API knows: idempotency keys
and operator actions. SQLite by default, PostgreSQL by URL; the schema is managed by Alembic
(``engine/migrations``) and :meth:`SagaStore.migrate` brings a database up to date.

This module is the store's interface: :class:`SagaStore` and the values it returns. The tables
are in ``_store_tables``, the snapshot upsert in ``_store_upsert``, the list cursor in
``_cursor``.

A snapshot carries a *revision* (the saga's history length when it was taken): the store keeps
the newest, so a late write from a worker that lost the saga never rolls a saga back.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, event, func, insert, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, create_engine, delete, select

from engine import _store_upsert
from engine._cursor import decode_cursor, encode_cursor
from engine._errors import KeyConflict
from engine._masking import mask_data, mask_text
from engine._state import FINAL_STATUSES, SagaState, SagaStatus, StepState
from engine._store_tables import (
    IDEMPOTENCY_KEYS,
    SAGAS,
    IdempotencyKeyRow,
    OperatorActionRow,
    SagaRow,
    StepRow,
    aware,
    now,
)
from engine._store_upsert import Snapshot


@dataclass(frozen=True)
class StoredSaga:
    """A saga as the store holds it: its state, trace, creation time and revision."""

    state: SagaState
    trace_id: str | None
    created_at: datetime
    revision: int


@dataclass(frozen=True)
class OperatorAction:
    """An operator's action on a saga (cancel, resolve...), kept for the record."""

    action: str
    step: str | None
    actor: str | None
    reason: str | None
    at: datetime


@dataclass(frozen=True)
class Page:
    """One page of a listing; ``next_cursor`` is None on the last."""

    items: list[StoredSaga]
    next_cursor: str | None


def with_driver(url: str) -> str:
    """``postgres://`` and ``postgresql://`` (as platforms set ``DATABASE_URL``) use psycopg 3.

    SQLAlchemy would pick psycopg2 for them, which is not installed.
    """
    for scheme in ("postgres://", "postgresql://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme) :]
    return url


class SagaStore:
    """Sagas, their steps, idempotency keys and operator actions, in one database.

    Synchronous (SQLAlchemy); async callers run it in a thread (``asyncio.to_thread``).
    """

    def __init__(self, url: str) -> None:
        url = with_driver(url)
        self.url = url
        sqlite = url.startswith("sqlite")
        self.engine: Engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30} if sqlite else {},
            pool_pre_ping=not sqlite,
        )
        if sqlite:
            tune_sqlite(self.engine)

    def migrate(self) -> None:
        """Create or upgrade the schema to the newest Alembic revision."""
        from engine._migrate import upgrade

        upgrade(self.engine)

    def close(self, *, wait: float = 5.0) -> None:
        """Close the pool's connections, once calls still running in threads (a cancelled
        request's, say) have given theirs back, for up to ``wait`` seconds: a connection
        returned after the pool is gone would stay open until the garbage collector's turn."""
        checked_out = getattr(self.engine.pool, "checkedout", lambda: 0)
        deadline = time.monotonic() + wait
        while checked_out() and time.monotonic() < deadline:
            time.sleep(0.01)
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session:
            yield session

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    # ------------------------------------------------------------ starting

    def claim(
        self,
        *,
        saga_id: str,
        saga_type: str,
        input: Any,
        key: str | None,
        fingerprint: str,
        trace_id: str | None,
        created_at: datetime | None = None,
    ) -> tuple[str, bool]:
        """Record a saga about to start (and its idempotency key).

        Returns (saga id, created). With a key seen before and the same fingerprint, the saga
        it started; with another fingerprint, KeyConflict. ``input`` is kept masked
        (``_masking``): ``fingerprint`` must be taken from it unmasked, by the caller.
        """
        keys, sagas = IDEMPOTENCY_KEYS, SAGAS
        at = created_at or now()

        def work(conn: Connection) -> tuple[str, bool]:
            if key is not None:
                known = conn.execute(
                    select(keys.c.saga_id, keys.c.fingerprint).where(keys.c.key == key)
                ).first()
                if known is not None:
                    if known[1] != fingerprint:
                        raise KeyConflict(
                            "Idempotency-Key was used before with a different request"
                        )
                    return str(known[0]), False
                conn.execute(
                    insert(keys),
                    {"key": key, "saga_id": saga_id, "fingerprint": fingerprint, "created_at": at},
                )
            conn.execute(
                insert(sagas),
                {
                    "id": saga_id,
                    "type": saga_type,
                    "status": SagaStatus.RUNNING.value,
                    "input": mask_data(input),
                    "result": None,
                    "error": None,
                    "cancel_reason": None,
                    "awaiting_approval": [],
                    "past_pivot": False,
                    "trace_id": trace_id,
                    "revision": 0,
                    "created_at": at,
                    "updated_at": at,
                },
            )
            return saga_id, True

        try:
            with self.engine.begin() as conn:
                return work(conn)
        except IntegrityError:  # the same key, claimed by a concurrent request: theirs wins
            with self.engine.begin() as conn:
                return work(conn)

    def forget(self, saga_id: str, key: str | None) -> None:
        """Undo :meth:`claim` for a saga that Temporal refused to start."""
        with self.session() as s:
            if key is not None:
                s.exec(delete(IdempotencyKeyRow).where(col(IdempotencyKeyRow.key) == key))
            s.exec(delete(SagaRow).where(col(SagaRow.id) == saga_id, col(SagaRow.revision) == 0))
            s.commit()

    # ----------------------------------------------------------- projection

    def apply(self, snapshots: Sequence[Snapshot]) -> int:
        """Write saga snapshots (state or its JSON form, revision) in one transaction.

        Snapshots not newer than what is stored are skipped; returns how many were written.
        One upsert for the whole batch (see ``_store_upsert``): this is the workers' hot path.
        """
        if not snapshots:
            return 0
        with self.engine.begin() as conn:
            return _store_upsert.write(conn, snapshots)

    def unfinished(self, *, updated_before: datetime, limit: int = 500) -> list[str]:
        """Ids of sagas the store does not hold as finished, not updated since a moment."""
        finals = [s.value for s in FINAL_STATUSES]
        with self.session() as s:
            query = (
                select(SagaRow.id)
                .where(col(SagaRow.status).not_in(finals), col(SagaRow.updated_at) < updated_before)
                .order_by(col(SagaRow.updated_at))
                .limit(limit)
            )
            return list(s.exec(query).all())

    # -------------------------------------------------------------- reading

    def get(self, saga_id: str) -> StoredSaga | None:
        with self.session() as s:
            row = s.get(SagaRow, saga_id)
            if row is None:
                return None
            steps = s.exec(
                select(StepRow)
                .where(col(StepRow.saga_id) == saga_id)
                .order_by(col(StepRow.position))
            ).all()
            return _stored(row, list(steps))

    def page(
        self,
        *,
        saga_type: str | None = None,
        status: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        """Newest first; ``cursor`` continues where the previous page ended."""
        query = select(SagaRow)
        if saga_type is not None:
            query = query.where(col(SagaRow.type) == saga_type)
        if status is not None:
            query = query.where(col(SagaRow.status) == status)
        if created_after is not None:
            query = query.where(col(SagaRow.created_at) >= created_after)
        if created_before is not None:
            query = query.where(col(SagaRow.created_at) < created_before)
        if cursor is not None:
            at, last_id = decode_cursor(cursor)
            query = query.where(
                (col(SagaRow.created_at) < at)
                | ((col(SagaRow.created_at) == at) & (col(SagaRow.id) < last_id))
            )
        query = query.order_by(col(SagaRow.created_at).desc(), col(SagaRow.id).desc())
        with self.session() as s:
            rows = list(s.exec(query.limit(limit + 1)).all())
            more = len(rows) > limit
            rows = rows[:limit]
            ids = [r.id for r in rows]
            steps: dict[str, list[StepRow]] = {i: [] for i in ids}
            if ids:
                for step in s.exec(
                    select(StepRow)
                    .where(col(StepRow.saga_id).in_(ids))
                    .order_by(col(StepRow.saga_id), col(StepRow.position))
                ).all():
                    steps[step.saga_id].append(step)
        items = [_stored(r, steps[r.id]) for r in rows]
        next_cursor = encode_cursor(rows[-1].created_at, rows[-1].id) if more and rows else None
        return Page(items, next_cursor)

    def count(self) -> int:
        with self.session() as s:
            return int(s.exec(select(func.count()).select_from(SagaRow)).one())

    def in_flight(self) -> dict[tuple[str, str], int]:
        """Sagas not yet in a final status, counted by (type, status)."""
        finals = [s.value for s in FINAL_STATUSES]
        query = (
            select(SagaRow.type, SagaRow.status, func.count())
            .where(col(SagaRow.status).not_in(finals))
            .group_by(col(SagaRow.type), col(SagaRow.status))
        )
        with self.session() as s:
            return {(t, st): int(n) for t, st, n in s.exec(query).all()}

    def quietest_in_flight(self) -> dict[tuple[str, str], datetime]:
        """When the saga that changed least recently last changed, by (type, status), among
        sagas not yet final: what tells a stuck saga from a busy one. A saga that retries,
        waits on a circuit or moves on changes; one that no worker moves does not."""
        finals = [s.value for s in FINAL_STATUSES]
        query = (
            select(SagaRow.type, SagaRow.status, func.min(SagaRow.updated_at))
            .where(col(SagaRow.status).not_in(finals))
            .group_by(col(SagaRow.type), col(SagaRow.status))
        )
        with self.session() as s:
            return {(t, st): _aware(at) for t, st, at in s.exec(query).all()}

    # ------------------------------------------------------ operator actions

    def record_action(
        self,
        saga_id: str,
        action: str,
        *,
        step: str | None = None,
        actor: str | None = None,
        reason: str | None = None,
    ) -> None:
        with self.session() as s:
            s.add(OperatorActionRow(saga_id=saga_id, action=action, step=step, actor=actor,
                                    reason=mask_text(reason)))  # fmt: skip
            s.commit()

    def actions(self, saga_id: str) -> list[OperatorAction]:
        with self.session() as s:
            rows = s.exec(
                select(OperatorActionRow)
                .where(col(OperatorActionRow.saga_id) == saga_id)
                .order_by(col(OperatorActionRow.id))
            ).all()
            return [OperatorAction(r.action, r.step, r.actor, r.reason, aware(r.at)) for r in rows]


def tune_sqlite(engine: Engine) -> None:
    """Several processes on one SQLite file: write-ahead log, commits without an fsync each
    (durable across a process crash; the last ones may be lost to a power cut), and write
    transactions that queue on the lock from their start."""
    event.listen(engine, "connect", _sqlite_pragmas)
    event.listen(engine, "begin", _sqlite_begin)


def _sqlite_pragmas(conn: Any, _record: Any) -> None:
    # The driver must not open transactions itself: _sqlite_begin opens them, IMMEDIATE, so
    # that a transaction that reads then writes never meets a stale snapshot (SQLITE_BUSY
    # that no busy timeout waits out); writers queue on the lock instead.
    conn.isolation_level = None
    # WAL: the API reads while workers write, from several processes.
    cursor = conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _stored(row: SagaRow, steps: list[StepRow]) -> StoredSaga:
    state = SagaState(
        id=row.id,
        type=row.type,
        status=SagaStatus(row.status),
        input=row.input,
        result=row.result,
        error=row.error,
        steps=[StepState.model_validate(step.state) for step in steps],
        cancel_reason=row.cancel_reason,
        awaiting_approval=list(row.awaiting_approval or []),
        past_pivot=row.past_pivot,
        started_at=aware(row.created_at),
        updated_at=aware(row.updated_at),
    )
    return StoredSaga(state, row.trace_id, aware(row.created_at), row.revision)


def _aware(at: datetime) -> datetime:
    """SQLite hands back naive datetimes; the store writes UTC."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
