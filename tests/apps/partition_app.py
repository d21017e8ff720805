"""A program the partition tests run, two at once: it dispatches a partitioned queue.

Usage: partition_app.py [enqueue COUNT]  (COUNT jobs in each of the partitions a, b and c)
Settings from the environment: AIODURABLE_DATABASE_URL, AIODURABLE_EXECUTOR_ID, TEST_SCHEMA.
Each job returns when it started and ended (real time), who ran it and its partition.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

import aiodurable
from aiodurable import Queue, Runtime, step, workflow

tenants = Queue("tenants", partitioned=True, concurrency=1)
EXECUTOR = os.environ["AIODURABLE_EXECUTOR_ID"]
PARTITIONS = ("a", "b", "c")


@step()
async def now() -> float:
    return time.time()


@step()
async def work() -> None:
    await asyncio.sleep(0.2)


@workflow()
async def job(tenant: str, index: int) -> tuple[float, float, str, str]:
    started = await now()
    await work()
    return started, await now(), EXECUTOR, tenant


async def main() -> None:
    async with Runtime(schema=os.environ["TEST_SCHEMA"]):
        if sys.argv[1:2] == ["enqueue"]:
            # Each partition's whole backlog in turn: the last one's waits behind the others' in
            # the table, yet it must start at once.
            for tenant in PARTITIONS:
                for i in range(int(sys.argv[2])):
                    with aiodurable.set_workflow_id(f"{tenant}-{i}"):
                        await tenants.with_options(partition_key=tenant).enqueue(job, tenant, i)
            print("ENQUEUED", flush=True)
        print("READY", flush=True)
        await asyncio.Event().wait()  # dispatch until killed


if __name__ == "__main__":
    asyncio.run(main())
