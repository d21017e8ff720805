"""A program the crash tests run and SIGKILL: workflows whose steps log each execution.

Usage: crash_app.py two_steps WORKFLOW_ID | crash_app.py many COUNT STEPS
Settings from the environment: AIODURABLE_DATABASE_URL, AIODURABLE_EXECUTOR_ID, TEST_SCHEMA,
CRASH_LOG (a file each step execution appends a line to), CRASH_BLOCK=1 to park the two-step
workflow after step one.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import uuid

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
async def step_one() -> str:
    log("one")
    return "one"


@step()
async def hold() -> None:
    if os.environ.get("CRASH_BLOCK") == "1":
        await asyncio.Event().wait()  # never completes: the process is killed here


@step()
async def step_two() -> str:
    log("two")
    return "two"


@workflow()
async def two_steps() -> str:
    first = await step_one()
    print("STEP_ONE_DONE", flush=True)
    await hold()
    return first + "+" + await step_two()


@step()
async def numbered(workflow_id: str, index: int) -> str:
    token = uuid.uuid4().hex
    await asyncio.sleep(random.uniform(0.03, 0.07))
    log(f"{workflow_id} {index} {token}")
    return token


@workflow()
async def many_steps(count: int) -> int:
    wid = aiodurable.current_workflow_id()
    for i in range(count):
        await numbered(wid, i)
    return count


async def main() -> None:
    mode = sys.argv[1]
    async with Runtime(schema=os.environ["TEST_SCHEMA"]):
        print("READY", flush=True)
        if mode == "two_steps":
            with aiodurable.set_workflow_id(sys.argv[2]):
                print("RESULT", await two_steps(), flush=True)
        else:
            workflows, steps = int(sys.argv[2]), int(sys.argv[3])
            handles = []
            for i in range(workflows):
                with aiodurable.set_workflow_id(f"wf-{i}"):
                    handles.append(await aiodurable.start_workflow(many_steps, steps))
            results = await asyncio.gather(*(h.get_result() for h in handles))
            assert results == [steps] * workflows
            print("ALL_DONE", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
