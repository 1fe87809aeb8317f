"""A participant for engine tests: records effects in SQLite and deduplicates by idempotency key.

It stands in for a real service (those come with participants/) so that the engine's rules can
be checked against what a participant actually saw, across processes: a worker killed in a
subprocess and its replacement write to the same file. Tests script faults per saga and step.
"""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

ALWAYS = -1
_ENV = "SAGAS_TEST_LEDGER"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS effects (
    key TEXT PRIMARY KEY, saga_id TEXT, step TEXT, status TEXT, applied INTEGER DEFAULT 0
);
CREATE TABLE IF NOT EXISTS calls (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, saga_id TEXT, step TEXT, phase TEXT, attempt INTEGER
);
CREATE TABLE IF NOT EXISTS plans (saga_id TEXT PRIMARY KEY, plan TEXT);
"""


def path() -> Path:
    return Path(os.environ[_ENV])


def init(file: Path) -> None:
    os.environ[_ENV] = str(file)
    with _db() as db:
        db.executescript(_SCHEMA)


def _db() -> sqlite3.Connection:
    db = sqlite3.connect(path(), timeout=10, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    return db


def plan(
    saga_id: str,
    *,
    refuse: set[str] | frozenset[str] = frozenset(),
    refusals: dict[str, int] | None = None,
    transient: dict[str, int] | None = None,
    compensation_failures: dict[str, int] | None = None,
    act_then_hang: dict[str, float] | None = None,
    slow: dict[str, float] | None = None,
) -> None:
    """Script how the participant behaves for one saga (by step name).

    refuse: always refuse (a business error); refusals: refuse this many times; transient:
    fail this many times with a retryable error; compensation_failures: fail the undo this many
    times (ALWAYS for ever, until fix()); act_then_hang: take effect, then hang this long on the
    first attempt; slow: take this long (heartbeating) before taking effect.
    """
    spec = {
        "refuse": sorted(refuse),
        "refusals": refusals or {},
        "transient": transient or {},
        "compensation_failures": compensation_failures or {},
        "act_then_hang": act_then_hang or {},
        "slow": slow or {},
    }
    with closing(_db()) as db:
        db.execute("INSERT OR REPLACE INTO plans VALUES (?, ?)", (saga_id, json.dumps(spec)))


def plan_key(saga_id: str, order_id: str) -> str:
    """Plans are keyed by saga id; sagas started through the API (which picks the id) are
    planned by their input's ``order_id`` instead."""
    with closing(_db()) as db:
        row = db.execute("SELECT 1 FROM plans WHERE saga_id = ?", (saga_id,)).fetchone()
    return saga_id if row is not None else order_id


def get_plan(saga_id: str) -> dict[str, Any]:
    with closing(_db()) as db:
        row = db.execute("SELECT plan FROM plans WHERE saga_id = ?", (saga_id,)).fetchone()
    if row is None:
        return {
            "refuse": [],
            "refusals": {},
            "transient": {},
            "compensation_failures": {},
            "act_then_hang": {},
            "slow": {},
        }
    spec: dict[str, Any] = json.loads(row[0])
    return spec


def take_fault(saga_id: str, kind: str, step: str) -> bool:
    """Consume one scripted fault of ``kind`` for ``step``; True if the call should fail."""
    with closing(_db()) as db:
        db.execute("BEGIN IMMEDIATE")
        row = db.execute("SELECT plan FROM plans WHERE saga_id = ?", (saga_id,)).fetchone()
        if row is None:
            db.execute("COMMIT")
            return False
        spec = json.loads(row[0])
        left = spec[kind].get(step, 0)
        if left == 0:
            db.execute("COMMIT")
            return False
        if left != ALWAYS:
            spec[kind][step] = left - 1
            db.execute("UPDATE plans SET plan = ? WHERE saga_id = ?", (json.dumps(spec), saga_id))
        db.execute("COMMIT")
        return True


def fix(saga_id: str) -> None:
    """The operator fixed the participant: no more compensation failures for this saga."""
    spec = get_plan(saga_id)
    spec["compensation_failures"] = {}
    with closing(_db()) as db:
        db.execute("INSERT OR REPLACE INTO plans VALUES (?, ?)", (saga_id, json.dumps(spec)))


def record_call(saga_id: str, step: str, phase: str, attempt: int) -> None:
    with closing(_db()) as db:
        db.execute(
            "INSERT INTO calls (saga_id, step, phase, attempt) VALUES (?, ?, ?, ?)",
            (saga_id, step, phase, attempt),
        )


def apply(key: str, saga_id: str, step: str) -> str:
    """Do the step's effect once per key. Returns 'applied', 'duplicate' or 'refused'."""
    with closing(_db()) as db:
        db.execute("BEGIN IMMEDIATE")
        row = db.execute("SELECT status FROM effects WHERE key = ?", (key,)).fetchone()
        if row is None:
            db.execute(
                "INSERT INTO effects (key, saga_id, step, status, applied) VALUES (?,?,?,?,1)",
                (key, saga_id, step, "active"),
            )
            outcome = "applied"
        elif row[0] == "undone":
            outcome = "refused"  # undo before do: the compensation got here first
        else:
            outcome = "duplicate"
        db.execute("COMMIT")
        return outcome


def undo(key: str, saga_id: str, step: str) -> None:
    """Undo the effect; a tombstone when there was nothing to undo, so a late 'do' is refused."""
    with closing(_db()) as db:
        db.execute(
            "INSERT INTO effects (key, saga_id, step, status, applied) VALUES (?,?,?,'undone',0) "
            "ON CONFLICT(key) DO UPDATE SET status = 'undone'",
            (key, saga_id, step),
        )


def effects(saga_id: str) -> dict[str, tuple[str, int]]:
    """Step -> (status, times applied) for one saga."""
    with closing(_db()) as db:
        rows = db.execute(
            "SELECT step, status, applied FROM effects WHERE saga_id = ?", (saga_id,)
        ).fetchall()
    return {step: (status, applied) for step, status, applied in rows}


def active(saga_id: str) -> set[str]:
    return {step for step, (status, _) in effects(saga_id).items() if status == "active"}


def calls(saga_id: str, phase: str | None = None) -> list[tuple[str, str, int]]:
    """(step, phase, attempt) in call order."""
    with closing(_db()) as db:
        rows = db.execute(
            "SELECT step, phase, attempt FROM calls WHERE saga_id = ? ORDER BY seq", (saga_id,)
        ).fetchall()
    return [(r[0], r[1], r[2]) for r in rows if phase is None or r[1] == phase]
