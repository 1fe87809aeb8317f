"""One participant's records, in its own database (SQLite file or PostgreSQL, by URL).

A record is keyed by the idempotency key of the call that made it. Doing twice returns the first
answer; undoing is idempotent and, when nothing was done yet, leaves a tombstone so that the
late "do" is refused (undo before do).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Engine, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, col, create_engine, select

from engine.store import tune_sqlite, with_driver

T = TypeVar("T")


class Record(SQLModel, table=True):
    key: str = Field(primary_key=True, max_length=300)
    saga_id: str = Field(index=True, max_length=200)
    collection: str = Field(max_length=50)
    status: str = Field(max_length=30)
    fingerprint: str = Field(max_length=64)
    request: str
    response: str
    #: A tombstone: undone before it was done; the late "do" is refused.
    undone_first: bool = False
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class Attempt(SQLModel, table=True):
    """How often a key was tried: lets an input fail its first N attempts (tok_flaky)."""

    key: str = Field(primary_key=True, max_length=300)
    count: int = 0


def fingerprint(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


class Conflict(Exception):
    """The key was used before with another request, or the record was undone first."""


class Store:
    def __init__(self, url: str) -> None:
        sqlite = url.startswith("sqlite")
        args = {"check_same_thread": False, "timeout": 30} if sqlite else {}
        self.engine: Engine = create_engine(with_driver(url), connect_args=args)
        if sqlite:
            # As the saga store: a commit per call was an fsync per call, the most of the
            # participants' time under load (bench/capacity.py, py-spy).
            tune_sqlite(self.engine)
        # Only our tables: other sqlmodel tables (the saga store) share the global metadata.
        tables = [SQLModel.metadata.tables[name] for name in ("record", "attempt")]
        SQLModel.metadata.create_all(self.engine, tables=tables)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine) as session:
            yield session

    def attempt(self, key: str) -> int:
        """Count one more attempt for ``key``; return the count."""

        def bump(s: Session) -> int:
            # One atomic UPDATE: SQLite ignores FOR UPDATE, so read-then-write would lose counts.
            counted = s.execute(
                update(Attempt)
                .where(col(Attempt.key) == key)
                .values(count=col(Attempt.count) + 1)
                .returning(col(Attempt.count))
            ).scalar_one_or_none()
            if counted is None:
                s.add(Attempt(key=key, count=1))
                counted = 1
            s.commit()
            return counted

        return self._retrying_insert_race(bump)

    def _retrying_insert_race(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in a fresh session; run it again if a concurrent insert won a race
        (the row it found missing exists now, and is locked and updated the second time)."""
        for _ in range(2):
            with self.session() as s:
                try:
                    return work(s)
                except IntegrityError:
                    s.rollback()
        with self.session() as s:
            return work(s)

    def find(self, key: str) -> Record | None:
        with self.session() as s:
            return s.get(Record, key)

    def do(
        self,
        *,
        key: str,
        saga_id: str,
        collection: str,
        status: str,
        body: Any,
        response: dict[str, Any],
    ) -> tuple[dict[str, Any], bool]:
        """Record the effect once. Returns (response, created). Raises Conflict."""
        print_ = fingerprint(body)
        with self.session() as s:
            existing = s.get(Record, key)
            if existing is None:
                s.add(
                    Record(
                        key=key,
                        saga_id=saga_id,
                        collection=collection,
                        status=status,
                        fingerprint=print_,
                        request=json.dumps(body, default=str),
                        response=json.dumps(response, default=str),
                    )
                )
                try:
                    s.commit()
                    return response, True
                except IntegrityError:  # a concurrent duplicate won the race
                    s.rollback()
                    existing = s.get(Record, key)
                    assert existing is not None
            if existing.undone_first:
                raise Conflict("cancelled before it was made")
            if existing.fingerprint != print_:
                raise Conflict("idempotency key reused with a different request")
            stored: dict[str, Any] = json.loads(existing.response)
            return stored, False

    def undo(self, *, key: str, saga_id: str, collection: str, status: str) -> Record:
        """Undo the record (idempotent); a tombstone if there was nothing to undo."""

        def work(s: Session) -> Record:
            record = s.get(Record, key, with_for_update=True)
            if record is None:
                record = Record(
                    key=key,
                    saga_id=saga_id,
                    collection=collection,
                    status=status,
                    fingerprint="",
                    request="null",
                    response="{}",
                    undone_first=True,
                )
            else:
                record.status = status
                record.updated_at = datetime.now(UTC)
            s.add(record)
            s.commit()
            s.refresh(record)
            return record

        return self._retrying_insert_race(work)

    def records(self, saga_id: str, collection: str) -> list[Record]:
        with self.session() as s:
            query = select(Record).where(Record.saga_id == saga_id, Record.collection == collection)
            return list(s.exec(query.order_by(Record.created_at)).all())  # type: ignore[arg-type]
