"""A participant's records, on SQLite and on a real PostgreSQL cluster.

The demo sagas' tests run the participants on SQLite over HTTP; these run the store's rules
(deduplication, conflicts, undo before do, racing duplicates) on both databases, and the
participants' HTTP app on PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from engine.config import Settings
from participants.app import Chaos, create_app
from participants.services import Unavailable, participants
from participants.store import Conflict, Store
from tests.support.postgres import create_database

BODY = {"flight_number": "BA117", "date": "2026-12-24", "passenger": "Ada"}


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'flights.sqlite'}"
    else:
        url = create_database(request.getfixturevalue("postgres"), f"st_{uuid.uuid4().hex}")
    store = Store(url)
    yield store
    store.engine.dispose()


def do(store: Store, key: str, body: object = BODY) -> tuple[dict[str, object], bool]:
    answer = {"key": key, "status": "reserved"}
    return store.do(key=key, saga_id=key.split("/")[0], collection="reservations",
                    status="reserved", body=body, response=answer)  # fmt: skip


def undo(store: Store, key: str) -> str:
    record = store.undo(key=key, saga_id=key.split("/")[0], collection="reservations",
                        status="cancelled")  # fmt: skip
    return record.status


class TestStore:
    def test_doing_twice_returns_the_first_answer_and_changes_nothing(self, store: Store) -> None:
        first, created = do(store, "s1/reserve_flight")
        again, created_again = do(store, "s1/reserve_flight")
        assert (created, created_again) == (True, False)
        assert again == first
        assert [r.status for r in store.records("s1", "reservations")] == ["reserved"]

    def test_a_key_reused_with_another_body_is_a_conflict(self, store: Store) -> None:
        do(store, "s2/reserve_flight")
        with pytest.raises(Conflict, match="different request"):
            do(store, "s2/reserve_flight", {**BODY, "passenger": "Bob"})

    def test_undo_is_idempotent(self, store: Store) -> None:
        do(store, "s3/reserve_flight")
        assert [undo(store, "s3/reserve_flight") for _ in range(3)] == ["cancelled"] * 3
        assert [r.status for r in store.records("s3", "reservations")] == ["cancelled"]

    def test_undo_before_do_refuses_the_late_do(self, store: Store) -> None:
        assert undo(store, "s4/reserve_flight") == "cancelled"
        with pytest.raises(Conflict, match="cancelled before"):
            do(store, "s4/reserve_flight")
        assert [r.status for r in store.records("s4", "reservations")] == ["cancelled"]

    def test_racing_duplicates_make_one_record(self, store: Store) -> None:
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(lambda _: do(store, "s5/reserve_flight"), range(16)))
        assert sum(created for _, created in answers) == 1
        assert len({str(answer) for answer, _ in answers}) == 1
        assert len(store.records("s5", "reservations")) == 1

    def test_racing_undos_and_attempts_do_not_fail(self, store: Store) -> None:
        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(pool.map(lambda _: undo(store, "s6/reserve_flight"), range(8)))
            counts = sorted(pool.map(lambda _: store.attempt("s6/reserve_flight"), range(8)))
        assert statuses == ["cancelled"] * 8
        assert counts == list(range(1, 9))


async def test_the_participants_app_keeps_a_postgresql_database_each(postgres: str) -> None:
    prefix = f"app_{uuid.uuid4().hex[:8]}_"
    for participant in participants(slow_seconds=0):
        create_database(postgres, prefix + participant.name)
    settings = Settings(participants_database_url=f"{postgres}/{prefix}{{name}}")
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://participants") as http:
        headers = {"Idempotency-Key": "pg-1/reserve_flight", "Saga-Id": "pg-1"}
        created = await http.post("/flights/reservations", json=BODY, headers=headers)
        assert created.status_code == 201
        listed = await http.get("/flights/reservations", params={"saga_id": "pg-1"})
        assert [r["status"] for r in listed.json()] == ["reserved"]
        # The hotels' database is another one: the same key there is a new record.
        hotel = {"hotel_id": "h", "check_in": "2026-12-24", "nights": 1}
        other = await http.post("/hotels/reservations", json=hotel, headers=headers)
        assert other.status_code == 201
    flights = Store(f"{postgres}/{prefix}flights")
    assert [r.key for r in flights.records("pg-1", "reservations")] == ["pg-1/reserve_flight"]
    flights.engine.dispose()


class TestChaos:
    """Chaos runs are repeatable: the same seed strikes the same calls."""

    @staticmethod
    async def strikes(seed: int) -> list[bool]:
        chaos = Chaos(rate=0.3, latency_ms=0, seed=seed)
        hits = []
        for _ in range(50):
            try:
                await chaos.strike()
                hits.append(False)
            except Unavailable:
                hits.append(True)
        return hits

    async def test_the_same_seed_gives_the_same_faults(self) -> None:
        first = await self.strikes(7)
        assert first == await self.strikes(7)
        assert first != await self.strikes(8)
        assert 5 <= sum(first) <= 25  # about 30% of 50

    def test_fault_rates_are_bounded_by_settings(self) -> None:
        with pytest.raises(ValueError, match="participants_fault_rate"):
            Settings(participants_fault_rate=0.9)
