"""The console's screenshots in docs/images/, from a live stack.

    python -m tests.support.screenshots

Starts the Temporal dev server, a worker and the API (tests/support/console.py), runs a few
test sagas into the states an operator meets (completed, parked, awaiting a decision, resolved
by hand), and photographs the list and the resolved saga's page with Debian's Chromium.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from playwright.async_api import async_playwright
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from tests.support import ledger
from tests.support.console import CHROMIUM, CHROMIUM_ARGS, OPS, Console, secret, serve_console
from tests.support.ledger import ALWAYS

IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"


async def populate(console: Console) -> str:
    """Sagas in the states an operator meets; the id of one resolved by hand."""
    done = [await console.start("three_steps") for _ in range(3)]
    done.append(await console.start("parallel_group"))
    refused = await console.start("three_steps", refuse={"c"})
    parked = await console.start("three_steps", refuse={"c"}, compensation_failures={"a": ALWAYS})
    resolved = await console.start(
        "parallel_group", refuse={"d"}, compensation_failures={"p2": ALWAYS}
    )
    waiting = await console.start("approval", amount=500)
    for saga_id in done:
        await console.status(saga_id, "completed")
    await console.status(refused, "compensated")
    await console.status(parked, "compensation_failed")
    await console.status(waiting, "awaiting_approval")
    await console.status(resolved, "compensation_failed")
    answer = await console.http.post(
        f"/sagas/{resolved}/steps/p2/resolve", json={"reason": "refunded by hand, ticket 4711"}
    )
    assert answer.status_code == 200, answer.text
    await console.status(resolved, "compensated")
    return resolved


async def main() -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        ledger.init(Path(tmp) / "ledger.sqlite")
        temporal = Path(sys.executable).parent / "temporal"
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=str(temporal),
            data_converter=pydantic_data_converter,
            dev_server_log_level="error",
        )
        try:
            async with serve_console(env.client, Path(tmp)) as console:
                resolved = await populate(console)
                async with async_playwright() as p:
                    browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                    page = await browser.new_page(
                        base_url=console.url, viewport={"width": 1280, "height": 900}
                    )
                    await page.goto("/console/login")
                    await page.get_by_label("API key").fill(secret(OPS))
                    await page.get_by_role("button", name="Log in").click()
                    await page.wait_for_url("**/console")
                    await page.screenshot(path=IMAGES / "console-list.png", full_page=True)
                    await page.goto(f"/console/sagas/{resolved}")
                    await page.screenshot(path=IMAGES / "console-saga.png", full_page=True)
                    await browser.close()
                # No saga left waiting when the worker stops.
                await console.http.post(f"/sagas/{(await waiting_id(console))}/reject")
        finally:
            await env.shutdown()
    print(f"wrote {IMAGES / 'console-list.png'} and {IMAGES / 'console-saga.png'}")


async def waiting_id(console: Console) -> str:
    page = (await console.http.get("/sagas", params={"status": "awaiting_approval"})).json()
    saga_id: str = page["items"][0]["id"]
    return saga_id


if __name__ == "__main__":
    asyncio.run(main())
