"""The shop as a Starlette service (FastAPI works the same way), served by uvicorn.

    pip install -e '.[starlette]' && python examples/shop_starlette.py

With no ``AIODURABLE_DATABASE_URL`` it runs on the embedded PostgreSQL. ``SHOP_HOST`` and
``SHOP_PORT`` (default 127.0.0.1:8000, 0 for any free port) say where it listens;
``SHOP_PAYMENT_TIMEOUT`` how long an order waits for its payment (seconds, default 600).

    curl -i -X POST localhost:8000/checkout -d '{"order_id": "A-100"}'
        # 303 to the payment URL the workflow published (or to /cancelled on a timeout)
    curl -X POST localhost:8000/payment_webhook \\
        -d '{"order_id": "A-100", "status": "paid", "event_id": "evt-1"}'
    curl localhost:8000/orders/A-100     # {"order_id":"A-100","status":"SUCCESS",...}

Kill the server after the checkout (even with ``kill -9``) and start it again: the order's
workflow resumes, still waiting for its payment, and the webhook completes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator

import shop_workflows as shop
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from aiodurable.integrations.starlette import RuntimeSource, durable_lifespan, get_runtime


def create_app(runtime: RuntimeSource = None, config: shop.Config | None = None) -> Starlette:
    """The shop's application; ``runtime`` as for :func:`durable_lifespan` (default: settings
    from the environment, else the embedded PostgreSQL)."""
    settings = config or shop.Config(
        payment_timeout=float(os.environ.get("SHOP_PAYMENT_TIMEOUT", "600"))
    )

    async def checkout(request: Request) -> Response:
        try:
            order_id = shop.parse_checkout(await request.body())
        except shop.BadRequest as exc:
            return PlainTextResponse(str(exc), status_code=400)
        url = await shop.place_order(get_runtime(request), order_id, settings)
        if url is None:
            url = str(request.url_for("cancelled").include_query_params(order_id=order_id))
        return RedirectResponse(url, status_code=303, headers={"X-Order-Id": order_id})

    async def payment_webhook(request: Request) -> Response:
        try:
            hook = shop.parse_webhook(await request.body())
            await shop.report_payment(get_runtime(request), hook)
        except shop.BadRequest as exc:
            return PlainTextResponse(str(exc), status_code=400)
        except shop.UnknownOrder:
            return PlainTextResponse("unknown order", status_code=404)
        except shop.OrderClosed:
            return PlainTextResponse("the order is closed", status_code=409)
        return PlainTextResponse("accepted", status_code=202)

    async def order(request: Request) -> Response:
        try:
            status = await shop.order_status(get_runtime(request), request.path_params["order_id"])
        except shop.UnknownOrder:
            return PlainTextResponse("unknown order", status_code=404)
        return JSONResponse(status)

    async def cancelled(request: Request) -> Response:
        order_id = request.query_params.get("order_id", "")
        return PlainTextResponse(
            f"Order {order_id}: the payment could not be started. Nothing was charged."
        )

    @contextlib.asynccontextmanager
    async def announce(app: Starlette) -> AsyncIterator[None]:
        # The application's own lifespan: the runtime is open (it may start workflows).
        # Recovery of unfinished orders begins after this startup (the runtime logs what it
        # resumed), so a recovered order finds whatever is set up here.
        print("shop ready", flush=True)
        yield
        print("shop stopped", flush=True)

    routes = [
        Route("/checkout", checkout, methods=["POST"]),
        Route("/payment_webhook", payment_webhook, methods=["POST"]),
        Route("/orders/{order_id}", order, methods=["GET"]),
        Route("/cancelled", cancelled, methods=["GET"], name="cancelled"),
    ]
    return Starlette(routes=routes, lifespan=durable_lifespan(runtime, lifespan=announce))


async def serve(host: str, port: int) -> None:
    """Serve the shop with uvicorn until interrupted."""
    sock = socket.create_server((host, port))
    config = uvicorn.Config(create_app(), lifespan="on", log_level="warning")
    print(f"listening on http://{host}:{sock.getsockname()[1]}", flush=True)
    await uvicorn.Server(config).serve(sockets=[sock])


if __name__ == "__main__":
    host = os.environ.get("SHOP_HOST", "127.0.0.1")
    asyncio.run(serve(host, int(os.environ.get("SHOP_PORT", "8000"))))
