"""Bearer API keys from configuration, compared in constant time.

``SAGAS_API_KEYS=ops:k1,ci:k2``: the name before the colon is who acted, kept with operator
actions. With no keys configured every caller is let in (``make dev``), as "anonymous".
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import Request

from engine import SagaError


class NoApiKey(SagaError):
    """The request carries no bearer token (answered with ``WWW-Authenticate: Bearer``)."""

    http_status = 401
    code = "unauthorized"


class WrongApiKey(SagaError):
    """The bearer token is none of the configured keys."""

    http_status = 403
    code = "forbidden"


@dataclass(frozen=True)
class ApiKey:
    name: str
    secret: bytes


def parse_keys(entries: list[str]) -> list[ApiKey]:
    keys = []
    for number, entry in enumerate(entries, start=1):
        name, sep, secret = entry.partition(":")
        if not sep:
            name, secret = f"key-{number}", entry
        if len(secret) < 16:
            raise ValueError(f"API key {name!r} is shorter than 16 characters")
        keys.append(ApiKey(name, secret.encode()))
    return keys


def caller(keys: list[ApiKey], authorization: str | None) -> str:
    """The name of the caller's key; NoApiKey (401) or WrongApiKey (403)."""
    if not keys:
        return "anonymous"
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise NoApiKey("an API key is required: Authorization: Bearer <key>")
    offered = token.strip().encode()
    found = None
    for key in keys:  # no early exit: the time taken does not tell which key was close
        if hmac.compare_digest(offered, key.secret):
            found = key.name
    if found is None:
        raise WrongApiKey("the API key is not valid")
    return found


async def require_key(request: Request) -> str:
    # async: FastAPI would run a plain function in a worker thread, on every request.
    keys: list[ApiKey] = request.app.state.api_keys
    return caller(keys, request.headers.get("authorization"))
