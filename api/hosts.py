"""The Host check: which names the API answers to.

In development the API often runs without keys on a laptop: a web page the developer opens
could point its own host name at 127.0.0.1 (DNS rebinding) and drive the API from the browser.
Answering only to localhost names stops that; production sits behind a proxy that knows its
own names (``SAGAS_API_ALLOWED_HOSTS``). Probes reach health and metrics by the pod's address,
so those answer to any name.
"""

from __future__ import annotations

from collections.abc import Collection

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from api.problems import problem

DEVELOPMENT_HOSTS = ("localhost", "127.0.0.1", "::1")


def allowed_hosts(configured: list[str], *, production: bool) -> list[str]:
    """The Host names to answer; ``["*"]``: any."""
    if configured:
        return configured
    return ["*"] if production else list(DEVELOPMENT_HOSTS)


class HostCheck:
    """Refuse (400, as a problem) a request whose Host is not allowed; ``*.x`` allows subdomains."""

    def __init__(self, app: ASGIApp, hosts: list[str], open_paths: Collection[str] = ()) -> None:
        self.app = app
        self.any = "*" in hosts
        self.hosts = [h.lower() for h in hosts]
        self.open_paths = frozenset(open_paths)

    def allows(self, host: str) -> bool:
        for allowed in self.hosts:
            if host == allowed or (allowed.startswith("*.") and host.endswith(allowed[1:])):
                return True
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.any or scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        host = _hostname(Headers(scope=scope).get("host", ""))
        if not self.allows(host):
            await problem(400, "invalid_host", "this Host is not served here")(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _hostname(header: str) -> str:
    """The name in a Host header, without its port: ``[::1]:8000`` is ``::1``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header
