"""A program the queue tests run, several at once and SIGKILLed: it dispatches a shared queue.

Usage: queue_app.py [enqueue COUNT]
Settings from the environment: AIODURABLE_DATABASE_URL, AIODURABLE_EXECUTOR_ID, TEST_SCHEMA,
QUEUE_LOG (each step execution appends a line to it).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

import aiodurable
from aiodurable import Queue, Runtime, step, workflow

shared = Queue("shared", concurrency=3, worker_concurrency=2)
EXECUTOR = os.environ["AIODURABLE_EXECUTOR_ID"]


def log(line: str) -> None:
    """Append one line to the execution log with a single O_APPEND write."""
    fd = os.open(os.environ["QUEUE_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@step()
async def now() -> float:
    return time.time()


@step()
async def busy(index: int) -> int:
    log(f"{aiodurable.current_workflow_id()} busy")
    await asyncio.sleep(0.1)
    return index


@workflow()
async def job(index: int) -> tuple[float, float, str, int]:
    started = await now()
    await busy(index)
    return started, await now(), EXECUTOR, index


async def main() -> None:
    async with Runtime(schema=os.environ["TEST_SCHEMA"]):
        if sys.argv[1:2] == ["enqueue"]:
            for i in range(int(sys.argv[2])):
                with aiodurable.set_workflow_id(f"job-{i}"):
                    await shared.enqueue(job, i)
            print("ENQUEUED", flush=True)
        print("READY", flush=True)
        await asyncio.Event().wait()  # dispatch until killed


if __name__ == "__main__":
    asyncio.run(main())
