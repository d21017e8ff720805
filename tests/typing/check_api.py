"""The public API keeps its types: decorators keep signatures, ``@transaction`` drops the
connection parameter, handles are generic in the result, and wrong arguments are errors.

Each ``# type: ignore[code]`` below marks a line that must be a type error: mypy's
``warn_unused_ignores`` (on under ``strict``) fails if the error ever disappears.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, assert_type

import asyncpg

import aiodurable
from aiodurable import Retry, Runtime, WorkflowHandle, WorkflowInfo, step, transaction, workflow


@dataclass(frozen=True)
class Receipt:
    order: str
    amount: int


@step(retry=Retry(max_attempts=3))
async def charge(order: str, amount: int, *, currency: str = "EUR") -> Receipt:
    return Receipt(order, amount)


@transaction(isolation="read_committed")
async def record(conn: asyncpg.Connection, order: str, amount: int) -> int:
    return amount


@workflow(name="typed-checkout")
async def checkout(order: str, amount: int) -> Receipt:
    await record(order, amount)
    return await charge(order, amount)


async def decorators_keep_signatures() -> None:
    same_signature: Callable[[str, int], Coroutine[Any, Any, Receipt]] = charge
    assert_type(await same_signature("o", 1), Receipt)
    assert_type(await charge("o", 1), Receipt)
    assert_type(await charge("o", 1, currency="USD"), Receipt)
    assert_type(await checkout("o", 1), Receipt)
    await charge("o", "1")  # type: ignore[arg-type]
    await charge("o")  # type: ignore[call-arg]
    await charge("o", 1, currency=2)  # type: ignore[arg-type]
    await checkout(1, 1)  # type: ignore[arg-type]


async def transaction_drops_the_connection() -> None:
    without_connection: Callable[[str, int], Coroutine[Any, Any, int]] = record
    assert_type(await without_connection("o", 1), int)
    assert_type(await record("o", 1), int)
    conn: asyncpg.Connection = await asyncpg.connect()
    await record(conn, "o", 1)  # type: ignore[arg-type, call-arg]
    await record("o", "1")  # type: ignore[arg-type]


async def handles_are_generic() -> None:
    handle = await aiodurable.start_workflow(checkout, "o", 1)
    assert_type(handle, WorkflowHandle[Receipt])
    assert_type(await handle.get_result(), Receipt)
    assert_type(handle.workflow_id, str)
    assert_type(await handle.get_status(), WorkflowInfo)
    async with Runtime() as rt:
        assert_type(rt, Runtime)
        assert_type(await rt.start_workflow(checkout, "o", amount=2), WorkflowHandle[Receipt])


async def wrong_workflow_arguments_are_errors() -> None:
    await aiodurable.start_workflow(checkout, "o", "1")  # type: ignore[arg-type]
    await aiodurable.start_workflow(checkout, "o", 1, 2)  # type: ignore[call-arg]
    await aiodurable.start_workflow(checkout, "o", amount="x")  # type: ignore[arg-type]
    async with Runtime() as rt:
        await rt.start_workflow(checkout, 1, 1)  # type: ignore[arg-type]


def bad_options_are_errors() -> None:
    transaction(isolation="snapshot")  # type: ignore[arg-type]
    step(retry=3)  # type: ignore[arg-type]

    @transaction()  # type: ignore[arg-type]
    async def no_connection(order: str) -> int:
        return 1

    @step()  # type: ignore[arg-type]
    def not_async(order: str) -> int:
        return 1


def with_set_workflow_id() -> None:
    with aiodurable.set_workflow_id("id") as value:
        assert_type(value, None)
