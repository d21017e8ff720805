"""The web console over HTTP: pages, escaping, access rules, CSRF, actions, the event stream,
the command line, and the list's speed over 100,000 workflows."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import shutil
import signal
import socket
import stat
import sys
import tempfile
import time
from collections.abc import AsyncIterator, MutableMapping
from pathlib import Path

import httpx
import orjson
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

import aiodurable
from aiodurable import WorkflowStatus
from aiodurable._cli import main as cli_main
from aiodurable.console import Console, create_app
from aiodurable.console._app import MAX_FORM
from aiodurable.console._live import MAX_STREAMS
from aiodurable.console._render import PAGE_SIZE
from aiodurable.console._security import COOKIE, COOKIE_LIFETIME, is_loopback_host
from aiodurable.console._serve import ConsoleServer
from aiodurable.testing import hooks

from .conftest import RuntimeFactory

pytestmark = pytest.mark.anyio

LOOPBACK = "http://127.0.0.1"
TOKEN = "s3cret-token-for-tests"


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
        app = create_app(rt, token=TOKEN)
        async with _client(app, client=("203.0.113.7", 4000)) as http:
            for path in ("/", "/fragments/list", "/workflows/x", "/events", "/static/console.js"):
                assert (await http.get(path)).status_code == 401
            assert (
                await http.get("/", headers={"authorization": "Bearer wrong"})
            ).status_code == 401
            assert (
                await http.get("/", headers={"authorization": f"Bearer {TOKEN}"})
            ).status_code == 200
            first = await http.get(f"/?token={TOKEN}&status=SUCCESS")
            assert first.status_code == 303
            assert first.headers["location"] == "/?status=SUCCESS"
            assert "HttpOnly" in first.headers["set-cookie"]
            assert (await http.get("/")).status_code == 200  # the cookie now
        async with _client(app, client=("127.0.0.1", 4000)) as http:
            assert (await http.get("/")).status_code == 401  # loopback needs it too


async def test_the_session_cookie_is_a_dated_mac_not_the_token(runtime: RuntimeFactory) -> None:
    """The cookie holds neither the token nor its plain digest (the old cookie, which never
    expired, is refused); a cookie past COOKIE_LIFETIME, or with a wrong MAC, gets 401; it says
    Max-Age; a token shorter than 16 characters is refused with the fix."""
    async with runtime() as rt:
        app = create_app(rt, token=TOKEN)
        guard = app.state.console.guard
        async with _client(app) as http:
            first = await http.get(f"/?token={TOKEN}")
            cookie = first.headers["set-cookie"]
            assert f"Max-Age={COOKIE_LIFETIME}" in cookie and "SameSite=Strict" in cookie
            value = cookie.split(";")[0].split("=", 1)[1]
            assert TOKEN not in value and hashlib.sha256(TOKEN.encode()).hexdigest() not in value
        stale = guard.cookie_value(issued=int(time.time()) - COOKIE_LIFETIME - 5)
        fresh = guard.cookie_value()
        forged = fresh[:-4] + ("0000" if not fresh.endswith("0000") else "1111")
        for offered, status in [
            (hashlib.sha256(TOKEN.encode()).hexdigest(), 401),
            (stale, 401),
            (forged, 401),
            (fresh, 200),
        ]:
            async with _client(app) as http:
                http.cookies.set(COOKIE, offered)
                assert (await http.get("/")).status_code == status, offered
        other = create_app(rt, token=TOKEN.upper())
        async with _client(other) as http:  # another token: this cookie means nothing there
            http.cookies.set(COOKIE, fresh)
            assert (await http.get("/")).status_code == 401
    with pytest.raises(ValueError, match=r"at least 16 characters.*secrets\.token_urlsafe"):
        create_app(token="s3cret")
    with pytest.raises(ValueError, match="printable ASCII"):
        create_app(token="a token with spaces in it")


async def test_the_token_redirect_never_leaves_the_console(runtime: RuntimeFactory) -> None:
    """``//evil.example/x?token=...`` and its encoded forms redirect to a path on the console
    itself (a browser reads ``//host`` as another site), over real HTTP."""
    async with runtime() as rt, served(create_app(rt, token=TOKEN)) as url:
        port = url.rsplit(":", 1)[1]
        for target in ("//evil.example/x", "/%2F%2Fevil.example", "/\\evil.example", "///x"):
            answer = await _raw_get(int(port), f"{target}?token={TOKEN}")
            assert answer.startswith("HTTP/1.1 303"), answer
            location = re.search(r"(?im)^location: (.*)$", answer)
            assert location is not None
            where = location.group(1).strip()
            assert where.startswith("/") and where[1:2] not in ("/", "\\"), (target, where)


async def _raw_get(port: int, target: str) -> str:
    """The status line and headers of a GET of ``target`` sent byte for byte (no client
    normalises the path)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()
        await writer.wait_closed()
    return head.decode("latin-1")


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
        async with hooks(rt).store.pool.acquire() as conn:
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


# -- the command line, as a user runs it ----------------------------------------------------------


ROOT = Path(__file__).resolve().parent.parent


class ConsoleProcess:
    """``aiodurable console ...`` in a child process; ``banner`` is the line that says where it
    listens, ``log`` (after it stopped) all it wrote, stdout and stderr."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.banner = ""
        self.log = ""


@contextlib.asynccontextmanager
async def console_process(
    database_url: str, schema: str, *args: str, env: dict[str, str] | None = None
) -> AsyncIterator[ConsoleProcess]:
    """Start the console; yield once it printed where it listens (its socket is bound then, so
    requests wait for it); stop it with SIGINT as Ctrl-C would."""
    environment = {k: v for k, v in os.environ.items() if k not in ("AIODURABLE_CONSOLE_TOKEN",)}
    environment.update({"AIODURABLE_DATABASE_URL": database_url, **(env or {})})
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aiodurable._cli",
        "console",
        "--schema",
        schema,
        *args,
        cwd=ROOT,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    child = ConsoleProcess(proc)
    assert proc.stderr is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(60):
            while "console on" not in child.banner:
                line = (await proc.stderr.readline()).decode()
                if not line:
                    raise AssertionError(f"the console exited first: {''.join(seen)}")
                seen.append(line)
                child.banner = line
        yield child
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        child.log = "".join(seen) + err.decode() + out.decode()


def _command_line(pid: int) -> bytes:
    """What every account sees of a process in ``ps``."""
    return Path(f"/proc/{pid}/cmdline").read_bytes()


async def test_the_command_line_console_wants_its_printed_token(
    database_url: str, schema: str, runtime: RuntimeFactory
) -> None:
    """``aiodurable console`` makes a random token by default: a request without it gets 401,
    even from loopback; the printed link swaps it for a cookie and a clean URL; the token shows
    once in all the process wrote (the access log has the path without its query string) and
    never on its command line."""
    async with runtime():
        pass  # (create the schema)
    async with console_process(database_url, schema, "--port", "0") as child:
        found = re.search(r"console on (http://127\.0\.0\.1:\d+)/\?token=([\w-]+)", child.banner)
        assert found is not None, child.banner
        base, token = found.groups()
        async with httpx.AsyncClient() as http:
            for path in ("/", "/workflows/x", "/events", "/fragments/list"):
                assert (await http.get(base + path)).status_code == 401, path
            first = await http.get(f"{base}/?token={token}&status=ERROR")
            assert first.status_code == 303
            assert first.headers["location"] == "/?status=ERROR"
            assert (await http.get(base + "/")).status_code == 200  # by the cookie
        assert token.encode() not in _command_line(child.proc.pid)
    assert child.log.count(token) == 1, child.log
    assert '"GET / HTTP/1.1" 303' in child.log


async def test_the_command_line_token_sources_and_no_token(
    database_url: str, schema: str, runtime: RuntimeFactory, tmp_path: Path
) -> None:
    """A token from --token-file (or AIODURABLE_CONSOLE_TOKEN) is required and never printed;
    --no-token serves loopback without one and says who can then use it; a short token, or
    --no-token off loopback, is a usage error."""
    async with runtime():
        pass
    secret = tmp_path / "token"
    secret.write_text(TOKEN + "\n")
    secret.chmod(0o600)
    async with console_process(
        database_url, schema, "--port", "0", "--token-file", str(secret)
    ) as child:
        base = re.search(r"console on (http://\S+?)/? ", child.banner)
        assert base is not None, child.banner
        async with httpx.AsyncClient(base_url=base.group(1)) as http:
            assert (await http.get("/")).status_code == 401
            bearer = {"authorization": f"Bearer {TOKEN}"}
            assert (await http.get("/", headers=bearer)).status_code == 200
    assert TOKEN not in child.log
    env = {"AIODURABLE_CONSOLE_TOKEN": TOKEN}
    async with console_process(database_url, schema, "--port", "0", env=env) as child:
        base = re.search(r"console on (http://\S+?)/? ", child.banner)
        assert base is not None, child.banner
        async with httpx.AsyncClient(base_url=base.group(1)) as http:
            assert (await http.get("/")).status_code == 401
            assert (await http.get(f"/?token={TOKEN}")).status_code == 303
    async with console_process(database_url, schema, "--port", "0", "--no-token") as child:
        assert "every account on this machine" in child.banner
        base = re.search(r"console on (http://\S+?)/? ", child.banner)
        assert base is not None, child.banner
        async with httpx.AsyncClient(base_url=base.group(1)) as http:
            assert (await http.get("/")).status_code == 200
    for args in (
        ["--token-file", str(secret), "--token", TOKEN],
        ["--token", "short"],
        ["--host", "0.0.0.0", "--no-token"],
        ["--no-token", "--token-file", str(secret)],
        ["--uds", str(tmp_path / "s"), "--port", "9"],
    ):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "aiodurable._cli",
            "console",
            *args,
            cwd=ROOT,
            env={**os.environ, "AIODURABLE_DATABASE_URL": database_url},
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 2, (args, err)
        assert b"Traceback" not in err and TOKEN.encode() not in err


async def test_the_command_line_serves_on_a_private_unix_socket(
    database_url: str, schema: str, runtime: RuntimeFactory
) -> None:
    """``--uds PATH`` listens on a socket of mode 0600 (its owner only), answers requests over
    it without a token but still refuses a rebinding Host, and removes it when it stops."""
    async with runtime():
        pass
    folder = Path(tempfile.mkdtemp(prefix="uds-"))  # short: socket paths have ~100 bytes
    path = folder / "console.sock"
    try:
        async with console_process(database_url, schema, "--uds", str(path)) as child:
            assert str(path) in child.banner
            assert stat.S_ISSOCK(path.lstat().st_mode)
            assert stat.S_IMODE(path.lstat().st_mode) == 0o600
            transport = httpx.AsyncHTTPTransport(uds=str(path))
            async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
                assert (await http.get("/")).status_code == 200
                rebound = await http.get("/", headers={"host": "evil.example"})
                assert rebound.status_code == 403
        assert not path.exists()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# -- bad input and resource bounds --------------------------------------------------------------


async def test_nul_surrogates_and_huge_pages_are_4xx_never_500(runtime: RuntimeFactory) -> None:
    """A NUL in a workflow ID (path, action, event stream) or a filter, and a page number past
    int64, are answered 400 or 404 over real HTTP, not 500."""
    async with runtime() as rt, served(create_app(rt)) as url, httpx.AsyncClient() as http:
        for path, status in [
            ("/workflows/a%00b", 404),
            ("/fragments/workflows/a%00b", 404),
            ("/workflows/%ED%A0%80", 404),
            ("/?name=a%00b", 400),
            ("/?prefix=a%00b", 400),
            ("/?queue=%00", 400),
            ("/fragments/list?name=%00", 400),
            ("/?page=999999999999999999999", 400),
            ("/events?workflow=%00abc", 400),
        ]:
            answer = await http.get(url + path)
            assert answer.status_code == status, (path, answer.status_code)
        posted = await http.post(url + "/workflows/a%00b/cancel", data={"csrf": "x"})
        assert posted.status_code == 404


async def test_action_bodies_are_bounded_before_the_csrf_check(runtime: RuntimeFactory) -> None:
    """A form over MAX_FORM bytes gets 413 before it is read, declared (Content-Length) or
    streamed (chunked); a small form without the CSRF token still gets 403."""
    async with runtime() as rt, served(create_app(rt)) as url, httpx.AsyncClient() as http:
        target = url + "/workflows/x/cancel"
        big = b"a=" + b"x" * (4 * MAX_FORM)
        declared = await http.post(target, content=big)
        assert declared.status_code == 413

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(4):
                yield b"x" * MAX_FORM

        streamed = await http.post(target, content=chunks())
        assert streamed.status_code == 413
        assert (await http.post(target, data={"a": "b"})).status_code == 403


async def test_event_streams_are_capped(runtime: RuntimeFactory) -> None:
    """At most MAX_STREAMS event streams are open at once; the next one gets 503."""
    limits = httpx.Limits(max_connections=MAX_STREAMS + 8)
    async with runtime() as rt:
        app = create_app(rt)
        async with (
            served(app) as url,
            httpx.AsyncClient(limits=limits) as http,
            contextlib.AsyncExitStack() as streams,
        ):
            readers = []  # (held: a line iterator dropped unfinished closes its stream)
            for _ in range(MAX_STREAMS):
                stream = await streams.enter_async_context(http.stream("GET", f"{url}/events"))
                assert stream.status_code == 200
                readers.append(stream.aiter_lines())
                await anext(readers[-1])
            assert app.state.console.live.open_streams == MAX_STREAMS
            refused = await http.get(f"{url}/events")
            assert refused.status_code == 503


async def test_websocket_connections_are_refused_by_the_guard(runtime: RuntimeFactory) -> None:
    """A WebSocket scope never reaches the console's routes, even a WebSocket route added to
    them: the guard closes it (code 1008) before it is accepted."""
    accepted: list[bool] = []

    async def socket_route(websocket: WebSocket) -> None:
        await websocket.accept()
        accepted.append(True)
        await websocket.close()

    async with runtime() as rt:
        app = create_app(rt)
        inner = app.state.console.guard.app
        assert isinstance(inner, Starlette)
        inner.router.routes.append(WebSocketRoute("/ws", socket_route))
        incoming: list[dict[str, object]] = [{"type": "websocket.connect"}]
        sent: list[MutableMapping[str, object]] = []

        async def receive() -> dict[str, object]:
            if incoming:
                return incoming.pop(0)
            return {"type": "websocket.disconnect", "code": 1000}

        async def send(message: MutableMapping[str, object]) -> None:
            sent.append(message)

        scope = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "scheme": "ws",
            "path": "/ws",
            "raw_path": b"/ws",
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"127.0.0.1:8000")],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
            "subprotocols": [],
        }
        await app(scope, receive, send)
    assert accepted == []
    assert [m["type"] for m in sent] == ["websocket.close"]
    assert sent[0]["code"] == 1008


@aiodurable.step()
async def copy_text(text: str) -> str:
    return text


@aiodurable.workflow()
async def huge(text: str) -> str:
    await copy_text(text)
    await aiodurable.set_event("copy", text)
    return text


async def test_a_5_mb_value_gives_a_small_page(runtime: RuntimeFactory) -> None:
    """A workflow whose input, step output, event and output are 5 MiB each, and whose error
    record is a 15 MB one from before records were bounded, has a page and a fragment of under
    512 KiB (it used to be 42 MB), saying what was clipped."""
    text = "<" * (5 * 1024 * 1024)
    async with runtime() as rt:
        with aiodurable.set_workflow_id("big-1"):
            assert len(await huge(text)) == len(text)
        old_record = orjson.dumps(
            {
                "type": "builtins:ValueError",
                "message": "x" * 5_000_000,
                "traceback": "Traceback (most recent call last):\n" + "y" * 5_000_000,
                "args": ["x" * 5_000_000],
                "state": None,
            }
        )
        await hooks(rt).store.pool.execute(
            f"UPDATE {rt.schema}.workflows SET error = $1 WHERE workflow_id = 'big-1'",
            old_record,
        )
        async with served(create_app(rt)) as url, httpx.AsyncClient() as http:
            page = await http.get(f"{url}/workflows/big-1")
            fragment = await http.get(f"{url}/fragments/workflows/big-1")
    for answer in (page, fragment):
        assert answer.status_code == 200
        assert len(answer.content) < 512 * 1024, len(answer.content)
    assert "bytes, not decoded" in page.text  # the input's note
    assert "&lt;&lt;&lt;" in page.text  # its start is shown
    assert "[truncated: 5,000,000 characters in all]" in page.text  # the error's message
    assert 'data-function-id="1"' in page.text


async def test_queue_positions_show_for_the_rows_shown(runtime: RuntimeFactory) -> None:
    """The list and a workflow's page show each ENQUEUED workflow's place in its queue, in
    dispatch order (priority, then age), counting the rows not shown too."""
    async with runtime() as rt:
        await hooks(rt).store.pool.execute(
            f"INSERT INTO {rt.schema}.workflows (workflow_id, status, name, format, inputs,"
            " created_at, updated_at, app_version, executor_id, queue_name, priority)"
            " SELECT 'q-' || i, 'ENQUEUED', 'tests:parked', 'json', '{\"args\":[],\"kwargs\":{}}',"
            " 1700000000000 + i, 1700000000000 + i, 'v1', '', 'parked', CASE WHEN i = 70"
            " THEN -1 ELSE 0 END FROM generate_series(1, 120) AS i"
        )
        async with served(create_app(rt)) as url, httpx.AsyncClient() as http:
            listing = (await http.get(f"{url}/?status=ENQUEUED")).text
            page = (await http.get(f"{url}/workflows/q-120")).text
            urgent = (await http.get(f"{url}/workflows/q-70")).text
    rows = dict(re.findall(r'data-workflow-id="(q-\d+)".*?parked #(\d+)', listing, re.S))
    assert len(rows) == PAGE_SIZE  # the newest 50: q-120 down to q-71
    assert rows["q-120"] == "120" and rows["q-71"] == "71"
    assert "(position 120)" in page and "(position 1)" in urgent


# -- workflows of another application version ---------------------------------------------------


async def _recorded_by_old_version(runtime: RuntimeFactory, text: str) -> str:
    """A ``gated`` workflow left waiting in its recv by a runtime of version v1 (executor
    ``old``), which then closed: PENDING under v1 with no live executor."""
    async with runtime(app_version="v1", executor_id="old") as old:
        handle = await old.start_workflow(gated, text)
        await old.get_event(handle.workflow_id, "seen", timeout=30)
    return handle.workflow_id


async def test_the_list_marks_workflows_of_another_version(runtime: RuntimeFactory) -> None:
    """The list's version column marks a workflow of another version than the console's, with
    both versions in its title; one of the console's own version is not marked."""
    old_id = await _recorded_by_old_version(runtime, "o")
    async with runtime() as rt, served(create_app(rt)) as url, httpx.AsyncClient() as http:
        with aiodurable.set_workflow_id("current-1"):
            await echo("c")
        listing = (await http.get(f"{url}/")).text
    cells = dict(re.findall(r'data-workflow-id="([^"]+)".*?<td class="(ver[^"]*)"', listing))
    assert cells == {old_id: "ver ver-other", "current-1": "ver"}
    assert 'title="v1 (this console runs version test-version)"' in listing


async def test_a_workflow_of_another_version_is_adopted_from_its_page(
    runtime: RuntimeFactory,
) -> None:
    """A PENDING workflow recorded by v1 shows that the current code can adopt it (a dry run,
    which changes nothing) and an Adopt button; a POST without the CSRF token is refused; with
    it, the workflow moves to the console's version and finishes on this code."""
    wid = await _recorded_by_old_version(runtime, "v")
    async with runtime() as rt, served(create_app(rt)) as url, httpx.AsyncClient() as http:
        page = (await http.get(f"{url}/workflows/{wid}")).text
        assert "can be adopted by version <code>test-version</code>" in page
        assert f'action="/workflows/{wid}/adopt"' in page
        assert (await rt.get_workflow_status(wid)).app_version == "v1"  # the dry run wrote nothing
        target = f"{url}/workflows/{wid}/adopt"
        for data, headers in [({}, {}), ({"csrf": _csrf(page)}, {"origin": "http://evil.example"})]:
            assert (await http.post(target, data=data, headers=headers)).status_code == 403
        assert (await rt.get_workflow_status(wid)).app_version == "v1"
        adopted = await http.post(target, data={"csrf": _csrf(page)})
        assert adopted.status_code == 303
        location = adopted.headers["location"]
        assert location.startswith(f"/workflows/{wid}?")
        after = (await http.get(url + location)).text
        assert "Adopted: it now belongs to application version test-version." in after
        assert "can be adopted" not in after and "/adopt" not in after
        assert (await rt.get_workflow_status(wid)).app_version == "test-version"
        await rt.send(wid, "go", "go")
        assert await (await rt.retrieve_workflow(wid)).get_result() == "V!"


async def test_a_workflow_the_current_code_cannot_replay_is_not_offered(
    runtime: RuntimeFactory,
) -> None:
    """A v1 workflow whose recorded prefix the current code no longer calls shows the mismatch
    and no Adopt button, and a forged adopt POST leaves it on v1; one still running on a live
    v1 executor is not offered either; one whose workflow this program lacks says how to adopt
    it with the code."""
    changed = await _recorded_by_old_version(runtime, "p")
    # (a long lease: this v1 runtime must not take the closed one's workflows over meanwhile)
    async with runtime(app_version="v1", executor_id="old-live", executor_lease=600.0) as old:
        pool = hooks(old).store.pool
        await pool.execute(
            f"UPDATE {old.schema}.steps SET name = 'tests:old_shout'"
            " WHERE workflow_id = $1 AND function_id = 1",
            changed,
        )
        await pool.execute(
            f"INSERT INTO {old.schema}.workflows (workflow_id, status, name, format, inputs,"
            " created_at, updated_at, app_version, executor_id, queue_name)"
            " VALUES ('lost-1', 'ENQUEUED', 'tests:gone', 'json', '{\"args\":[],\"kwargs\":{}}',"
            " 1700000000000, 1700000000000, 'v1', '', 'parked')"
        )
        live = await old.start_workflow(gated, "l")
        await old.get_event(live.workflow_id, "seen", timeout=30)
        async with runtime() as rt, served(create_app(rt)) as url, httpx.AsyncClient() as http:
            pages = {
                wid: (await http.get(f"{url}/workflows/{wid}")).text
                for wid in (changed, live.workflow_id, "lost-1")
            }
            for wid, page in pages.items():
                assert "cannot be adopted by version <code>test-version</code>" in page, wid
                assert f"/workflows/{wid}/adopt" not in page, wid
            assert "tests:old_shout" in pages[changed]  # the step recorded, named
            assert "live executor" in pages[live.workflow_id]
            assert "tests:gone" in pages["lost-1"] and "upgrade --import" in pages["lost-1"]
            forged = await http.post(
                f"{url}/workflows/{changed}/adopt", data={"csrf": _csrf(pages[changed])}
            )
            assert "adopt failed" in (await http.get(url + forged.headers["location"])).text
            for wid in pages:
                assert (await rt.get_workflow_status(wid)).app_version == "v1", wid
        await old.cancel_workflow(live.workflow_id)
