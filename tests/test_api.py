"""The REST API, route by route and error by error, on SQLite and on PostgreSQL.

The app runs with its real lifespan (Temporal client, saga store, migrations) against the dev
server, with a worker that projects into the same store; requests go through httpx's ASGI
transport. Test sagas come from tests/support/sagas.py, their faults planned by order id.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fastapi.routing
import httpx
import pytest
from starlette.types import Message
from temporalio.testing import WorkflowEnvironment

from api.main import UnsafeSettings, create_app
from engine.config import Settings
from engine.store import SagaStore
from engine.worker import build_worker
from tests.support import ledger
from tests.support.ledger import ALWAYS
from tests.support.postgres import create_database
from tests.support.sagas import ALL
from tests.test_encryption import new_key

pytestmark = pytest.mark.temporal

KEY = "ops:" + "k" * 32
AUTH = {"Authorization": "Bearer " + "k" * 32}


@dataclass
class Api:
    http: httpx.AsyncClient
    settings: Settings

    async def start(
        self, saga_type: str, *, key: str | None = None, **plan: Any
    ) -> tuple[str, dict[str, Any]]:
        """Start a test saga whose faults are planned by its order id; (order id, resource)."""
        order_id = f"o-{uuid.uuid4().hex[:10]}"
        amount = plan.pop("amount", 10)
        ledger.plan(order_id, **plan)
        headers = {**AUTH, **({"Idempotency-Key": key} if key else {})}
        response = await self.http.post(
            f"/sagas/{saga_type}", json={"order_id": order_id, "amount": amount}, headers=headers
        )
        assert response.status_code == 202, response.text
        return order_id, response.json()

    async def get(self, saga_id: str) -> dict[str, Any]:
        response = await self.http.get(f"/sagas/{saga_id}", headers=AUTH)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def until(
        self, saga_id: str, ok: Callable[[dict[str, Any]], bool], timeout: float = 30
    ) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while not ok(saga := await self.get(saga_id)):
                await asyncio.sleep(0.1)
        return saga

    async def status(self, saga_id: str, status: str, timeout: float = 30) -> dict[str, Any]:
        return await self.until(saga_id, lambda s: s["status"] == status, timeout)

    async def post(self, path: str, body: Any = None, **headers: str) -> httpx.Response:
        return await self.http.post(path, json=body, headers={**AUTH, **headers})


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
async def api(
    request: pytest.FixtureRequest,
    dev_env: WorkflowEnvironment,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Api]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('api') / 'sagas.sqlite'}"
    else:
        url = create_database(request.getfixturevalue("postgres"), f"api_{uuid.uuid4().hex}")
    settings = Settings(
        database_url=url,
        temporal_address=dev_env.client.service_client.config.target_host,
        task_queue=f"api-{uuid.uuid4()}",
        modules=["tests.support.sagas"],
        api_keys=[KEY],
    )
    store = SagaStore(url)
    store.migrate()
    app = create_app(settings)
    worker = build_worker(dev_env.client, task_queue=settings.task_queue, sagas=ALL, store=store)
    async with worker, app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            yield Api(http, settings)
    store.close()


def assert_problem(response: httpx.Response, status: int, *needles: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    for needle in needles:
        assert needle in json.dumps(body)
    return body


class TestStart:
    async def test_a_saga_starts_and_is_followed_to_its_end(self, api: Api) -> None:
        _, started = await api.start("three_steps")
        assert started["status"] == "running"
        assert [s["name"] for s in started["steps"]] == ["a", "b", "c"]
        assert started["temporal_url"].endswith(f"/workflows/{started['id']}")
        done = await api.status(started["id"], "completed")
        assert [s["status"] for s in done["steps"]] == ["succeeded"] * 3
        assert done["result"]["a"]["step"] == "a"
        assert done["created_at"] == started["created_at"]

    async def test_the_same_key_and_body_give_the_same_saga(self, api: Api) -> None:
        key = f"key-{uuid.uuid4()}"
        body = {"order_id": f"o-{uuid.uuid4().hex[:8]}", "amount": 3}
        first = await api.post("/sagas/three_steps", body, **{"Idempotency-Key": key})
        again = await api.post("/sagas/three_steps", body, **{"Idempotency-Key": key})
        assert (first.status_code, again.status_code) == (202, 200)
        assert first.json()["id"] == again.json()["id"]
        other = await api.post(
            "/sagas/three_steps", {**body, "amount": 4}, **{"Idempotency-Key": key}
        )
        assert_problem(other, 409, "Idempotency-Key")

    async def test_an_unknown_type_is_404(self, api: Api) -> None:
        assert_problem(await api.post("/sagas/no_such_saga", {}), 404, "no_such_saga")

    async def test_invalid_input_is_422_naming_the_field(self, api: Api) -> None:
        response = await api.post("/sagas/three_steps", {"order_id": "o", "amount": -5})
        body = assert_problem(response, 422, "amount")
        assert body["errors"][0]["field"] == "amount"

    async def test_a_body_that_is_not_json_is_422(self, api: Api) -> None:
        response = await api.http.post(
            "/sagas/three_steps",
            content=b"{oops",
            headers={**AUTH, "content-type": "application/json"},
        )
        assert_problem(response, 422, "body")

    async def test_an_oversized_body_is_413_before_it_is_read(self, api: Api) -> None:
        big = {"order_id": "x" * (api.settings.api_max_body_bytes + 1)}
        assert_problem(await api.post("/sagas/three_steps", big), 413)

    async def test_an_oversized_body_without_a_length_is_413(self, api: Api) -> None:
        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"order_id": "'
            for _ in range(api.settings.api_max_body_bytes // 1024 + 1):
                yield b"x" * 1024
            yield b'"}'

        response = await api.http.post(
            "/sagas/three_steps",
            content=chunks(),
            headers={**AUTH, "content-type": "application/json"},
        )
        assert_problem(response, 413)

    async def test_a_body_over_the_limit_names_it_and_starts_nothing(self, api: Api) -> None:
        limit = api.settings.api_max_body_bytes

        async def started() -> str:
            metrics = (await api.http.get("/metrics")).text
            wanted = 'sagas_api_started_total{type="three_steps"}'
            return next((line for line in metrics.splitlines() if line.startswith(wanted)), "")

        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"order_id": "' + b"x" * limit + b'"}'

        before = await started()
        declared = await api.post("/sagas/three_steps", {"order_id": "x" * limit})
        streamed = await api.http.post(
            "/sagas/three_steps",
            content=chunks(),
            headers={**AUTH, "content-type": "application/json"},
        )
        for response in (declared, streamed):
            body = assert_problem(response, 413)
            assert body["title"] == "body_too_large"
            assert body["detail"] == f"request body larger than {limit} bytes"
        assert "content-length" in declared.request.headers
        assert "content-length" not in streamed.request.headers
        assert await started() == before


class TestReading:
    async def test_list_filters_and_pages(self, api: Api) -> None:
        ids = [(await api.start("conditional"))[1]["id"] for _ in range(3)]
        for saga_id in ids:
            await api.status(saga_id, "completed")
        seen: list[str] = []
        cursor = None
        while True:
            params = {"type": "conditional", "limit": "2", **({"cursor": cursor} if cursor else {})}
            page = (await api.http.get("/sagas", params=params, headers=AUTH)).json()
            seen += [item["id"] for item in page["items"]]
            if not (cursor := page["next_cursor"]):
                break
        assert set(ids) <= set(seen)
        assert len(seen) == len(set(seen))
        failed = (
            await api.http.get(
                "/sagas", params={"type": "conditional", "status": "failed"}, headers=AUTH
            )
        ).json()
        assert failed["items"] == []

    async def test_bad_list_parameters_are_422_naming_them(self, api: Api) -> None:
        bad_status = await api.http.get("/sagas", params={"status": "lost"}, headers=AUTH)
        assert_problem(bad_status, 422, "query.status")
        bad_cursor = await api.http.get("/sagas", params={"cursor": "abc"}, headers=AUTH)
        assert_problem(bad_cursor, 422, "cursor")
        bad_limit = await api.http.get("/sagas", params={"limit": "0"}, headers=AUTH)
        assert_problem(bad_limit, 422, "query.limit")

    async def test_an_unknown_saga_is_404(self, api: Api) -> None:
        assert_problem(await api.http.get("/sagas/nobody", headers=AUTH), 404, "nobody")

    async def test_events_stream_until_the_saga_ends(self, api: Api) -> None:
        _, started = await api.start("three_steps")
        statuses = []
        async with api.http.stream("GET", f"/sagas/{started['id']}/events", headers=AUTH) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    statuses.append(json.loads(line[6:])["status"])
        assert statuses[-1] == "completed"
        assert statuses.count("completed") == 1

    async def test_events_carry_the_operator_actions(self, api: Api) -> None:
        _, started = await api.start("approval", amount=500)
        await api.status(started["id"], "awaiting_approval")

        async def approve() -> httpx.Response:
            return await api.post(f"/sagas/{started['id']}/approve", {"comment": "ok"})

        # ASGITransport hands over the stream only once it ends, so approve alongside it.
        approving = asyncio.create_task(approve())
        events = []
        async with api.http.stream("GET", f"/sagas/{started['id']}/events", headers=AUTH) as r:
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
        assert (await approving).status_code == 200
        assert events[-1]["status"] == "completed"
        actions = [(a["action"], a["step"], a["reason"]) for a in events[-1]["actions"]]
        assert actions == [("approve", "b", "ok")]

    async def test_events_of_an_unknown_saga_are_404_before_any_stream(self, api: Api) -> None:
        assert_problem(await api.http.get("/sagas/nobody/events", headers=AUTH), 404, "nobody")

    async def test_a_quiet_stream_keeps_alive_and_frames_saga_events(
        self, api: Api, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # FastAPI's keep-alive interval (15 s) is a private module global, read by its routing
        # module at each wait (patching fastapi.sse's copy would change nothing).
        monkeypatch.setattr(fastapi.routing, "_PING_INTERVAL", 0.2)
        _, started = await api.start("approval", amount=500)
        await api.status(started["id"], "awaiting_approval")

        async def approve_later() -> httpx.Response:
            await asyncio.sleep(1.5)  # the stream stays quiet meanwhile
            return await api.post(f"/sagas/{started['id']}/approve")

        approving = asyncio.create_task(approve_later())
        async with api.http.stream("GET", f"/sagas/{started['id']}/events", headers=AUTH) as r:
            assert r.headers["cache-control"] == "no-cache"
            text = await r.aread()
        assert (await approving).status_code == 200
        frames = text.decode().split("\n\n")
        assert frames[-1] == ""  # every frame ends with a blank line
        # Each frame is a comment (a keep-alive) or an event named saga with the resource.
        kinds = ["comment" if f.startswith(":") else f.split("\n")[0] for f in frames[:-1]]
        assert set(kinds) == {"comment", "event: saga"}
        events = [f.split("\n") for f in frames[:-1] if not f.startswith(":")]
        statuses = [json.loads(data.removeprefix("data: "))["status"] for _, data in events]
        assert statuses[0] == "awaiting_approval"
        assert statuses[-1] == "completed"
        # Keep-alives while it waited, between its first and its last event.
        assert "comment" in kinds[kinds.index("event: saga") : len(kinds) - 1]

    async def test_events_end_at_the_longest_a_stream_may_last(self, api: Api) -> None:
        _, started = await api.start("approval", amount=500)
        await api.status(started["id"], "awaiting_approval")
        short = create_app(api.settings.model_copy(update={"events_max_seconds": 1.0}))
        transport = httpx.ASGITransport(app=short)
        async with (
            short.router.lifespan_context(short),
            httpx.AsyncClient(transport=transport, base_url="http://localhost") as http,
            asyncio.timeout(15),
        ):
            response = await http.get(f"/sagas/{started['id']}/events", headers=AUTH)
        lines = response.text.splitlines()
        assert [json.loads(line[6:])["status"] for line in lines if line.startswith("data: ")] == [
            "awaiting_approval"
        ]
        assert (await api.post(f"/sagas/{started['id']}/reject")).status_code == 200
        await api.status(started["id"], "compensated")

    async def test_saga_types_describe_steps_schema_and_diagram(self, api: Api) -> None:
        listed = (await api.http.get("/saga-types", headers=AUTH)).json()
        assert "pivoted" in {t["name"] for t in listed}
        pivoted = (await api.http.get("/saga-types/pivoted", headers=AUTH)).json()
        assert [(s["name"], s["kind"]) for s in pivoted["steps"]] == [
            ("a", "compensatable"),
            ("b", "pivot"),
            ("c", "retriable"),
            ("d", "retriable"),
        ]
        assert pivoted["input_schema"]["properties"]["order_id"]["examples"] == ["o-1"]
        assert pivoted["diagram"].startswith("flowchart LR")
        assert "b{{" in pivoted["diagram"]
        assert_problem(await api.http.get("/saga-types/nope", headers=AUTH), 404)


class TestSteering:
    async def test_cancel_compensates_what_was_done(self, api: Api) -> None:
        _, started = await api.start("approval", amount=500)
        saga_id = started["id"]
        await api.status(saga_id, "awaiting_approval")
        cancelled = await api.post(f"/sagas/{saga_id}/cancel", {"reason": "customer asked"})
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["cancel_reason"] == "customer asked"
        done = await api.status(saga_id, "compensated")
        assert done["steps"][0]["status"] == "compensated"
        assert [(a["action"], a["actor"], a["reason"]) for a in done["actions"]] == [
            ("cancel", "ops", "customer asked")
        ]
        assert_problem(await api.post(f"/sagas/{saga_id}/cancel"), 409, "finished")

    async def test_cancel_after_the_pivot_is_409(self, api: Api) -> None:
        # Step c (after the pivot) takes 3 s: the cancel arrives while the saga runs.
        _, started = await api.start("pivoted", slow={"c": 3})
        saga_id = started["id"]
        await api.until(saga_id, lambda s: s["past_pivot"])
        assert_problem(await api.post(f"/sagas/{saga_id}/cancel"), 409, "pivot")
        await api.status(saga_id, "completed")

    async def test_cancel_of_an_unknown_saga_is_404(self, api: Api) -> None:
        assert_problem(await api.post("/sagas/nobody/cancel"), 404)

    async def test_approve_and_reject(self, api: Api) -> None:
        _, yes = await api.start("approval", amount=500)
        _, no = await api.start("approval", amount=500)
        for saga in (yes, no):
            await api.status(saga["id"], "awaiting_approval")
        approved = await api.post(f"/sagas/{yes['id']}/approve", {"comment": "fine"})
        assert approved.status_code == 200, approved.text
        rejected = await api.post(f"/sagas/{no['id']}/reject", {"comment": "too much"})
        assert rejected.status_code == 200, rejected.text
        done = await api.status(yes["id"], "completed")
        assert done["steps"][1]["approval"]["by"] == "ops"
        assert done["steps"][1]["approval"]["comment"] == "fine"
        await api.status(no["id"], "compensated")
        assert_problem(await api.post(f"/sagas/{yes['id']}/approve"), 409)

    async def test_retry_and_resolve_repair_compensation_failed(self, api: Api) -> None:
        order_id, broken = await api.start(
            "three_steps", refuse={"c"}, compensation_failures={"a": ALWAYS, "b": ALWAYS}
        )
        saga_id = broken["id"]
        failed = await api.status(saga_id, "compensation_failed")
        assert {s["name"]: s["status"] for s in failed["steps"]} == {
            "a": "compensation_failed",
            "b": "compensation_failed",
            "c": "failed",
        }

        ledger.fix(order_id)  # the participant is repaired; the operator retries
        retried = await api.post(f"/sagas/{saga_id}/compensations/retry")
        assert retried.status_code == 200, retried.text
        assert retried.json()["status"] == "compensating"
        done = await api.status(saga_id, "compensated")
        assert [a["action"] for a in done["actions"]] == ["retry_compensations"]
        assert_problem(await api.post(f"/sagas/{saga_id}/compensations/retry"), 409)

        _, stuck = await api.start("three_steps", refuse={"b"}, compensation_failures={"a": ALWAYS})
        await api.status(stuck["id"], "compensation_failed")
        missing = await api.post(f"/sagas/{stuck['id']}/steps/a/resolve", {})
        assert_problem(missing, 422, "reason")
        resolved = await api.post(
            f"/sagas/{stuck['id']}/steps/a/resolve", {"reason": "refunded by hand"}
        )
        assert resolved.status_code == 200, resolved.text
        assert resolved.json()["status"] == "compensated"  # settled, not the state it left
        settled = await api.status(stuck["id"], "compensated")
        assert settled["steps"][0]["status"] == "resolved"
        assert settled["steps"][0]["compensation"]["resolution"] == "refunded by hand"
        assert settled["actions"][0]["step"] == "a"

    async def test_parked_sagas_are_retried_in_bulk_by_filter(self, api: Api) -> None:
        after = datetime.now(UTC) - timedelta(seconds=1)
        broken = [
            await api.start("three_steps", refuse={"c"}, compensation_failures={"a": ALWAYS})
            for _ in range(2)
        ]
        other = await api.start("parallel_group", refuse={"d"}, compensation_failures={"a": ALWAYS})
        for _, saga in [*broken, other]:
            await api.status(saga["id"], "compensation_failed")
        for order_id, _ in [*broken, other]:
            ledger.fix(order_id)  # the outage is over

        bad = await api.post("/sagas/compensations/retry?status=completed")
        assert_problem(bad, 422, "status")
        query = f"type=three_steps&created_after={after.isoformat().replace('+00:00', 'Z')}"
        retried = await api.post(f"/sagas/compensations/retry?{query}")
        assert retried.status_code == 200, retried.text
        assert retried.json()["retried"] == 2
        assert set(retried.json()["saga_ids"]) == {saga["id"] for _, saga in broken}
        for _, saga in broken:
            done = await api.status(saga["id"], "compensated")
            assert [a["action"] for a in done["actions"]] == ["retry_compensations"]
        assert (await api.get(other[1]["id"]))["status"] == "compensation_failed"
        again = await api.post(f"/sagas/compensations/retry?{query}")
        assert again.json()["retried"] == 0

    async def test_retry_on_a_healthy_saga_is_409(self, api: Api) -> None:
        _, started = await api.start("three_steps")
        await api.status(started["id"], "completed")
        assert_problem(await api.post(f"/sagas/{started['id']}/compensations/retry"), 409)


class TestAuth:
    async def test_a_missing_key_is_401_and_a_wrong_one_403(self, api: Api) -> None:
        missing = await api.http.get("/sagas")
        assert_problem(missing, 401)
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = await api.http.get("/sagas", headers={"Authorization": "Bearer " + "x" * 32})
        assert_problem(wrong, 403)
        start = await api.http.post("/sagas/three_steps", json={})
        assert_problem(start, 401)

    async def test_health_and_metrics_need_no_key(self, api: Api) -> None:
        assert (await api.http.get("/healthz")).json() == {"status": "ok"}
        ready = await api.http.get("/readyz")
        assert ready.json() == {"status": "ready", "temporal": "ok", "database": "ok"}
        await api.start("three_steps")
        metrics = await api.http.get("/metrics")
        assert 'sagas_api_started_total{type="three_steps"}' in metrics.text

    async def test_metrics_count_the_sagas_in_flight(self, api: Api) -> None:
        _, started = await api.start("approval", amount=500)
        await api.status(started["id"], "awaiting_approval")
        metrics = (await api.http.get("/metrics")).text
        wanted = ("sagas_in_flight{", 'saga_type="approval"', 'status="awaiting_approval"')
        waiting = [line for line in metrics.splitlines() if all(w in line for w in wanted)]
        assert waiting
        assert float(waiting[0].split()[-1]) >= 1
        unchanged = [
            line
            for line in metrics.splitlines()
            if line.startswith("sagas_unchanged_seconds{") and all(w in line for w in wanted[1:])
        ]
        assert unchanged, "how long the quietest waiting saga has not changed is exported"
        assert float(unchanged[0].split()[-1]) >= 0
        assert (await api.post(f"/sagas/{started['id']}/reject")).status_code == 200

    def test_production_without_keys_refuses_to_start(self) -> None:
        safe_but_keys = Settings(
            environment="production",
            encryption_key=new_key(),
            database_url="postgresql://sagas@db/sagas",
        )
        with pytest.raises(UnsafeSettings, match="SAGAS_API_KEYS is empty"):
            create_app(safe_but_keys)
        # Even settings built around the validators are refused by the app itself.
        with pytest.raises(UnsafeSettings, match="SAGAS_API_KEYS"):
            create_app(Settings.model_construct(environment="production", api_keys=[]))

    def test_short_keys_are_refused(self) -> None:
        with pytest.raises(ValueError, match="shorter than 16"):
            create_app(Settings(api_keys=["ops:short"]))


async def test_readiness_reports_an_unreachable_database(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'gone' / 'sagas.sqlite'}"  # its folder does not exist
    settings = Settings(
        database_url=url, temporal_address=dev_env.client.service_client.config.target_host
    )
    from api.metrics import ApiMetrics
    from api.service import SagaService
    from engine import SagaClient

    service = SagaService(settings, SagaClient(dev_env.client), SagaStore(url), ApiMetrics())
    app = create_app(settings, service=service)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
        ready = await c.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["database"].startswith("unreachable")
    assert ready.json()["temporal"] == "ok"


@dataclass
class Refused:
    status: int
    content_type: str
    problem: dict[str, Any]
    reads: int  # how many body chunks the app asked for


async def post_raw(
    app: Any, chunks: Iterator[bytes], path: str = "/sagas/three_steps", **headers: str
) -> Refused:
    """POST straight through ASGI, counting the body chunks the app reads."""
    reads = 0
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal reads
        reads += 1
        chunk = next(chunks, None)
        return {"type": "http.request", "body": chunk or b"", "more_body": chunk is not None}

    async def send(message: Message) -> None:
        sent.append(message)

    headers = {"Host": "localhost", **AUTH, "Content-Type": "application/json", **headers}
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 1),
        "server": ("api", 80),
        "state": {},
    }
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    content_type = dict(start["headers"]).get(b"content-type", b"").decode()
    return Refused(start["status"], content_type, json.loads(body), reads)


# No lifespan in these two: the app has no Temporal client nor store, and a request that
# reached them would be a 500.


async def test_a_declared_length_over_the_limit_is_refused_unread() -> None:
    app = create_app(Settings(api_keys=[KEY], api_max_body_bytes=1024))
    refused = await post_raw(app, iter([b"{}"]), **{"Content-Length": "1025"})
    assert (refused.status, refused.content_type, refused.reads) == (
        413,
        "application/problem+json",
        0,
    )
    assert refused.problem["title"] == "body_too_large"
    assert refused.problem["detail"] == "request body larger than 1024 bytes"


# Every router that reads a body has the limit: a start, an operator action, the codec.
@pytest.mark.parametrize("path", ["/sagas/three_steps", "/sagas/s-1/cancel", "/codec/decode"])
async def test_a_streamed_body_is_refused_as_soon_as_it_goes_over(path: str) -> None:
    # The codec's limit is its own (the UI posts whole payloads): set both to the same here.
    settings = Settings(api_keys=[KEY], api_max_body_bytes=1024, codec_max_body_bytes=1024)
    app = create_app(settings)
    chunks = iter([b"[" + b"1," * 300] * 10)  # 601 bytes each, no Content-Length
    refused = await post_raw(app, chunks, path)
    assert (refused.status, refused.content_type, refused.reads) == (
        413,
        "application/problem+json",
        2,
    )
    assert refused.problem["title"] == "body_too_large"
    assert refused.problem["detail"] == "request body larger than 1024 bytes"
