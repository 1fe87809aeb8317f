"""Bearer API keys from configuration, compared in constant time, and the roles they carry.

``SAGAS_API_KEYS=ops:k1,ci:k2``: the name before the colon is who acted, kept with operator
actions; ``SAGAS_API_KEY_ROLES=ci:read+start`` narrows a key's roles (api.roles). With no keys
configured every caller is let in (``make dev``), as "anonymous" with every role.

The check is ASGI middleware, not a FastAPI dependency: FastAPI reads and parses a body before
it solves dependencies, so an unauthenticated caller could learn how its body parses (a 422)
and make the API parse bodies for nobody. Here the key and its role are checked from the
headers alone, before anything reads the body.
"""

from __future__ import annotations

import hmac
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from fastapi import Request
from pydantic import SecretStr
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from api.problems import problem
from api.roles import ALL_ROLES, MissingRole, Role, parse_roles, role_for
from engine import SagaError
from engine._secrets import split_key


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
    roles: frozenset[Role] = ALL_ROLES


ANONYMOUS = ApiKey("anonymous", b"")


def parse_keys(
    entries: Iterable[SecretStr | str], roles: Iterable[str] = (), *, four_eyes: bool = False
) -> list[ApiKey]:
    """The configured keys. A key's name is who acted (operator actions, four eyes, roles):
    names must be unique, and given explicitly (``name:secret``) wherever they decide
    something, since a positional ``key-N`` changes when the list is reordered."""
    keys: list[ApiKey] = []
    roles = list(roles)
    for number, entry in enumerate(entries, start=1):
        raw = entry.get_secret_value() if isinstance(entry, SecretStr) else entry
        name, secret = split_key(raw)
        if name is None and (roles or four_eyes):
            raise ValueError(
                f"API key number {number} has no name: with roles or four eyes configured, "
                "give every key one (name:secret)"
            )
        name = name or f"key-{number}"
        if len(secret) < 16:
            raise ValueError(f"API key {name!r} is shorter than 16 characters")
        if any(k.name == name for k in keys):
            raise ValueError(f"two API keys are named {name!r}: a name must tell one caller")
        keys.append(ApiKey(name, secret.encode()))
    given = parse_roles(roles, [k.name for k in keys])
    return [ApiKey(k.name, k.secret, given.get(k.name, ALL_ROLES)) for k in keys]


def authenticate(keys: list[ApiKey], authorization: str | None) -> ApiKey:
    """The caller's key; NoApiKey (401) or WrongApiKey (403)."""
    if not keys:
        return ANONYMOUS
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NoApiKey("an API key is required: Authorization: Bearer <key>")
    offered = token.strip().encode()
    found = None
    for key in keys:  # no early exit: the time taken does not tell which key was close
        if hmac.compare_digest(offered, key.secret):
            found = key
    if found is None:
        raise WrongApiKey("the API key is not valid")
    return found


def caller(keys: list[ApiKey], authorization: str | None) -> str:
    """The name of the caller's key; NoApiKey (401) or WrongApiKey (403)."""
    return authenticate(keys, authorization).name


class Authenticate:
    """Check the key, and the role the matched route needs, before the app sees the request.

    ``routes`` are the routers' own routes, whose roles api.roles names (the app's are
    FastAPI's internal wrappers of them); ``open_paths`` need no key (health, metrics; the
    docs where they are open), nor do paths under ``open_prefixes`` (the console, which checks
    keys and roles itself). The key found is left in the scope's state for
    :func:`require_key`.
    """

    def __init__(
        self,
        app: ASGIApp,
        keys: list[ApiKey],
        routes: list[BaseRoute],
        open_paths: Collection[str],
        open_prefixes: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.keys = keys
        self.routes = routes
        self.open_paths = frozenset(open_paths)
        self.open_prefixes = tuple(p.rstrip("/") + "/" for p in open_prefixes)
        self.open_roots = frozenset(p.rstrip("/") for p in open_prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        if (
            scope["type"] != "http"
            or path in self.open_paths
            or path in self.open_roots
            or path.startswith(self.open_prefixes)
        ):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        try:
            key = authenticate(self.keys, _latin1(headers.get(b"authorization")))
            needed = self._role(scope)
            if needed not in key.roles:
                raise MissingRole(f"this API key lacks the role {needed.value!r}")
        except SagaError as exc:
            await problem(exc.http_status, exc.code, exc.message)(scope, receive, send)
            return
        scope.setdefault("state", {})["api_key"] = key
        await self.app(scope, receive, send)

    def _role(self, scope: Scope) -> Role:
        path = ""  # no such route: the default role of the method, then the router's 404
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                path = getattr(route, "path", "")
                break
        return role_for(scope["method"], path)


def _latin1(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None


async def require_key(request: Request) -> str:
    """The name of the caller's key, which the middleware checked (a dependency: ``Caller``)."""
    # async: FastAPI would run a plain function in a worker thread, on every request.
    key = request.scope.get("state", {}).get("api_key")
    if isinstance(key, ApiKey):
        return key.name
    keys: list[ApiKey] = request.app.state.api_keys
    return caller(keys, request.headers.get("authorization"))
