"""A program the transaction crash test runs and SIGKILLs right after a transaction commits.

Usage: tx_app.py WORKFLOW_ID
Settings from the environment: AIODURABLE_DATABASE_URL, AIODURABLE_EXECUTOR_ID, TEST_SCHEMA,
CRASH_LOG (a file each transaction body appends a line to), CRASH_BLOCK=1 to park the workflow
after the transaction committed, before its next step.
"""

from __future__ import annotations

import asyncio
import os
import sys

import asyncpg

import aiodurable
from aiodurable import Runtime, step, transaction, workflow
from aiodurable.testing import hooks

LOG = os.environ["CRASH_LOG"]
SCHEMA = os.environ["TEST_SCHEMA"]


def log(line: str) -> None:
    """Append one line to the execution log: a single O_APPEND write, so lines never tear."""
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@transaction()
async def record_order(conn: asyncpg.Connection, order: str) -> int:
    log(f"tx {order}")
    await conn.execute(f"INSERT INTO {SCHEMA}.orders VALUES ($1)", order)
    count: int = await conn.fetchval(f"SELECT count(*) FROM {SCHEMA}.orders")
    return count


@step()
async def hold() -> None:
    if os.environ.get("CRASH_BLOCK") == "1":
        await asyncio.Event().wait()  # never completes: the process is killed here


@step()
async def confirm(order: str) -> str:
    log(f"confirm {order}")
    return f"confirmed {order}"


@workflow()
async def place_order(order: str) -> str:
    count = await record_order(order)
    print("TX_COMMITTED", count, flush=True)
    await hold()
    return f"{await confirm(order)} ({count} row)"


async def main() -> None:
    async with Runtime(schema=SCHEMA) as rt:
        async with hooks(rt).store.pool.acquire() as conn:
            await conn.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA}.orders (id text NOT NULL)")
        print("READY", flush=True)
        with aiodurable.set_workflow_id(sys.argv[1]):
            print("RESULT", await place_order("order-1"), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
