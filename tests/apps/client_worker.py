"""A runtime program for the Client tests: it has the workflows' code and runs until killed.

Usage: client_worker.py (prints READY once its runtime is open and claiming work)
Settings from the environment: AIODURABLE_DATABASE_URL, AIODURABLE_EXECUTOR_ID, TEST_SCHEMA.
``client.waiter`` prints WAITING and its topic as it starts waiting, and STOPPED when a cancel
stops it here. Its runtime re-reads the tables
only once a minute, so whatever it runs promptly, it ran because a notification woke it.
"""

from __future__ import annotations

import asyncio
import math
import os
from dataclasses import dataclass

import aiodurable
from aiodurable import Queue, Runtime, workflow

QUEUE = Queue("client-q", concurrency=2)
PARTITIONED = Queue("client-pq", concurrency=1, partitioned=True)


@dataclass(frozen=True)
class Order:
    """What ``client.total`` takes: a client sends it as a JSON object."""

    item: str
    quantity: int


@dataclass(frozen=True)
class Receipt:
    """What ``client.total`` returns: a client reads it back as a JSON object."""

    item: str
    total: int


@workflow(name="client.greet")
async def greet(name: str) -> str:
    return f"hello {name}"


@workflow(name="client.total")
async def total(order: Order, price: int) -> Receipt:
    assert isinstance(order, Order)  # the runtime rebuilt the client's JSON as annotated
    return Receipt(order.item, order.quantity * price)


@workflow(name="client.fail")
async def fail(text: str) -> None:
    raise ValueError(text)


@workflow(name="client.waiter")
async def waiter(topic: str) -> object:
    print("WAITING", topic, flush=True)
    try:
        return await aiodurable.recv(topic, timeout=math.inf)
    except asyncio.CancelledError:
        print("STOPPED", flush=True)
        raise


@workflow(name="client.progress")
async def progress(count: int) -> int:
    for i in range(count):
        await aiodurable.write_stream("numbers", {"i": i})
    await aiodurable.close_stream("numbers")
    await aiodurable.set_event("total", count)
    return count


async def main() -> None:
    async with Runtime(schema=os.environ["TEST_SCHEMA"], notify_fallback=60.0):
        print("READY", flush=True)
        await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    asyncio.run(main())
