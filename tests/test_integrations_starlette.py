"""The Starlette integration and the shop example served for real by uvicorn on loopback: the
order of the runtime and the application's own lifespan, the checkout story over HTTP, bad input,
a SIGKILL mid-checkout, and a bounded load test."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

import aiodurable
from aiodurable import Runtime
from aiodurable.integrations.starlette import STATE_KEY, durable_lifespan, get_runtime

from .apps import web_world
from .proc import Child

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
import shop_starlette  # (the examples folder is not a package)
import shop_workflows as shop

pytestmark = pytest.mark.anyio


def _factory(database_url: str, schema: str) -> Callable[[], Runtime]:
    def make() -> Runtime:
        return Runtime(
            database_url, schema=schema, executor_id="test-executor", app_version="test-version"
        )

    return make


@contextlib.asynccontextmanager
async def serving(app: Starlette, connections: int = 10) -> AsyncIterator[httpx.AsyncClient]:
    """Serve ``app`` with uvicorn in this process on a loopback port; a client for it."""
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="on", log_level="warning", http="h11", ws="none")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=30, limits=limits, trust_env=False
        ) as client:
            # The socket listens already; the first answer comes once the lifespan has started.
            probe = asyncio.create_task(client.get("/"))
            done, _ = await asyncio.wait({probe, task}, timeout=30, return_when="FIRST_COMPLETED")
            if probe not in done:
                probe.cancel()
                raise AssertionError("the server did not start")
            probe.result()
            yield client
    finally:
        server.should_exit = True
        await task
        sock.close()


def _shop(database_url: str, schema: str, **config: float) -> Starlette:
    return shop_starlette.create_app(_factory(database_url, schema), shop.Config(**config))


async def _outcome(app: Starlette, order_id: str) -> object:
    handle = await get_runtime(app).retrieve_workflow(shop.workflow_id_of(order_id))
    return await handle.get_result()


class GatedProvider:
    """A payment provider that opens its session only once the test lets it."""

    def __init__(self) -> None:
        self.called = asyncio.Event()
        self.release = asyncio.Event()

    async def create_session(self, order_id: str) -> str:
        self.called.set()
        await self.release.wait()
        return f"https://payments.test/{order_id}"


async def _count(database_url: str, sql: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        value = await conn.fetchval(sql)
    finally:
        await conn.close()
    assert isinstance(value, int)
    return value


# -- the integration itself -----------------------------------------------------------------------


async def test_lifespan_opens_the_runtime_around_the_apps_own_lifespan(
    database_url: str, schema: str
) -> None:
    """The runtime is open on app.state and in request.state when the app's own lifespan starts,
    and its state is merged; on shutdown the runtime closes before the app's own cleanup."""
    seen: list[str] = []

    @contextlib.asynccontextmanager
    async def own(app: Starlette) -> AsyncIterator[Mapping[str, Any]]:
        seen.append(f"start open={get_runtime(app).is_open}")
        yield {"greeting": "hello"}
        seen.append(f"stop open={get_runtime(app).is_open}")

    async def hello(request: Request) -> Response:
        rt = request.state.aiodurable
        assert rt is get_runtime(request)
        return PlainTextResponse(f"{request.state.greeting} {rt.is_open}")

    app = Starlette(
        routes=[Route("/", hello)],
        lifespan=durable_lifespan(_factory(database_url, schema), lifespan=own),
    )
    async with serving(app) as client:
        rt = get_runtime(app)
        assert (await client.get("/")).text == "hello True"
    assert seen == ["start open=True", "stop open=False"]
    assert not rt.is_open
    assert not hasattr(app.state, STATE_KEY)


def _world_app(
    database_url: str, schema: str, key: str, session_name: str, *, answering: bool
) -> Starlette:
    """An application whose own lifespan makes the session that web_world's workflow uses:
    POST /start starts the workflow of ``key``, GET /result answers its outcome."""

    @contextlib.asynccontextmanager
    async def own(app: Starlette) -> AsyncIterator[Mapping[str, Any]]:
        async with web_world.own_session(
            get_runtime(app), key, session_name, answering=answering
        ) as session:
            yield {"session": session}

    async def start(request: Request) -> Response:
        with aiodurable.set_workflow_id(web_world.workflow_id(key)):
            handle = await get_runtime(request).start_workflow(web_world.fetch, key)
        return PlainTextResponse(handle.workflow_id, status_code=202)

    async def result(request: Request) -> Response:
        handle = await get_runtime(request).retrieve_workflow(web_world.workflow_id(key))
        try:
            return PlainTextResponse(await handle.get_result())
        except Exception as exc:
            return PlainTextResponse(f"{type(exc).__name__}: {exc}", status_code=500)

    routes = [Route("/start", start, methods=["POST"]), Route("/result", result)]
    lifespan = durable_lifespan(_factory(database_url, schema), lifespan=own)
    return Starlette(routes=routes, lifespan=lifespan)


async def _status(database_url: str, schema: str, workflow_id: str) -> object:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval(
            f"SELECT status FROM {schema}.workflows WHERE workflow_id = $1", workflow_id
        )
    finally:
        await conn.close()


async def test_recovered_workflow_finds_what_the_apps_own_lifespan_set_up(
    database_url: str, schema: str
) -> None:
    """A workflow left waiting when the app stopped is recovered by the next start of the app
    (same database, same executor) only after the app's own lifespan has started: it finds the
    session that startup made, and succeeds."""
    key = web_world.new_world()
    world = web_world.worlds[key]
    async with serving(_world_app(database_url, schema, key, "run-1", answering=True)) as client:
        assert (await client.post("/start")).status_code == 202
        await world.waiting.wait()
    assert await _status(database_url, schema, web_world.workflow_id(key)) == "PENDING"

    world.go.set()
    second = _world_app(database_url, schema, key, "run-2", answering=True)
    async with serving(second) as client:
        assert get_runtime(second).recovered_workflow_ids == [web_world.workflow_id(key)]
        response = await client.get("/result")
    assert (response.status_code, response.text) == (200, "run-2")
    assert world.seen == ["run-2"]


async def test_runtime_stops_its_workflows_before_the_apps_own_cleanup(
    database_url: str, schema: str
) -> None:
    """A workflow still using the app's session at shutdown is stopped before the app's own
    lifespan closes that session: it never sees the session closed, and stays PENDING, to
    resume at the next start."""
    key = web_world.new_world()
    world = web_world.worlds[key]
    world.go.set()
    async with serving(_world_app(database_url, schema, key, "run-1", answering=False)) as client:
        assert (await client.post("/start")).status_code == 202
        await world.reached.wait()  # the workflow is inside the session's call
    assert world.seen == []
    assert world.session is None  # the app's own cleanup ran
    assert await _status(database_url, schema, web_world.workflow_id(key)) == "PENDING"


async def test_fastapi_app_uses_the_same_lifespan(database_url: str, schema: str) -> None:
    """A FastAPI application takes the lifespan as it is and starts workflows in handlers."""
    app = FastAPI(lifespan=durable_lifespan(_factory(database_url, schema)))

    @app.post("/orders/{order_id}", response_model=None)
    async def place(order_id: str) -> dict[str, object]:
        with aiodurable.set_workflow_id(f"fastapi-{order_id}"):
            handle = await get_runtime(app).start_workflow(shop.checkout, order_id, 0.0)
        return {"outcome": await handle.get_result()}

    async with serving(app) as client:
        response = await client.post("/orders/7")
    assert response.json() == {"outcome": "cancelled"}


# -- the shop example ---------------------------------------------------------------------------


async def test_checkout_redirects_to_payment_and_the_webhook_fulfils_the_order(
    database_url: str, schema: str
) -> None:
    """POST /checkout redirects to the published payment URL; the paid webhook completes the
    order, which GET /orders/{id} then shows as fulfilled."""
    app = _shop(database_url, schema, payment_timeout=30)
    async with serving(app) as client:
        response = await client.post("/checkout", json={"order_id": "A-100"})
        assert response.status_code == 303
        assert response.headers["location"].startswith("https://payments.example/session/")
        pending = (await client.get("/orders/A-100")).json()
        assert pending == {"order_id": "A-100", "status": "PENDING", "outcome": None}

        hook = {"order_id": "A-100", "status": "paid", "event_id": "evt-1"}
        assert (await client.post("/payment_webhook", json=hook)).status_code == 202
        assert await _outcome(app, "A-100") == "fulfilled"
        done = (await client.get("/orders/A-100")).json()
        late = await client.post("/payment_webhook", json={**hook, "event_id": "evt-2"})
    assert done == {"order_id": "A-100", "status": "SUCCESS", "outcome": "fulfilled"}
    assert late.status_code == 409


async def test_checkout_without_payment_times_out_and_releases_the_order(
    database_url: str, schema: str
) -> None:
    """With no webhook before the payment timeout, the order ends cancelled."""
    app = _shop(database_url, schema, payment_timeout=0.3)
    async with serving(app) as client:
        response = await client.post("/checkout", json={"order_id": "B-200"})
        assert response.status_code == 303
        assert await _outcome(app, "B-200") == "cancelled"
        status = (await client.get("/orders/B-200")).json()
    assert status == {"order_id": "B-200", "status": "SUCCESS", "outcome": "cancelled"}


async def test_webhook_arriving_before_the_workflow_waits_is_not_lost(
    database_url: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A webhook that arrives while the workflow is still opening the payment session is kept
    and consumed by the later recv: the order is fulfilled."""
    provider = GatedProvider()
    monkeypatch.setattr(shop, "payments", provider)
    app = _shop(database_url, schema, payment_timeout=30)
    async with serving(app) as client:
        checkout = asyncio.create_task(client.post("/checkout", json={"order_id": "C-300"}))
        await provider.called.wait()
        hook = {"order_id": "C-300", "status": "paid", "event_id": "evt-1"}
        assert (await client.post("/payment_webhook", json=hook)).status_code == 202
        provider.release.set()
        response = await checkout
        assert response.headers["location"] == "https://payments.test/C-300"
        assert await _outcome(app, "C-300") == "fulfilled"


async def test_checkout_redirects_to_the_cancel_page_when_no_payment_url_comes_in_time(
    database_url: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the workflow publishes no payment URL within the request's wait, the customer is
    sent to the cancel page, which the server serves."""
    provider = GatedProvider()
    monkeypatch.setattr(shop, "payments", provider)
    app = _shop(database_url, schema, payment_timeout=0.1, url_timeout=0.2)
    async with serving(app) as client:
        response = await client.post("/checkout", json={"order_id": "D-400"})
        assert response.status_code == 303
        location = urllib.parse.urlsplit(response.headers["location"])
        assert (location.path, location.query) == ("/cancelled", "order_id=D-400")
        page = await client.get(response.headers["location"])
        provider.release.set()
        assert await _outcome(app, "D-400") == "cancelled"
    assert "D-400" in page.text


async def test_webhook_for_an_unknown_order_is_404_and_writes_nothing(
    database_url: str, schema: str
) -> None:
    """A webhook naming no order answers 404 and stores no message; GET of it answers 404."""
    async with serving(_shop(database_url, schema)) as client:
        hook = {"order_id": "nope", "status": "paid", "event_id": "evt-1"}
        response = await client.post("/payment_webhook", json=hook)
        missing = await client.get("/orders/nope")
    assert response.status_code == 404
    assert missing.status_code == 404
    assert await _count(database_url, f"SELECT count(*) FROM {schema}.messages") == 0
    assert await _count(database_url, f"SELECT count(*) FROM {schema}.workflows") == 0


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/checkout", b"{not json"),
        ("/checkout", b"[1, 2]"),
        ("/checkout", b'{"order_id": "has spaces"}'),
        ("/payment_webhook", b"{not json"),
        ("/payment_webhook", b'{"order_id": "A-1", "status": "maybe"}'),
        ("/payment_webhook", b'{"status": "paid"}'),
    ],
)
async def test_malformed_requests_are_400_and_write_nothing(
    database_url: str, schema: str, path: str, body: bytes
) -> None:
    """Malformed JSON, or JSON of the wrong shape, answers 400 and starts nothing."""
    async with serving(_shop(database_url, schema)) as client:
        response = await client.post(path, content=body)
    assert response.status_code == 400
    assert await _count(database_url, f"SELECT count(*) FROM {schema}.workflows") == 0


# -- a crash of the server process ---------------------------------------------------------------


@contextlib.asynccontextmanager
async def fresh_database(database_url: str) -> AsyncIterator[str]:
    """A new database on the session's server, dropped afterwards; its URL."""
    name = f"shop_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        parts = urllib.parse.urlsplit(database_url)
        yield urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


async def test_sigkill_mid_checkout_then_restart_completes_the_order_once(
    database_url: str,
) -> None:
    """The server is killed while the order waits for its payment; restarted, it resumes the
    workflow, the webhook completes it, and each step ran once."""
    async with fresh_database(database_url) as url:
        env = {"AIODURABLE_DATABASE_URL": url, "SHOP_PORT": "0", "SHOP_PAYMENT_TIMEOUT": "60"}
        script = "../../examples/shop_starlette.py"
        first = Child(script, env=env)
        base = (await first.expect("listening on")).split()[-1]
        await first.expect("shop ready")
        async with httpx.AsyncClient(base_url=base, timeout=30, trust_env=False) as client:
            response = await client.post("/checkout", json={"order_id": "K-1"})
        assert response.status_code == 303
        await first.expect("[K-1] inventory reserved")
        await first.kill()

        second = Child(script, env=env)
        base = (await second.expect("listening on")).split()[-1]
        await second.expect("shop ready")  # (its lifespan runs before the recovery)
        async with httpx.AsyncClient(base_url=base, timeout=30, trust_env=False) as client:
            again = await client.post("/checkout", json={"order_id": "K-1"})
            hook = {"order_id": "K-1", "status": "paid", "event_id": "evt-1"}
            assert (await client.post("/payment_webhook", json=hook)).status_code == 202
            await second.expect("[K-1] paid: shipping the order")
            status = (await client.get("/orders/K-1")).json()
        second.proc.terminate()
        await second.wait()

        assert again.headers["location"] == response.headers["location"]
        assert status == {"order_id": "K-1", "status": "SUCCESS", "outcome": "fulfilled"}
        lines = first.lines + second.lines
        assert lines.count("[K-1] inventory reserved") == 1
        assert lines.count("[K-1] paid: shipping the order") == 1
        steps = await _count(url, "SELECT count(*) FROM aiodurable.steps")
        assert steps == 5  # reserve, session, set_event, recv, fulfill


# -- load ----------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_load_500_checkouts_over_50_connections_lose_nothing(
    database_url: str, schema: str
) -> None:
    """500 checkouts (each a checkout and a paid webhook) over 50 concurrent loopback
    connections all complete as fulfilled; prints requests/s and p99 latency."""
    orders, concurrency = 500, 50
    app = _shop(database_url, schema, payment_timeout=120)
    latencies: list[float] = []
    gate = asyncio.Semaphore(concurrency)

    async def timed(request: Any) -> httpx.Response:
        started = time.perf_counter()
        response: httpx.Response = await request
        latencies.append(time.perf_counter() - started)
        return response

    async def one(client: httpx.AsyncClient, i: int) -> None:
        order_id = f"L-{i}"
        async with gate:
            response = await timed(client.post("/checkout", json={"order_id": order_id}))
            assert response.status_code == 303
            hook = {"order_id": order_id, "status": "paid", "event_id": f"evt-{i}"}
            response = await timed(client.post("/payment_webhook", json=hook))
            assert response.status_code == 202

    async with serving(app, connections=concurrency) as client:
        started = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for i in range(orders):
                tg.create_task(one(client, i))
        elapsed = time.perf_counter() - started
        outcomes = await asyncio.gather(*(_outcome(app, f"L-{i}") for i in range(orders)))
        completed = time.perf_counter() - started
    assert outcomes == ["fulfilled"] * orders
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    print(
        f"\n{len(latencies)} requests in {elapsed:.2f} s:"
        f" {len(latencies) / elapsed:.0f} requests/s,"
        f" p50 {latencies[len(latencies) // 2] * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms;"
        f" all {orders} orders fulfilled after {completed:.2f} s"
    )
