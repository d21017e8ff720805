"""A program the SQLAlchemy transaction crash tests run and SIGKILL, inside a ``@transaction()``
body that takes a SQLAlchemy ``AsyncConnection`` (before it commits) or right after it commits.

Usage: sa_tx_app.py WORKFLOW_ID
Settings from the environment: AIODURABLE_DATABASE_URL, AIODURABLE_EXECUTOR_ID, TEST_SCHEMA,
CRASH_LOG (a file each transaction body appends a line to), CRASH_AT=before to park the body
after its ORM write, before the commit; CRASH_AT=after to park the workflow after the commit,
before its next step.
"""

from __future__ import annotations

import asyncio
import os
import sys

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import aiodurable
from aiodurable import Runtime, step, transaction, workflow
from aiodurable.testing import hooks

LOG = os.environ["CRASH_LOG"]
SCHEMA = os.environ["TEST_SCHEMA"]
CRASH_AT = os.environ.get("CRASH_AT", "")


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = {"schema": "app"}  # noqa: RUF012  # SQLAlchemy's class attribute; mapped to SCHEMA
    id: Mapped[str] = mapped_column(primary_key=True)


def log(line: str) -> None:
    """Append one line to the execution log: a single O_APPEND write, so lines never tear."""
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@transaction()
async def record_order(conn: AsyncConnection, order: str) -> int:
    log(f"tx {order}")
    await conn.execution_options(schema_translate_map={"app": SCHEMA})
    async with AsyncSession(bind=conn) as session:
        session.add(Order(id=order))
        await session.flush()
        count: int = await session.scalar(select(func.count()).select_from(Order)) or 0
    if CRASH_AT == "before":
        print("TX_WRITTEN", flush=True)
        await asyncio.Event().wait()  # never completes: the process is killed here, uncommitted
    return count


@step()
async def hold() -> None:
    if CRASH_AT == "after":
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
            await conn.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA}.orders (id text PRIMARY KEY)")
        print("READY", flush=True)
        with aiodurable.set_workflow_id(sys.argv[1]):
            print("RESULT", await place_order("order-1"), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
