"""The console's pages and forms: the list, a saga, its actions, login and live updates."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode

import anyio
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from api.auth import ApiKey
from api.console import queries, session, views
from api.deps import SagaId, ServiceDep
from api.models import SagaFilters, SagaPublic
from api.roles import Role
from api.service import Action
from engine import SagaError, SagaStatus
from engine._ids import STEP_NAME
from engine.worker import registered

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(prefix="/console", include_in_schema=False)

#: Files under static/ that the console serves (no directory listing, no other paths).
STATIC = {"console.css": "text/css", "console.js": "text/javascript"}
#: Said back after an action, on the saga's page.
DONE = {
    "approve": "Approved.",
    "reject": "Rejected: the saga compensates.",
    "cancel": "Cancelled: the saga compensates.",
    "retry": "Failed compensations retried.",
    "resolve": "Compensation resolved by hand.",
}
ACTIONS = {
    "approve": Action.APPROVE,
    "reject": Action.REJECT,
    "cancel": Action.CANCEL,
    "retry": Action.RETRY_COMPENSATIONS,
    "resolve": Action.RESOLVE,
}
# Pages name only this origin's files; links to Jaeger and the Temporal UI are navigations.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    # "no-referrer" would make Chromium send "Origin: null" with the forms, which look foreign.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class LoginRequired(Exception):
    """No valid key: pages send the browser to the login form."""


async def current_key(request: Request) -> ApiKey:
    key = session.key_of(request)
    if key is None:
        raise LoginRequired
    return key


Key = Annotated[ApiKey, Depends(current_key)]


def page(
    request: Request, name: str, context: dict[str, Any], *, key: ApiKey | None, status: int = 200
) -> HTMLResponse:
    context = {
        **context,
        "key": key,
        "roles": key.roles if key else frozenset(),
        "csrf": session.csrf_token(key) if key else "",
        "login_form": bool(request.app.state.api_keys) and request.cookies.get(session.COOKIE),
    }
    response = templates.TemplateResponse(request, name, context, status_code=status)
    response.headers.update(HEADERS)
    return response


def problem_page(request: Request, key: ApiKey | None, status: int, message: str) -> HTMLResponse:
    return page(request, "problem.html", {"status": status, "message": message}, key=key,
                status=status)  # fmt: skip


@router.get("/login")
async def login_form(request: Request) -> HTMLResponse:
    """The form that takes an API key."""
    return page(request, "login.html", {"error": None}, key=None)


@router.post("/login")
async def log_in(request: Request) -> Response:
    form = await _form(request)
    key = session.check_key(request, form.get("api_key", ""))
    if key is None or not session.same_origin(request):
        message = "That is not a valid API key."
        return page(request, "login.html", {"error": message}, key=None, status=403)
    response = RedirectResponse("/console", status_code=303)
    session.log_in(request, response, form["api_key"])
    return response


@router.post("/logout")
async def log_out(request: Request, key: Key) -> Response:
    form = await _form(request)
    if not session.csrf_ok(request, key, form.get("csrf", "")):
        return problem_page(request, key, 403, "The form is stale or from another site.")
    response = RedirectResponse("/console/login", status_code=303)
    session.log_out(response)
    return response


@router.get("/static/{name}")
async def static(name: str) -> Response:
    if name not in STATIC:
        return Response(status_code=404)
    headers = {"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"}
    return FileResponse(HERE / "static" / name, media_type=STATIC[name], headers=headers)


@router.get("")
async def saga_list(request: Request, service: ServiceDep, key: Key) -> HTMLResponse:
    """Sagas that need a person, counts per status, and the filtered list."""
    if Role.READ not in key.roles:
        return problem_page(request, key, 403, "This API key lacks the role 'read'.")
    query = {k: v for k, v in request.query_params.items() if v.strip()}
    try:
        filters = SagaFilters.model_validate(query)
    except ValidationError as exc:
        fields = ", ".join(str(e["loc"][0]) for e in exc.errors())
        return problem_page(request, key, 422, f"These filters are not valid: {fields}.")
    store = service.store
    counts, attention, found = await _gather(
        lambda: queries.counts(
            store,
            saga_type=filters.type,
            created_after=filters.created_after,
            created_before=filters.created_before,
        ),
        lambda: queries.needing_a_person(store, saga_type=filters.type),
        lambda: store.page(**filters.page_query()),
    )
    older = None
    if found.next_cursor:
        older = "/console?" + urlencode({**query, "cursor": found.next_cursor})
    context = {
        "filters": filters,
        "query": query,
        "counts": counts,
        "total": sum(counts.values()),
        "attention": attention,
        "sagas": [item.state for item in found.items],
        "created": {item.state.id: item.created_at for item in found.items},
        "older": older,
        "types": sorted(d.name for d in registered()),
        "statuses": [s.value for s in SagaStatus],
    }
    return page(request, "list.html", context, key=key)


@router.get("/sagas/{saga_id}")
async def saga_page(
    request: Request, saga_id: SagaId, service: ServiceDep, key: Key
) -> HTMLResponse:
    """One saga: diagram, timeline, input, actions and their history, links."""
    if Role.READ not in key.roles:
        return problem_page(request, key, 403, "This API key lacks the role 'read'.")
    try:
        saga = await service.show(saga_id)
    except SagaError as exc:
        return problem_page(request, key, exc.http_status, exc.message)
    done = DONE.get(request.query_params.get("done", ""))
    return _saga_page(request, saga, key, notice=done)


def _saga_page(
    request: Request,
    saga: SagaPublic,
    key: ApiKey,
    *,
    notice: str | None = None,
    error: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    lanes, span = views.timeline(saga)
    context = {
        "saga": saga,
        "stages": views.stages(saga),
        "lanes": lanes,
        "span": span,
        "choices": views.choices(saga),
        "version": views.version(saga),
        "input_json": views.pretty(saga.input),
        "result_json": views.pretty(saga.result) if saga.result is not None else None,
        "final": saga.status.is_final,
        "notice": notice,
        "error": error,
    }
    return page(request, "saga.html", context, key=key, status=status)


@router.post("/sagas/{saga_id}/actions/{action}")
async def act(
    request: Request, saga_id: SagaId, action: str, service: ServiceDep, key: Key
) -> Response:
    """An operator action from the saga's page; back to the page, which says what happened."""
    if action not in ACTIONS:
        return problem_page(request, key, 404, f"No action {action!r}.")
    form = await _form(request)
    if not session.csrf_ok(request, key, form.get("csrf", "")):
        return problem_page(request, key, 403, "The form is stale or from another site.")
    if views.role_of(action) not in key.roles:
        role = views.role_of(action).value
        return problem_page(request, key, 403, f"This API key lacks the role {role!r}.")
    reason = form.get("reason", "").strip() or None
    step = form.get("step") or None
    problem = _check(action, reason, step)
    if problem is None:
        try:
            if action == "cancel":
                reason = reason or "cancelled from the console"
            await service.steer(saga_id, ACTIONS[action], by=key.name, step=step, reason=reason)
        except SagaError as exc:
            if exc.http_status == 404:
                return problem_page(request, key, 404, exc.message)
            problem = (exc.http_status, exc.message)
    if problem is not None:
        try:
            saga = await service.show(saga_id)
        except SagaError as exc:
            return problem_page(request, key, exc.http_status, exc.message)
        return _saga_page(request, saga, key, error=problem[1], status=problem[0])
    return RedirectResponse(f"/console/sagas/{saga_id}?done={action}", status_code=303)


def _check(action: str, reason: str | None, step: str | None) -> tuple[int, str] | None:
    """A 422 naming the field for a form the API would refuse."""
    if reason is not None and len(reason) > 2000:
        return 422, "reason: at most 2000 characters"
    if action == "resolve":
        if reason is None:
            return 422, "reason: say how the compensation was resolved"
        if step is None or not STEP_NAME.fullmatch(step):
            return 422, "step: not a step name"
    return None


async def _known(
    request: Request, saga_id: SagaId, service: ServiceDep, key: Key
) -> AsyncIterator[str]:
    if Role.READ not in key.roles:
        raise LoginRequired
    with service.streams.admit(key.name):
        await service.load(saga_id)
        yield saga_id


@router.get("/sagas/{saga_id}/live", response_class=EventSourceResponse)
async def live(
    saga_id: Annotated[str, Depends(_known, scope="request")], service: ServiceDep
) -> AsyncIterator[ServerSentEvent]:
    """The page's version each time the saga changes (the page's script reloads on news)."""
    async with contextlib.aclosing(service.watch(saga_id)) as changes:
        async for saga in changes:
            # raw_data: the version as it is (``data`` would send it JSON-quoted).
            yield ServerSentEvent(event="version", raw_data=views.version(saga))


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (first value of each); the body is already bounded."""
    body = (await request.body()).decode("utf-8", errors="replace")
    return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}


async def _gather(*calls: Any) -> list[Any]:
    """Blocking store calls, side by side on worker threads."""
    results: list[Any] = [None] * len(calls)

    async def run(i: int) -> None:
        results[i] = await anyio.to_thread.run_sync(calls[i])

    async with anyio.create_task_group() as group:
        for i in range(len(calls)):
            group.start_soon(run, i)
    return results


def install(app: FastAPI) -> None:
    """Send browsers without a key to the login form."""

    @app.exception_handler(LoginRequired)
    async def to_login(request: Request, exc: LoginRequired) -> Response:
        if request.method == "GET" and not request.url.path.endswith("/live"):
            return RedirectResponse("/console/login", status_code=303)
        return Response("log in first", status_code=401, media_type="text/plain")
