"""A program the child-workflow crash test runs and SIGKILLs while a child is running.

Usage: child_app.py PARENT_WORKFLOW_ID
Settings from the environment: AIODURABLE_DATABASE_URL, AIODURABLE_EXECUTOR_ID, TEST_SCHEMA,
CRASH_LOG (a file each step execution appends a line to), CRASH_BLOCK=1 to park the child after
its first step.
"""

from __future__ import annotations

import asyncio
import os
import sys

import aiodurable
from aiodurable import Runtime, step, workflow

LOG = os.environ["CRASH_LOG"]


def log(line: str) -> None:
    """Append one line to the execution log: a single O_APPEND write, so lines never tear."""
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@step()
async def child_work(tag: str) -> str:
    log(f"child_work {aiodurable.current_workflow_id()}")
    return tag.upper()


@step()
async def hold() -> None:
    if os.environ.get("CRASH_BLOCK") == "1":
        await asyncio.Event().wait()  # never completes: the process is killed here


@workflow()
async def child(tag: str) -> str:
    result = await child_work(tag)
    print("CHILD_WORK_DONE", aiodurable.current_workflow_id(), flush=True)
    await hold()
    return result


@step()
async def parent_work() -> None:
    log(f"parent_work {aiodurable.current_workflow_id()}")


@workflow()
async def parent(tag: str) -> str:
    await parent_work()
    return "got " + await child(tag)


async def main() -> None:
    async with Runtime(schema=os.environ["TEST_SCHEMA"]):
        print("READY", flush=True)
        with aiodurable.set_workflow_id(sys.argv[1]):
            print("RESULT", await parent("x"), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
