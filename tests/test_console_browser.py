"""The web console in a real headless Chromium (Debian's package, driven by Playwright): signing
in with the token link, live updates without reloads, cancel, resume and fork from the workflow
page, filters, screenshots. The console is guarded by a token, as ``aiodurable console`` is by
default, and each browser opens the token link first.

Skipped, with the reason, where Playwright or Chromium is missing (``AIODURABLE_TEST_CHROMIUM``
names another Chromium binary); CI installs both, so there they run.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import uvicorn

import aiodurable
from aiodurable import Runtime, WorkflowStatus
from aiodurable.console import create_app
from aiodurable.testing import hooks

from .conftest import RuntimeFactory

playwright_api = pytest.importorskip(
    "playwright.async_api",
    reason="the browser tests need Playwright: pip install 'aiodurable[test]'",
)
from playwright.async_api import Dialog, Page, async_playwright, expect  # noqa: E402

CHROMIUM = os.environ.get("AIODURABLE_TEST_CHROMIUM") or shutil.which("chromium") or ""
if not CHROMIUM or not Path(CHROMIUM).exists():
    pytest.skip(
        "no Chromium found: install Debian's package (apt-get install -y chromium) or set"
        " AIODURABLE_TEST_CHROMIUM to a Chromium binary",
        allow_module_level=True,
    )

pytestmark = pytest.mark.anyio

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

ran: dict[str, int] = {}


@aiodurable.step()
async def reserve(order: str) -> dict[str, object]:
    ran[order] = ran.get(order, 0) + 1
    return {"order": order, "reservation": f"r-{order}"}


@aiodurable.step()
async def charge(order: str, cents: int) -> int:
    await asyncio.sleep(0.02)
    return cents


@aiodurable.step()
async def ship(order: str) -> str:
    return f"parcel-{order}"


@aiodurable.workflow()
async def checkout(order: str, cents: int) -> str:
    """Reserve, wait for the go-ahead, charge, ship."""
    await reserve(order)
    await aiodurable.set_event("stage", "reserved")
    await aiodurable.recv("go", timeout=120)
    await charge(order, cents)
    await aiodurable.set_event("stage", "charged")
    return await ship(order)


@aiodurable.workflow()
async def refund(order: str) -> str:
    """A workflow that fails."""
    await reserve(order)
    raise ValueError(f"order {order} was never charged")


@aiodurable.workflow()
async def nightly(batch: int) -> int:
    """A parent with a child."""
    await reserve(f"batch-{batch}")
    with aiodurable.set_workflow_id(f"{aiodurable.current_workflow_id()}-child"):
        await checkout_now(f"b{batch}", 100)
    return batch


@aiodurable.workflow()
async def checkout_now(order: str, cents: int) -> str:
    """Checkout without waiting."""
    await reserve(order)
    await charge(order, cents)
    return await ship(order)


TOKEN = "browser-test-token-0123456789"


@asynccontextmanager
async def console(rt: Runtime) -> AsyncIterator[str]:
    """Serve the console for ``rt`` on loopback with uvicorn, guarded by ``TOKEN``; yield its
    URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(create_app(rt, token=TOKEN), log_level="warning"))
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@asynccontextmanager
async def browser_page(url: str, *, sign_in: bool = True) -> AsyncIterator[Page]:
    """A fresh page of a headless Chromium, signed in to the console at ``url`` by opening its
    token link (unless ``sign_in`` is false); dialogs (confirmations) are accepted. The browser
    is closed before the server stops, so no event stream holds the server open."""
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 860})
            page.set_default_timeout(15_000)

            async def accept(dialog: Dialog) -> None:
                await dialog.accept()

            page.on("dialog", accept)
            if sign_in:
                await page.goto(f"{url}/?token={TOKEN}")
            yield page
        finally:
            await browser.close()


async def _mark_no_reload(page: Page) -> None:
    await page.evaluate("window.__noReload = true")


async def _assert_no_reload(page: Page) -> None:
    assert await page.evaluate("window.__noReload === true"), "the page was reloaded"


async def test_the_token_link_signs_the_browser_in(runtime: RuntimeFactory) -> None:
    """Without the token the browser gets 401; the printed link lands on the list with the token
    gone from the address bar, and the live stream (which sends no header) works by the
    cookie alone."""
    async with runtime() as rt, console(rt) as url, browser_page(url, sign_in=False) as page:
        refused = await page.goto(url + "/")
        assert refused is not None and refused.status == 401
        await page.goto(f"{url}/?token={TOKEN}&status=SUCCESS")
        assert page.url == f"{url}/?status=SUCCESS"
        await expect(page.locator("html")).to_have_attribute("data-live", "open")
        with aiodurable.set_workflow_id("order-in"):
            await checkout_now("in", 1)
        await expect(page.locator("tr[data-workflow-id=order-in] .status")).to_have_text("SUCCESS")
        cookies = await page.context.cookies()
        assert [c["httpOnly"] for c in cookies] == [True]
        assert all(TOKEN not in c["value"] for c in cookies)


async def test_list_shows_workflows_as_they_start_and_finish(runtime: RuntimeFactory) -> None:
    """Workflows appear in the list as they start and turn SUCCESS as they finish, with no
    reload of the page."""
    async with runtime() as rt, console(rt) as url, browser_page(url) as page:
        await page.goto(url + "/")
        await expect(page.locator("html")).to_have_attribute("data-live", "open")
        await _mark_no_reload(page)
        handles = []
        for i in range(3):
            with aiodurable.set_workflow_id(f"order-{i}"):
                handles.append(await rt.start_workflow(checkout, f"o{i}", 1000 + i))
        rows = page.locator("tr[data-workflow-id^=order-]")
        await expect(rows).to_have_count(3)
        await expect(page.locator("tr[data-workflow-id=order-1] .status")).to_have_text("PENDING")
        for h in handles:
            await aiodurable.send(h.workflow_id, "ok", "go")
            await h.get_result()
        for i in range(3):
            row = page.locator(f"tr[data-workflow-id=order-{i}] .status")
            await expect(row).to_have_text("SUCCESS")
        await _assert_no_reload(page)


async def test_cancel_then_resume_from_the_workflow_page(runtime: RuntimeFactory) -> None:
    """Cancel on a running workflow's page stops it (the page shows CANCELLED at once); resume
    continues it, and once its message arrives the page shows it finished."""
    async with runtime() as rt, console(rt) as url, browser_page(url) as page:
        with aiodurable.set_workflow_id("order-c"):
            handle = await rt.start_workflow(checkout, "c", 4200)
        await aiodurable.get_event("order-c", "stage", timeout=30)
        await page.goto(f"{url}/workflows/order-c")
        status = page.locator("#live h1 .status")
        await expect(status).to_have_text("PENDING")
        await page.get_by_role("button", name="Cancel").click()
        await expect(status).to_have_text("CANCELLED")
        await expect(page.locator(".notice")).to_have_text("Cancelled.")
        await hooks(rt).wait_stopped("order-c")
        assert (await rt.get_workflow_status("order-c")).status is WorkflowStatus.CANCELLED
        await aiodurable.send("order-c", "ok", "go")
        await expect(page.locator("#live")).to_contain_text('"ok"')
        await page.get_by_role("button", name="Resume").click()
        await expect(status).to_have_text("SUCCESS")
        await expect(page.locator("#live")).to_contain_text('"parcel-c"')
        assert await (await rt.retrieve_workflow(handle.workflow_id)).get_result() == "parcel-c"


async def test_fork_from_a_step_opens_the_new_workflow(runtime: RuntimeFactory) -> None:
    """Fork from a step of a finished workflow starts a new workflow, whose page the browser
    lands on; it reuses the steps before the chosen one (they do not run again)."""
    async with runtime() as rt, console(rt) as url, browser_page(url) as page:
        with aiodurable.set_workflow_id("order-f"):
            handle = await rt.start_workflow(checkout, "f", 500)
        await aiodurable.get_event("order-f", "stage", timeout=30)
        await aiodurable.send("order-f", "ok", "go")
        await handle.get_result()
        await page.goto(f"{url}/workflows/order-f")
        await (
            page.locator("tr[data-function-id='3']")
            .get_by_role("button", name="Fork from here")
            .click()
        )
        await expect(page.locator(".notice")).to_contain_text("Forked from order-f at step 3")
        new_id = await page.locator("#live h1 .wid").inner_text()
        assert new_id != "order-f"
        await expect(page.locator("#live h1 .status")).to_have_text("PENDING")
        await aiodurable.send(new_id, "again", "go")
        await expect(page.locator("#live h1 .status")).to_have_text("SUCCESS")
        await expect(page.locator("tr[data-function-id]")).to_have_count(6)
        assert ran["f"] == 1  # step 1 was reused, not run again
        infos = await rt.list_workflows()
        assert {i.workflow_id for i in infos} == {"order-f", new_id}


async def test_filters_narrow_the_list(runtime: RuntimeFactory) -> None:
    """Choosing a status, a name and an ID prefix narrows the list to what matches."""
    async with runtime() as rt, console(rt) as url, browser_page(url) as page:
        for i in range(3):
            with aiodurable.set_workflow_id(f"fast-{i}"):
                await checkout_now(f"x{i}", i)
        with aiodurable.set_workflow_id("broken-0"), pytest.raises(ValueError):
            await refund("y")
        await page.goto(url + "/")
        rows = page.locator("tr[data-workflow-id]")
        await expect(rows).to_have_count(4)
        await page.select_option("select[name=status]", "ERROR")
        await page.get_by_role("button", name="Filter").click()
        await expect(rows).to_have_count(1)
        await expect(rows.first).to_have_attribute("data-workflow-id", "broken-0")
        await page.select_option("select[name=status]", "")
        await page.fill("input[name=prefix]", "fast-")
        await page.get_by_role("button", name="Filter").click()
        await expect(rows).to_have_count(3)
        await page.fill("input[name=prefix]", "")
        name = (await rt.get_workflow_status("broken-0")).name
        await page.fill("input[name=name]", name)
        await page.get_by_role("button", name="Filter").click()
        await expect(rows).to_have_count(1)
        await page.fill("input[name=start]", "2999-01-01T00:00:00")
        await page.get_by_role("button", name="Filter").click()
        await expect(page.locator("td.empty")).to_have_text("No workflow matches.")


async def test_screenshots(runtime: RuntimeFactory) -> None:
    """The list and a workflow page, with a realistic mix of workflows, saved as PNG artifacts
    (the README shows copies of them)."""
    ARTIFACTS.mkdir(exist_ok=True)
    async with runtime() as rt, console(rt) as url, browser_page(url) as page:
        for i in range(4):
            with aiodurable.set_workflow_id(f"order-{1040 + i}"):
                await checkout_now(f"{1040 + i}", 1999 + i)
        with aiodurable.set_workflow_id("refund-77"), pytest.raises(ValueError):
            await refund("77")
        with aiodurable.set_workflow_id("nightly-2026-11-27"):
            await nightly(27)
        with aiodurable.set_workflow_id("order-1044"):
            waiting = await rt.start_workflow(checkout, "1044", 2599)
        await aiodurable.get_event("order-1044", "stage", timeout=30)
        with aiodurable.set_workflow_id("order-1045"):
            shown = await rt.start_workflow(checkout, "1045", 12900)
        await aiodurable.get_event("order-1045", "stage", timeout=30)
        await aiodurable.send("order-1045", {"approved_by": "ops"}, "go")
        await shown.get_result()
        with aiodurable.set_workflow_id("order-1046"):
            await rt.start_workflow(checkout, "1046", 700)
        await aiodurable.get_event("order-1046", "stage", timeout=30)
        await rt.cancel_workflow("order-1046")
        await page.goto(url + "/")
        await expect(page.locator("tr[data-workflow-id]")).to_have_count(10)
        await page.screenshot(path=str(ARTIFACTS / "console-list.png"), full_page=True)
        await page.goto(f"{url}/workflows/order-1045")
        await expect(page.locator("#live h1 .status")).to_have_text("SUCCESS")
        await page.screenshot(path=str(ARTIFACTS / "console-workflow.png"), full_page=True)
        await rt.cancel_workflow(waiting.workflow_id)
    for name in ("console-list.png", "console-workflow.png"):
        assert (ARTIFACTS / name).read_bytes().startswith(b"\x89PNG")
