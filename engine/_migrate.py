"""Alembic, driven from code: the API and the worker bring the store's schema up to date.

The migration scripts live in ``engine/migrations``; ``sagas migrate`` runs them by hand.
Several processes may start at once on a new database (``sagas dev``, a deployment rolling
out): on PostgreSQL an advisory lock serialises them; on SQLite the loser of the race retries
and finds the schema already at head.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.util.exc import CommandError
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

MIGRATIONS = Path(__file__).parent / "migrations"
#: Any fixed number: the key of the advisory lock that serialises migrations on PostgreSQL.
_LOCK_KEY = 7_242_001


def config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head", attempts: int = 5) -> None:
    for attempt in range(1, attempts + 1):
        try:
            if engine.dialect.name == "postgresql":
                with engine.connect() as lock:
                    lock.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _LOCK_KEY})
                    try:
                        command.upgrade(config(engine), revision)
                    finally:
                        lock.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_KEY})
                        lock.commit()
            else:
                before = _revision(engine)
                command.upgrade(config(engine), revision)
                if _revision(engine) != before:
                    # Old page versions (what a migration rewrote, card data among them) stay
                    # in the write-ahead log until a checkpoint, and in its file after it
                    # unless the checkpoint truncates it.
                    _truncate_wal(engine)
            return
        except (DBAPIError, CommandError) as exc:
            # On SQLite the loser of the race fails in the driver (locked), or in Alembic
            # when the winner moved the version row under it ("expected to match one row").
            # Any other Alembic error (a revision it cannot find) is no race.
            raced = not isinstance(exc, CommandError) or "expected to match one row" in str(exc)
            if attempt == attempts or not raced:
                raise
            time.sleep(0.2 * attempt)  # another process is migrating: let it finish


def _revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _truncate_wal(engine: Engine) -> None:
    # Outside any transaction (the store's connections begin one on first use), hence the
    # driver's own connection. Best effort: a process that holds the database busy for longer
    # than the busy timeout leaves the log as it is.
    conn = engine.raw_connection()
    try:
        cursor = conn.cursor()
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        cursor.close()
    except sqlite3.OperationalError:
        pass
    finally:
        conn.close()
