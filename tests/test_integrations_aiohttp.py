"""The aiohttp integration and the shop example served for real by aiohttp's runner on loopback:
the order of the runtime and the application's own startup and cleanup, the checkout story over
HTTP and bad input."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Literal

import aiohttp
import asyncpg
import pytest
from aiohttp import web

import aiodurable
from aiodurable import Runtime
from aiodurable.integrations.aiohttp import RUNTIME_KEY, cleanup_ctx, get_runtime, setup

from .apps import web_world

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
import shop_aiohttp  # (the examples folder is not a package)
import shop_workflows as shop

pytestmark = pytest.mark.anyio


def _factory(database_url: str, schema: str) -> Callable[[], Runtime]:
    def make() -> Runtime:
        return Runtime(
            database_url, schema=schema, executor_id="test-executor", app_version="test-version"
        )

    return make


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[aiohttp.ClientSession]:
    """Serve ``app`` with aiohttp's runner on a loopback port; a client session for it."""
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        async with aiohttp.ClientSession(f"http://{host}:{port}") as client:
            yield client
    finally:
        await runner.cleanup()


def _shop(database_url: str, schema: str, **config: float) -> web.Application:
    return shop_aiohttp.create_app(_factory(database_url, schema), shop.Config(**config))


async def _outcome(app: web.Application, order_id: str) -> object:
    handle = await get_runtime(app).retrieve_workflow(shop.workflow_id_of(order_id))
    return await handle.get_result()


async def _count(database_url: str, sql: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        value = await conn.fetchval(sql)
    finally:
        await conn.close()
    assert isinstance(value, int)
    return value


async def test_cleanup_ctx_opens_the_runtime_around_the_apps_own_contexts(
    database_url: str, schema: str
) -> None:
    """The runtime is open in app[RUNTIME_KEY] for the app's later cleanup contexts and its
    handlers, and closes before they clean up."""
    seen: list[str] = []

    async def own(app: web.Application) -> AsyncIterator[None]:
        seen.append(f"start open={app[RUNTIME_KEY].is_open}")
        yield
        seen.append(f"stop open={app[RUNTIME_KEY].is_open}")

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"open={get_runtime(request).is_open}")

    app = web.Application()
    app.cleanup_ctx.append(cleanup_ctx(_factory(database_url, schema)))
    app.cleanup_ctx.append(own)
    app.router.add_get("/", hello)
    async with serving(app) as client, client.get("/") as response:
        assert await response.text() == "open=True"
    assert seen == ["start open=True", "stop open=False"]
    assert not app[RUNTIME_KEY].is_open


Shape = Literal["cleanup_ctx", "setup", "on_startup"]
"""How a test application wires the runtime and its own session:

- ``cleanup_ctx``: ``app.cleanup_ctx.append(cleanup_ctx())``, then the session's entry;
- ``setup``: ``setup(app)``, then the session's ``cleanup_ctx`` entry;
- ``on_startup``: the session made by an ``on_startup`` handler and closed by an ``on_cleanup``
  one, then ``setup(app)``.
"""


def _world_app(
    database_url: str, schema: str, key: str, session_name: str, *, answering: bool, shape: Shape
) -> web.Application:
    """An application whose own startup makes the session that web_world's workflow uses:
    POST /start starts the workflow of ``key``, GET /result answers its outcome."""
    factory = _factory(database_url, schema)

    def own_session(app: web.Application) -> contextlib.AbstractAsyncContextManager[object]:
        return web_world.own_session(get_runtime(app), key, session_name, answering=answering)

    async def own(app: web.Application) -> AsyncIterator[None]:
        async with own_session(app):
            yield

    app = web.Application()
    if shape == "cleanup_ctx":
        app.cleanup_ctx.append(cleanup_ctx(factory))
        app.cleanup_ctx.append(own)
    elif shape == "setup":
        setup(app, factory)
        app.cleanup_ctx.append(own)
    else:
        stack = contextlib.AsyncExitStack()

        async def open_session(app: web.Application) -> None:
            await stack.enter_async_context(own_session(app))

        async def close_session(app: web.Application) -> None:
            await stack.aclose()

        app.on_startup.append(open_session)
        app.on_cleanup.append(close_session)
        setup(app, factory)

    async def start(request: web.Request) -> web.Response:
        with aiodurable.set_workflow_id(web_world.workflow_id(key)):
            handle = await get_runtime(request).start_workflow(web_world.fetch, key)
        return web.Response(status=202, text=handle.workflow_id)

    async def result(request: web.Request) -> web.Response:
        handle = await get_runtime(request).retrieve_workflow(web_world.workflow_id(key))
        try:
            return web.Response(text=await handle.get_result())
        except Exception as exc:
            return web.Response(status=500, text=f"{type(exc).__name__}: {exc}")

    app.router.add_post("/start", start)
    app.router.add_get("/result", result)
    return app


async def _status(database_url: str, schema: str, workflow_id: str) -> object:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval(
            f"SELECT status FROM {schema}.workflows WHERE workflow_id = $1", workflow_id
        )
    finally:
        await conn.close()


@pytest.mark.parametrize("shape", ["cleanup_ctx", "setup", "on_startup"])
async def test_recovered_workflow_finds_what_the_apps_own_startup_set_up(
    database_url: str, schema: str, shape: Shape
) -> None:
    """A workflow left waiting when the app stopped is recovered by the next start of the app
    (same database, same executor) only after the app's own startup has run, wherever that
    startup is registered: it finds the session that startup made, and succeeds."""
    key = web_world.new_world()
    world = web_world.worlds[key]
    first = _world_app(database_url, schema, key, "run-1", answering=True, shape=shape)
    async with serving(first) as client:
        async with client.post("/start") as response:
            assert response.status == 202
        await world.waiting.wait()
    assert await _status(database_url, schema, web_world.workflow_id(key)) == "PENDING"

    world.go.set()
    second = _world_app(database_url, schema, key, "run-2", answering=True, shape=shape)
    async with serving(second) as client:
        assert get_runtime(second).recovered_workflow_ids == [web_world.workflow_id(key)]
        async with client.get("/result") as response:
            outcome = (response.status, await response.text())
    assert outcome == (200, "run-2")
    assert world.seen == ["run-2"]


@pytest.mark.parametrize("shape", ["cleanup_ctx", "setup"])
async def test_runtime_stops_its_workflows_before_the_apps_own_cleanup(
    database_url: str, schema: str, shape: Shape
) -> None:
    """A workflow still using the app's session at shutdown is stopped before the app's own
    cleanup context closes that session, although that context was added after the runtime's:
    it never sees the session closed, and stays PENDING, to resume at the next start."""
    key = web_world.new_world()
    world = web_world.worlds[key]
    world.go.set()
    app = _world_app(database_url, schema, key, "run-1", answering=False, shape=shape)
    async with serving(app) as client:
        async with client.post("/start") as response:
            assert response.status == 202
        await world.reached.wait()  # the workflow is inside the session's call
    assert world.seen == []
    assert world.session is None  # the app's own cleanup ran
    assert await _status(database_url, schema, web_world.workflow_id(key)) == "PENDING"


async def test_entry_that_cannot_go_last_on_a_sub_application_says_so(
    database_url: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A sub-application's cleanup_ctx is frozen before it starts, so the entry cannot defer
    the recovery past the entries after it: it logs a WARNING naming the fix."""

    async def own(app: web.Application) -> AsyncIterator[None]:
        yield

    sub = web.Application()
    sub.cleanup_ctx.append(cleanup_ctx(_factory(database_url, schema)))
    sub.cleanup_ctx.append(own)
    app = web.Application()
    app.add_subapp("/sub", sub)
    with caplog.at_level(logging.WARNING, logger="aiodurable"):
        async with serving(app):
            assert sub[RUNTIME_KEY].is_open
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "not the last of a frozen app.cleanup_ctx" in warnings[0]
    assert "Add it after this application's own cleanup_ctx entries" in warnings[0]


async def test_checkout_redirects_to_payment_and_the_webhook_fulfils_the_order(
    database_url: str, schema: str
) -> None:
    """POST /checkout redirects to the published payment URL; the paid webhook completes the
    order, which GET /orders/{id} then shows as fulfilled."""
    app = _shop(database_url, schema, payment_timeout=30)
    async with serving(app) as client:
        async with client.post(
            "/checkout", json={"order_id": "A-100"}, allow_redirects=False
        ) as response:
            assert response.status == 303
            assert response.headers["Location"].startswith("https://payments.example/session/")
        hook = {"order_id": "A-100", "status": "paid", "event_id": "evt-1"}
        async with client.post("/payment_webhook", json=hook) as response:
            assert response.status == 202
        assert await _outcome(app, "A-100") == "fulfilled"
        async with client.get("/orders/A-100") as response:
            status = await response.json()
    assert status == {"order_id": "A-100", "status": "SUCCESS", "outcome": "fulfilled"}


async def test_checkout_without_payment_times_out_and_releases_the_order(
    database_url: str, schema: str
) -> None:
    """With no webhook before the payment timeout, the order ends cancelled."""
    app = _shop(database_url, schema, payment_timeout=0.3)
    async with serving(app) as client:
        async with client.post(
            "/checkout", json={"order_id": "B-200"}, allow_redirects=False
        ) as response:
            assert response.status == 303
        assert await _outcome(app, "B-200") == "cancelled"
        async with client.get("/orders/B-200") as response:
            status = await response.json()
    assert status == {"order_id": "B-200", "status": "SUCCESS", "outcome": "cancelled"}


async def test_webhook_arriving_before_the_workflow_waits_is_not_lost(
    database_url: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A webhook that arrives while the workflow is still opening the payment session is kept
    and consumed by the later recv: the order is fulfilled."""
    called, release = asyncio.Event(), asyncio.Event()

    class Gated:
        async def create_session(self, order_id: str) -> str:
            called.set()
            await release.wait()
            return f"https://payments.test/{order_id}"

    monkeypatch.setattr(shop, "payments", Gated())
    app = _shop(database_url, schema, payment_timeout=30)
    async with serving(app) as client:

        async def place() -> str:
            async with client.post(
                "/checkout", json={"order_id": "C-300"}, allow_redirects=False
            ) as response:
                return response.headers["Location"]

        checkout = asyncio.create_task(place())
        await called.wait()
        hook = {"order_id": "C-300", "status": "paid", "event_id": "evt-1"}
        async with client.post("/payment_webhook", json=hook) as response:
            assert response.status == 202
        release.set()
        assert await checkout == "https://payments.test/C-300"
        assert await _outcome(app, "C-300") == "fulfilled"


async def test_webhook_for_an_unknown_order_is_404_and_writes_nothing(
    database_url: str, schema: str
) -> None:
    """A webhook naming no order answers 404 and stores no message."""
    async with serving(_shop(database_url, schema)) as client:
        hook = {"order_id": "nope", "status": "paid", "event_id": "evt-1"}
        async with client.post("/payment_webhook", json=hook) as response:
            assert response.status == 404
    assert await _count(database_url, f"SELECT count(*) FROM {schema}.messages") == 0
    assert await _count(database_url, f"SELECT count(*) FROM {schema}.workflows") == 0


@pytest.mark.parametrize("path", ["/checkout", "/payment_webhook"])
async def test_malformed_json_is_400_and_writes_nothing(
    database_url: str, schema: str, path: str
) -> None:
    """A body that is not JSON answers 400 and starts nothing."""
    async with serving(_shop(database_url, schema)) as client:
        async with client.post(path, data=b"{not json") as response:
            assert response.status == 400
    assert await _count(database_url, f"SELECT count(*) FROM {schema}.workflows") == 0
