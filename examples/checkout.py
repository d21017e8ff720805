"""An interactive checkout: publish a payment URL with an event, wait for the payment service's
notification with ``recv``, and give up after a timeout.

    python examples/checkout.py

It runs two orders on the embedded PostgreSQL: one whose payment arrives, one whose payment
never does (its workflow times out and releases the reservation). Kill it at any point and run
it again: the unfinished orders resume where they stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import aiodurable
from aiodurable import Runtime, step, workflow

PAYMENT_URL = "payment_url"
PAYMENT_STATUS = "payment_status"


@step()
async def reserve_inventory(order_id: str) -> None:
    print(f"[{order_id}] inventory reserved")


@step()
async def create_payment_session(order_id: str) -> str:
    # A real shop calls its payment provider here; the session ID comes back from it.
    return f"https://payments.example/session/{uuid.uuid4().hex[:12]}?order={order_id}"


@step()
async def fulfill(order_id: str) -> None:
    print(f"[{order_id}] paid: shipping the order")


@step()
async def release_inventory(order_id: str) -> None:
    print(f"[{order_id}] not paid: reservation released")


@workflow()
async def checkout(order_id: str, payment_timeout: float) -> str:
    await reserve_inventory(order_id)
    url = await create_payment_session(order_id)
    await aiodurable.set_event(PAYMENT_URL, url)
    status = await aiodurable.recv(PAYMENT_STATUS, timeout=payment_timeout)
    if status == "paid":
        await fulfill(order_id)
        return "fulfilled"
    await release_inventory(order_id)
    return "cancelled" if status is None else f"failed: {status}"


async def payment_service(workflow_id: str, delay: float) -> None:
    """Stands in for the provider's webhook: it reports the payment to the waiting workflow."""
    await asyncio.sleep(delay)
    await aiodurable.send(workflow_id, "paid", PAYMENT_STATUS, idempotency_key="webhook-1")


async def place_order(order_id: str, pays: bool) -> None:
    with aiodurable.set_workflow_id(f"checkout-{order_id}"):
        handle = await aiodurable.start_workflow(checkout, order_id, 2.0)
    url = await aiodurable.get_event(handle.workflow_id, PAYMENT_URL, timeout=10)
    if url is None:
        print(f"[{order_id}] no payment URL in time: redirect to the cancel page")
        return
    print(f"[{order_id}] redirect the customer to {url}")
    if pays:
        await payment_service(handle.workflow_id, delay=0.5)
    print(f"[{order_id}] outcome: {await handle.get_result()}")


async def main() -> None:
    async with Runtime() as rt:
        for workflow_id in rt.recovered_workflow_ids:
            print(f"resumed {workflow_id}")
        await asyncio.gather(place_order("A-100", pays=True), place_order("B-200", pays=False))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
