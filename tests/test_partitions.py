"""Partitioned queues on a real PostgreSQL: per-partition limits across processes, fair progress
of every partition, per-partition rate windows, and a step enqueued as a one-step workflow."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import asyncpg
import pytest

from aiodurable import Queue, RateLimit, WorkflowHandle, WorkflowStatus, step, workflow
from aiodurable.testing import TestClock, hooks

from .conftest import RuntimeFactory
from .proc import Child

pytestmark = pytest.mark.anyio

PARTITIONS = ("a", "b", "c")
JOBS = 4  # per partition


def _env(database_url: str, schema: str, executor: str) -> dict[str, str]:
    return {
        "AIODURABLE_DATABASE_URL": database_url,
        "AIODURABLE_EXECUTOR_ID": executor,
        "TEST_SCHEMA": schema,
    }


def _peak(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    peak = current = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak


async def _sample_until_done(conn: asyncpg.Connection, schema: str) -> Counter[str]:
    """Watch the table while the children run, until every job is SUCCESS: the most workflows
    seen running at once in each partition."""
    most: Counter[str] = Counter()
    for _ in range(3000):
        rows = await conn.fetch(
            f"SELECT partition_key, count(*) AS n FROM {schema}.workflows"
            " WHERE status = 'PENDING' GROUP BY 1"
        )
        for r in rows:
            most[r["partition_key"]] = max(most[r["partition_key"]], r["n"])
        done = await conn.fetchval(
            f"SELECT count(*) FROM {schema}.workflows WHERE status = 'SUCCESS'"
        )
        if done == len(PARTITIONS) * JOBS:
            return most
        await asyncio.sleep(0.01)
    raise AssertionError("the partitioned queue did not drain within 30 s")


async def test_concurrency_holds_per_partition_across_two_processes(
    database_url: str, schema: str
) -> None:
    """Two processes dispatch a queue partitioned a/b/c with concurrency 1: no partition ever has
    two jobs running, neither in the table nor as the jobs record their runs, while all three
    partitions run at once (c's backlog, enqueued last, does not wait for a's and b's)."""
    # The dispatcher that only dispatches is up before the other enqueues, so both dispatch the
    # whole time (which of them wins each dequeue is their race).
    second = Child("partition_app.py", env=_env(database_url, schema, "p2"))
    await second.expect("READY")
    first = Child("partition_app.py", "enqueue", str(JOBS), env=_env(database_url, schema, "p1"))
    conn = await asyncpg.connect(database_url)
    try:
        await first.expect("READY")
        most = await _sample_until_done(conn, schema)
        rows = await conn.fetch(f"SELECT partition_key, output FROM {schema}.workflows")
    finally:
        await conn.close()
        await first.kill()
        await second.kill()
    assert max(most.values()) == 1, most
    outputs = [json.loads(r["output"]) for r in rows]
    assert all(o[3] == r["partition_key"] for o, r in zip(outputs, rows, strict=True))
    for tenant in PARTITIONS:
        runs = [(o[0], o[1]) for o in outputs if o[3] == tenant]
        assert len(runs) == JOBS
        assert _peak(runs) == 1, tenant
    assert _peak([(o[0], o[1]) for o in outputs]) == 3  # the partitions progress together
    assert {o[2] for o in outputs} <= {"p1", "p2"}
    # c's first job overlaps a's and b's first: it did not queue behind their backlogs.
    firsts = [min((o[0], o[1]) for o in outputs if o[3] == t) for t in PARTITIONS]
    assert max(start for start, _ in firsts) < min(end for _, end in firsts)


paced = Queue("partitions.paced", partitioned=True, limiter=RateLimit(limit=1, period=60.0))


@workflow()
async def stamp(tenant: str, index: int) -> str:
    return f"{tenant}{index}"


@step()
async def double(x: int) -> int:
    return 2 * x


async def test_rate_limit_windows_are_per_partition_and_steps_enqueue(
    runtime: RuntimeFactory,
) -> None:
    """A per-partition rate limit of 1 a minute starts one workflow of each partition at once
    (enqueued together) and the second of each when the windows open; a step enqueued in a
    partition runs as a one-step workflow whose result is the step's. (The seconds are enqueued
    once the firsts ran: on a clock that stands still, two workflows of one partition enqueued
    together would tie on their enqueue time, and either could leave first.)"""
    clock = TestClock()
    async with runtime(clock=clock, notify_fallback=3600) as rt:

        async def enqueue_each(index: int) -> list[WorkflowHandle[str]]:
            return await asyncio.gather(
                *(paced.with_options(partition_key=t).enqueue(stamp, t, index) for t in PARTITIONS)
            )

        firsts = await enqueue_each(0)
        async with asyncio.timeout(5):
            assert [await h.get_result() for h in firsts] == ["a0", "b0", "c0"]
        seconds = await enqueue_each(1)
        for h in seconds:
            assert (await h.get_status()).status is WorkflowStatus.ENQUEUED
        await clock.advance(60.0)  # the windows open: the dispatcher's timer, not its poll
        async with asyncio.timeout(5):
            assert [await h.get_result() for h in seconds] == ["a1", "b1", "c1"]
        info = await rt.get_workflow_status(seconds[0].workflow_id)
        assert info.partition_key == "a"
        async with hooks(rt).store.pool.acquire() as conn:
            starts = {
                r["workflow_id"]: r["started_at"] / 1000
                for r in await conn.fetch(
                    f"SELECT workflow_id, started_at FROM {rt.schema}.workflows"
                )
            }
        assert all(
            starts[s.workflow_id] - starts[f.workflow_id] >= 60
            for f, s in zip(firsts, seconds, strict=True)
        )
        doubled = await paced.with_options(partition_key="d").enqueue(double, 21)
        async with asyncio.timeout(5):
            assert await doubled.get_result() == 42
        info = await rt.get_workflow_status(doubled.workflow_id)
        assert info.name.startswith("aiodurable.step:") and info.partition_key == "d"
        assert [s.name for s in await rt.list_steps(doubled.workflow_id)] == ["double"]
