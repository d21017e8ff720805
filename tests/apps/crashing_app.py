"""A program whose workflow kills its own process in a step, every time it runs.

Settings from the environment: AIODURABLE_DATABASE_URL, AIODURABLE_EXECUTOR_ID, TEST_SCHEMA.
Prints READY once the runtime is open, then STATUS <status> if the workflow was not run.
"""

from __future__ import annotations

import asyncio
import os
import signal

import aiodurable
from aiodurable import Runtime, step, workflow


@step()
async def crash() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@workflow(max_recovery_attempts=2)
async def doomed() -> None:
    await crash()


async def main() -> None:
    async with Runtime(schema=os.environ["TEST_SCHEMA"]) as rt:
        print("READY", flush=True)
        with aiodurable.set_workflow_id("doomed"):
            handle = await rt.start_workflow(doomed)
        print("STATUS", (await handle.get_status()).status.value, flush=True)


if __name__ == "__main__":
    asyncio.run(main())
