"""The testing kit: explore() over the shipped sagas and the imperative example, and the
planted bugs it must catch (tests/support/planted.py); its fakes and plugin on their own."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tomllib
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

import engine._compensation
from activities import _http
from activities.pricing import TripTotal
from engine import SagaClient, SagaStatus
from engine._patches import GENERATION, GENERATION_MEMO, LOCAL_MEMO
from engine.config import get_settings
from engine.testing import ExplorationFailed, Fakes, SagaKit, explore
from engine.worker import OutagePolicy
from examples.order_imperative import gift_order
from participants.checker import kit_check
from tests.support import planted
from tests.support.processes import ROOT, Background, free_port, sagas
from tests.test_execution_rules import start
from workflows.order_fulfillment import OrderRequest, order_fulfillment
from workflows.trip_booking import TripRequest, trip_booking

pytestmark = pytest.mark.temporal

TRIP = TripRequest.model_json_schema()["examples"][0]
ORDER = OrderRequest.model_json_schema()["examples"][0]
#: The price step answers above the approval threshold, so the payment waits for a person.
EXPENSIVE = {"price_trip": TripTotal(total=5000, needs_approval=True, approval_above=2000)}


class TestShippedSagas:
    """Every failure point of the shipped sagas keeps the rules (and the table says so)."""

    async def test_trip_booking(self, saga_env: WorkflowEnvironment) -> None:
        table = await explore(trip_booking, TRIP, env=saga_env, returns=EXPENSIVE)
        names = [row.scenario for row in table.rows]
        assert len(names) == 42
        for expected in (
            "reserve_hotel refused",
            "reserve_hotel outcome unknown, its fallback refused",
            "undo of reserve_hotel's fallback fails for good",
            "charge_payment outcome unknown",
            "cancel mid-call: reserve_flight",
            "approval of charge_payment rejected",
            "approval of charge_payment times out",
            "undo of reserve_flight fails for good",
            "worker restarted after price_trip",
        ):
            assert any(name.startswith(expected) for name in names), expected
        assert all(row.ok for row in table.rows)
        seen = {r.scenario: r.seen for r in table.rows}
        # The car is optional; the hotel's broker serves when the hotel fails for good.
        assert seen["reserve_car refused"] == seen["reserve_car outcome unknown"] == "completed"
        assert seen["reserve_hotel outcome unknown"] == "completed"
        assert seen["reserve_hotel refused"] == "compensated"  # a refusal: no fallback
        # price_trip is local: a cancel does not interrupt it, so none is sent during it.
        assert {r.scenario for r in table.rows if r.skipped} == {
            "cancel before it takes effect: price_trip",
            "cancel mid-call: price_trip",
        }
        for row in table.rows:  # no saga left running behind the table
            if row.skipped:
                continue
            assert row.saga_id is not None
            described = await saga_env.client.get_workflow_handle(row.saga_id).describe()
            assert described.status is not None
            assert described.status.name != "RUNNING", row.scenario
            # Started as SagaClient.start starts a saga, restarts or not: stamped, and naming
            # its local steps (price_trip) in the memo.
            memo = await described.memo()
            assert memo.get(GENERATION_MEMO) == GENERATION, row.scenario
            assert memo.get(LOCAL_MEMO) == {"names": ["price_trip"]}, row.scenario

    async def test_order_fulfillment(self, saga_env: WorkflowEnvironment) -> None:
        table = await explore(order_fulfillment, ORDER, env=saga_env)
        assert len(table.rows) == 29
        refused = {r.scenario: r.seen for r in table.rows}
        assert refused["reserve_inventory refused"] == "failed"  # nothing to undo
        assert refused["cancel mid-call: ship_order (refused)"] == "completed"  # the pivot

    async def test_the_imperative_example(self, saga_env: WorkflowEnvironment) -> None:
        table = await explore(gift_order, {"item": "teapot"}, env=saga_env)
        assert len(table.rows) == 19
        seen = {r.scenario: r.seen for r in table.rows}
        assert seen["wrap refused"] == "completed"  # its code ships unwrapped


class TestPlantedBugs:
    """Each planted bug fails a row of the table, and explore() raises with it."""

    async def test_the_correct_wallet_passes_its_books_check(
        self, saga_env: WorkflowEnvironment
    ) -> None:
        table = await explore(
            planted.wallet, {}, env=saga_env, passthrough=True, check=planted.books_balance
        )
        assert all(row.ok for row in table.rows)

    async def test_a_compensation_that_is_not_idempotent(
        self, saga_env: WorkflowEnvironment
    ) -> None:
        with pytest.raises(ExplorationFailed) as caught:
            await explore(
                planted.wallet_double_refund, {}, env=saga_env, passthrough=True,
                check=planted.books_balance,
            )  # fmt: skip
        failed = {row.scenario: row.problems for row in caught.value.exploration.failed}
        assert any(name.startswith("undo of wallet_debit fails 2x") for name in failed)
        assert any("balance=" in p for problems in failed.values() for p in problems)

    async def test_a_missing_compensation(self, saga_env: WorkflowEnvironment) -> None:
        with pytest.raises(ExplorationFailed) as caught:
            await explore(
                planted.wallet_no_undo, {}, env=saga_env, passthrough=True,
                check=planted.books_balance,
            )  # fmt: skip
        failed = caught.value.exploration.failed
        assert "wallet_book_points outcome unknown" in {row.scenario for row in failed}
        assert any("points=30" in p for row in failed for p in row.problems)

    async def test_compensations_in_definition_order(
        self, saga_env: WorkflowEnvironment, definition_order: None
    ) -> None:
        with pytest.raises(ExplorationFailed) as caught:
            await explore(order_fulfillment, ORDER, env=saga_env)
        problems = [p for row in caught.value.exploration.failed for p in row.problems]
        assert (
            "order: reserve_inventory was undone before authorize_payment (which ran after it)"
            in problems
        )


@pytest.fixture
def definition_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """The planted bug: the undo log handed out oldest first."""

    def oldest_first(self: engine._compensation.UndoLog) -> Iterator[list[Any]]:
        for stage in self.stages:
            yield [entry for entry in stage if entry.needs_compensation]

    monkeypatch.setattr(engine._compensation.UndoLog, "stages_to_undo", oldest_first)


class TestRealParticipants:
    """``passthrough=True``: the real activities against the demo participants (HTTP, their
    own databases), faults injected around them, the consistency checker as the check (what
    ``sagas explore --participants`` runs)."""

    async def test_trip_booking_against_the_participants(
        self,
        saga_env: WorkflowEnvironment,
        participants_url: str,
    ) -> None:
        table = await explore(
            trip_booking, TRIP, env=saga_env, returns=None, passthrough=True,
            check=kit_check(participants_url),
        )  # fmt: skip
        assert len(table.rows) == 42
        # The approval is not reached (2); no cancel is sent during the local price_trip (2).
        assert sum(1 for row in table.rows if row.skipped) == 4


@pytest.fixture
async def participants_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    """``sagas participants`` on a free port, and this process's activities pointed at it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "SAGAS_DATA_DIR": str(tmp_path), "SAGAS_PARTICIPANTS_PORT": str(port)}
    server = Background(["participants"], env, tmp_path / "participants.log")
    try:
        server.wait_for("ready")
        monkeypatch.setenv("SAGAS_PARTICIPANTS_URL", url)
        get_settings.cache_clear()
        yield url
    finally:
        for client in _http._clients.values():
            await client.aclose()
        _http._clients.clear()
        monkeypatch.undo()
        get_settings.cache_clear()
        server.stop()


class TestFakes:
    """A saga author's own test with the kit's fakes and worker."""

    async def test_fakes_record_calls_with_their_keys(self, saga_kit: SagaKit) -> None:
        fakes = Fakes(order_fulfillment)
        fakes.step("authorize_payment").fail(times=2)
        fakes.step("ship_order").refuse()
        async with saga_kit.worker(order_fulfillment, fakes=fakes) as sagas:
            saga_id = await sagas.start("order_fulfillment", ORDER)
            state = await sagas.wait_for(saga_id, timeout=30)  # the clock skips the backoff
        assert state.status is SagaStatus.COMPENSATED
        calls = fakes.calls(saga_id, step="authorize_payment")
        assert [(c.phase, c.attempt, c.outcome) for c in calls] == [
            ("forward", 1, "failed"), ("forward", 2, "failed"), ("forward", 3, "succeeded"),
            ("compensation", 1, "succeeded"),
        ]  # fmt: skip
        assert {c.idempotency_key for c in calls} == {f"{saga_id}/authorize_payment"}
        # The default answer has the real activity's return type, here a Reservation.
        assert state.step("reserve_inventory").output["key"] == f"{saga_id}/reserve_inventory"

    async def test_a_fallback_has_fakes_of_its_own(self, saga_kit: SagaKit) -> None:
        fakes = Fakes(trip_booking)
        fakes.step("reserve_hotel").time_out()  # every attempt: the broker serves
        refused = f"trip-broker-says-no-{uuid.uuid4().hex[:8]}"
        fakes.fallback("reserve_hotel", saga_id=refused).refuse()  # ...but not this saga
        async with saga_kit.worker(trip_booking, fakes=fakes) as sagas:
            served = await sagas.start("trip_booking", TRIP)
            await sagas.start("trip_booking", TRIP, saga_id=refused)
            # (The hotel's backoffs, 7 s, take real time here: both sagas wait them together.)
            state, other = await asyncio.gather(
                *(sagas.wait_for(saga_id, timeout=30) for saga_id in (served, refused))
            )
        assert state.status is SagaStatus.COMPLETED
        assert state.step("reserve_hotel").served_by == "reserve_hotel_via_broker"
        calls = fakes.calls(served, step="reserve_hotel")
        assert [(c.activity, c.fallback, c.attempt, c.outcome) for c in calls] == [
            *(("reserve_hotel", False, n, "lost") for n in (1, 2, 3, 4)),
            ("reserve_hotel_via_broker", True, 1, "succeeded"),
            ("cancel_hotel", False, 1, "succeeded"),  # the replaced action, outcome unknown
        ]
        assert other.status is SagaStatus.COMPENSATED
        undos = fakes.calls(refused, step="reserve_hotel", phase="compensation")
        # The broker said no: only the hotel's own booking (outcome unknown) is cancelled.
        assert [(c.activity, c.outcome) for c in undos] == [("cancel_hotel", "succeeded")]

    async def test_breakers_only_when_asked_for(self, saga_kit: SagaKit) -> None:
        # Off (the default, and always in explore): see docs/testing.md. Asked for: two
        # failures open the circuit for 3 s; the third attempt (2 s of backoff later) is held
        # back by it, not counted against the budget, and the probe after it succeeds.
        fakes = Fakes(order_fulfillment)
        fakes.step("reserve_inventory").fail(times=2)
        breakers = OutagePolicy(failure_threshold=2, cooldown=timedelta(seconds=3))
        async with saga_kit.worker(order_fulfillment, fakes=fakes, outage=breakers) as sagas:
            saga_id = await sagas.start("order_fulfillment", ORDER)
            state = await sagas.wait_for(saga_id, timeout=30)
        assert state.status is SagaStatus.COMPLETED
        assert len(fakes.calls(saga_id, step="reserve_inventory")) == 3
        assert state.step("reserve_inventory").attempts > 3


@pytest.fixture
def sagas_client(sagas: SagaClient) -> SagaClient:
    """The conftest's client with a worker for the engine's test sagas (dev server)."""
    return sagas


def test_the_plugin_is_declared_as_an_entry_point() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["pytest11"] == {"sagas": "engine._kit_pytest"}


class TestCommandLine:
    """``sagas explore`` prints the table; ``sagas replay`` replays histories from files."""

    def test_explore_prints_the_table(self) -> None:
        done = sagas("explore", "gift_order", "-m", "examples.order_imperative",
                     "--input", "examples/gift.json", timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "cancel mid-call: wrap" in done.stdout
        assert "gift_order: 19 scenarios, 0 failed" in done.stdout

    def test_explore_reaches_an_approval_with_answers_from_a_file(self) -> None:
        answers = "examples/explore/trip-expensive-price.json"
        done = sagas(
            "explore", "trip_booking", "-m", "workflows", "--returns", answers, timeout=120
        )
        assert done.returncode == 0, done.stderr
        assert "approval of charge_payment times out" in done.stdout
        assert "trip_booking: 42 scenarios (2 skipped), 0 failed" in done.stdout

    def test_replay_recorded_histories(self) -> None:
        files = [str(p) for p in sorted((ROOT / "tests" / "histories").glob("*/*.json"))]
        done = sagas("replay", *files, "-m", "tests.support.sagas", timeout=120)
        assert done.returncode == 0, done.stderr
        assert f"{len(files)} histories replayed, 0 failed" in done.stdout

    async def test_replay_from_temporal_by_query(
        self, sagas_client: SagaClient, dev_env: WorkflowEnvironment
    ) -> None:
        saga_id = await start(sagas_client, "three_steps")
        assert (await sagas_client.result(saga_id)).status is SagaStatus.COMPLETED
        address = dev_env.client.service_client.config.target_host
        query = f"WorkflowId = '{saga_id}'"
        done = await asyncio.to_thread(
            sagas, "replay", "-m", "tests.support.sagas", "--address", address, "--query", query
        )
        assert done.returncode == 0, done.stderr
        assert f"{saga_id}  ok" in done.stdout
        assert "1 histories replayed, 0 failed" in done.stdout

    def test_replay_fails_when_the_code_no_longer_fits(self) -> None:
        # The histories' saga types are not among the examples' sagas.
        history = str(ROOT / "tests" / "histories" / "0147ca1" / "completed.json")
        done = sagas("replay", history, "-m", "examples", timeout=120)
        assert done.returncode == 1
        assert "completed  FAILED" in done.stdout


async def test_the_documented_test_runs_as_written(
    saga_env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/testing.md's first block, a saga author's whole test, on examples.money_transfer."""
    import examples.money_transfer

    text = (ROOT / "docs" / "testing.md").read_text()
    block = text.split("```python\n", 1)[1].split("```", 1)[0]
    assert len(block.strip().splitlines()) <= 12  # "about ten lines"
    monkeypatch.setitem(sys.modules, "my_sagas", examples.money_transfer)
    namespace: dict[str, Any] = {}
    exec(compile(block, "docs/testing.md", "exec"), namespace)
    await namespace["test_money_transfer_keeps_the_rules_at_every_failure_point"](saga_env)


def test_explore_against_the_participants_from_the_command_line(tmp_path: Path) -> None:
    """``sagas explore --participants``: the participants served in the process (the
    ``sagas.components`` entry point), the consistency checker as the check (``sagas.checks``,
    given here as pyproject.toml declares it: an older install of the package may lack it)."""
    port = free_port()
    env = {
        **os.environ,
        "SAGAS_DATA_DIR": str(tmp_path),
        "SAGAS_PARTICIPANTS_PORT": str(port),
        "SAGAS_PARTICIPANTS_URL": f"http://127.0.0.1:{port}",
        "PYTHONPATH": str(ROOT),
    }
    code = """if True:
        import sys
        from importlib.metadata import EntryPoint
        from engine import _kit_cli
        from engine.cli import main
        declared = {
            "sagas.checks": [EntryPoint("participants", "participants.checker:kit_check", "x")],
            "sagas.components": [EntryPoint("participants", "participants.cli:component", "x")],
        }
        _kit_cli.entry_points = lambda group: declared.get(group, [])
        sys.argv = ["sagas", "explore", "trip_booking", "-m", "workflows", "--participants"]
        main()
    """
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=180, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "trip_booking: 42 scenarios (4 skipped), 0 failed" in done.stdout
