"""An executor for the fencing tests: one step, a durable sleep, another step.

Usage: fence_app.py WORKFLOW_ID (start it and wait) | fence_app.py serve
Settings from the environment: AIODURABLE_DATABASE_URL, AIODURABLE_EXECUTOR_ID, TEST_SCHEMA,
FENCE_SLEEP (seconds). Heartbeat 1 s, lease 3 s. Each step execution prints ``effect NAME BY``
(BY is the executor ID); the runtime's log goes to stdout too, so a test reads both.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import aiodurable
from aiodurable import Runtime, step, workflow

HEARTBEAT, LEASE = 1.0, 3.0
executions: list[str] = []
who = os.environ.get("AIODURABLE_EXECUTOR_ID", "this process")
"""Who runs the steps here, as the effects say."""


def _effect(name: str) -> None:
    by = who
    executions.append(f"{name} {by}")
    print(f"effect {name} {by}", flush=True)


@step()
async def one() -> str:
    _effect("one")
    return "one"


@step()
async def two() -> str:
    _effect("two")
    return "two"


@workflow(name="fence:flow")
async def flow(pause: float) -> str:
    first = await one()
    print(f"journaled one {aiodurable.current_workflow_id()}", flush=True)
    await aiodurable.sleep(pause)
    return first + await two()


def runtime() -> Runtime:
    """The executor's runtime: a short lease, one application version for every process."""
    return Runtime(
        schema=os.environ["TEST_SCHEMA"],
        app_version="fence",
        heartbeat_interval=HEARTBEAT,
        executor_lease=LEASE,
    )


async def main() -> None:
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(levelname)s %(message)s")
    async with runtime() as rt:
        print("READY", flush=True)
        if sys.argv[1] != "serve":
            with aiodurable.set_workflow_id(sys.argv[1]):
                handle = await rt.start_workflow(flow, float(os.environ.get("FENCE_SLEEP", "8")))
            print(f"result {await handle.get_result()}", flush=True)
        await asyncio.Event().wait()  # serve until killed


if __name__ == "__main__":
    asyncio.run(main())
