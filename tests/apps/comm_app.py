"""A program the messaging crash tests run and SIGKILL.

Usage: comm_app.py send DESTINATION | comm_app.py recv TIMEOUT
Settings from the environment: AIODURABLE_DATABASE_URL, AIODURABLE_EXECUTOR_ID, TEST_SCHEMA,
COMM_BLOCK=1 to park the sender after its send.
"""

from __future__ import annotations

import asyncio
import os
import sys

import aiodurable
from aiodurable import Runtime, step, workflow


@step()
async def hold() -> None:
    print("SENT", flush=True)
    if os.environ.get("COMM_BLOCK") == "1":
        await asyncio.Event().wait()  # the process is killed here, after the send


@workflow()
async def sender(destination: str) -> str:
    await aiodurable.send(destination, {"n": 1}, "orders")
    await hold()
    return "sent"


@workflow()
async def receiver(timeout: float) -> object:
    print("WAITING", flush=True)
    return await aiodurable.recv("orders", timeout=timeout)


async def main() -> None:
    mode, argument = sys.argv[1], sys.argv[2]
    async with Runtime(schema=os.environ["TEST_SCHEMA"]):
        if mode == "send":
            with aiodurable.set_workflow_id("the-sender"):
                print("RESULT", await sender(argument), flush=True)
        else:
            with aiodurable.set_workflow_id("the-receiver"):
                print("RESULT", await receiver(float(argument)), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
