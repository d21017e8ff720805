"""Partitioned queues and enqueued steps on the in-memory backend with a TestClock: the errors,
the limits of each partition, fair progress past a long backlog, per-partition rate windows,
and a ``@step`` enqueued as a one-step workflow (its result, journal, recovery and replay)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import assert_type

import pytest

from aiodurable import Queue, RateLimit, Runtime, WorkflowHandle, WorkflowStatus, step, workflow
from aiodurable._engine import _dispatch
from aiodurable._workflow import application_version, registered_names
from aiodurable.testing import MemoryBackend, TestClock, check_replay

pytestmark = pytest.mark.anyio

tenants = Queue("pm.tenants", partitioned=True, concurrency=1)
pairs = Queue("pm.pairs", partitioned=True, concurrency=2, worker_concurrency=1)
open_ = Queue("pm.open", partitioned=True)
paced = Queue("pm.paced", partitioned=True, limiter=RateLimit(limit=1, period=10.0))
plain = Queue("pm.plain")

gates: dict[str, asyncio.Event] = {}
arrived: dict[str, asyncio.Event] = {}
started: list[str] = []
runs: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def fresh() -> None:
    gates.clear()
    arrived.clear()
    started.clear()
    runs.clear()


def _event(table: dict[str, asyncio.Event], key: str) -> asyncio.Event:
    return table.setdefault(key, asyncio.Event())


@workflow(name="pm.held")
async def held(tag: str) -> str:
    started.append(tag)
    _event(arrived, tag).set()
    await _event(gates, tag).wait()
    return tag


@step(name="pm.double")
async def double(x: int) -> int:
    runs["double"] += 1
    return 2 * x


@step(name="pm.slow_double")
async def slow_double(x: int) -> int:
    runs["slow_double"] += 1
    _event(arrived, f"slow-{runs['slow_double']}").set()
    await _event(gates, f"slow-{runs['slow_double']}").wait()
    return 2 * x


@asynccontextmanager
async def memory_runtime(
    backend: MemoryBackend, clock: TestClock | None = None, **options: object
) -> AsyncIterator[Runtime]:
    options.setdefault("executor_id", "partitions-memory")
    async with Runtime(
        backend=backend,
        clock=clock,
        app_version="partitions",
        **options,  # type: ignore[arg-type]  # keyword options of Runtime
    ) as rt:
        yield rt


async def statuses(rt: Runtime, queue: str) -> dict[tuple[str | None, str], int]:
    """How many workflows of ``queue`` are in each (partition, status)."""
    found = await rt.list_workflows(queue_name=queue)
    return dict(Counter((w.partition_key, w.status.value) for w in found))


async def test_partition_keys_are_required_by_partitioned_queues_and_refused_elsewhere() -> None:
    """A partitioned queue refuses an enqueue without a partition key, a plain queue one with a
    key, both saying how to fix it; an empty key and a redeclaration differing only in
    ``partitioned`` are refused too."""
    with pytest.raises(ValueError, match=r"with_options\(partition_key=\.\.\.\)"):
        await tenants.enqueue(held, "no-key")
    with pytest.raises(ValueError, match=r"partitioned=True"):
        plain.with_options(partition_key="t1")
    with pytest.raises(ValueError, match="partition key"):
        tenants.with_options(partition_key="")
    with pytest.raises(ValueError, match="other settings"):
        Queue("pm.tenants", concurrency=1)
    assert "partitioned=True" in repr(tenants)


async def test_concurrency_applies_to_each_partition(
    backend: MemoryBackend, clock: TestClock
) -> None:
    """With concurrency 1 per partition, one workflow of each of three partitions runs at once;
    a finish lets only its own partition's next one start."""
    async with memory_runtime(backend, clock) as rt:
        handles = {
            f"{t}{i}": await tenants.with_options(partition_key=t).enqueue(held, f"{t}{i}")
            for t in "abc"
            for i in range(2)
        }
        for tag in ("a0", "b0", "c0"):
            await asyncio.wait_for(_event(arrived, tag).wait(), 5)
        expected = {(t, s): 1 for t in "abc" for s in ("PENDING", "ENQUEUED")}
        assert await statuses(rt, "pm.tenants") == expected
        _event(gates, "a0").set()
        await asyncio.wait_for(_event(arrived, "a1").wait(), 5)  # the pass that took a1 ...
        assert await statuses(rt, "pm.tenants") == {  # ... left b1 and c1 queued
            ("a", "SUCCESS"): 1,
            ("a", "PENDING"): 1,
            ("b", "PENDING"): 1,
            ("b", "ENQUEUED"): 1,
            ("c", "PENDING"): 1,
            ("c", "ENQUEUED"): 1,
        }
        for tag in handles:
            _event(gates, tag).set()
        assert [await asyncio.wait_for(h.get_result(), 5) for h in handles.values()] == list(
            handles
        )


async def test_worker_concurrency_applies_to_each_partition_in_each_process(
    backend: MemoryBackend,
) -> None:
    """Two runtimes share a queue with concurrency 2 and worker_concurrency 1 per partition:
    each partition runs two workflows at once, one in each runtime."""
    async with (
        memory_runtime(backend, executor_id="w1") as first,
        memory_runtime(backend, executor_id="w2"),
    ):
        handles = [
            await pairs.with_options(partition_key=t).enqueue(held, f"{t}{i}")
            for t in "ab"
            for i in range(3)
        ]
        for tag in ("a0", "a1", "b0", "b1"):
            await asyncio.wait_for(_event(arrived, tag).wait(), 5)
        found = await first.list_workflows(queue_name="pm.pairs", status="PENDING")
        assert sorted((w.partition_key, w.executor_id) for w in found) == [
            ("a", "w1"),
            ("a", "w2"),
            ("b", "w1"),
            ("b", "w2"),
        ]
        for tag in ("a0", "a1", "a2", "b0", "b1", "b2"):
            _event(gates, tag).set()
        for h in handles:
            await asyncio.wait_for(h.get_result(), 5)


async def test_a_long_backlog_does_not_hold_the_other_partitions_back(
    backend: MemoryBackend, clock: TestClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Six workflows queued in one partition before one in each of two others: with two starts
    per dispatch pass, the others' workflows start in the first two passes, not after the
    backlog (every partition with room gets a start before any gets a second)."""
    monkeypatch.setattr(_dispatch, "DISPATCH_BATCH", 2)
    async with memory_runtime(backend, clock, recover=False):  # enqueues only: a backlog
        tags = [("big", f"big{i}") for i in range(6)] + [("x", "x0"), ("y", "y0")]
        for key, tag in tags:
            await open_.with_options(partition_key=key).enqueue(held, tag)
            await clock.advance(1.0)
    async with memory_runtime(backend, clock):
        for _, tag in tags:
            await asyncio.wait_for(_event(arrived, tag).wait(), 5)
        assert started[:4] == ["big0", "x0", "big1", "y0"]
        for _, tag in tags:
            _event(gates, tag).set()


async def test_rate_limits_apply_to_each_partition(
    backend: MemoryBackend, clock: TestClock
) -> None:
    """With a rate limit of one start per 10 s per partition, the first workflow of each
    partition starts at once, the second of each when its window opens."""
    async with memory_runtime(backend, clock, notify_fallback=3600) as rt:
        handles = [
            await paced.with_options(partition_key=t).enqueue(held, f"{t}{i}")
            for i in range(2)
            for t in "ab"
        ]
        for tag in ("a0", "b0", "a1", "b1"):
            _event(gates, tag).set()
        assert [await asyncio.wait_for(h.get_result(), 5) for h in handles[:2]] == ["a0", "b0"]
        assert await statuses(rt, "pm.paced") == {
            ("a", "SUCCESS"): 1,
            ("b", "SUCCESS"): 1,
            ("a", "ENQUEUED"): 1,
            ("b", "ENQUEUED"): 1,
        }
        await clock.advance(9.9)
        assert started == ["a0", "b0"]
        await clock.advance(0.1)  # the windows open: the dispatcher's timer fires
        assert [await asyncio.wait_for(h.get_result(), 5) for h in handles[2:]] == ["a1", "b1"]


async def test_a_step_enqueued_runs_as_a_one_step_workflow(
    backend: MemoryBackend, clock: TestClock
) -> None:
    """A ``@step`` enqueued (on a plain or a partitioned queue) runs as a one-step workflow:
    its handle's result is the step's, typed; its journal is the one step, which replays; the
    shorthand ``partition_key=`` keyword works. Steps leave the application version alone."""
    version = application_version()

    @step(name="pm.triple")
    async def triple(x: int) -> int:
        return 3 * x

    assert application_version() == version
    assert "aiodurable.step:pm.triple" in registered_names()
    async with memory_runtime(backend, clock) as rt:
        handle = await plain.enqueue(double, 21)
        assert_type(handle, WorkflowHandle[int])
        assert await asyncio.wait_for(handle.get_result(), 5) == 42
        info = await rt.get_workflow_status(handle.workflow_id)
        assert info.name == "aiodurable.step:pm.double"
        assert info.inputs == {"args": [21], "kwargs": {}}
        assert [s.name for s in await rt.list_steps(handle.workflow_id)] == ["pm.double"]
        await check_replay(handle.workflow_id, rt)
        assert runs["double"] == 1
        keyed = await tenants.enqueue(triple, 5, partition_key="t9")  # type: ignore[call-arg]
        assert await asyncio.wait_for(keyed.get_result(), 5) == 15
        assert (await keyed.get_status()).partition_key == "t9"

        async def neither(x: int) -> int:
            return x

        with pytest.raises(TypeError, match=r"aiodurable\.step\(\)"):
            await plain.enqueue(neither, 1)


async def test_an_enqueued_step_is_recovered_like_any_workflow(
    backend: MemoryBackend, clock: TestClock
) -> None:
    """A one-step workflow whose runtime crashes mid-step is recovered and runs the step again
    (it was not journaled), then returns its result."""
    async with memory_runtime(backend, clock) as rt:
        handle = await plain.enqueue(slow_double, 4)
        await asyncio.wait_for(_event(arrived, "slow-1").wait(), 5)
        await rt.crash()
        assert await rt.restart() == [handle.workflow_id]
        await asyncio.wait_for(_event(arrived, "slow-2").wait(), 5)
        _event(gates, "slow-2").set()
        recovered = await rt.retrieve_workflow(handle.workflow_id)
        assert await asyncio.wait_for(recovered.get_result(), 5) == 8
        assert (await recovered.get_status()).status is WorkflowStatus.SUCCESS
    assert runs["slow_double"] == 2
