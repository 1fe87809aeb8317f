"""The one part of the body limit FastAPI's own cannot do: a declared length, as a problem.

Request bodies are bounded by FastAPI's ``max_body_size`` (Starlette's
RequestBodyLimitMiddleware), set in api.main from ``SAGAS_API_MAX_BODY_BYTES``: it counts what
streams in and, past the limit, raises a 413 that api.problems answers as problem+json.

For a Content-Length that already declares more than the limit, Starlette's limiter also refuses
the body at once, but then replaces whatever response the app sends with its own ``text/plain``
"Content Too Large" (``RequestBodyLimitResponder.send_with_limit``); no handler inside it can
change that. So this shim answers that case first, as problem+json and without reading the
body. It only works outside the limiter, which is why api.main sets the limit on the routers
(inside every middleware) rather than on ``FastAPI(...)`` (outside every middleware).
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from api.problems import too_large


class DeclaredLengthLimit:
    """Refuse a request whose Content-Length is above its limit before anything reads it.

    ``limits`` maps path prefixes to their own limit (the routers' ``max_body_size``).
    """

    def __init__(self, app: ASGIApp, limit: int, limits: Mapping[str, int] | None = None) -> None:
        self.app = app
        self.limit = limit
        self.limits = dict(limits or {})

    def limit_for(self, path: str) -> int:
        for prefix, limit in self.limits.items():
            if path == prefix or path.startswith(f"{prefix}/"):
                return limit
        return self.limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            declared = Headers(scope=scope).get("content-length", "")
            limit = self.limit_for(scope["path"])
            # Not a number: the server refuses it (uvicorn does); else the limiter counts bytes.
            if declared.isdigit() and int(declared) > limit:
                await too_large(limit)(scope, receive, send)
                return
        await self.app(scope, receive, send)
