"""A program the stream crash test runs and SIGKILLs: a workflow that streams numbered values.

Usage: stream_app.py WORKFLOW_ID COUNT BLOCK_AT
The workflow writes 0..COUNT-1 to its stream "numbers" and closes it. With STREAM_BLOCK=1 it
prints WROTE after writing BLOCK_AT values and parks in a step there, between two writes, to be
killed. Settings from the environment: AIODURABLE_DATABASE_URL, AIODURABLE_EXECUTOR_ID,
TEST_SCHEMA.
"""

from __future__ import annotations

import asyncio
import os
import sys

import aiodurable
from aiodurable import Runtime, step, workflow


@step(name="stream_app.hold")
async def hold() -> None:
    if os.environ.get("STREAM_BLOCK") == "1":
        print("WROTE", flush=True)
        await asyncio.Event().wait()  # never completes: the process is killed here


@workflow(name="stream_app.numbers")
async def numbers(count: int, block_at: int) -> int:
    for i in range(count):
        if i == block_at:
            await hold()
        await aiodurable.write_stream("numbers", i)
    await aiodurable.close_stream("numbers")
    return count


async def main() -> None:
    workflow_id, count, block_at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    async with Runtime(schema=os.environ["TEST_SCHEMA"]):
        print("READY", flush=True)
        with aiodurable.set_workflow_id(workflow_id):
            print("RESULT", await numbers(count, block_at), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
