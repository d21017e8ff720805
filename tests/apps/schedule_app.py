"""A program the schedule crash test runs and SIGKILLs: two per-second schedules, one catching up.

Usage: schedule_app.py
Settings from the environment: AIODURABLE_DATABASE_URL, AIODURABLE_EXECUTOR_ID, TEST_SCHEMA,
SCHEDULE_LOG (a file each workflow execution appends ``NAME TICK`` to). Prints ``READY`` once
open, and ``TICK NAME TICK`` as each tick's workflow runs.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime

import aiodurable
from aiodurable import Runtime

LOG = os.environ["SCHEDULE_LOG"]


def log(line: str) -> None:
    """Append one line to the execution log: a single O_APPEND write, so lines never tear."""
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def ran(name: str, scheduled_time: datetime) -> None:
    tick = scheduled_time.astimezone(UTC).isoformat()
    log(f"{name} {tick}")
    print("TICK", name, tick, flush=True)


@aiodurable.scheduled("* * * * * *", catch_up=True)
@aiodurable.workflow(name="caught")
async def caught(scheduled_time: datetime, actual_time: datetime) -> None:
    ran("caught", scheduled_time)


@aiodurable.scheduled("* * * * * *", catch_up=False)
@aiodurable.workflow(name="skipped")
async def skipped(scheduled_time: datetime, actual_time: datetime) -> None:
    ran("skipped", scheduled_time)


async def main() -> None:
    async with Runtime(schema=os.environ["TEST_SCHEMA"]):
        print("READY", flush=True)
        await asyncio.Event().wait()  # runs until killed


if __name__ == "__main__":
    asyncio.run(main())
