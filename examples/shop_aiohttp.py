"""The shop as an aiohttp service.

    pip install -e '.[aiohttp]' && python examples/shop_aiohttp.py

With no ``AIODURABLE_DATABASE_URL`` it runs on the embedded PostgreSQL. ``SHOP_HOST`` and
``SHOP_PORT`` (default 127.0.0.1:8080, 0 for any free port) say where it listens;
``SHOP_PAYMENT_TIMEOUT`` how long an order waits for its payment (seconds, default 600).

    curl -i -X POST localhost:8080/checkout -d '{"order_id": "A-100"}'
        # 303 to the payment URL the workflow published (or to /cancelled on a timeout)
    curl -X POST localhost:8080/payment_webhook \\
        -d '{"order_id": "A-100", "status": "paid", "event_id": "evt-1"}'
    curl localhost:8080/orders/A-100     # {"order_id":"A-100","status":"SUCCESS",...}

Kill the server after the checkout (even with ``kill -9``) and start it again: the order's
workflow resumes, still waiting for its payment, and the webhook completes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

import shop_workflows as shop
from aiohttp import web

from aiodurable.integrations.aiohttp import RuntimeSource, cleanup_ctx, get_runtime

CONFIG = web.AppKey("shop_config", shop.Config)


async def checkout(request: web.Request) -> web.StreamResponse:
    """``POST /checkout``: start the order, redirect to its payment URL."""
    try:
        order_id = shop.parse_checkout(await request.read())
    except shop.BadRequest as exc:
        return web.Response(status=400, text=str(exc))
    url = await shop.place_order(get_runtime(request), order_id, request.app[CONFIG])
    if url is None:
        url = str(request.app.router["cancelled"].url_for().with_query(order_id=order_id))
    return web.Response(status=303, headers={"Location": url, "X-Order-Id": order_id})


async def payment_webhook(request: web.Request) -> web.StreamResponse:
    """``POST /payment_webhook``: deliver the payment status to the order's workflow."""
    try:
        hook = shop.parse_webhook(await request.read())
        await shop.report_payment(get_runtime(request), hook)
    except shop.BadRequest as exc:
        return web.Response(status=400, text=str(exc))
    except shop.UnknownOrder:
        return web.Response(status=404, text="unknown order")
    except shop.OrderClosed:
        return web.Response(status=409, text="the order is closed")
    return web.Response(status=202, text="accepted")


async def order(request: web.Request) -> web.StreamResponse:
    """``GET /orders/{order_id}``: the order's status and outcome."""
    try:
        status = await shop.order_status(get_runtime(request), request.match_info["order_id"])
    except shop.UnknownOrder:
        return web.Response(status=404, text="unknown order")
    return web.json_response(status)


async def cancelled(request: web.Request) -> web.StreamResponse:
    """``GET /cancelled``: where a checkout lands when no payment URL came in time."""
    order_id = request.query.get("order_id", "")
    return web.Response(
        text=f"Order {order_id}: the payment could not be started. Nothing was charged."
    )


async def announce(app: web.Application) -> AsyncIterator[None]:
    """The application's own cleanup context, running inside the open runtime."""
    # Recovery of unfinished orders begins after this startup (the runtime logs what it resumed).
    print("shop ready", flush=True)
    yield
    print("shop stopped", flush=True)


def create_app(runtime: RuntimeSource = None, config: shop.Config | None = None) -> web.Application:
    """The shop's application; ``runtime`` as for :func:`cleanup_ctx` (default: settings from
    the environment, else the embedded PostgreSQL)."""
    app = web.Application()
    app[CONFIG] = config or shop.Config(
        payment_timeout=float(os.environ.get("SHOP_PAYMENT_TIMEOUT", "600"))
    )
    app.cleanup_ctx.append(cleanup_ctx(runtime))
    app.cleanup_ctx.append(announce)
    app.router.add_post("/checkout", checkout)
    app.router.add_post("/payment_webhook", payment_webhook)
    app.router.add_get("/orders/{order_id}", order)
    app.router.add_get("/cancelled", cancelled, name="cancelled")
    return app


async def serve(host: str, port: int) -> None:
    """Serve the shop with aiohttp's runner until interrupted."""
    runner = web.AppRunner(create_app())
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        for address in runner.addresses:
            print(f"listening on http://{address[0]}:{address[1]}", flush=True)
        await asyncio.Event().wait()  # until Control + C
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    host = os.environ.get("SHOP_HOST", "127.0.0.1")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(host, int(os.environ.get("SHOP_PORT", "8080"))))
