"""The operator console at ``/console``: server-rendered pages over the API's use cases.

``install(app, max_body_size=...)`` adds its routes; the pages read as plain HTML and a small
script (static/console.js) only reloads a saga's page when the saga changes. Keys and roles
are the API's: see api/console/session.py for how a browser carries its key.
"""

from __future__ import annotations

from fastapi import FastAPI

from api.console import routes


def install(app: FastAPI, *, max_body_size: int) -> None:
    app.include_router(routes.router, max_body_size=max_body_size)
    routes.install(app)


__all__ = ["install"]
