"""Queues with flow control on a real PostgreSQL, across processes."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import pytest

import aiodurable
from aiodurable import (
    DuplicateWorkflowError,
    Queue,
    RateLimit,
    WorkflowCancelled,
    WorkflowStatus,
    step,
    workflow,
)
from aiodurable.testing import TestClock, hooks

from .conftest import RuntimeFactory
from .proc import Child

pytestmark = pytest.mark.anyio

gates: dict[str, asyncio.Event] = {}
arrivals: dict[str, asyncio.Event] = {}
order: list[str] = []
runs: Counter[str] = Counter()

serial = Queue("serial", concurrency=1, priority_enabled=True)
limited = Queue("limited", limiter=RateLimit(limit=4, period=1.0))
paced = Queue("paced", limiter=RateLimit(limit=2, period=3.0))
plain = Queue("plain")


def _event(table: dict[str, asyncio.Event], key: str) -> asyncio.Event:
    return table.setdefault(key, asyncio.Event())


@workflow()
async def blocker() -> str:
    wid = aiodurable.current_workflow_id()
    _event(arrivals, wid).set()
    await _event(gates, wid).wait()
    return "unblocked"


@step()
async def record(tag: str) -> str:
    order.append(tag)
    runs[tag] += 1
    return tag


@workflow()
async def tagged(tag: str) -> str:
    return await record(tag)


@workflow()
async def quick() -> None:
    return None


async def test_priority_orders_the_queue(runtime: RuntimeFactory) -> None:
    """With one slot held, queued workflows leave in priority order, lower first."""
    async with runtime():
        gate = await serial.enqueue(blocker)
        await _event(arrivals, gate.workflow_id).wait()
        handles = [
            await serial.with_options(priority=p).enqueue(tagged, f"p{p}") for p in (5, 1, 3)
        ]
        handles.append(await serial.enqueue(tagged, "p0-later"))
        order.clear()
        _event(gates, gate.workflow_id).set()
        for h in handles:
            await h.get_result()
        assert order == ["p0-later", "p1", "p3", "p5"]


async def test_deduplication_id_blocks_a_second_enqueue(runtime: RuntimeFactory) -> None:
    """A deduplication ID held by a queued or running workflow refuses another enqueue, or
    returns its handle when asked; once it finishes, the ID is free again."""
    async with runtime():
        gate = await serial.enqueue(blocker)
        first = await serial.with_options(deduplication_id="user-7").enqueue(tagged, "d1")
        with pytest.raises(DuplicateWorkflowError, match="user-7"):
            await serial.with_options(deduplication_id="user-7").enqueue(tagged, "d2")
        same = await serial.with_options(deduplication_id="user-7", on_duplicate="return").enqueue(
            tagged, "d3"
        )
        assert same.workflow_id == first.workflow_id
        _event(gates, gate.workflow_id).set()
        assert await first.get_result() == "d1"
        again = await serial.enqueue(tagged, "d4", deduplication_id="user-7")  # type: ignore[call-arg]
        assert await again.get_result() == "d4"
        assert runs["d2"] == runs["d3"] == 0


async def test_cancel_removes_from_queue_and_resume_bypasses_it(runtime: RuntimeFactory) -> None:
    """A cancelled queued workflow never runs; a resumed one starts at once past the queue."""
    async with runtime() as rt:
        gate = await serial.enqueue(blocker)
        await _event(arrivals, gate.workflow_id).wait()
        dropped = await serial.enqueue(tagged, "dropped")
        jumped = await serial.enqueue(tagged, "jumped")
        assert (await jumped.get_status()).status is WorkflowStatus.ENQUEUED
        await aiodurable.cancel_workflow(dropped.workflow_id)
        await aiodurable.resume_workflow(jumped.workflow_id)
        assert await jumped.get_result() == "jumped"  # while the blocker still holds the slot
        assert (await gate.get_status()).status is WorkflowStatus.PENDING
        _event(gates, gate.workflow_id).set()
        await gate.get_result()
        with pytest.raises(WorkflowCancelled):
            await dropped.get_result()
        assert runs["dropped"] == 0
        queued = await rt.list_workflows(queue_name="serial", status="ENQUEUED")
        assert queued == []


async def test_rate_limit_holds_over_every_window(runtime: RuntimeFactory) -> None:
    """No more than `limit` workflows leave a rate-limited queue in any `period` window."""
    async with runtime() as rt:
        handles = [await limited.enqueue(quick) for _ in range(10)]
        for h in handles:
            await h.get_result()
        async with hooks(rt).store.pool.acquire() as conn:
            starts = sorted(
                r["started_at"]
                for r in await conn.fetch(
                    f"SELECT started_at FROM {rt.schema}.workflows WHERE queue_name = 'limited'"
                )
            )
    assert len(starts) == 10
    for i, start in enumerate(starts):
        in_window = [s for s in starts[i:] if s < start + 1000]
        assert len(in_window) <= 4
    assert starts[-1] - starts[0] >= 2000  # 10 starts at 4 per second need two more windows


lingering: list[str] = []


@workflow()
async def lingers() -> None:
    lingering.append(aiodurable.current_workflow_id())
    _event(arrivals, f"lingers-{len(lingering)}").set()
    await aiodurable.sleep(60.0)  # outlives every rate window: no finish wakes the dispatcher


async def test_rate_limit_admits_the_next_workflows_when_the_window_opens(
    runtime: RuntimeFactory,
) -> None:
    """With `RateLimit(2, 3.0)`, eight queued workflows that outlive the window start in pairs
    3 s apart: the dispatcher's timer fires when the window opens, not the safety poll (an hour
    away here), even when the starts that filled the window were its own."""
    clock = TestClock()
    lingering.clear()
    async with runtime(clock=clock, notify_fallback=3600) as rt:
        begin = clock.now()
        handles = [await paced.enqueue(lingers) for _ in range(8)]
        for pair in range(4):
            if pair:
                await clock.advance(3.0)
            # Each pair must have started before time moves on: the clock's idleness cannot see
            # the dispatcher while a notification, not a timer, has woken it. The timeout is
            # real seconds: a bound on a start that only the hour-long poll would make.
            async with asyncio.timeout(5):
                await _event(arrivals, f"lingers-{2 * pair + 2}").wait()
        async with hooks(rt).store.pool.acquire() as conn:
            starts = [
                r["started_at"]
                for r in await conn.fetch(
                    f"SELECT started_at FROM {rt.schema}.workflows WHERE queue_name = 'paced'"
                    " ORDER BY started_at"
                )
            ]
        offsets = [s / 1000 - begin for s in starts]
        for offset, expected in zip(offsets, [0, 0, 3, 3, 6, 6, 9, 9], strict=True):
            assert abs(offset - expected) <= 0.5, offsets
        async with clock.auto_advance():
            for h in handles:
                await h.get_result()


async def test_enqueue_wakes_a_dispatcher_in_another_runtime_at_once(
    runtime: RuntimeFactory,
) -> None:
    """A runtime that only enqueues (it dispatches nothing) wakes another's dispatcher through
    NOTIFY; the other's fallback poll is an hour away."""
    async with runtime(executor_id="worker", notify_fallback=3600):
        async with runtime(executor_id="client", recover=False) as client:
            queued = await plain.enqueue(tagged, "woken")
            async with asyncio.timeout(5):
                assert await queued.get_result() == "woken"
            info = await client.get_workflow_status(queued.workflow_id)
            assert info.executor_id == "worker"
            assert info.queue_name == "plain"


def test_bad_queue_settings_are_refused() -> None:
    """Invalid limits, reused names with other settings and non-workflows are refused."""
    wrong: list[dict[str, Any]] = [
        {"concurrency": 0},
        {"worker_concurrency": -1},
        {"concurrency": 1.5},
    ]
    for bad in wrong:
        with pytest.raises(ValueError):
            Queue("bad", **bad)
    with pytest.raises(ValueError):
        RateLimit(limit=0, period=1.0)
    with pytest.raises(ValueError):
        RateLimit(limit=1, period=0)
    with pytest.raises(ValueError, match="other settings"):
        Queue("serial", concurrency=2)
    Queue("serial", concurrency=1, priority_enabled=True)  # the same settings again: fine
    with pytest.raises(ValueError, match="priority_enabled"):
        plain.with_options(priority=3)


async def test_enqueueing_a_plain_function_is_a_type_error(runtime: RuntimeFactory) -> None:
    """Only workflows can be enqueued; anything else is a clear TypeError."""

    async def not_a_workflow() -> None:
        return None

    async with runtime():
        with pytest.raises(TypeError, match=r"aiodurable\.workflow"):
            await plain.enqueue(not_a_workflow)


def _queue_env(database_url: str, schema: str, log: Path, executor: str) -> dict[str, str]:
    return {
        "AIODURABLE_DATABASE_URL": database_url,
        "AIODURABLE_EXECUTOR_ID": executor,
        "TEST_SCHEMA": schema,
        "QUEUE_LOG": str(log),
    }


async def _wait_all_done(conn: asyncpg.Connection, schema: str, count: int) -> None:
    """Watch other processes' progress through the database until every job is SUCCESS."""
    for _ in range(6000):
        done = await conn.fetchval(
            f"SELECT count(*) FROM {schema}.workflows WHERE status = 'SUCCESS'"
        )
        if done == count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the queue did not drain within 60 s")


def _peak(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    peak = current = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak


async def test_concurrency_holds_across_two_processes(
    database_url: str, schema: str, tmp_path: Path
) -> None:
    """Two processes dispatch one queue: at most 3 jobs run at once in all, 2 in each, as the
    jobs themselves record."""
    log = tmp_path / "log"
    first = Child("queue_app.py", "enqueue", "24", env=_queue_env(database_url, schema, log, "a"))
    second = Child("queue_app.py", env=_queue_env(database_url, schema, log, "b"))
    await first.expect("READY")
    await second.expect("READY")
    conn = await asyncpg.connect(database_url)
    try:
        await _wait_all_done(conn, schema, 24)
        outputs = [
            json.loads(r["output"])
            for r in await conn.fetch(f"SELECT output FROM {schema}.workflows")
        ]
    finally:
        await conn.close()
        await first.kill()
        await second.kill()
    intervals = [(o[0], o[1]) for o in outputs]
    assert _peak(intervals) <= 3
    assert _peak(intervals) >= 2  # the limit was actually used
    for executor in ("a", "b"):
        mine = [(o[0], o[1]) for o in outputs if o[2] == executor]
        assert mine, f"executor {executor} ran nothing"
        assert _peak(mine) <= 2


async def test_queue_drains_after_sigkill_of_a_worker(
    database_url: str, schema: str, tmp_path: Path
) -> None:
    """A process killed while running part of a queue is restarted and the queue drains: every
    job completes and no journaled step runs again."""
    log = tmp_path / "log"
    env = _queue_env(database_url, schema, log, "a")
    first = Child("queue_app.py", "enqueue", "12", env=env)
    await first.expect("READY")
    conn = await asyncpg.connect(database_url)
    try:
        for _ in range(3000):  # until some work is journaled, so the kill lands mid-queue
            if await conn.fetchval(f"SELECT count(*) FROM {schema}.steps") >= 4:
                break
            await asyncio.sleep(0.01)
        await first.kill()
        pending = await conn.fetchval(
            f"SELECT count(*) FROM {schema}.workflows WHERE status <> 'SUCCESS'"
        )
        assert pending > 0
        second = Child("queue_app.py", env=env)
        await second.expect("READY")
        await _wait_all_done(conn, schema, 12)
        await second.kill()
        journaled_busy = await conn.fetch(
            f"SELECT workflow_id FROM {schema}.steps WHERE name = 'busy'"
        )
    finally:
        await conn.close()
    executions = Counter(line.split()[0] for line in log.read_text().splitlines())
    assert set(executions) == {f"job-{i}" for i in range(12)}
    assert len(journaled_busy) == 12
    # Only jobs in flight at the kill may have run their step twice.
    assert sum(n - 1 for n in executions.values()) <= 2


@workflow()
async def fans_out(tags: list[str]) -> list[str]:
    handles = [await plain.enqueue(tagged, tag) for tag in tags]
    return [await h.get_result() for h in handles]


async def test_enqueue_in_a_workflow_makes_journaled_children(runtime: RuntimeFactory) -> None:
    """A workflow that enqueues gets children with deterministic IDs, journaled in its steps,
    which a replay re-attaches to instead of enqueueing again."""
    async with runtime() as rt:
        handle = await rt.start_workflow(fans_out, ["c1", "c2"])
        assert await handle.get_result() == ["c1", "c2"]
        wid = handle.workflow_id
        steps = await rt.list_steps(wid)
        assert [s.child_workflow_id for s in steps] == [f"{wid}-1", f"{wid}-2"]
        children = await rt.list_workflows(queue_name="plain", workflow_id_prefix=wid)
        assert {c.workflow_id for c in children} == {f"{wid}-1", f"{wid}-2"}
        assert all(c.parent_workflow_id == wid for c in children)
        await rt.check_replay(wid)
        assert runs["c1"] == runs["c2"] == 1


async def test_concurrent_enqueues_share_statements_and_keep_deduplication(
    runtime: RuntimeFactory,
) -> None:
    """Enqueues that arrive together (written as one statement) all run, and among them only
    one of those sharing a deduplication ID gets in; the others raise."""
    async with runtime():
        gate = await serial.enqueue(blocker)
        await _event(arrivals, gate.workflow_id).wait()
        results = await asyncio.gather(
            *(
                serial.with_options(deduplication_id="same").enqueue(tagged, f"s{i}")
                for i in range(5)
            ),
            return_exceptions=True,
        )
        handles = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, BaseException)]
        assert len(handles) == 1
        assert len(refused) == 4 and all(isinstance(r, DuplicateWorkflowError) for r in refused)
        many = await asyncio.gather(*(plain.enqueue(tagged, f"m{i}") for i in range(40)))
        assert [await h.get_result() for h in many] == [f"m{i}" for i in range(40)]
        _event(gates, gate.workflow_id).set()
        assert (await handles[0].get_result()).startswith("s")
