"""The one way activities call participants: idempotency key, error mapping, heartbeats.

* The step's idempotency key goes in ``Idempotency-Key`` and the saga id in ``Saga-Id``.
* A 4xx is a business refusal: a non-retryable ``ApplicationError`` (the saga compensates),
  of category BENIGN.
* A 5xx, a timeout or a connection error is transient: a retryable ``ApplicationError``.
* While a call is outstanding the activity heartbeats, so a slow participant is not mistaken
  for a lost worker, and a cancelled activity stops waiting.
* One ``httpx.AsyncClient`` per process and event loop: connections are reused.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from engine import PARTICIPANT_UNREACHABLE, step_info
from engine.config import get_settings

HEARTBEAT_EVERY = 1.0
_clients: dict[int, httpx.AsyncClient] = {}


def client() -> httpx.AsyncClient:
    loop = id(asyncio.get_running_loop())
    if loop not in _clients:
        _clients[loop] = httpx.AsyncClient(
            base_url=get_settings().participants_url,
            timeout=httpx.Timeout(60.0, connect=5.0),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        )
    return _clients[loop]


async def call(
    participant: str, path: str, body: Any = None, *, key: str | None = None
) -> dict[str, Any]:
    """POST to a participant with the current step's key (or ``key``); return the JSON."""
    info = step_info()
    headers = {"Idempotency-Key": key or info.idempotency_key, "Saga-Id": info.saga_id}
    request = client().post(f"/{participant}/{path}", json=body, headers=headers)
    response = await _heartbeating(request, participant)
    if response.status_code >= 500:
        raise ApplicationError(
            f"{participant} unavailable ({response.status_code}): {_detail(response)}",
            type="ParticipantUnavailable",
        )
    if response.status_code >= 400:
        raise ApplicationError(
            f"{participant} refused ({response.status_code}): {_detail(response)}",
            type="ParticipantRefused",
            non_retryable=True,
            # An answer, not an incident: the SDK logs it at debug, without a traceback.
            category=ApplicationErrorCategory.BENIGN,
        )
    payload: dict[str, Any] = response.json()
    return payload


async def _heartbeating(request: Any, participant: str) -> httpx.Response:
    task: asyncio.Task[httpx.Response] = asyncio.ensure_future(request)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=HEARTBEAT_EVERY)
            if done:
                return task.result()
            activity.heartbeat()
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        # No connection, so no request: the call never reached the participant. Not an
        # attempt of the step's budget; the step waits on the participant (engine docs).
        raise ApplicationError(
            f"{participant} unreachable: {type(exc).__name__}",
            {"participant": participant},
            type=PARTICIPANT_UNREACHABLE,
        ) from None
    except (httpx.TimeoutException, httpx.TransportError) as exc:
        raise ApplicationError(
            f"{participant} unreachable: {type(exc).__name__}", type="ParticipantUnavailable"
        ) from None
    finally:
        task.cancel()


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))[:300]
    except ValueError:
        return response.text[:300]
