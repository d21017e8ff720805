"""``@transaction()`` on a SQLAlchemy ``AsyncConnection`` keeps its types as on an asyncpg one:
the connection parameter is dropped and the result kept; wrong arguments are errors.

Each ``# type: ignore[code]`` below marks a line that must be a type error.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, assert_type

from sqlalchemy.ext.asyncio import AsyncConnection

from aiodurable import transaction


@transaction(isolation="repeatable_read")
async def record(conn: AsyncConnection, order: str, amount: int) -> int:
    return amount


async def transaction_drops_the_sqlalchemy_connection(conn: AsyncConnection) -> None:
    without_connection: Callable[[str, int], Coroutine[Any, Any, int]] = record
    assert_type(await without_connection("o", 1), int)
    assert_type(await record("o", 1), int)
    await record(conn, "o", 1)  # type: ignore[arg-type, call-arg]
    await record("o", "1")  # type: ignore[arg-type]
