"""The operator console in a real browser: Playwright driving Debian's Chromium against the
real API (uvicorn on a port), a real worker and the Temporal dev server.

The paths an operator takes: find a parked saga, read why, resolve it with a reason and see
it compensated; approve a waiting saga and watch the page follow it; a key without the
operate or approve role sees no buttons, and its posts are refused. Plus the session's
guards (login, CSRF, other origins) over plain HTTP.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from tests.support.console import (
    CHROMIUM,
    CHROMIUM_ARGS,
    OPS,
    VIEWER,
    Console,
    chromium_missing,
    secret,
    serve_console,
)
from tests.support.ledger import ALWAYS

pytestmark = pytest.mark.temporal

if (why := chromium_missing()) is not None:
    pytest.skip(why, allow_module_level=True)
playwright_api = pytest.importorskip(
    "playwright.async_api", reason="playwright is missing: `make install` installs it"
)
expect = playwright_api.expect
# The machine running the suite may be busy: allow a page 15 s to show what it must.
expect.set_options(timeout=15_000)


@pytest.fixture(scope="module")
async def console(
    dev_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Console]:
    async with serve_console(dev_env.client, tmp_path_factory.mktemp("console")) as served:
        yield served


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as p:
        launched = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


async def logged_in(browser: Any, console: Console, key: str) -> Any:
    """A fresh browser context (its own cookies) logged in with ``key``; its page."""
    context = await browser.new_context(base_url=console.url)
    context.set_default_timeout(15_000)
    page = await context.new_page()
    await page.goto("/console")
    await expect(page).to_have_url(re.compile(r"/console/login$"))
    await page.get_by_label("API key").fill(secret(key))
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("heading", name="Sagas", exact=True)).to_be_visible()
    return page


class TestOperatorPaths:
    async def test_a_parked_saga_is_found_read_and_resolved(
        self, console: Console, browser: Any
    ) -> None:
        saga_id = await console.start(
            "three_steps", refuse={"b"}, compensation_failures={"a": ALWAYS}
        )
        await console.status(saga_id, "compensation_failed")
        page = await logged_in(browser, console, OPS)

        parked = page.locator(
            "section", has=page.get_by_role("heading", name=re.compile("Needs a person"))
        )
        row = parked.get_by_role("row", name=re.compile(re.escape(saga_id)))
        await expect(row).to_contain_text("compensation failed")
        await expect(row).to_contain_text("cannot undo a right now")
        await row.get_by_role("link", name=saga_id).click()

        await expect(page.locator("#status")).to_have_text("compensation failed")
        await expect(page.locator(".timeline")).to_contain_text("cannot undo a right now")
        await expect(page.locator(".node.st-compensation_failed")).to_contain_text("a")
        await page.get_by_label("How was a undone? (required)").fill("refunded by hand, ticket 42")
        await page.get_by_role("button", name="Resolve a by hand").click()

        await expect(page.get_by_role("status").filter(has_text="resolved by hand")).to_be_visible()
        await expect(page.locator("#status")).to_have_text("compensated")
        await expect(page.locator(".node.st-resolved")).to_contain_text("a")
        history = page.locator("table.history")
        await expect(history).to_contain_text("ops")
        await expect(history).to_contain_text("resolve")
        await expect(history).to_contain_text("refunded by hand, ticket 42")
        await expect(page.get_by_role("button")).to_have_count(1)  # log out; no action applies
        await page.context.close()

    async def test_a_waiting_saga_is_approved_and_followed_live(
        self, console: Console, browser: Any
    ) -> None:
        saga_id = await console.start("approval", amount=500)
        await console.status(saga_id, "awaiting_approval")
        page = await logged_in(browser, console, OPS)
        await page.goto(f"/console/sagas/{saga_id}")
        await expect(page.locator("#status")).to_have_text("awaiting approval")
        await page.get_by_label("Comment (optional)").first.fill("within budget")
        await page.get_by_role("button", name="Approve").click()
        await expect(page.get_by_role("status").filter(has_text="Approved.")).to_be_visible()
        # The worker finishes the saga after the answer: the page's script reloads it.
        await console.status(saga_id, "completed")
        await expect(page.locator("#status")).to_have_text("completed")
        await expect(page.locator("table.history")).to_contain_text("within budget")
        await expect(page.locator(".timeline")).to_contain_text("approved by ops")
        await page.context.close()

    async def test_a_key_without_the_roles_sees_no_buttons_and_cannot_post(
        self, console: Console, browser: Any
    ) -> None:
        saga_id = await console.start("approval", amount=500)
        await console.status(saga_id, "awaiting_approval")
        page = await logged_in(browser, console, VIEWER)
        await page.goto(f"/console/sagas/{saga_id}")
        await expect(page.locator("#status")).to_have_text("awaiting approval")
        await expect(page.locator(".actions")).to_have_count(0)
        # The page follows the saga but reloads only when it changes: a marker survives.
        await page.evaluate("window.marker = 1")
        await page.wait_for_timeout(1500)
        assert await page.evaluate("window.marker") == 1
        await expect(page.get_by_text("this key lacks the role")).to_be_visible()

        # Posting anyway, with the session's own CSRF token (from the log-out form): 403.
        csrf = await page.locator("input[name=csrf]").first.get_attribute("value")
        for action in ("approve", "cancel"):
            answer = await page.request.post(
                f"/console/sagas/{saga_id}/actions/{action}",
                form={"csrf": csrf, "reason": "let me"},
                max_redirects=0,
            )
            assert answer.status == 403, action
            assert "lacks the role" in await answer.text()
        assert (await console.http.get(f"/sagas/{saga_id}")).json()["status"] == "awaiting_approval"
        await page.context.close()
        # Nothing left waiting when the module's worker stops (its coroutine would be abandoned).
        assert (await console.http.post(f"/sagas/{saga_id}/reject")).status_code == 200


class TestSession:
    """The console's guards, over plain HTTP."""

    async def test_pages_need_a_key_and_the_api_does_not_take_the_cookie(
        self, console: Console
    ) -> None:
        async with httpx.AsyncClient(base_url=console.url) as http:
            page = await http.get("/console")
            assert (page.status_code, page.headers["location"]) == (303, "/console/login")
            wrong = await http.post("/console/login", data={"api_key": "x" * 32})
            assert wrong.status_code == 403
            assert "sagas_console" not in wrong.headers.get("set-cookie", "")
            ok = await http.post("/console/login", data={"api_key": secret(VIEWER)})
            assert ok.status_code == 303
            cookie = ok.headers["set-cookie"]
            for attribute in ("HttpOnly", "SameSite=strict", "Path=/console"):
                assert attribute.lower() in cookie.lower()
            listed = await http.get("/console")
            assert listed.status_code == 200
            assert "default-src 'none'" in listed.headers["content-security-policy"]
            # Only /console and below are the console's: a look-alike path still wants a key.
            assert (await http.get("/consoles")).status_code == 401
            # The cookie is the console's: the JSON API still wants the header.
            sent = {"Cookie": f"sagas_console={http.cookies['sagas_console']}"}
            assert (await http.get("/sagas", headers=sent)).status_code == 401

    async def test_a_post_without_the_token_or_from_elsewhere_is_refused(
        self, console: Console
    ) -> None:
        saga_id = await console.start("approval", amount=500)
        await console.status(saga_id, "awaiting_approval")
        async with httpx.AsyncClient(base_url=console.url) as http:
            await http.post("/console/login", data={"api_key": secret(OPS)})
            page = (await http.get(f"/console/sagas/{saga_id}")).text
            token = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
            assert token is not None
            url = f"/console/sagas/{saga_id}/actions/approve"
            async with httpx.AsyncClient(base_url=console.url) as stranger:
                assert (await stranger.post(url, data={"csrf": token[1]})).status_code == 401
            assert (await http.post(url, data={"csrf": "0" * 64})).status_code == 403
            foreign = {"Origin": "https://evil.example"}
            answer = await http.post(url, data={"csrf": token[1]}, headers=foreign)
            assert answer.status_code == 403
            assert (await console.http.get(f"/sagas/{saga_id}")).json()[
                "status"
            ] == "awaiting_approval"
            done = await http.post(url, data={"csrf": token[1]})
            assert (done.status_code, done.headers["location"]) == (
                303,
                f"/console/sagas/{saga_id}?done=approve",
            )

    async def test_filters_and_counts(self, console: Console) -> None:
        async with httpx.AsyncClient(base_url=console.url) as http:
            await http.post("/console/login", data={"api_key": secret(OPS)})
            page = await http.get("/console", params={"type": "approval", "status": "completed"})
            assert page.status_code == 200
            assert 'option value="approval" selected' in page.text
            bad = await http.get("/console", params={"created_after": "yesterday"})
            assert bad.status_code == 422
            assert "created_after" in bad.text


def test_the_docs_show_the_console() -> None:
    docs = Path(__file__).resolve().parent.parent / "docs"
    text = (docs / "console.md").read_text()
    for image in re.findall(r"\]\((images/[^)]+\.png)\)", text):
        assert (docs / image).stat().st_size > 10_000, image
