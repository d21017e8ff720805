"""The web console over HTTP: pages, escaping, access rules, CSRF, actions, the event stream,
the command line, and the list's speed over 100,000 workflows."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

import aiodurable
from aiodurable import WorkflowStatus
from aiodurable._cli import main as cli_main
from aiodurable.console import Console, create_app
from aiodurable.console._security import is_loopback_host
from aiodurable.console._serve import ConsoleServer

from .conftest import RuntimeFactory

pytestmark = pytest.mark.anyio

LOOPBACK = "http://127.0.0.1"


@aiodurable.step()
async def shout(text: str) -> str:
    return text.upper()


@aiodurable.workflow()
async def echo(text: str) -> str:
    return await shout(text)


@aiodurable.workflow()
async def fail(text: str) -> str:
    raise RuntimeError(f"broken {text}")


@aiodurable.workflow()
async def gated(text: str) -> str:
    await shout(text)
    await aiodurable.set_event("seen", text)
    await aiodurable.recv("go", timeout=120)
    return await shout(text + "!")


def _client(app: Starlette, *, client: tuple[str, int] = ("127.0.0.1", 50000)) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=client)
    return httpx.AsyncClient(transport=transport, base_url=LOOPBACK)


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert match is not None
    return match.group(1)


async def test_list_and_workflow_pages_show_what_is_recorded(runtime: RuntimeFactory) -> None:
    """The list names each workflow with its status; a workflow page shows inputs, output,
    the error's traceback, events and the timeline's steps."""
    async with runtime() as rt, _client(create_app(rt)) as http:
        with aiodurable.set_workflow_id("ok-1"):
            assert await echo("hi") == "HI"
        with aiodurable.set_workflow_id("bad-1"), pytest.raises(RuntimeError):
            await fail("x")
        listing = await http.get("/")
        assert listing.status_code == 200
        assert 'data-workflow-id="ok-1"' in listing.text
        assert "status-success" in listing.text and "status-error" in listing.text
        page = await http.get("/workflows/ok-1")
        assert page.status_code == 200
        assert "&quot;HI&quot;" in page.text  # the output, as escaped text
        assert 'data-function-id="1"' in page.text and "shout" in page.text
        bad = await http.get("/workflows/bad-1")
        assert "broken x" in bad.text and "Traceback" in bad.text
        assert (await http.get("/workflows/nope")).status_code == 404


async def test_values_from_the_database_are_escaped(runtime: RuntimeFactory) -> None:
    """A workflow whose ID and input contain markup renders them as text, never as tags."""
    evil = "<script>alert(1)</script>"
    async with runtime() as rt, _client(create_app(rt)) as http:
        with aiodurable.set_workflow_id("x<b>y"):
            await echo(evil)
        page = await http.get("/workflows/" + "x%3Cb%3Ey")
        listing = await http.get("/")
    for text in (page.text, listing.text):
        assert "<script>alert" not in text and "<b>y" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "x&lt;b&gt;y" in listing.text


async def test_a_token_is_required_on_every_request(runtime: RuntimeFactory) -> None:
    """With a token, a request without it (from any address) gets 401; the header, the query
    parameter and the cookie it sets each let a request in."""
    async with runtime() as rt:
        app = create_app(rt, token="s3cret")
        async with _client(app, client=("203.0.113.7", 4000)) as http:
            for path in ("/", "/fragments/list", "/workflows/x", "/events", "/static/console.js"):
                assert (await http.get(path)).status_code == 401
            assert (
                await http.get("/", headers={"authorization": "Bearer wrong"})
            ).status_code == 401
            assert (
                await http.get("/", headers={"authorization": "Bearer s3cret"})
            ).status_code == 200
            first = await http.get("/?token=s3cret&status=SUCCESS")
            assert first.status_code == 303
            assert first.headers["location"] == "/?status=SUCCESS"
            assert "HttpOnly" in first.headers["set-cookie"]
            assert (await http.get("/")).status_code == 200  # the cookie now
        async with _client(app, client=("127.0.0.1", 4000)) as http:
            assert (await http.get("/")).status_code == 401  # loopback needs it too


async def test_without_a_token_only_loopback_is_served(runtime: RuntimeFactory) -> None:
    """With no token, a non-loopback client, or a non-loopback Host (DNS rebinding), gets 403."""
    async with runtime() as rt:
        app = create_app(rt)
        async with _client(app, client=("203.0.113.7", 4000)) as http:
            assert (await http.get("/")).status_code == 403
        async with _client(app) as http:
            assert (await http.get("/")).status_code == 200
            rebound = await http.get("/", headers={"host": "evil.example:8000"})
            assert rebound.status_code == 403


def test_loopback_rule() -> None:
    """Loopback is localhost, 127.0.0.0/8 and ::1; anything else is not."""
    for host in ("localhost", "127.0.0.1", "127.0.0.2", "::1", "[::1]"):
        assert is_loopback_host(host), host
    for host in ("0.0.0.0", "::", "192.168.1.4", "example.com", "localhost.example.com", ""):
        assert not is_loopback_host(host), host


async def test_cross_site_posts_are_refused(runtime: RuntimeFactory) -> None:
    """A POST without the CSRF token, with a wrong one, from a foreign Origin or marked
    cross-site is refused with 403 and changes nothing."""
    async with runtime() as rt, _client(create_app(rt)) as http:
        handle = await rt.start_workflow(gated, "a")
        await aiodurable.get_event(handle.workflow_id, "seen", timeout=30)
        page = await http.get(f"/workflows/{handle.workflow_id}")
        token = _csrf(page.text)
        url = f"/workflows/{handle.workflow_id}/cancel"
        for data, headers in [
            ({}, {}),
            ({"csrf": "0" * 64}, {}),
            ({"csrf": token}, {"origin": "http://evil.example"}),
            ({"csrf": token}, {"origin": "null"}),
            ({"csrf": token}, {"sec-fetch-site": "cross-site"}),
        ]:
            refused = await http.post(url, data=data, headers=headers)
            assert refused.status_code == 403, (data, headers)
        assert (await rt.get_workflow_status(handle.workflow_id)).status is WorkflowStatus.PENDING
        done = await http.post(url, data={"csrf": token}, headers={"origin": LOOPBACK})
        assert done.status_code == 303
        assert (await rt.get_workflow_status(handle.workflow_id)).status is (
            WorkflowStatus.CANCELLED
        )


async def test_actions_steer_and_redirect(runtime: RuntimeFactory) -> None:
    """Cancel, resume, restart and fork do what they say and redirect to the workflow they
    concern; a fork past the journal reports why it failed."""
    async with runtime() as rt, _client(create_app(rt)) as http:
        handle = await rt.start_workflow(gated, "b")
        wid = handle.workflow_id
        await aiodurable.get_event(wid, "seen", timeout=30)
        token = _csrf((await http.get(f"/workflows/{wid}")).text)

        async def post(action: str, **form: str) -> httpx.Response:
            return await http.post(f"/workflows/{wid}/{action}", data={"csrf": token, **form})

        cancelled = await post("cancel")
        assert cancelled.headers["location"].startswith(f"/workflows/{wid}?")
        await aiodurable.send(wid, "now", "go")
        assert "&quot;now&quot;" in (await http.get(f"/workflows/{wid}")).text  # waiting
        await post("resume")
        assert await (await rt.retrieve_workflow(wid)).get_result() == "B!"
        restarted = await post("restart")
        new_id = restarted.headers["location"].split("/workflows/")[1].split("?")[0]
        assert new_id != wid
        assert (await rt.get_workflow_status(new_id)).status is WorkflowStatus.PENDING
        await rt.cancel_workflow(new_id)
        forked = await post("fork", step="4")
        fork_id = forked.headers["location"].split("/workflows/")[1].split("?")[0]
        assert await (await rt.retrieve_workflow(fork_id)).get_result() == "B!"
        refused = await post("fork", step="99")
        assert refused.headers["location"].startswith(f"/workflows/{wid}?")
        assert "failed" in (await http.get(refused.headers["location"])).text


async def test_filters_narrow_the_list(runtime: RuntimeFactory) -> None:
    """Status, name, ID prefix and time range filters each narrow the list; paging pages."""
    async with runtime() as rt, _client(create_app(rt)) as http:
        for i in range(3):
            with aiodurable.set_workflow_id(f"alpha-{i}"):
                await echo("a")
        with aiodurable.set_workflow_id("beta-0"), pytest.raises(RuntimeError):
            await fail("b")

        async def ids(query: str) -> set[str]:
            text = (await http.get(f"/fragments/list?{query}")).text
            return set(re.findall(r'data-workflow-id="([^"]+)"', text))

        assert await ids("") == {"alpha-0", "alpha-1", "alpha-2", "beta-0"}
        assert await ids("status=ERROR") == {"beta-0"}
        assert await ids("prefix=alpha-") == {"alpha-0", "alpha-1", "alpha-2"}
        name = (await rt.get_workflow_status("beta-0")).name
        assert await ids(f"name={name}") == {"beta-0"}
        assert await ids("queue=none") == set()
        assert await ids("start=2999-01-01T00:00:00") == set()
        assert len(await ids("end=2999-01-01T00:00:00")) == 4


async def _serve(app: Starlette, console: Console | None = None) -> AsyncIterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    server = uvicorn.Server(config) if console is None else ConsoleServer(config, console)
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


served = contextlib.asynccontextmanager(_serve)


async def _next_message(lines: AsyncIterator[str]) -> str:
    async for line in lines:
        if line.startswith("data:"):
            return line
    raise AssertionError("the stream ended")


async def test_event_stream_reports_starts_and_ends(runtime: RuntimeFactory) -> None:
    """The list's stream sends a message when a workflow starts and when it finishes; one
    workflow's stream, when its status changes."""
    async with runtime() as rt, served(create_app(rt)) as url, httpx.AsyncClient() as http:
        async with http.stream("GET", f"{url}/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.aiter_lines()
            handle = await rt.start_workflow(gated, "c")
            await asyncio.wait_for(_next_message(lines), 10)  # started (the probe sees it)
            await aiodurable.get_event(handle.workflow_id, "seen", timeout=30)
            async with http.stream("GET", f"{url}/events?workflow={handle.workflow_id}") as one:
                mine = one.aiter_lines()
                await aiodurable.send(handle.workflow_id, "x", "go")
                await handle.get_result()
                await asyncio.wait_for(_next_message(lines), 10)  # finished
                await asyncio.wait_for(_next_message(mine), 10)


async def test_streams_end_on_disconnect_and_on_shutdown(
    database_url: str, schema: str, runtime: RuntimeFactory
) -> None:
    """A stream ends when its client goes away, and the console's server ends open streams as
    it shuts down, so shutting down does not wait for browsers; the console opens (and closes)
    a runtime of its own when given none."""
    async with runtime():
        pass  # (create the schema)
    app = create_app(database_url=database_url, schema=schema)
    console = app.state.console
    started = time.perf_counter()
    async with served(app, console) as url, httpx.AsyncClient() as http:
        async with http.stream("GET", f"{url}/events") as stream:
            await anext(stream.aiter_lines())
            assert console.live.open_streams == 1
        async with http.stream("GET", f"{url}/events") as stream:
            lines = stream.aiter_lines()
            await anext(lines)
            assert console.live.open_streams >= 1
            console.live.stop()
            rest = [line async for line in lines]
            assert not any(line.startswith("data:") for line in rest)
        assert console.live.open_streams == 0
    assert time.perf_counter() - started < 10
    with pytest.raises(aiodurable.NoRuntimeError):
        console.runtime()


def test_command_line_refuses_other_addresses_without_a_token(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``aiodurable console --host 0.0.0.0`` without a token exits 2 naming the fix."""
    monkeypatch.delenv("AIODURABLE_CONSOLE_TOKEN", raising=False)
    assert cli_main(["console", "--host", "0.0.0.0", "--port", "1"]) == 2
    assert "requires a token" in capsys.readouterr().err


@pytest.mark.slow
async def test_the_list_stays_fast_over_100k_workflows(runtime: RuntimeFactory) -> None:
    """With 100,000 workflows, the list page (first page, a status filter, a name filter and a
    deep page) answers in well under a second."""
    async with runtime(recover=False) as rt:
        async with rt.store.pool.acquire() as conn:
            await conn.execute(
                f"INSERT INTO {rt.schema}.workflows (workflow_id, status, name, format, inputs,"
                " output, created_at, updated_at, app_version, executor_id)"
                " SELECT 'wf-' || i, CASE WHEN i % 20 = 0 THEN 'ERROR' WHEN i % 20 = 1"
                " THEN 'PENDING' ELSE 'SUCCESS' END, 'bench:workflow_' || (i % 7), 'json',"
                " '{\"args\":[1],\"kwargs\":{}}', '1', 1700000000000 + i, 1700000000000 + i,"
                " 'v1', 'e1' FROM generate_series(1, 100000) AS i"
            )
            await conn.execute(f"ANALYZE {rt.schema}.workflows")
        timings: dict[str, float] = {}
        async with _client(create_app(rt)) as http:
            for label, query in [
                ("first page", ""),
                ("status=ERROR", "?status=ERROR"),
                ("name", "?name=bench:workflow_3"),
                ("prefix", "?prefix=wf-9999"),
                ("page 1000", "?page=1000"),
            ]:
                await http.get(f"/{query}")
                samples = []
                for _ in range(10):
                    begun = time.perf_counter()
                    response = await http.get(f"/{query}")
                    samples.append(time.perf_counter() - begun)
                    assert response.status_code == 200
                    assert response.text.count("data-workflow-id=") == 50 or label == "prefix"
                timings[label] = sorted(samples)[len(samples) // 2]
    print(
        "console list over 100k workflows, median ms:",
        {k: round(v * 1000, 1) for k, v in timings.items()},
    )
    assert all(t < 0.5 for t in timings.values()), timings
