"""How a browser carries an API key: a login form puts it in a cookie the console reads.

The cookie is HttpOnly (no script can read the key), SameSite=Strict (no other site's page
sends it), scoped to ``/console`` (the JSON API never takes it) and Secure over HTTPS. Every
form post also carries a CSRF token derived from the key (HMAC), and a post whose ``Origin``
is another site's is refused: SameSite alone would leave subdomains and old browsers.

A reverse proxy may instead send ``Authorization: Bearer <key>`` itself (single sign-on in
front of the console): a request with that header is taken on the header alone.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from urllib.parse import urlsplit

from fastapi import Request, Response

from api.auth import ApiKey, authenticate
from engine import SagaError

COOKIE = "sagas_console"
#: A working day; the operator logs in again after it.
COOKIE_SECONDS = 8 * 3600


def key_of(request: Request) -> ApiKey | None:
    """The caller's key from the Authorization header or the console's cookie, else None."""
    keys: list[ApiKey] = request.app.state.api_keys
    header = request.headers.get("authorization")
    cookie = _decoded(request.cookies.get(COOKIE))
    offered = header if header else f"Bearer {cookie}" if cookie else None
    if keys and offered is None:
        return None
    try:
        return authenticate(keys, offered)
    except SagaError:
        return None


def _decoded(cookie: str | None) -> str | None:
    # Keys may hold characters a cookie cannot (";", ",", spaces): the cookie is base64url.
    if not cookie:
        return None
    try:
        return base64.urlsafe_b64decode(cookie.encode("ascii")).decode()
    except (binascii.Error, UnicodeError, ValueError):
        return None


def check_key(request: Request, secret: str) -> ApiKey | None:
    """The key typed into the login form, if it is one of the configured keys."""
    try:
        return authenticate(request.app.state.api_keys, f"Bearer {secret.strip()}")
    except SagaError:
        return None


def log_in(request: Request, response: Response, secret: str) -> None:
    response.set_cookie(
        COOKIE,
        base64.urlsafe_b64encode(secret.strip().encode()).decode("ascii"),
        max_age=COOKIE_SECONDS,
        path="/console",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def log_out(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/console", httponly=True, samesite="strict")


def csrf_token(key: ApiKey) -> str:
    """The token each form carries: only a page rendered for this key knows it."""
    return hmac.new(key.secret, b"sagas-console-csrf", hashlib.sha256).hexdigest()


def same_origin(request: Request) -> bool:
    """Whether a post comes from a page of this site (no Origin header: not a browser's
    cross-site post, which always carries one)."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "")


def csrf_ok(request: Request, key: ApiKey, token: str) -> bool:
    return same_origin(request) and hmac.compare_digest(token, csrf_token(key))
