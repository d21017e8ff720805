"""Workflow streams on PostgreSQL: woken by NOTIFY (the fallback re-read an hour away), written
with their journal entries in group-committed statements, fenced, and exactly once across a
replay and across a SIGKILL of the writing process.

Broader coverage of the semantics, on the in-memory backend, is in test_streams_memory.py.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import asyncpg
import pytest

import aiodurable
from aiodurable import OwnershipLost, Runtime, WorkflowNotFound, step, workflow
from aiodurable._records import StepRow
from aiodurable._stream import CLOSE_STREAM, WRITE_STREAM
from aiodurable.testing import crash_after, hooks

from .conftest import RuntimeFactory
from .proc import Child

pytestmark = pytest.mark.anyio


@workflow(name="streams_pg.producer")
async def producer(count: int) -> int:
    await aiodurable.recv("go", timeout=math.inf)
    for i in range(count):
        await aiodurable.write_stream("out", i)
    await aiodurable.close_stream("out")
    await aiodurable.recv("finish", timeout=math.inf)  # still running after the close
    return count


@workflow(name="streams_pg.unclosed")
async def unclosed(count: int) -> int:
    await aiodurable.recv("go", timeout=math.inf)
    for i in range(count):
        await aiodurable.write_stream("out", f"v{i}")
    return count


@workflow(name="streams_pg.parked")
async def parked() -> None:
    await aiodurable.recv("go", timeout=math.inf)


@step(name="streams_pg.mark")
async def mark() -> None:
    return None


@workflow(name="streams_pg.with_mark")
async def with_mark() -> None:
    await aiodurable.write_stream("out", "a")
    await aiodurable.write_stream("out", "b")
    await mark()
    await aiodurable.write_stream("out", "c")
    await aiodurable.close_stream("out")


@workflow(name="streams_pg.gathered")
async def gathered(count: int) -> None:
    await aiodurable.recv("go", timeout=math.inf)
    await asyncio.gather(*(aiodurable.write_stream("out", i) for i in range(count)))
    await aiodurable.close_stream("out")


@workflow(name="streams_pg.after_close")
async def after_close() -> None:
    await aiodurable.close_stream("out")
    await aiodurable.write_stream("out", 1)


async def collect(rt: Runtime, workflow_id: str, key: str = "out") -> list[Any]:
    return [value async for value in rt.read_stream(workflow_id, key)]


async def start_reader(rt: Runtime, workflow_id: str) -> asyncio.Task[list[Any]]:
    """A reader task, returned once it waits for notifications."""
    notifier = hooks(rt).notifier
    before = notifier.waiting
    task = asyncio.create_task(collect(rt, workflow_id))
    await notifier.until_waiting(before + 1)
    return task


async def rows(database_url: str, schema: str, workflow_id: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetch(
            f'SELECT key, "offset", value, xmin::text AS tx FROM {schema}.streams'
            ' WHERE workflow_id = $1 ORDER BY key, "offset"',
            workflow_id,
        )
    finally:
        await conn.close()


async def test_readers_woken_by_notify_see_every_value_and_end_at_close(
    runtime: RuntimeFactory,
) -> None:
    """A reader waiting before the first write (no fallback re-read for an hour) and one
    started after the close yield every value in order and end at the close; values spanning
    several pages come through."""
    count = 600
    async with runtime(notify_fallback=3600) as rt:
        handle = await rt.start_workflow(producer, count)
        early = await start_reader(rt, handle.workflow_id)
        await rt.send(handle.workflow_id, "now", "go")
        assert await asyncio.wait_for(early, 30) == list(range(count))
        assert await collect(rt, handle.workflow_id) == list(range(count))
        await rt.send(handle.workflow_id, "now", "finish")
        assert await handle.get_result() == count


async def test_readers_end_when_the_workflow_ends_without_a_close(
    runtime: RuntimeFactory,
) -> None:
    """Without close_stream, a waiting reader ends at the workflow's end (its status NOTIFY),
    SUCCESS or CANCELLED, after every value."""
    async with runtime(notify_fallback=3600) as rt:
        handle = await rt.start_workflow(unclosed, 3)
        reader = await start_reader(rt, handle.workflow_id)
        await rt.send(handle.workflow_id, "now", "go")
        assert await asyncio.wait_for(reader, 30) == ["v0", "v1", "v2"]

        waiting = await rt.start_workflow(parked)
        reader = await start_reader(rt, waiting.workflow_id)
        await rt.cancel_workflow(waiting.workflow_id)
        assert await asyncio.wait_for(reader, 30) == []


async def test_a_replay_after_a_crash_writes_nothing_twice(
    runtime: RuntimeFactory, database_url: str, schema: str
) -> None:
    """Crashed after two writes, the recovered workflow writes only the third value and the
    close: four rows, one journal entry each, the first two untouched by the replay."""
    async with runtime() as rt:
        handle = await crash_after(rt, with_mark, step="streams_pg.mark")
        await handle.get_result()
        wid = handle.workflow_id
        assert await collect(rt, wid) == ["a", "b", "c"]
        names = [s.name for s in await rt.list_steps(wid)]
        assert names.count(WRITE_STREAM) == 3
        assert names.count(CLOSE_STREAM) == 1
    found = await rows(database_url, schema, wid)
    assert [(r["offset"], r["value"]) for r in found] == [
        (0, b'"a"'),
        (1, b'"b"'),
        (2, b'"c"'),
        (3, None),
    ]


async def test_a_fork_keeps_the_values_written_before_its_cut(
    runtime: RuntimeFactory, database_url: str, schema: str
) -> None:
    """A fork from the step between the second and third writes copies the first two values and
    writes the rest itself: its stream holds each value once, in order, and is closed."""
    async with runtime() as rt:
        source = await rt.start_workflow(with_mark)
        await source.get_result()
        fork = await rt.fork_workflow(source.workflow_id, 3, new_workflow_id="the-fork")
        await fork.get_result()
        assert await collect(rt, "the-fork") == ["a", "b", "c"]
    found = await rows(database_url, schema, "the-fork")
    assert [(r["offset"], r["value"]) for r in found] == [
        (0, b'"a"'),
        (1, b'"b"'),
        (2, b'"c"'),
        (3, None),
    ]


async def test_concurrent_writes_are_group_committed(
    runtime: RuntimeFactory, database_url: str, schema: str
) -> None:
    """Many writes at once, from one workflow and from many, all land in order, in far fewer
    transactions than values (rows of one statement share their inserting transaction)."""
    per_workflow, workflows = 100, 8
    async with runtime(notify_fallback=3600) as rt:
        handles = [await rt.start_workflow(gathered, per_workflow) for _ in range(workflows)]
        readers = [await start_reader(rt, h.workflow_id) for h in handles]
        for handle in handles:
            await rt.send(handle.workflow_id, "now", "go")
        for handle, reader in zip(handles, readers, strict=True):
            await handle.get_result()
            assert await asyncio.wait_for(reader, 30) == list(range(per_workflow))
    conn = await asyncpg.connect(database_url)
    try:
        counts = await conn.fetchrow(
            f"SELECT count(*), count(DISTINCT xmin::text) FROM {schema}.streams"
            " WHERE value IS NOT NULL"
        )
    finally:
        await conn.close()
    assert counts is not None
    written, transactions = counts
    assert written == per_workflow * workflows
    assert transactions < written / 5, (written, transactions)


async def test_writes_are_fenced_and_idempotent_per_function_id(
    runtime: RuntimeFactory, database_url: str, schema: str
) -> None:
    """A write for a workflow another executor owns raises OwnershipLost and writes nothing
    (the other writes of its batch land); a function ID already journaled writes no second
    row and returns the entry recorded."""
    async with runtime(notify_fallback=3600) as rt:
        mine = await rt.start_workflow(parked)
        theirs = await rt.start_workflow(parked)
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(
                f"UPDATE {schema}.workflows SET executor_id = 'someone-else'"
                " WHERE workflow_id = $1",
                theirs.workflow_id,
            )
        finally:
            await conn.close()
        store = hooks(rt).store

        def entry(function_id: int) -> StepRow:
            return StepRow(function_id, WRITE_STREAM, "json", None, None, None, 1.0, 1.0)

        outcomes = await asyncio.gather(
            *(
                store.write_stream(mine.workflow_id, entry(100 + i), "k", i, "json", b"1")
                for i in range(5)
            ),
            store.write_stream(theirs.workflow_id, entry(100), "k", 0, "json", b"1"),
            return_exceptions=True,
        )
        assert outcomes[:5] == [None] * 5
        assert isinstance(outcomes[5], OwnershipLost)
        again = await store.write_stream(mine.workflow_id, entry(100), "k", 9, "json", b"2")
        assert again is not None and again.function_id == 100
        await rt.cancel_workflow(mine.workflow_id)
    assert [r["offset"] for r in await rows(database_url, schema, mine.workflow_id)] == [
        0,
        1,
        2,
        3,
        4,
    ]
    assert await rows(database_url, schema, theirs.workflow_id) == []


async def test_unknown_workflow_and_write_after_close(runtime: RuntimeFactory) -> None:
    """Reading the stream of an unknown workflow raises WorkflowNotFound; write_stream after
    close_stream fails the workflow with a ValueError naming the key."""
    async with runtime() as rt:
        with pytest.raises(WorkflowNotFound):
            await collect(rt, "no-such-workflow")
        handle = await rt.start_workflow(after_close)
        with pytest.raises(ValueError, match=r"stream 'out' .* is closed"):
            await handle.get_result()


async def test_sigkill_between_two_writes_keeps_every_value_exactly_once(
    runtime: RuntimeFactory, database_url: str, schema: str
) -> None:
    """A process killed with SIGKILL between two writes, started again, finishes the workflow:
    a reader in another process yields every value once, in order, across the crash, and the
    table holds each value once."""
    env = {
        "AIODURABLE_DATABASE_URL": database_url,
        "AIODURABLE_EXECUTOR_ID": "stream-app",
        "TEST_SCHEMA": schema,
    }
    wid, count, block_at = "numbers-1", 20, 7
    first = Child("stream_app.py", wid, str(count), str(block_at), env={**env, "STREAM_BLOCK": "1"})
    await first.expect("WROTE")
    async with runtime(executor_id="reader", notify_fallback=3600) as rt:
        reader = asyncio.create_task(collect(rt, wid, "numbers"))
        await first.kill()
        second = Child("stream_app.py", wid, str(count), str(block_at), env=env)
        assert f"RESULT {count}" in await second.expect("RESULT")
        assert await second.wait() == 0
        assert await asyncio.wait_for(reader, 30) == list(range(count))
    found = await rows(database_url, schema, wid)
    assert [r["offset"] for r in found] == list(range(count + 1))
    assert [r["value"] for r in found] == [str(i).encode() for i in range(count)] + [None]
