"""The API's codec server: the Temporal UI's /decode and /encode requests, as the UI sends them.

A saga runs with encryption on; its history is read raw from Temporal (what the UI holds), and
the sealed input posted to /codec/decode comes back as the saga's input.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from engine import SagaClient, SagaStatus
from engine.config import Settings
from engine.store import SagaStore
from engine.worker import build_worker
from tests.support import ledger
from tests.support.sagas import ALL
from tests.test_encryption import new_key

pytestmark = pytest.mark.temporal

KEY = "codec-test-key-0123456789"
UI = "http://localhost:8233"


@dataclass
class Stack:
    http: httpx.AsyncClient
    sagas: SagaClient
    raw: Client  # without the key: what Temporal and its UI hold

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {KEY}", "X-Namespace": "default"}


@pytest.fixture
async def stack(dev_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Stack]:
    address = dev_env.client.service_client.config.target_host
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'sagas.sqlite'}",
        temporal_address=address,
        task_queue=f"codec-{uuid.uuid4()}",
        modules=["tests.support.sagas"],
        api_keys=[KEY],
        encryption_key=new_key(),
        temporal_ui_url=UI,
    )
    sealed = await Client.connect(address, data_converter=settings.data_converter())
    store = SagaStore(settings.store_url())
    store.migrate()
    app = create_app(settings)
    async with (
        build_worker(sealed, task_queue=settings.task_queue, sagas=ALL),
        app.router.lifespan_context(app),
    ):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            yield Stack(http, SagaClient(sealed, task_queue=settings.task_queue), dev_env.client)
    store.close()


async def sealed_input(stack: Stack, secret: str) -> dict[str, object]:
    """Run a saga with ``secret`` in its input; its first history event's input, raw."""
    ledger.plan(secret)
    saga_id = await stack.sagas.start("three_steps", {"order_id": secret, "amount": 7})
    assert (await stack.sagas.result(saga_id)).status is SagaStatus.COMPLETED
    history = await stack.raw.get_workflow_handle(saga_id).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    body: dict[str, object] = json_format.MessageToDict(started.input)
    assert secret not in json.dumps(body)
    return body


class TestCodecServer:
    """The Temporal UI posts the payloads it holds; operators with a key read them."""

    async def test_a_sealed_payload_from_a_saga_history_decodes(self, stack: Stack) -> None:
        secret = f"o-{uuid.uuid4().hex}"
        body = await sealed_input(stack, secret)
        response = await stack.http.post("/codec/decode", json=body, headers=stack.auth())
        assert response.status_code == 200, response.text
        (payload,) = response.json()["payloads"]
        assert base64.b64decode(payload["metadata"]["encoding"]) == b"json/plain"
        assert json.loads(base64.b64decode(payload["data"]))["order_id"] == secret

    async def test_a_sealed_failure_from_a_saga_history_decodes(self, stack: Stack) -> None:
        """The UI posts a failure's encoded attributes like any payload: it gets the message
        of the failed attempt back."""
        token = f"tok_{uuid.uuid4().hex}"
        saga_id = await stack.sagas.start("card_declined", {"card_token": token})
        assert (await stack.sagas.result(saga_id)).status is SagaStatus.COMPENSATED
        history = await stack.raw.get_workflow_handle(saga_id).fetch_history()
        (failure,) = [
            e.activity_task_failed_event_attributes.failure
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED
        ]
        assert failure.message == "Encoded failure"
        body = json_format.MessageToDict(Payloads(payloads=[failure.encoded_attributes]))
        assert token not in json.dumps(body)
        response = await stack.http.post("/codec/decode", json=body, headers=stack.auth())
        assert response.status_code == 200, response.text
        (payload,) = response.json()["payloads"]
        opened = json.loads(base64.b64decode(payload["data"]))
        assert opened["message"] == f"card {token} declined for order o-1"
        # A refusal is an answer, not an incident: it goes without a stack trace.
        assert opened.get("stack_trace", "") == ""

    async def test_encode_then_decode_gives_the_payload_back(self, stack: Stack) -> None:
        plain = {"metadata": {"encoding": base64.b64encode(b"json/plain").decode()},
                 "data": base64.b64encode(b'{"a": 1}').decode()}  # fmt: skip
        sealed = await stack.http.post(
            "/codec/encode", json={"payloads": [plain]}, headers=stack.auth()
        )
        assert sealed.status_code == 200, sealed.text
        assert sealed.json()["payloads"][0]["data"] != plain["data"]
        opened = await stack.http.post("/codec/decode", json=sealed.json(), headers=stack.auth())
        assert opened.json() == {"payloads": [plain]}

    async def test_without_a_key_nothing_is_decoded(self, stack: Stack) -> None:
        body = await sealed_input(stack, f"o-{uuid.uuid4().hex}")
        response = await stack.http.post("/codec/decode", json=body)
        assert response.status_code == 401

    async def test_a_payload_that_does_not_open_is_a_clear_422(self, stack: Stack) -> None:
        body = await sealed_input(stack, f"o-{uuid.uuid4().hex}")
        payload = Payloads()
        json_format.ParseDict(body, payload)
        for broken in (payload.payloads[0].data[:-1] + b"x", b"short"):  # tampered, truncated
            payload.payloads[0].data = broken
            tampered = json_format.MessageToDict(payload)
            response = await stack.http.post("/codec/decode", json=tampered, headers=stack.auth())
            assert response.status_code == 422, response.text
            assert "does not open" in response.json()["detail"]

    async def test_the_ui_origin_may_call_it_and_no_other(self, stack: Stack) -> None:
        preflight = {
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,x-namespace",
        }
        allowed = await stack.http.options("/codec/decode", headers={"Origin": UI, **preflight})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == UI
        assert allowed.headers["access-control-allow-credentials"] == "true"
        other = await stack.http.options(
            "/codec/decode", headers={"Origin": "http://evil.example", **preflight}
        )
        assert "access-control-allow-origin" not in other.headers

    async def test_payloads_above_the_api_limit_are_taken(self, stack: Stack) -> None:
        big = base64.b64encode(json.dumps({"blob": "x" * 200_000}).encode()).decode()
        plain = {"metadata": {"encoding": base64.b64encode(b"json/plain").decode()}, "data": big}
        sealed = await stack.http.post(
            "/codec/encode", json={"payloads": [plain]}, headers=stack.auth()
        )
        assert sealed.status_code == 200, sealed.text[:200]
        # Past the codec's own limit: a 413 the UI's browser can read (CORS headers on it).
        huge = {"payloads": [{**plain, "data": "A" * (5 * 1024 * 1024)}]}
        refused = await stack.http.post(
            "/codec/decode", json=huge, headers={**stack.auth(), "Origin": UI}
        )
        assert refused.status_code == 413
        assert refused.headers["access-control-allow-origin"] == UI
