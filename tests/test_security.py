"""Issue 12's holes, each shown closed on the live stack, on SQLite and on PostgreSQL.

Exactly-once starts when Temporal's answer is lost, deadlines on every Temporal call, key
roles and four eyes, settings errors that keep secrets, capped event streams that share one
poller, authentication before the body, docs behind a key, ids from a safe set (cursors too),
UTC time filters, redaction at any depth, the Host check, and per-type input bounds.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel, ValidationError
from temporalio.client import Client, Interceptor, OutboundInterceptor, StartWorkflowInput
from temporalio.client import WorkflowHandle as Handle
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from api.auth import parse_keys
from api.main import create_app
from api.metrics import ApiMetrics
from api.roles import ALL_ROLES, Role
from api.service import SagaService
from engine import InvalidSagaInput, Saga, SagaClient, SagaDefinitionError, Step
from engine._cursor import encode_cursor
from engine._logging import redact
from engine.config import Settings, settings_problems
from engine.store import SagaStore
from engine.worker import build_worker, get_definition
from tests.conftest import binary
from tests.support import ledger
from tests.support.postgres import create_database
from tests.support.sagas import ALL, participant
from tests.test_api import assert_problem
from tests.test_encryption import new_key

pytestmark = pytest.mark.temporal

ROOT = Path(__file__).parent.parent
OPS = "ops:" + "o" * 32  # no roles listed: every role
READER = "reader:" + "r" * 32
STARTER = "starter:" + "s" * 32
APPROVER = "approver:" + "a" * 32
ROLES = ["reader:read", "starter:start+read", "approver:approve+read"]
HOST_LIKE = re.compile(r"127\.0\.0\.1|localhost:|:\d{4,5}\b")


def bearer(entry: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + entry.split(":", 1)[1]}


@dataclass
class Stack:
    http: httpx.AsyncClient
    app: FastAPI
    settings: Settings
    store: SagaStore
    database: str

    @property
    def service(self) -> SagaService:
        service: SagaService = self.app.state.service
        return service

    async def start(
        self, saga_type: str = "three_steps", as_: str = OPS, **body: Any
    ) -> dict[str, Any]:
        order = {"order_id": f"o-{uuid.uuid4().hex[:10]}", "amount": 10, **body}
        response = await self.http.post(f"/sagas/{saga_type}", json=order, headers=bearer(as_))
        assert response.status_code == 202, response.text
        saga: dict[str, Any] = response.json()
        return saga

    async def status(self, saga_id: str, status: str, timeout: float = 30) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                saga: dict[str, Any] = (
                    await self.http.get(f"/sagas/{saga_id}", headers=bearer(OPS))
                ).json()
                if saga["status"] == status:
                    return saga
                await asyncio.sleep(0.1)


def database_url(request: pytest.FixtureRequest, tmp: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp / 'sagas.sqlite'}"
    return create_database(request.getfixturevalue("postgres"), f"sec_{uuid.uuid4().hex}")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
async def stack(
    request: pytest.FixtureRequest,
    dev_env: WorkflowEnvironment,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    url = database_url(request, tmp_path_factory.mktemp("sec"))
    settings = Settings(
        database_url=url,
        temporal_address=dev_env.client.service_client.config.target_host,
        task_queue=f"sec-{uuid.uuid4()}",
        modules=["tests.support.sagas"],
        api_keys=[OPS, READER, STARTER, APPROVER],
        api_key_roles=ROLES,
        api_four_eyes=True,
        events_max_streams=55,
        events_max_streams_per_key=50,
    )
    store = SagaStore(url)
    store.migrate()
    app = create_app(settings)
    worker = build_worker(dev_env.client, task_queue=settings.task_queue, sagas=ALL, store=store)
    async with worker, app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            yield Stack(http, app, settings, store, request.param)
    store.close()


# ------------------------------------------------------------------ 1. exactly-once starts


class LoseTheAnswer(Interceptor):
    """The first start fails with ``status``; with DEADLINE_EXCEEDED, after Temporal took it."""

    def __init__(self, status: RPCStatusCode) -> None:
        self.status = status
        self.ids: list[str] = []

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        return _LoseTheAnswer(next, self)


class _LoseTheAnswer(OutboundInterceptor):
    def __init__(self, next: OutboundInterceptor, owner: LoseTheAnswer) -> None:
        super().__init__(next)
        self.owner = owner

    async def start_workflow(self, input: StartWorkflowInput) -> Handle[Any, Any]:
        self.owner.ids.append(input.id)
        if len(self.owner.ids) > 1:
            return await super().start_workflow(input)
        if self.owner.status == RPCStatusCode.DEADLINE_EXCEEDED:
            await super().start_workflow(input)  # Temporal has it; its answer is lost
        raise RPCError("context deadline exceeded (from 10.0.0.7:7233)", self.owner.status, b"")


async def through(stack: Stack, dev_env: WorkflowEnvironment, lose: LoseTheAnswer) -> FastAPI:
    """The stack's app, with a Temporal client whose first start goes as ``lose`` says."""
    base = dev_env.client
    client = Client(
        base.service_client,
        namespace=base.namespace,
        data_converter=base.data_converter,
        interceptors=[lose],
    )
    sagas = SagaClient(client, task_queue=stack.settings.task_queue)
    return create_app(
        stack.settings, service=SagaService(stack.settings, sagas, stack.store, ApiMetrics())
    )


class TestExactlyOnceStarts:
    async def test_a_start_whose_answer_was_lost_is_found_again_by_its_key(
        self, stack: Stack, dev_env: WorkflowEnvironment
    ) -> None:
        lose = LoseTheAnswer(RPCStatusCode.DEADLINE_EXCEEDED)
        app = await through(stack, dev_env, lose)
        body = {"order_id": f"o-{uuid.uuid4().hex[:10]}", "amount": 3}
        headers = {**bearer(OPS), "Idempotency-Key": f"k-{uuid.uuid4()}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            first = await http.post("/sagas/three_steps", json=body, headers=headers)
            problem = assert_problem(first, 504)
            assert problem["title"] == "temporal_timeout"
            assert not HOST_LIKE.search(first.text)
            again = await http.post("/sagas/three_steps", json=body, headers=headers)
        assert again.status_code == 200, again.text
        # One saga: the retry found the one Temporal had taken, and started no other.
        assert again.json()["id"] == lose.ids[0]
        assert lose.ids == [lose.ids[0]] * 2
        await stack.status(lose.ids[0], "completed")

    async def test_a_start_refused_for_sure_frees_its_key(
        self, stack: Stack, dev_env: WorkflowEnvironment
    ) -> None:
        lose = LoseTheAnswer(RPCStatusCode.INVALID_ARGUMENT)
        app = await through(stack, dev_env, lose)
        body = {"order_id": f"o-{uuid.uuid4().hex[:10]}", "amount": 3}
        headers = {**bearer(OPS), "Idempotency-Key": f"k-{uuid.uuid4()}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            first = await http.post("/sagas/three_steps", json=body, headers=headers)
            assert assert_problem(first, 502)["title"] == "temporal_error"
            assert not HOST_LIKE.search(first.text)
            again = await http.post("/sagas/three_steps", json=body, headers=headers)
        assert again.status_code == 202, again.text
        assert again.json()["id"] == lose.ids[1] != lose.ids[0]
        gone = await stack.http.get(f"/sagas/{lose.ids[0]}", headers=bearer(OPS))
        assert_problem(gone, 404)


# ------------------------------------------------------------------ 3. deadlines


async def test_an_action_with_no_worker_is_504_within_its_deadline(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'sagas.sqlite'}",
        temporal_address=dev_env.client.service_client.config.target_host,
        task_queue=f"nobody-{uuid.uuid4()}",  # no worker polls it
        modules=["tests.support.sagas"],
        api_keys=[OPS],
        api_action_timeout_seconds=1.0,
    )
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://localhost") as http,
    ):
        started = await http.post("/sagas/three_steps", json={"order_id": "o"}, headers=bearer(OPS))
        assert started.status_code == 202, started.text
        saga_id = started.json()["id"]
        began = time.monotonic()
        cancel = await http.post(f"/sagas/{saga_id}/cancel", headers=bearer(OPS))
        took = time.monotonic() - began
    assert assert_problem(cancel, 504)["title"] == "temporal_timeout"
    assert took < 5, took
    assert not HOST_LIKE.search(cancel.text)
    await dev_env.client.get_workflow_handle(saga_id).terminate("test over")


async def test_an_unreachable_temporal_is_503_without_its_address(tmp_path: Path) -> None:
    gone = await WorkflowEnvironment.start_local(
        dev_server_existing_path=binary("temporal"), dev_server_log_level="error"
    )
    address = gone.client.service_client.config.target_host
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'sagas.sqlite'}",
        temporal_address=address,
        modules=["tests.support.sagas"],
        api_keys=[OPS],
        api_temporal_timeout_seconds=3.0,
    )
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://localhost") as http,
    ):
        await gone.shutdown()
        began = time.monotonic()
        start = await http.post("/sagas/three_steps", json={"order_id": "o"}, headers=bearer(OPS))
        read = await http.get("/sagas/three_steps-unknown", headers=bearer(OPS))
        took = time.monotonic() - began
    for response in (start, read):
        assert assert_problem(response, 503)["title"] == "temporal_unavailable"
        assert address not in response.text
        assert not HOST_LIKE.search(response.text)
    assert took < 2 * 3.0 + 2, took


# ------------------------------------------------------------------ 4. roles, four eyes


class TestRoles:
    async def test_each_route_asks_for_its_role(self, stack: Stack) -> None:
        saga = await stack.start(as_=STARTER)
        path = f"/sagas/{saga['id']}"
        # reader: reads only
        assert (await stack.http.get(path, headers=bearer(READER))).status_code == 200
        assert (await stack.http.get("/saga-types", headers=bearer(READER))).status_code == 200
        refused = [
            (READER, "/sagas/three_steps", {"order_id": "o"}),
            (READER, f"{path}/cancel", None),
            (STARTER, f"{path}/cancel", None),
            (STARTER, f"{path}/approve", None),
            (STARTER, f"{path}/compensations/retry", None),
            (STARTER, f"{path}/steps/a/resolve", {"reason": "by hand"}),
            (APPROVER, "/sagas/three_steps", {"order_id": "o"}),
            (APPROVER, f"{path}/cancel", None),
        ]
        for key, url, body in refused:
            response = await stack.http.post(url, json=body, headers=bearer(key))
            problem = assert_problem(response, 403)
            assert problem["title"] == "missing_role", (key, url)
        # A key configured without roles keeps every one of them.
        await stack.status(saga["id"], "completed")
        retry = await stack.http.post(f"{path}/compensations/retry", headers=bearer(OPS))
        assert_problem(retry, 409)  # past the role check: the saga has nothing to retry

    async def test_a_role_is_checked_before_the_body_is_read(self, stack: Stack) -> None:
        response = await stack.http.post(
            "/sagas/three_steps",
            content=b"{oops",
            headers={**bearer(READER), "content-type": "application/json"},
        )
        assert assert_problem(response, 403)["title"] == "missing_role"

    async def test_four_eyes_refuse_the_approval_of_the_starter(
        self, stack: Stack, dev_env: WorkflowEnvironment
    ) -> None:
        order_id = f"o-{uuid.uuid4().hex[:10]}"
        ledger.plan(order_id)
        saga = await stack.start("approval", as_=OPS, order_id=order_id, amount=500)
        await stack.status(saga["id"], "awaiting_approval")
        own = await stack.http.post(f"/sagas/{saga['id']}/approve", headers=bearer(OPS))
        assert assert_problem(own, 403, "four eyes")["title"] == "four_eyes"
        other = await stack.http.post(f"/sagas/{saga['id']}/approve", headers=bearer(APPROVER))
        assert other.status_code == 200, other.text
        await stack.status(saga["id"], "completed")
        # Who started it is kept by name, never by key.
        description = await dev_env.client.get_workflow_handle(saga["id"]).describe()
        assert await description.memo_value("started_by") == "ops"
        assert OPS.split(":")[1] not in json.dumps(await description.memo())

    def test_roles_are_parsed_and_checked(self) -> None:
        keys = {k.name: k.roles for k in parse_keys([OPS, READER, STARTER], ROLES[:2])}
        assert keys == {
            "ops": ALL_ROLES,
            "reader": {Role.READ},
            "starter": {Role.START, Role.READ},
        }
        with pytest.raises(ValueError, match="roles are read, start, operate, approve"):
            parse_keys([READER], ["reader:read+admin"])
        with pytest.raises(ValueError, match="no API key is named 'nobody'"):
            parse_keys([READER], ["nobody:read"])

    def test_key_names_tell_one_caller(self) -> None:
        """Roles, four eyes and the record of who acted go by a key's name."""
        secret = "s" * 40
        with pytest.raises(ValueError, match="two API keys are named 'ops'"):
            parse_keys([f"ops:{secret}", f"ops:{secret[:-1]}x"])
        with pytest.raises(ValueError, match="API key number 2 has no name"):
            parse_keys([READER, secret], four_eyes=True)
        with pytest.raises(ValueError, match="API key number 2 has no name"):
            parse_keys([READER, secret], ["reader:read"])
        assert [k.name for k in parse_keys([secret, secret + "y"])] == ["key-1", "key-2"]


# ------------------------------------------------------------------ 7. secrets in settings


class TestSettingsSecrets:
    def test_an_invalid_setting_does_not_echo_the_encryption_key(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        bad = "SeCrEt" + "x" * 40  # not base64 of 32 bytes
        monkeypatch.setenv("SAGAS_ENCRYPTION_KEY", bad)
        with pytest.raises(ValidationError) as refused:
            Settings()
        # What a traceback prints, and the one line the CLI prints.
        assert "SeCrEt" not in str(refused.value)
        assert "SeCrEt" not in settings_problems(refused.value)

    def test_a_production_refusal_does_not_echo_any_secret(self) -> None:
        key, api_key = new_key(), "ops:" + "p" * 40
        with pytest.raises(ValidationError, match="SQLite") as refused:
            Settings(environment="production", encryption_key=key, api_keys=[api_key])
        text = str(refused.value) + settings_problems(refused.value)
        assert key not in text
        assert "p" * 40 not in text

    def test_the_placeholder_keys_in_deploy_are_refused_in_production(self) -> None:
        shipped = (ROOT / "deploy/k8s/base/secret.yaml").read_text() + (
            ROOT / "deploy/.env.example"
        ).read_text()
        placeholders = re.findall(r"SAGAS_API_KEYS[=:] *\"?([^\"\s]+)", shipped)
        assert len(placeholders) >= 2, shipped
        for placeholder in placeholders:
            with pytest.raises(ValidationError, match="placeholder") as refused:
                Settings(
                    environment="production",
                    encryption_key=new_key(),
                    database_url="postgresql://sagas@db/sagas",
                    api_keys=[placeholder],
                )
            assert placeholder.split(":")[-1] not in str(refused.value)
        encryption = re.search(r"SAGAS_ENCRYPTION_KEY: \"([^\"]+)\"", shipped)
        assert encryption is not None
        with pytest.raises(ValidationError, match="not base64") as refused:
            Settings(encryption_key=encryption.group(1))
        assert encryption.group(1) not in str(refused.value)

    def test_keys_under_32_characters_are_refused_in_production_only(self) -> None:
        short = "ops:" + "k" * 20
        Settings(api_keys=[short])
        with pytest.raises(ValidationError, match="'ops' is shorter than 32 characters"):
            Settings(
                environment="production",
                encryption_key=new_key(),
                database_url="postgresql://sagas@db/sagas",
                api_keys=[short],
            )
        Settings(
            environment="production",
            encryption_key=new_key(),
            database_url="postgresql://sagas@db/sagas",
            api_keys=["ops:" + "k" * 32],
        )


# ------------------------------------------------------------------ 8. event streams


async def test_fifty_open_streams_share_a_poller_and_do_not_stop_starts(stack: Stack) -> None:
    order_id = f"o-{uuid.uuid4().hex[:10]}"
    ledger.plan(order_id)
    saga = await stack.start("approval", order_id=order_id, amount=500)
    await stack.status(saga["id"], "awaiting_approval")
    hub = stack.service.streams
    url = f"/sagas/{saga['id']}/events"

    async def follow(key: str) -> list[str]:
        response = await stack.http.get(url, headers=bearer(key))
        assert response.status_code == 200, response.text
        return [
            json.loads(line[6:])["status"]
            for line in response.text.splitlines()
            if line.startswith("data: ")
        ]

    streams = [asyncio.create_task(follow(OPS)) for _ in range(50)]
    async with asyncio.timeout(20):
        while hub.streams < 50:
            await asyncio.sleep(0.05)
    # The 51st stream of one key, then past the global cap (55): 429, before any stream.
    assert_problem(await stack.http.get(url, headers=bearer(OPS)), 429, "too_many_streams")
    streams += [asyncio.create_task(follow(READER)) for _ in range(5)]
    async with asyncio.timeout(20):
        while hub.streams < 55:
            await asyncio.sleep(0.05)
    assert_problem(await stack.http.get(url, headers=bearer(READER)), 429, "too_many_streams")
    assert hub.pollers == 1  # one saga, one poller, however many streams follow it

    looks = hub.looks
    began = time.monotonic()
    starts = await asyncio.gather(
        *(
            stack.http.post(
                "/sagas/three_steps",
                json={"order_id": f"o-{uuid.uuid4().hex[:10]}"},
                headers=bearer(STARTER),
            )
            for _ in range(20)
        )
    )
    took = time.monotonic() - began
    assert [s.status_code for s in starts] == [202] * 20
    # Reads by the streams: one poller's, not one per stream.
    assert hub.looks - looks <= took / stack.settings.events_poll_seconds + 2

    approved = await stack.http.post(f"/sagas/{saga['id']}/approve", headers=bearer(APPROVER))
    assert approved.status_code == 200, approved.text
    async with asyncio.timeout(30):
        seen = await asyncio.gather(*streams)
    assert all(statuses[-1] == "completed" for statuses in seen)
    assert (hub.streams, hub.pollers) == (0, 0)


# ------------------------------------------------------------------ 9. the smaller ones


class TestSmaller:
    async def test_an_unauthenticated_malformed_post_is_401(self, stack: Stack) -> None:
        json_headers = {"content-type": "application/json"}
        for path in ("/sagas/three_steps", "/sagas/x/cancel", "/codec/decode"):
            response = await stack.http.post(path, content=b"{oops", headers=json_headers)
            assert_problem(response, 401)
        wrong = {**json_headers, "Authorization": "Bearer " + "w" * 32}
        response = await stack.http.post("/sagas/three_steps", content=b"{oops", headers=wrong)
        assert_problem(response, 403)

    async def test_ids_and_step_names_outside_the_safe_set_are_422(self, stack: Stack) -> None:
        for path in ("/sagas/a%00b", "/sagas/a%00b/events", "/sagas/a%20b", "/sagas/a%0Ab"):
            assert_problem(await stack.http.get(path, headers=bearer(OPS)), 422, "saga_id")
        resolve = await stack.http.post(
            "/sagas/x/steps/a%00b/resolve", json={"reason": "r"}, headers=bearer(OPS)
        )
        assert_problem(resolve, 422, "step")
        with pytest.raises(InvalidSagaInput, match="saga_id"):
            await stack.service.sagas.start("three_steps", {}, saga_id="a\x00b")

    async def test_a_cursor_holding_a_nul_is_422(self, stack: Stack) -> None:
        for bad in ("a\x00b", "a b", "x" * 201):
            cursor = encode_cursor(datetime.now(UTC), bad)
            response = await stack.http.get(
                "/sagas", params={"cursor": cursor}, headers=bearer(OPS)
            )
            assert_problem(response, 422, "cursor")

    async def test_time_filters_are_compared_in_utc(self, stack: Stack) -> None:
        saga = await stack.start()
        created = datetime.fromisoformat(saga["created_at"])
        east, west = timezone(timedelta(hours=5)), timezone(timedelta(hours=-5))

        async def listed(**bounds: datetime) -> bool:
            params = {k: v.isoformat() for k, v in bounds.items()}
            response = await stack.http.get(
                "/sagas", params={**params, "limit": 200}, headers=bearer(OPS)
            )
            assert response.status_code == 200, response.text
            return saga["id"] in {s["id"] for s in response.json()["items"]}

        minute = timedelta(minutes=1)
        assert await listed(created_after=(created - minute).astimezone(east))
        assert await listed(created_before=(created + minute).astimezone(west))
        assert not await listed(created_after=(created + minute).astimezone(west))
        assert not await listed(created_before=(created - minute).astimezone(east))

    async def test_the_host_is_checked_in_development(self, stack: Stack) -> None:
        evil = await stack.http.get("/sagas", headers={**bearer(OPS), "Host": "evil.example"})
        assert assert_problem(evil, 400)["title"] == "invalid_host"
        ours = await stack.http.get("/sagas", headers={**bearer(OPS), "Host": "localhost:8000"})
        assert ours.status_code == 200
        # Probes reach health by the pod's address.
        probe = await stack.http.get("/healthz", headers={"Host": "10.1.2.3:8000"})
        assert probe.status_code == 200
        named = create_app(Settings(api_allowed_hosts=["sagas.example.com"]))
        transport = httpx.ASGITransport(app=named)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            assert (await http.get("/openapi.json")).status_code == 400
            host = {"Host": "sagas.example.com"}
            assert (await http.get("/openapi.json", headers=host)).status_code == 200

    async def test_docs_are_behind_a_key_in_production(self) -> None:
        production = Settings(
            environment="production",
            encryption_key=new_key(),
            database_url="postgresql://sagas@db/sagas",
            api_keys=[OPS, READER],
            api_key_roles=["reader:read"],
        )
        for settings, anonymous, keyed in (
            (production, 401, 200),
            (production.model_copy(update={"api_docs": "off"}), 401, 404),
            (Settings(), 200, 200),
        ):
            app = create_app(settings)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
                for path in ("/openapi.json", "/docs"):
                    assert (await c.get(path)).status_code == anonymous, (path, settings)
                    with_key = await c.get(path, headers=bearer(READER))
                    assert with_key.status_code == keyed, (path, settings)

    def test_redaction_has_no_depth_limit(self) -> None:
        deep: dict[str, Any] = {"card_token": "tok_live_1", "note": "tok_live_2 paid"}
        for _ in range(40):
            deep = {"level": [deep]}
        cycle: dict[str, Any] = {"n": 1}
        cycle["self"] = cycle
        event = redact(None, "info", {"event": "paid", "payload": deep, "cycle": cycle})
        text = json.dumps(event["payload"])
        assert "tok_live" not in text
        assert text.count("[redacted]") == 2
        assert event["cycle"] == {"n": 1, "self": "[redacted]"}


# ------------------------------------------------------------------ 2. input bounds


class TestInputBounds:
    async def test_an_input_over_its_bound_is_413_before_it_starts(
        self, stack: Stack, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        service = stack.service
        monkeypatch.setattr(
            service, "settings", service.settings.model_copy(update={"max_input_bytes": 256})
        )
        padded = {"order_id": "o-" + "x" * 300, "amount": 1}
        response = await stack.http.post("/sagas/three_steps", json=padded, headers=bearer(OPS))
        problem = assert_problem(response, 413, "256")
        assert problem["title"] == "input_too_large"
        # A saga type's own bound comes first.
        monkeypatch.setattr(get_definition("three_steps"), "max_input_bytes", 4096)
        response = await stack.http.post("/sagas/three_steps", json=padded, headers=bearer(OPS))
        assert response.status_code == 202, response.text
        monkeypatch.setattr(get_definition("three_steps"), "max_input_bytes", 64)
        small = {"order_id": "o-" + "x" * 60}
        response = await stack.http.post("/sagas/three_steps", json=small, headers=bearer(OPS))
        assert_problem(response, 413, "64")

    async def test_a_malformed_input_is_422_naming_the_field(self, stack: Stack) -> None:
        bad = {"order_id": ["not", "a", "string"], "amount": "many"}
        response = await stack.http.post("/sagas/three_steps", json=bad, headers=bearer(OPS))
        fields = {e["field"] for e in assert_problem(response, 422)["errors"]}
        assert fields == {"order_id", "amount"}

    def test_a_definition_checks_its_bound(self) -> None:
        class Small(BaseModel):
            n: int = 0

        do, _ = participant("bounded_step")
        assert Saga("bounded", input=Small, steps=[Step(do)], max_input_bytes=100)
        with pytest.raises(SagaDefinitionError, match="max_input_bytes"):
            Saga("bounded", input=Small, steps=[Step(do)], max_input_bytes=0)


async def test_refused_requests_are_counted(stack: Stack) -> None:
    def refused(metrics: str) -> float:
        wanted = 'sagas_api_request_seconds_count{method="GET",route="unmatched",status="401"}'
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith(wanted)
        )

    before = refused((await stack.http.get("/metrics")).text)
    assert_problem(await stack.http.get("/sagas"), 401)
    assert refused((await stack.http.get("/metrics")).text) == before + 1


def test_host_names_are_read_without_their_port() -> None:
    from api.hosts import HostCheck, _hostname

    assert [_hostname(h) for h in ("[::1]:8000", "LocalHost:80", "::1", "a.b")] == [
        "::1",
        "localhost",
        "::1",
        "a.b",
    ]
    check = HostCheck(FastAPI(), ["localhost", "*.example.com"])
    assert [check.allows(h) for h in ("api.example.com", "localhost")] == [True, True]
    assert [check.allows(h) for h in ("example.com.evil", "evilexample.com")] == [False, False]
