"""A program the debouncer tests run beside the test process, calling the same debouncer.

Usage: debounce_app.py KEY CALLS ROUNDS. For each round it makes CALLS calls
``debounce(KEY, "child", i)`` as fast as it can, prints ``IDS <round> <distinct workflow IDs>``,
waits for that burst's result and prints ``DONE <round> <result>``.
Settings from the environment: AIODURABLE_DATABASE_URL, TEST_SCHEMA.
"""

from __future__ import annotations

import asyncio
import os
import sys

from aiodurable import Debouncer, Runtime, workflow


@workflow(name="debounce_app.reindex")
async def reindex(caller: str, version: int) -> str:
    return f"{caller}@{version}"


deb = Debouncer(reindex, period=2.0)


async def main() -> None:
    key, calls, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    async with Runtime(schema=os.environ["TEST_SCHEMA"], executor_id="debounce-app"):
        print("READY", flush=True)
        for round_ in range(1, rounds + 1):
            handles = [await deb.debounce(key, "child", i) for i in range(calls)]
            print("IDS", round_, " ".join(sorted({h.workflow_id for h in handles})), flush=True)
            print("DONE", round_, await handles[-1].get_result(), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
