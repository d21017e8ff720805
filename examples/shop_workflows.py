"""The shop behind ``shop_starlette.py`` and ``shop_aiohttp.py``: the checkout workflow and the
request handling the two web services share (parsing, starting orders, webhooks, status).

The checkout workflow reserves the inventory, opens a payment session, publishes the payment URL
with ``set_event`` (the web handler waiting in ``get_event`` redirects the customer there), waits
for the payment provider's webhook with ``recv`` and a timeout, then ships the order or releases
the reservation. Kill the server at any moment and start it again: the order completes.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Protocol

import orjson

import aiodurable
from aiodurable import Runtime, WorkflowNotFound, WorkflowStatus, step, workflow

PAYMENT_URL = "payment_url"
PAYMENT_STATUS = "payment_status"
PAYMENT_STATUSES = ("paid", "failed")
CHECKOUT = "shop.checkout"  # the workflow's recorded name, independent of the module's

_ORDER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class PaymentProvider(Protocol):
    """The payment provider's API, as far as the shop uses it."""

    async def create_session(self, order_id: str) -> str:
        """Open a payment session for the order; return the URL to send the customer to."""
        ...


class FakePaymentProvider:
    """Stands in for a real provider: a real shop calls its API here."""

    async def create_session(self, order_id: str) -> str:
        """A made-up session URL."""
        return f"https://payments.example/session/{uuid.uuid4().hex[:12]}?order={order_id}"


# The provider the workflow's step calls; an application (or a test) may replace it.
payments: PaymentProvider = FakePaymentProvider()


@step()
async def reserve_inventory(order_id: str) -> None:
    print(f"[{order_id}] inventory reserved", flush=True)


@step()
async def create_payment_session(order_id: str) -> str:
    return await payments.create_session(order_id)


@step()
async def fulfill(order_id: str) -> None:
    print(f"[{order_id}] paid: shipping the order", flush=True)


@step()
async def release_inventory(order_id: str) -> None:
    print(f"[{order_id}] not paid: reservation released", flush=True)


@workflow(name=CHECKOUT)
async def checkout(order_id: str, payment_timeout: float) -> str:
    """Reserve, publish the payment URL, wait for the payment, then fulfil or release."""
    await reserve_inventory(order_id)
    url = await create_payment_session(order_id)
    await aiodurable.set_event(PAYMENT_URL, url)
    status = await aiodurable.recv(PAYMENT_STATUS, timeout=payment_timeout)
    if status == "paid":
        await fulfill(order_id)
        return "fulfilled"
    await release_inventory(order_id)
    return "cancelled" if status is None else f"failed: {status}"


# -- what the web services share ---------------------------------------------------------------


class BadRequest(ValueError):
    """The request body is not what the endpoint takes (an HTTP 400)."""


def workflow_id_of(order_id: str) -> str:
    """The checkout workflow's ID for an order: the order ID is its idempotency key."""
    return f"order-{order_id}"


def _json_object(body: bytes) -> dict[str, object]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    return data


def _order_id(value: object) -> str:
    if not isinstance(value, str) or not _ORDER_ID.fullmatch(value):
        raise BadRequest("order_id must be 1 to 64 letters, digits, '-' or '_'")
    return value


def parse_checkout(body: bytes) -> str:
    """The order ID of a ``POST /checkout`` body (``{"order_id": ...}``, else a new one)."""
    data = _json_object(body) if body.strip() else {}
    value = data.get("order_id")
    return uuid.uuid4().hex[:16] if value is None else _order_id(value)


@dataclass(frozen=True)
class Webhook:
    """A payment provider's notification."""

    order_id: str
    status: str
    event_id: str | None


def parse_webhook(body: bytes) -> Webhook:
    """A ``POST /payment_webhook`` body: ``{"order_id", "status": "paid"|"failed", "event_id"}``."""
    data = _json_object(body)
    status = data.get("status")
    if status not in PAYMENT_STATUSES:
        raise BadRequest(f"status must be one of {', '.join(PAYMENT_STATUSES)}")
    event_id = data.get("event_id")
    if event_id is not None and (not isinstance(event_id, str) or not 0 < len(event_id) <= 200):
        raise BadRequest("event_id must be a non-empty string")
    return Webhook(_order_id(data.get("order_id")), str(status), event_id)


@dataclass(frozen=True)
class Config:
    """How long a workflow waits for the payment, and a request for the payment URL."""

    payment_timeout: float = 600.0
    url_timeout: float = 10.0


async def place_order(rt: Runtime, order_id: str, config: Config) -> str | None:
    """Start (or rejoin) the order's checkout; its payment URL, or None if none came in time."""
    with aiodurable.set_workflow_id(workflow_id_of(order_id)):
        handle = await rt.start_workflow(checkout, order_id, config.payment_timeout)
    url = await aiodurable.get_event(handle.workflow_id, PAYMENT_URL, timeout=config.url_timeout)
    return url if isinstance(url, str) else None


async def _checkout_info(rt: Runtime, order_id: str) -> aiodurable.WorkflowInfo | None:
    try:
        info = await rt.get_workflow_status(workflow_id_of(order_id))
    except WorkflowNotFound:
        return None
    return info if info.name == CHECKOUT else None


class UnknownOrder(LookupError):
    """No checkout has this order ID (an HTTP 404)."""


class OrderClosed(Exception):
    """The order's checkout has ended; a late webhook changes nothing (an HTTP 409)."""


async def report_payment(rt: Runtime, hook: Webhook) -> None:
    """Deliver the webhook to the order's workflow (once per ``event_id``); nothing is written
    for an unknown order (:class:`UnknownOrder`) or an ended one (:class:`OrderClosed`)."""
    info = await _checkout_info(rt, hook.order_id)
    if info is None:
        raise UnknownOrder(hook.order_id)
    if info.status.is_terminal:
        raise OrderClosed(hook.order_id)
    key = None if hook.event_id is None else f"webhook-{hook.event_id}"
    await aiodurable.send(info.workflow_id, hook.status, PAYMENT_STATUS, idempotency_key=key)


async def order_status(rt: Runtime, order_id: str) -> dict[str, object]:
    """What ``GET /orders/{id}`` shows: the checkout's status and outcome."""
    info = await _checkout_info(rt, order_id)
    if info is None:
        raise UnknownOrder(order_id)
    outcome = info.output if info.status is WorkflowStatus.SUCCESS else None
    return {"order_id": order_id, "status": info.status.value, "outcome": outcome}
