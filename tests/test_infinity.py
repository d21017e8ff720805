"""NaN and infinity at run time: values holding them are refused before anything is written
(M3), and ``float("inf")`` means "no limit" for sleep, recv and get_event (L2)."""

from __future__ import annotations

import asyncio
import math

import pytest

import aiodurable
from aiodurable import (
    SerializationError,
    WorkflowCancelled,
    WorkflowStatus,
    step,
    workflow,
)
from aiodurable.testing import TestClock, hooks

from .conftest import RuntimeFactory

pytestmark = pytest.mark.anyio

nan_queue = aiodurable.Queue("test-infinity-queue")


@workflow()
async def scaled(x: float) -> float:
    return x * 2


@step()
async def ratio(a: float, b: float) -> float:
    return a / b if b else math.inf


@workflow()
async def divides(a: float, b: float) -> float:
    return await ratio(a, b)


@workflow()
async def sleeps_forever() -> str:
    await aiodurable.sleep(math.inf)
    return "woke"


@workflow()
async def publisher() -> None:
    await aiodurable.recv("go", timeout=math.inf)
    await aiodurable.set_event("k", "published")


@workflow()
async def listener(publisher_id: str) -> list[object]:
    value = await aiodurable.get_event(publisher_id, "k", timeout=math.inf)
    message = await aiodurable.recv("t", timeout=math.inf)
    return [value, message]


@workflow()
async def waits_too_long(kind: str) -> None:
    if kind == "recv":
        await aiodurable.recv(timeout=1e300)
    else:
        await aiodurable.sleep(1e300)


async def _count(rt: aiodurable.Runtime, table: str) -> int:
    async with hooks(rt).store.pool.acquire() as conn:
        return int(await conn.fetchval(f"SELECT count(*) FROM {rt.schema}.{table}"))


async def test_non_finite_values_are_refused_before_anything_is_written(
    runtime: RuntimeFactory,
) -> None:
    """A NaN argument, an infinite message or enqueued argument raise SerializationError naming
    the value, and no row is written (they used to be recorded as null)."""
    async with runtime() as rt:
        with pytest.raises(SerializationError, match=r"argument 'x' of workflow .*: nan is not"):
            await rt.start_workflow(scaled, math.nan)
        with pytest.raises(SerializationError, match=r"argument 'x' .*: -inf is not"):
            await nan_queue.enqueue(scaled, -math.inf)
        assert await _count(rt, "workflows") == 0
        handle = await rt.start_workflow(scaled, 1.5)
        assert await handle.get_result() == 3.0
        with pytest.raises(SerializationError, match=r"message .*: inf at \$\['rate'\] is not"):
            await rt.send(handle.workflow_id, {"rate": math.inf})
        assert await _count(rt, "messages") == 0


async def test_an_infinite_step_result_fails_the_step_instead_of_recording_null(
    runtime: RuntimeFactory,
) -> None:
    """A step returning inf fails its workflow with SerializationError naming the step, and
    nothing is journaled for it: the first run and a replay can no longer disagree."""
    async with runtime() as rt:
        handle = await rt.start_workflow(divides, 1.0, 0.0)
        with pytest.raises(SerializationError, match=r"result of step '.*ratio': inf is not"):
            await handle.get_result()
        assert (await handle.get_status()).status is WorkflowStatus.ERROR
        assert await rt.list_steps(handle.workflow_id) == []


async def test_sleep_forever_waits_until_cancelled_also_after_recovery(
    runtime: RuntimeFactory,
) -> None:
    """sleep(inf) journals a sleep without end (null) and waits, across any time and a
    restart, until the workflow is cancelled (it used to fail with a TypeError)."""
    clock = TestClock()
    async with runtime(clock=clock) as rt:
        handle = await rt.start_workflow(sleeps_forever)
        await clock.settle()
        await clock.advance(1e9)
        assert clock.pending_timers == 0
        assert (await handle.get_status()).status is WorkflowStatus.PENDING
        [entry] = await rt.list_steps(handle.workflow_id)
        assert entry.name == "aiodurable.sleep" and entry.output is None
    async with runtime(clock=clock) as rt:
        assert handle.workflow_id in rt.recovered_workflow_ids
        await clock.settle()
        await clock.advance(1e9)
        assert (await rt.get_workflow_status(handle.workflow_id)).status is WorkflowStatus.PENDING
        await rt.cancel_workflow(handle.workflow_id)
        with pytest.raises(WorkflowCancelled):
            await (await rt.retrieve_workflow(handle.workflow_id)).get_result()


async def test_recv_and_get_event_without_limit_wait_until_something_arrives(
    runtime: RuntimeFactory,
) -> None:
    """recv and get_event with timeout=inf, in a workflow or outside one, set no deadline and
    return what arrives, however late (recv used to fail with OverflowError)."""
    clock = TestClock()
    async with runtime(clock=clock) as rt:
        pub = await rt.start_workflow(publisher)
        sub = await rt.start_workflow(listener, pub.workflow_id)
        await clock.settle()
        await clock.advance(1e9)
        assert clock.pending_timers == 0
        for handle in (pub, sub):
            assert (await handle.get_status()).status is WorkflowStatus.PENDING
        await rt.send(pub.workflow_id, None, "go")
        assert await rt.get_event(pub.workflow_id, "k", timeout=math.inf) == "published"
        await rt.send(sub.workflow_id, "hello", "t")
        assert await sub.get_result() == ["published", "hello"]
        async with hooks(rt).store.pool.acquire() as conn:
            assert await conn.fetchval(f"SELECT count(*) FROM {rt.schema}.waits") == 0


@pytest.mark.parametrize("kind", ["recv", "sleep"])
async def test_waits_longer_than_the_longest_timeout_are_value_errors(
    runtime: RuntimeFactory, kind: str
) -> None:
    """A finite wait too long for the tables (1e300 s) is a ValueError that names float('inf'),
    in a workflow and outside one, rather than a driver error or a wait of 1e300 s."""
    async with runtime() as rt:
        handle = await rt.start_workflow(waits_too_long, kind)
        with pytest.raises(ValueError, match=r"at most .*float\('inf'\)"):
            await handle.get_result()
        # Refused when called; the bound only keeps a regression from waiting 1e300 s.
        async with asyncio.timeout(10):
            with pytest.raises(ValueError, match=r"get_event\(timeout\) may be at most"):
                await rt.get_event(handle.workflow_id, "k", timeout=1e300)
            with pytest.raises(ValueError, match=r"sleep\(seconds\) may be at most"):
                await aiodurable.sleep(1e300)
