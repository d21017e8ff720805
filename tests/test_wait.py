"""wait_first and as_completed on PostgreSQL: woken by the workflows' NOTIFY (the fallback re-read
an hour away), and replayed after a crash with the same handles in the same order.

Broader coverage, on the in-memory backend, is in test_wait_memory.py.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from typing import Any

import pytest

import aiodurable
from aiodurable import Runtime, WorkflowHandle, WorkflowStatus, step, workflow
from aiodurable._records import StepRow
from aiodurable._wait import WAIT_FIRST
from aiodurable.testing import RuntimeFactory, check_replay, crash_after, hooks

pytestmark = pytest.mark.anyio

calls: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def fresh_calls() -> None:
    calls.clear()


@step(name="wait_pg.record")
async def record(label: str) -> None:
    calls[label] += 1


@workflow(name="wait_pg.racer")
async def racer(tag: str) -> str:
    await record(f"run-{tag}")
    await aiodurable.recv("go", timeout=math.inf)
    return tag


async def start_racers(tags: list[str]) -> list[WorkflowHandle[str]]:
    handles = [await aiodurable.start_workflow(racer, tag) for tag in tags]
    await aiodurable.set_event("children", [h.workflow_id for h in handles])
    return handles


@workflow(name="wait_pg.first_of")
async def first_of(tags: list[str]) -> str:
    first = await aiodurable.wait_first(await start_racers(tags))
    await record("after-wait")
    return first.workflow_id


@workflow(name="wait_pg.in_order")
async def in_order(tags: list[str]) -> list[str]:
    handles = await start_racers(tags)
    order = [h.workflow_id async for h in aiodurable.as_completed(handles)]
    await record("after-all")
    return order


async def children(rt: Runtime, parent: str) -> list[str]:
    ids = await rt.get_event(parent, "children", timeout=5)
    assert isinstance(ids, list)
    return ids


async def within(awaitable: Any, seconds: float = 5) -> Any:
    async with asyncio.timeout(seconds):
        return await awaitable


async def test_wait_first_is_woken_by_notify_inside_and_outside_a_workflow(
    durable_runtime_factory: RuntimeFactory,
) -> None:
    async with durable_runtime_factory(notify_fallback=3600) as rt:
        parent = await rt.start_workflow(first_of, list("abc"))
        a, b, c = await children(rt, parent.workflow_id)
        handles = [await rt.retrieve_workflow(wid) for wid in (a, b, c)]
        outside = asyncio.create_task(aiodurable.wait_first(handles))
        await hooks(rt).notifier.until_waiting(5)  # three racers, the parent, the test
        await rt.send(b, None, topic="go")
        assert await within(outside) is handles[1]
        assert await within(parent.get_result()) == b
        for other in (a, c):
            assert (await rt.get_workflow_status(other)).status is WorkflowStatus.PENDING
    assert calls == {"run-a": 1, "run-b": 1, "run-c": 1, "after-wait": 1}


async def test_a_crash_after_wait_first_replays_the_same_handle(durable_runtime: Runtime) -> None:
    rt = durable_runtime
    crashing = asyncio.create_task(
        crash_after(rt, first_of, ["a", "b"], step=WAIT_FIRST, workflow_id="first-of-1")
    )
    a, b = await children(rt, "first-of-1")
    await hooks(rt).notifier.until_waiting(3)
    await rt.send(a, None, topic="go")
    recovered = await within(crashing)
    assert await within(recovered.get_result()) == a
    assert (await rt.get_workflow_status(b)).status is WorkflowStatus.PENDING
    await check_replay("first-of-1", rt)
    assert calls == {"run-a": 1, "run-b": 1, "after-wait": 1}  # no racer ran twice


async def test_as_completed_replays_the_same_order_after_a_crash(
    durable_runtime: Runtime,
) -> None:
    rt = durable_runtime
    chosen: asyncio.Queue[str | None] = asyncio.Queue()

    async def observe(workflow_id: str, entry: StepRow) -> None:
        if entry.name == WAIT_FIRST:
            chosen.put_nowait(entry.child_workflow_id)

    with hooks(rt).on_checkpoint(observe):
        crashing = asyncio.create_task(
            crash_after(
                rt, in_order, list("abc"), step=WAIT_FIRST, occurrence=2, workflow_id="order-1"
            )
        )
        a, b, c = await children(rt, "order-1")
        await hooks(rt).notifier.until_waiting(4)
        for racer_id in (c, a):
            await rt.send(racer_id, None, topic="go")
            assert await within(chosen.get()) == racer_id
        recovered = await within(crashing)
    await rt.send(b, None, topic="go")
    assert await within(recovered.get_result()) == [c, a, b]
    await check_replay("order-1", rt)
    assert calls == {"run-a": 1, "run-b": 1, "run-c": 1, "after-all": 1}


async def test_check_replay_of_a_workflow_waiting_in_wait_first_returns_at_once(
    durable_runtime: Runtime,
) -> None:
    parent = await durable_runtime.start_workflow(first_of, ["a", "b"])
    await hooks(durable_runtime).notifier.until_waiting(3)
    await within(check_replay(parent.workflow_id, durable_runtime), 1)
    assert (await parent.get_status()).status is WorkflowStatus.PENDING
    assert calls == {"run-a": 1, "run-b": 1}
