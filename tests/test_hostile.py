"""Hostile requests against the live API, on SQLite and on PostgreSQL, counted.

A table of requests a hostile or careless client sends (no key, a wrong key, a key without the
role, malformed and oversized bodies, ids and cursors outside the safe set, injection attempts,
a foreign Host...), each with the answer it must get: the status, a problem+json body (with
its stable title where one is named), no trace of internals (no traceback, no address), and
no saga started by any of them. docs/security.md quotes the figures this prints.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from engine._cursor import encode_cursor
from tests.support import ledger
from tests.test_security import APPROVER, HOST_LIKE, OPS, READER, STARTER, Stack, bearer, stack

__all__ = ["stack"]  # the fixture, shared with tests/test_security.py

JSON = {"content-type": "application/json"}
BIG = 70 * 1024  # over SAGAS_API_MAX_BODY_BYTES (64 KiB)
NOBODY = object()  # no Authorization header at all


@dataclass
class Hostile:
    name: str
    method: str
    path: str
    status: int
    title: str | None = None
    key: Any = OPS  # whose key (NOBODY: none; a str starting with "raw:": that header)
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] | None = None


def cursor_of(saga_id: str) -> str:
    return encode_cursor(datetime.now(UTC), saga_id)


def table(saga: str, waiting: str) -> list[Hostile]:
    """The requests, ``saga`` a completed saga and ``waiting`` one that awaits approval (both
    started by the ops key)."""
    ok = {"order_id": "o-hostile", "amount": 1}
    not_json = base64.urlsafe_b64encode(b"not json").decode().rstrip("=")
    H = Hostile
    return [
        # -- no key: 401 before anything else, even for a route that does not exist
        H("no key: list", "GET", "/sagas", 401, "unauthorized", NOBODY),
        H("no key: get", "GET", f"/sagas/{saga}", 401, "unauthorized", NOBODY),
        H("no key: start", "POST", "/sagas/three_steps", 401, "unauthorized", NOBODY, ok),
        H("no key: malformed start", "POST", "/sagas/three_steps", 401, "unauthorized", NOBODY,
          content=b"{oops", headers=JSON),
        H("no key: text body", "POST", "/sagas/three_steps", 401, "unauthorized", NOBODY,
          content=b"hello", headers={"content-type": "text/plain"}),
        H("no key: cancel", "POST", f"/sagas/{saga}/cancel", 401, "unauthorized", NOBODY),
        H("no key: approve", "POST", f"/sagas/{waiting}/approve", 401, "unauthorized", NOBODY),
        H("no key: resolve", "POST", f"/sagas/{saga}/steps/a/resolve", 401, "unauthorized",
          NOBODY, {"reason": "x"}),
        H("no key: events", "GET", f"/sagas/{saga}/events", 401, "unauthorized", NOBODY),
        H("no key: saga types", "GET", "/saga-types", 401, "unauthorized", NOBODY),
        H("no key: codec", "POST", "/codec/decode", 401, "unauthorized", NOBODY,
          {"payloads": []}),
        H("no key: unknown route", "GET", "/admin", 401, "unauthorized", NOBODY),
        H("key in the query string", "GET", "/sagas", 401, "unauthorized", NOBODY,
          params={"api_key": OPS.split(":")[1]}),
        H("basic auth", "GET", "/sagas", 401, "unauthorized", "raw:Basic b3BzOm9vb28="),
        H("empty bearer", "GET", "/sagas", 401, "unauthorized", "raw:Bearer "),
        H("bearer of spaces", "GET", "/sagas", 401, "unauthorized", "raw:Bearer     "),
        # -- a wrong key: 403
        H("wrong key", "GET", "/sagas", 403, "forbidden", "raw:Bearer " + "w" * 32),
        H("a real key's prefix", "GET", "/sagas", 403, "forbidden",
          "raw:Bearer " + OPS.split(":")[1][:-1]),
        H("a real key and more", "GET", "/sagas", 403, "forbidden",
          "raw:Bearer " + OPS.split(":")[1] + "x"),
        H("name:key as the token", "GET", "/sagas", 403, "forbidden", "raw:Bearer " + OPS),
        H("a 10 KB token", "GET", "/sagas", 403, "forbidden", "raw:Bearer " + "t" * 10240),
        H("wrong key, malformed body", "POST", "/sagas/three_steps", 403, "forbidden",
          "raw:Bearer " + "w" * 32, content=b"{oops", headers=JSON),
        # -- a key without the role: 403 missing_role, body unread
        H("reader starts", "POST", "/sagas/three_steps", 403, "missing_role", READER, ok),
        H("reader starts, malformed", "POST", "/sagas/three_steps", 403, "missing_role", READER,
          content=b"{oops", headers=JSON),
        H("reader cancels", "POST", f"/sagas/{saga}/cancel", 403, "missing_role", READER),
        H("reader approves", "POST", f"/sagas/{waiting}/approve", 403, "missing_role", READER),
        H("reader rejects", "POST", f"/sagas/{waiting}/reject", 403, "missing_role", READER),
        H("reader retries", "POST", f"/sagas/{saga}/compensations/retry", 403, "missing_role",
          READER),
        H("reader resolves", "POST", f"/sagas/{saga}/steps/a/resolve", 403, "missing_role",
          READER, {"reason": "x"}),
        H("starter cancels", "POST", f"/sagas/{saga}/cancel", 403, "missing_role", STARTER),
        H("starter approves", "POST", f"/sagas/{waiting}/approve", 403, "missing_role", STARTER),
        H("approver starts", "POST", "/sagas/three_steps", 403, "missing_role", APPROVER, ok),
        H("approver resolves", "POST", f"/sagas/{saga}/steps/a/resolve", 403, "missing_role",
          APPROVER, {"reason": "x"}),
        H("approver cancels", "POST", f"/sagas/{waiting}/cancel", 403, "missing_role", APPROVER),
        H("the starter approves", "POST", f"/sagas/{waiting}/approve", 403, "four_eyes", OPS),
        # -- malformed requests: 422 naming the field
        H("malformed JSON", "POST", "/sagas/three_steps", 422, "invalid_request",
          content=b"{oops", headers=JSON),
        H("a list as input", "POST", "/sagas/three_steps", 422, "invalid_request", json=[1, 2]),
        H("a string as input", "POST", "/sagas/three_steps", 422, "invalid_request", json="x"),
        H("null as input", "POST", "/sagas/three_steps", 422, "invalid_request",
          content=b"null", headers=JSON),
        H("XML as input", "POST", "/sagas/three_steps", 422, "invalid_request",
          content=b"<order/>", headers={"content-type": "application/xml"}),
        H("wrong type of field", "POST", "/sagas/three_steps", 422, "invalid_input",
          json={"order_id": {"$ne": None}}),
        H("negative amount", "POST", "/sagas/three_steps", 422, "invalid_input",
          json={"order_id": "o", "amount": -1}),
        H("NUL in a saga id", "GET", "/sagas/a%00b", 422, "invalid_request"),
        H("space in a saga id", "GET", "/sagas/a%20b", 422, "invalid_request"),
        H("newline in a saga id", "GET", "/sagas/a%0Ab", 422, "invalid_request"),
        H("quote in a saga id", "GET", "/sagas/a'%20OR%20'1'='1", 422, "invalid_request"),
        H("non-ASCII saga id", "GET", "/sagas/caf%C3%A9", 422, "invalid_request"),
        H("201-character saga id", "GET", "/sagas/" + "x" * 201, 422, "invalid_request"),
        H("NUL in events' id", "GET", "/sagas/a%00b/events", 422, "invalid_request"),
        H("NUL in a cancel's id", "POST", "/sagas/a%00b/cancel", 422, "invalid_request"),
        H("NUL in a step name", "POST", f"/sagas/{saga}/steps/a%00b/resolve", 422,
          "invalid_request", json={"reason": "x"}),
        H("SQL in a step name", "POST", f"/sagas/{saga}/steps/a';DROP%20TABLE%20sagas;--/resolve",
          422, "invalid_request", json={"reason": "x"}),
        H("quote in a saga type", "POST", "/sagas/x'OR'1'='1", 422, "invalid_request", json=ok),
        H("101-character saga type", "POST", "/sagas/" + "t" * 101, 422, "invalid_request",
          json=ok),
        H("SQL in the type filter", "GET", "/sagas", 422, "invalid_request",
          params={"type": "three_steps' OR '1'='1"}),
        H("unknown status filter", "GET", "/sagas", 422, "invalid_request",
          params={"status": "all"}),
        H("limit 0", "GET", "/sagas", 422, "invalid_request", params={"limit": "0"}),
        H("limit 100000", "GET", "/sagas", 422, "invalid_request", params={"limit": "100000"}),
        H("limit not a number", "GET", "/sagas", 422, "invalid_request", params={"limit": "x"}),
        H("cursor of symbols", "GET", "/sagas", 422, "invalid_request", params={"cursor": "!!"}),
        H("cursor not JSON", "GET", "/sagas", 422, "invalid_request",
          params={"cursor": not_json}),
        H("cursor with a NUL id", "GET", "/sagas", 422, "invalid_request",
          params={"cursor": cursor_of("a\x00b")}),
        H("cursor with a quote id", "GET", "/sagas", 422, "invalid_request",
          params={"cursor": cursor_of("x' OR '1'='1")}),
        H("cursor with a 201-character id", "GET", "/sagas", 422, "invalid_request",
          params={"cursor": cursor_of("x" * 201)}),
        H("cursor of 600 characters", "GET", "/sagas", 422, "invalid_request",
          params={"cursor": "A" * 600}),
        H("time filter not a time", "GET", "/sagas", 422, "invalid_request",
          params={"created_after": "yesterday"}),
        H("Idempotency-Key with a space", "POST", "/sagas/three_steps", 422, "invalid_request",
          json=ok, headers={"Idempotency-Key": "a b"}),
        H("Idempotency-Key of 201 characters", "POST", "/sagas/three_steps", 422,
          "invalid_request", json=ok, headers={"Idempotency-Key": "k" * 201}),
        H("resolve without a reason", "POST", f"/sagas/{saga}/steps/a/resolve", 422,
          "invalid_request", json={"reason": ""}),
        H("resolve without a body", "POST", f"/sagas/{saga}/steps/a/resolve", 422,
          "invalid_request"),
        H("cancel reason of 2001 characters", "POST", f"/sagas/{saga}/cancel", 422,
          "invalid_request", json={"reason": "r" * 2001}),
        H("codec payloads not a list", "POST", "/codec/decode", 422, "invalid_request",
          json={"payloads": "all"}),
        # -- too large: 413; nested past the parser: 400
        H("declared body over the limit", "POST", "/sagas/three_steps", 413, "body_too_large",
          json={"order_id": "x" * BIG}),
        H("input over the saga type's bound", "POST", "/sagas/three_steps", 413,
          "input_too_large", json={"order_id": "x" * 40_000}),
        H("30,000 nested arrays", "POST", "/sagas/three_steps", 400, "bad_request",
          content=b"[" * 30_000, headers=JSON),
        # -- what does not exist, what does not fit
        H("unknown saga", "GET", "/sagas/three_steps-nobody", 404, "saga_not_found"),
        H("unknown saga type", "POST", "/sagas/no_such_type", 404, "unknown_saga_type", json=ok),
        H("cancel an unknown saga", "POST", "/sagas/nobody/cancel", 404, "saga_not_found"),
        H("events of an unknown saga", "GET", "/sagas/nobody/events", 404, "saga_not_found"),
        H("unknown saga type's schema", "GET", "/saga-types/nope", 404, "unknown_saga_type"),
        H("DELETE a saga", "DELETE", f"/sagas/{saga}", 405, "method_not_allowed"),
        H("PUT a start", "PUT", "/sagas/three_steps", 405, "method_not_allowed", json=ok),
        H("cancel a finished saga", "POST", f"/sagas/{saga}/cancel", 409, "conflict"),
        H("retry a healthy saga", "POST", f"/sagas/{saga}/compensations/retry", 409, "conflict"),
        H("resolve a healthy step", "POST", f"/sagas/{saga}/steps/a/resolve", 409, "conflict",
          json={"reason": "x"}),
        H("Idempotency-Key reused, other body", "POST", "/sagas/three_steps", 409,
          "idempotency_key_conflict", json={"order_id": "other"},
          headers={"Idempotency-Key": "hostile-reused"}),
        # -- a foreign Host (DNS rebinding against a development API)
        H("foreign Host", "GET", "/sagas", 400, "invalid_host",
          headers={"Host": "evil.example"}),
        H("Host ending in localhost", "GET", "/sagas", 400, "invalid_host",
          headers={"Host": "localhost.evil.example"}),
        H("foreign Host, no key", "POST", "/sagas/three_steps", 400, "invalid_host", NOBODY, ok,
          headers={"Host": "evil.example:8000"}),
    ]  # fmt: skip


async def send(http: httpx.AsyncClient, hostile: Hostile) -> httpx.Response:
    headers = dict(hostile.headers)
    if isinstance(hostile.key, str) and hostile.key.startswith("raw:"):
        headers["Authorization"] = hostile.key.removeprefix("raw:")
    elif hostile.key is not NOBODY:
        headers.update(bearer(hostile.key))
    kwargs: dict[str, Any] = {"headers": headers, "params": hostile.params}
    if hostile.content is not None:
        kwargs["content"] = hostile.content
    elif hostile.json is not None:
        kwargs["json"] = hostile.json
    return await http.request(hostile.method, hostile.path, **kwargs)


def wrong(hostile: Hostile, response: httpx.Response) -> str | None:
    """Why the answer is not the one the request must get; None if it is."""
    if response.status_code != hostile.status:
        return f"status {response.status_code}, not {hostile.status}: {response.text[:200]}"
    if response.headers.get("content-type") != "application/problem+json":
        return f"content-type {response.headers.get('content-type')}"
    problem = response.json()
    if hostile.title is not None and problem.get("title") != hostile.title:
        return f"title {problem.get('title')!r}, not {hostile.title!r}"
    if "Traceback" in response.text or HOST_LIKE.search(response.text):
        return f"internals in the answer: {response.text[:200]}"
    return None


async def started(stack: Stack) -> float:
    metrics = (await stack.http.get("/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("sagas_api_started_total")
    )


async def test_hostile_requests_get_the_answers_they_must(stack: Stack) -> None:
    done = await stack.start(as_=OPS, order_id=f"o-{uuid.uuid4().hex[:10]}")
    await stack.status(done["id"], "completed")
    order_id = f"o-{uuid.uuid4().hex[:10]}"
    ledger.plan(order_id)
    waiting = await stack.start("approval", as_=OPS, order_id=order_id, amount=500)
    await stack.status(waiting["id"], "awaiting_approval")
    reused = await stack.http.post(
        "/sagas/three_steps",
        json={"order_id": "first"},
        headers={**bearer(OPS), "Idempotency-Key": "hostile-reused"},
    )
    assert reused.status_code in (200, 202), reused.text

    before = await started(stack)
    requests = table(done["id"], waiting["id"])
    failures = {}
    for hostile in requests:
        try:
            answer = await send(stack.http, hostile)
        except Exception as exc:  # an unexpected error escapes the app: a 500 on the wire
            failures[hostile.name] = f"500 ({type(exc).__name__} raised)"
            continue
        if (why := wrong(hostile, answer)) is not None:
            failures[hostile.name] = why
    after = await started(stack)
    print(
        f"\nhostile requests on {stack.database}: {len(requests)} tried, "
        f"{len(requests) - len(failures)} answered as they must; sagas started: {after - before:g}"
    )
    assert not failures, json.dumps(failures, indent=1)
    assert after == before
    assert len({h.name for h in requests}) == len(requests)
    # The saga that waited is still waiting: no hostile request decided it.
    assert (await stack.status(waiting["id"], "awaiting_approval"))["actions"] == []
    # Not left waiting when the worker stops (its abandoned coroutine would warn).
    rejected = await stack.http.post(f"/sagas/{waiting['id']}/reject", headers=bearer(APPROVER))
    assert rejected.status_code == 200, rejected.text
    await stack.status(waiting["id"], "compensated")
