"""A program the fault tests run and SIGKILL: pairs of workflows that message each other.

Usage: fault_app.py PREFIX PAIRS ROUNDS PAUSE
Settings from the environment: AIODURABLE_DATABASE_URL, AIODURABLE_EXECUTOR_ID, TEST_SCHEMA,
FAULT_LOG (a file each step execution appends a line to). Prints READY once the runtime is open
(and has resumed what a killed run left), ALL_DONE once every pair has finished.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from aiodurable import Runtime
from tests.faults import expected_messages, start_pairs


async def main() -> None:
    prefix, pairs, rounds, pause = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    async with Runtime(schema=os.environ["TEST_SCHEMA"]) as rt:
        print("READY", flush=True)
        handles = await start_pairs(rt, prefix, pairs, rounds, float(pause))
        for wid, handle in handles.items():
            peer = wid[:-1] + ("b" if wid.endswith("a") else "a")
            assert await handle.get_result() == expected_messages(peer, rounds), wid
        print("ALL_DONE", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
