"""A program the failover tests run three of: each serves the same database; one starts work.

Usage: failover_app.py serve | failover_app.py start COUNT STEPS PAUSE
Settings from the environment: AIODURABLE_DATABASE_URL, AIODURABLE_EXECUTOR_ID,
AIODURABLE_APP_VERSION, TEST_SCHEMA, FAULT_LOG, FAILOVER_LEASE and FAILOVER_HEARTBEAT (seconds).
Prints READY once the runtime is open, STARTED once ``start`` has recorded its workflows, then
serves until killed.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import aiodurable
from aiodurable import Runtime
from tests.faults import chain


async def main() -> None:
    async with Runtime(
        schema=os.environ["TEST_SCHEMA"],
        executor_lease=float(os.environ["FAILOVER_LEASE"]),
        heartbeat_interval=float(os.environ["FAILOVER_HEARTBEAT"]),
    ) as rt:
        print("READY", flush=True)
        if sys.argv[1] == "start":
            count, steps, pause = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
            for i in range(count):
                with aiodurable.set_workflow_id(f"fo-{i}"):
                    await rt.start_workflow(chain, steps, pause)
            print("STARTED", flush=True)
        await asyncio.Event().wait()  # serve until killed


if __name__ == "__main__":
    asyncio.run(main())
