"""The shipped sagas end to end, as a user runs them.

The participants and a worker run as ``sagas`` processes, talking HTTP to each other and to the
embedded Temporal dev server. Each row of the test-input table in DESIGN.md (and each input of
the order saga) has a test that asserts the saga's status, its steps, and the participants'
records, with the consistency checker as the oracle.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from engine import InvalidSagaInput, SagaClient, SagaState, SagaStatus, StepStatus
from engine.worker import load_modules
from participants.checker import all_records, check, records_of
from tests.support.processes import ROOT, Background, free_port, sagas
from workflows.order_fulfillment import OrderRequest
from workflows.trip_booking import TripRequest

pytestmark = pytest.mark.temporal

#: The "slow" hotel answers after this long: longer than the step's 5 s heartbeat timeout, so
#: only heartbeats keep the call alive, but shorter than DESIGN.md's 20 s to keep the suite fast.
SLOW_SECONDS = 8
EXAMPLES = ROOT / "examples" / "demo"


@dataclass(frozen=True)
class Stack:
    participants_url: str
    task_queue: str
    env: dict[str, str]


@pytest.fixture(scope="module")
def stack(
    dev_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """``sagas participants`` and ``sagas worker -m workflows`` as processes."""
    folder = tmp_path_factory.mktemp("demo")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "SAGAS_DATA_DIR": str(folder / "data"),
        "SAGAS_PARTICIPANTS_PORT": str(port),
        "SAGAS_PARTICIPANTS_URL": url,
        "SAGAS_PARTICIPANTS_SLOW_SECONDS": str(SLOW_SECONDS),
        "SAGAS_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "SAGAS_TASK_QUEUE": f"demo-{uuid.uuid4()}",
    }
    participants = Background(["participants"], env, folder / "participants.log")
    worker = Background(["worker", "-m", "workflows"], env, folder / "worker.log")
    try:
        participants.wait_for("ready")
        worker.wait_for("ready")
        yield Stack(url, env["SAGAS_TASK_QUEUE"], env)
    finally:
        worker.stop()
        participants.stop()


@dataclass
class Demo:
    sagas: SagaClient
    http: httpx.AsyncClient
    participants_url: str

    async def start(self, saga_type: str, payload: dict[str, Any]) -> str:
        return await self.sagas.start(saga_type, payload, saga_id=f"{saga_type}-{uuid.uuid4()}")

    async def run(self, saga_type: str, payload: dict[str, Any]) -> SagaState:
        """Start a saga, wait for its end, and check it against the participants."""
        return await self.finished(await self.start(saga_type, payload))

    async def finished(self, saga_id: str) -> SagaState:
        state = await asyncio.wait_for(self.sagas.result(saga_id), timeout=120)
        assert await check([state], self.participants_url) == []
        return state

    async def wait_for(self, saga_id: str, status: SagaStatus, timeout: float) -> SagaState:
        return await self.sagas.wait_for(saga_id, until=status, timeout=timeout, interval=0.5)

    async def records(self, saga_id: str) -> dict[str, str]:
        """Step name -> status of the participant's record (keys are ``{saga_id}/{step}``)."""
        found = await records_of(self.http, saga_id)
        return {key.removeprefix(f"{saga_id}/"): status for key, status in found.items()}


@pytest.fixture
async def demo(stack: Stack, dev_env: WorkflowEnvironment) -> AsyncIterator[Demo]:
    load_modules(["workflows"])  # the client validates inputs against the definitions
    async with httpx.AsyncClient(base_url=stack.participants_url, timeout=30) as http:
        yield Demo(SagaClient(dev_env.client, task_queue=stack.task_queue), http,
                   stack.participants_url)  # fmt: skip


def example(name: str) -> dict[str, Any]:
    """An input from examples/demo/, the files the README's walk-through uses."""
    loaded: dict[str, Any] = json.loads((EXAMPLES / f"{name}.json").read_text())
    return loaded


def steps(state: SagaState) -> dict[str, StepStatus]:
    return {step.name: step.status for step in state.steps}


class TestTripPaths:
    """Every row of the test-input table, on trip_booking."""

    async def test_a_trip_with_a_car_completes(self, demo: Demo) -> None:
        state = await demo.run("trip_booking", example("trip"))
        assert state.status is SagaStatus.COMPLETED
        assert set(steps(state).values()) == {StepStatus.SUCCEEDED}
        assert await demo.records(state.id) == {
            "reserve_flight": "reserved",
            "reserve_hotel": "reserved",
            "reserve_car": "reserved",
            "charge_payment": "charged",
            "send_itinerary": "sent",
        }
        charge = state.step("charge_payment")
        assert charge.approval is None  # under the approval amount: no one was asked
        assert charge.output["price"] == 300 + 3 * 120 + 3 * 50

    async def test_a_trip_without_a_car_skips_the_car(self, demo: Demo) -> None:
        state = await demo.run("trip_booking", example("trip-no-car"))
        assert state.status is SagaStatus.COMPLETED
        assert steps(state)["reserve_car"] is StepStatus.SKIPPED
        assert "reserve_car" not in await demo.records(state.id)

    async def test_a_sold_out_hotel_compensates_the_flight_and_car(self, demo: Demo) -> None:
        state = await demo.run("trip_booking", example("trip-sold-out"))
        assert state.status is SagaStatus.COMPENSATED
        hotel = state.step("reserve_hotel")
        assert hotel.status is StepStatus.FAILED
        assert hotel.attempts == 1  # a business refusal is not retried
        assert "409" in (hotel.error or "")
        assert "sold out" in (hotel.error or "")
        assert steps(state)["reserve_flight"] is StepStatus.COMPENSATED
        assert steps(state)["charge_payment"] is StepStatus.PENDING
        assert await demo.records(state.id) == {
            "reserve_flight": "cancelled",
            "reserve_car": "cancelled",
        }

    async def test_an_unavailable_car_is_left_out_of_the_trip(self, demo: Demo) -> None:
        # The car is optional: its refusal does not cost the traveller the trip.
        state = await demo.run("trip_booking", example("trip-car-unavailable"))
        assert state.status is SagaStatus.COMPLETED
        car = state.step("reserve_car")
        assert car.status is StepStatus.FAILED_OPTIONAL
        assert "409" in (car.error or "")
        assert await demo.records(state.id) == {
            "reserve_flight": "reserved",
            "reserve_hotel": "reserved",
            "charge_payment": "charged",
            "send_itinerary": "sent",
        }
        assert state.step("charge_payment").output["price"] == 300 + 3 * 120  # no car charged

    async def test_an_unreachable_hotel_is_booked_through_the_broker(self, demo: Demo) -> None:
        state = await demo.run("trip_booking", example("trip-hotel-unreachable"))
        assert state.status is SagaStatus.COMPLETED
        hotel = state.step("reserve_hotel")
        assert hotel.served_by == "reserve_hotel_via_broker"
        assert hotel.attempts == 5  # the hotel's four, then the broker's one
        assert hotel.output["price"] == 3 * 150  # the broker's price
        records = await all_records(demo.http, state.id)
        assert (f"{state.id}/reserve_hotel", "reserved") in records
        assert state.step("charge_payment").output["price"] == 300 + 3 * 150 + 3 * 50

    async def test_a_cancelled_trip_undoes_the_broker_booking(self, demo: Demo) -> None:
        trip = example("trip-hotel-unreachable")
        trip["payment"]["card_token"] = "tok_declined"
        state = await demo.run("trip_booking", trip)
        assert state.status is SagaStatus.COMPENSATED
        assert state.step("reserve_hotel").status is StepStatus.COMPENSATED
        assert (await demo.records(state.id))["reserve_hotel"] == "cancelled"

    async def test_a_declined_card_compensates_every_reservation(self, demo: Demo) -> None:
        state = await demo.run("trip_booking", example("trip-declined"))
        assert state.status is SagaStatus.COMPENSATED
        charge = state.step("charge_payment")
        assert charge.status is StepStatus.FAILED
        assert "402" in (charge.error or "")
        assert await demo.records(state.id) == {
            "reserve_flight": "cancelled",
            "reserve_hotel": "cancelled",
            "reserve_car": "cancelled",
        }

    async def test_a_flaky_card_is_retried_until_charged(self, demo: Demo) -> None:
        state = await demo.run("trip_booking", example("trip-flaky"))
        assert state.status is SagaStatus.COMPLETED
        charge = state.step("charge_payment")
        assert charge.attempts == 3  # two transient failures, then the charge
        assert (await demo.records(state.id))["charge_payment"] == "charged"

    async def test_a_flight_that_cannot_be_cancelled_waits_for_an_operator(
        self, demo: Demo
    ) -> None:
        saga_id = await demo.start(
            "trip_booking",
            example("trip-cancel-fails"),
        )
        # A refusal to cancel: parked at once, retrying could not help (DESIGN.md).
        state = await demo.wait_for(saga_id, SagaStatus.COMPENSATION_FAILED, timeout=30)
        flight = state.step("reserve_flight")
        assert flight.status is StepStatus.COMPENSATION_FAILED
        assert flight.compensation is not None
        assert flight.compensation.attempts == 1
        assert "409" in (flight.compensation.error or "")
        assert steps(state)["reserve_car"] is StepStatus.COMPENSATED
        # Exactly the failed compensation is left active, and the checker agrees.
        assert await demo.records(saga_id) == {
            "reserve_flight": "reserved",
            "reserve_car": "cancelled",
        }
        assert await check([state], demo.participants_url) == []

        await demo.sagas.resolve(saga_id, "reserve_flight", reason="cancelled by phone", by="ops")
        state = await demo.finished(saga_id)
        assert state.status is SagaStatus.COMPENSATED
        flight = state.step("reserve_flight")
        assert flight.status is StepStatus.RESOLVED
        assert flight.compensation is not None
        assert flight.compensation.resolution == "cancelled by phone"

    async def test_a_slow_hotel_is_kept_alive_by_heartbeats(self, demo: Demo) -> None:
        state = await demo.run("trip_booking", example("trip-slow-hotel"))
        assert state.status is SagaStatus.COMPLETED
        hotel = state.step("reserve_hotel")
        assert hotel.attempts == 1  # not mistaken for a lost worker and retried
        assert hotel.started_at
        assert hotel.ended_at
        assert (hotel.ended_at - hotel.started_at).total_seconds() >= SLOW_SECONDS

    async def test_an_expensive_trip_is_charged_after_approval(self, demo: Demo) -> None:
        saga_id = await demo.start("trip_booking", example("trip-expensive"))
        state = await demo.wait_for(saga_id, SagaStatus.AWAITING_APPROVAL, timeout=30)
        assert (await demo.records(saga_id)).get("charge_payment") is None
        await demo.sagas.approve(saga_id, by="manager", comment="ok")
        state = await demo.finished(saga_id)
        assert state.status is SagaStatus.COMPLETED
        charge = state.step("charge_payment")
        assert charge.approval is not None
        assert charge.approval.approved
        assert charge.output["price"] == 300 + 20 * 120 + 3 * 50

    async def test_a_rejected_trip_is_compensated_without_a_charge(self, demo: Demo) -> None:
        saga_id = await demo.start("trip_booking", example("trip-expensive"))
        await demo.wait_for(saga_id, SagaStatus.AWAITING_APPROVAL, timeout=30)
        await demo.sagas.reject(saga_id, by="manager", comment="too dear")
        state = await demo.finished(saga_id)
        assert state.status is SagaStatus.COMPENSATED
        assert await demo.records(saga_id) == {
            "reserve_flight": "cancelled",
            "reserve_hotel": "cancelled",
            "reserve_car": "cancelled",
        }


class TestOrderPaths:
    """order_fulfillment: stock, authorization, shipping (the pivot), capture, invoice."""

    async def test_an_order_completes(self, demo: Demo) -> None:
        state = await demo.run("order_fulfillment", example("order"))
        assert state.status is SagaStatus.COMPLETED
        assert await demo.records(state.id) == {
            "reserve_inventory": "reserved",
            "authorize_payment": "authorized",
            "ship_order": "shipped",
            "capture_payment": "captured",
            "send_invoice": "sent",
        }

    async def test_an_order_out_of_stock_fails_with_nothing_to_undo(self, demo: Demo) -> None:
        state = await demo.run("order_fulfillment", example("order-out-of-stock"))
        assert state.status is SagaStatus.FAILED
        assert steps(state)["reserve_inventory"] is StepStatus.FAILED
        assert await demo.records(state.id) == {}

    async def test_a_declined_card_releases_the_stock(self, demo: Demo) -> None:
        state = await demo.run("order_fulfillment", example("order-declined"))
        assert state.status is SagaStatus.COMPENSATED
        assert await demo.records(state.id) == {"reserve_inventory": "released"}

    async def test_a_refused_shipment_fails_the_pivot_and_compensates(self, demo: Demo) -> None:
        state = await demo.run("order_fulfillment", example("order-nowhere"))
        assert state.status is SagaStatus.COMPENSATED
        assert steps(state)["ship_order"] is StepStatus.FAILED
        assert await demo.records(state.id) == {
            "reserve_inventory": "released",
            "authorize_payment": "voided",
        }

    async def test_a_flaky_card_is_retried_until_authorized(self, demo: Demo) -> None:
        state = await demo.run("order_fulfillment", example("order-flaky"))
        assert state.status is SagaStatus.COMPLETED
        assert state.step("authorize_payment").attempts == 3


class TestInputs:
    async def test_an_invalid_trip_is_refused_with_the_field_named(self, demo: Demo) -> None:
        payload = example("trip")
        payload["hotel"]["nights"] = 0
        with pytest.raises(InvalidSagaInput, match=r"hotel\.nights"):
            await demo.start("trip_booking", payload)

    def test_every_demo_input_is_valid_and_in_the_readme(self) -> None:
        readme = (ROOT / "README.md").read_text()
        for file in sorted(EXAMPLES.glob("*.json")):
            model = OrderRequest if file.name.startswith("order") else TripRequest
            model.model_validate_json(file.read_text())
            assert f"examples/demo/{file.name}" in readme, file.name


class TestParticipantsOverHttp:
    """The participants' own contract: deduplication, conflicts, undo before do."""

    @staticmethod
    def headers(key: str) -> dict[str, str]:
        return {"Idempotency-Key": key, "Saga-Id": key.split("/")[0]}

    async def test_a_repeated_request_returns_the_first_answer(self, demo: Demo) -> None:
        key = f"s-{uuid.uuid4()}/reserve_flight"
        body = {"flight_number": "BA1", "date": "2026-12-24", "passenger": "Ada"}
        first = await demo.http.post("/flights/reservations", json=body, headers=self.headers(key))
        again = await demo.http.post("/flights/reservations", json=body, headers=self.headers(key))
        assert (first.status_code, again.status_code) == (201, 200)
        assert first.json() == again.json()
        listed = await demo.http.get("/flights/reservations", params={"saga_id": key.split("/")[0]})
        assert [r["status"] for r in listed.json()] == ["reserved"]

    async def test_a_key_reused_with_another_body_is_refused(self, demo: Demo) -> None:
        key = f"s-{uuid.uuid4()}/reserve_car"
        await demo.http.post("/cars/reservations", json={"car_class": "a", "days": 1},
                             headers=self.headers(key))  # fmt: skip
        other = await demo.http.post("/cars/reservations", json={"car_class": "b", "days": 1},
                                     headers=self.headers(key))  # fmt: skip
        assert other.status_code == 409
        assert other.headers["content-type"] == "application/problem+json"
        assert "different request" in other.json()["detail"]

    async def test_undo_before_do_refuses_the_late_do(self, demo: Demo) -> None:
        key = f"s-{uuid.uuid4()}/reserve_hotel"
        for _ in range(2):  # undo is idempotent, and a success with nothing to undo
            undone = await demo.http.post("/hotels/reservations/cancel", headers=self.headers(key))
            assert undone.status_code == 200
            assert undone.json()["status"] == "cancelled"
        late = await demo.http.post(
            "/hotels/reservations",
            json={"hotel_id": "h", "check_in": "2026-12-24", "nights": 1},
            headers=self.headers(key),
        )
        assert late.status_code == 409
        assert "cancelled before" in late.json()["detail"]
        records = await demo.http.get("/hotels/reservations", params={"saga_id": key.split("/")[0]})
        assert [r["status"] for r in records.json()] == ["cancelled"]

    async def test_a_request_without_a_key_names_the_header(self, demo: Demo) -> None:
        response = await demo.http.post("/payments/charges", json={"amount": 1})
        assert response.status_code == 422
        assert "Idempotency-Key" in response.text


class TestConsistencyChecker:
    """The oracle must see a mismatch when there is one, from a function and from the CLI."""

    async def test_a_tampered_record_is_reported(self, demo: Demo, stack: Stack) -> None:
        state = await demo.run("trip_booking", example("trip"))
        clean = sagas("check", "--id", state.id, env=stack.env)
        assert clean.returncode == 0, clean.stderr
        assert clean.stdout.strip() == "1 sagas checked, 0 mismatches"

        # Cancel the hotel behind the saga's back: the completed saga now disagrees.
        key = state.step("reserve_hotel").idempotency_key
        headers = {"Idempotency-Key": key, "Saga-Id": state.id}
        assert (await demo.http.post("/hotels/reservations/cancel", headers=headers)).is_success
        mismatches = await check([state], demo.participants_url)
        assert [(m.step, m.found) for m in mismatches] == [("reserve_hotel", "cancelled")]

        dirty = sagas("check", "--id", state.id, env=stack.env)
        assert dirty.returncode == 1
        assert f"{state.id} reserve_hotel: expected an active record, found cancelled" in (
            dirty.stdout
        )

    async def test_unreachable_participants_are_one_error_line(
        self, demo: Demo, stack: Stack
    ) -> None:
        state = await demo.run("order_fulfillment", example("order"))
        env = {**stack.env, "SAGAS_PARTICIPANTS_URL": f"http://127.0.0.1:{free_port()}"}
        result = sagas("check", "--id", state.id, env=env)
        assert result.returncode == 1
        assert result.stderr.startswith("error: cannot read the participants")
        assert "Traceback" not in result.stderr
