"""Workflow streams on the in-memory backend: no database, well under a second.

A producer workflow waits for a message on "go" before it writes, so a reader can be registered
first; the tests synchronise on the notifier's waiters, on messages and on results, never on
sleeps. The SQL (group commit, fencing, NOTIFY) is tested on PostgreSQL in test_streams.py.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

import aiodurable
from aiodurable import (
    NoRuntimeError,
    Runtime,
    SerializationError,
    WorkflowNotFound,
    WorkflowStatus,
    step,
    workflow,
)
from aiodurable._records import StepRow
from aiodurable._stream import CLOSE_STREAM, PAGE, WRITE_STREAM
from aiodurable._stream_records import StreamPage
from aiodurable.testing import MemoryBackend, TestClock, crash_after, hooks

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def memory_runtime(backend: MemoryBackend, clock: TestClock) -> AsyncIterator[Runtime]:
    async with Runtime(
        backend=backend, clock=clock, executor_id="streams-memory", app_version="streams-memory"
    ) as rt:
        yield rt


@workflow(name="streams_memory.producer")
async def producer(values: list[Any], close: bool) -> int:
    await aiodurable.recv("go", timeout=math.inf)
    for value in values:
        await aiodurable.write_stream("out", value)
    if close:
        await aiodurable.close_stream("out")
        await aiodurable.recv("finish", timeout=math.inf)  # still running after the close
    return len(values)


@workflow(name="streams_memory.parked")
async def parked() -> None:
    await aiodurable.recv("go", timeout=math.inf)


@workflow(name="streams_memory.failing")
async def failing() -> None:
    await aiodurable.write_stream("out", "last words")
    raise RuntimeError("boom")


@step(name="streams_memory.mark")
async def mark() -> None:
    return None


@workflow(name="streams_memory.with_mark")
async def with_mark() -> None:
    await aiodurable.write_stream("out", "a")
    await aiodurable.write_stream("out", "b")
    await mark()
    await aiodurable.write_stream("out", "c")
    await aiodurable.close_stream("out")


@workflow(name="streams_memory.gathered")
async def gathered(count: int) -> None:
    await asyncio.gather(*(aiodurable.write_stream("out", i) for i in range(count)))
    await aiodurable.close_stream("out")


@workflow(name="streams_memory.after_close")
async def after_close() -> str:
    await aiodurable.write_stream("out", 1)
    await aiodurable.close_stream("out")
    await aiodurable.close_stream("out")  # a second close does nothing
    try:
        await aiodurable.write_stream("out", 2)
    except ValueError as exc:
        return str(exc)
    return "written"


@workflow(name="streams_memory.bad_value")
async def bad_value() -> str:
    try:
        await aiodurable.write_stream("out", object())
    except SerializationError:
        pass
    await aiodurable.write_stream("out", "ok")
    return "done"


@workflow(name="streams_memory.consumer")
async def consumer(source: str) -> list[Any]:
    return [value async for value in aiodurable.read_stream(source, "out")]


@step(name="streams_memory.write_in_step")
async def write_in_step() -> None:
    await aiodurable.write_stream("out", 1)


@workflow(name="streams_memory.stepper")
async def stepper() -> None:
    await write_in_step()


async def collect(rt: Runtime, workflow_id: str, key: str = "out") -> list[Any]:
    return [value async for value in rt.read_stream(workflow_id, key)]


async def start_reader(rt: Runtime, workflow_id: str) -> asyncio.Task[list[Any]]:
    """A reader task, returned once it is registered for notifications (it read, found no
    value, and waits)."""
    notifier = hooks(rt).notifier
    before = notifier.waiting
    task = asyncio.create_task(collect(rt, workflow_id))
    await notifier.until_waiting(before + 1)
    return task


async def test_readers_before_and_after_the_writes_see_every_value_in_order(
    backend: MemoryBackend, clock: TestClock
) -> None:
    """A reader that waits before the first write and one that starts after the close both
    yield every value in order, then end at the close while the workflow still runs."""
    values = ["a", {"b": 2}, [3], None, 5.5]
    async with memory_runtime(backend, clock) as rt:
        handle = await rt.start_workflow(producer, values, True)
        early = await start_reader(rt, handle.workflow_id)
        await rt.send(handle.workflow_id, "now", "go")
        assert await early == values
        assert await collect(rt, handle.workflow_id) == values
        assert (await handle.get_status()).status is WorkflowStatus.PENDING
        await rt.send(handle.workflow_id, "now", "finish")
        assert await handle.get_result() == len(values)


async def test_a_stream_ends_when_its_workflow_ends_without_a_close(
    backend: MemoryBackend, clock: TestClock
) -> None:
    """Without close_stream, readers end when the workflow ends: SUCCESS, ERROR or CANCELLED,
    after yielding every value it wrote; a stream never written to is empty."""
    async with memory_runtime(backend, clock) as rt:
        done = await rt.start_workflow(producer, [1, 2, 3], False)
        reader = await start_reader(rt, done.workflow_id)
        await rt.send(done.workflow_id, "now", "go")
        assert await reader == [1, 2, 3]
        assert await done.get_result() == 3

        failed = await rt.start_workflow(failing)
        with pytest.raises(RuntimeError, match="boom"):
            await failed.get_result()
        assert await collect(rt, failed.workflow_id) == ["last words"]

        cancelled = await rt.start_workflow(parked)
        reader = await start_reader(rt, cancelled.workflow_id)
        await rt.cancel_workflow(cancelled.workflow_id)
        assert await reader == []
        assert await collect(rt, cancelled.workflow_id, "never-written") == []


async def test_a_replay_after_a_crash_writes_nothing_twice(
    backend: MemoryBackend, clock: TestClock
) -> None:
    """Crashed after two writes, the recovered workflow replays them (no second row, no second
    journal entry) and writes the rest: the stream holds each value once, in order."""
    async with memory_runtime(backend, clock) as rt:
        handle = await crash_after(rt, with_mark, step="streams_memory.mark")
        await handle.get_result()
        wid = handle.workflow_id
        assert await collect(rt, wid) == ["a", "b", "c"]
        page = await hooks(rt).store.read_stream(wid, "out", 0, 100)
        assert page is not None
        assert [(i.offset, i.value is None) for i in page.items] == [
            (0, False),
            (1, False),
            (2, False),
            (3, True),
        ]
        names = [s.name for s in await rt.list_steps(wid)]
        assert names.count(WRITE_STREAM) == 3
        assert names.count(CLOSE_STREAM) == 1


async def test_concurrent_writes_of_one_workflow_keep_their_call_order(
    backend: MemoryBackend, clock: TestClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writes started together with asyncio.gather take offsets in call order: a reader sees
    0..n-1 in order, read a page at a time (not a query per value)."""
    count = 2 * PAGE + 10
    async with memory_runtime(backend, clock) as rt:
        handle = await rt.start_workflow(gathered, count)
        await handle.get_result()
        store = hooks(rt).store
        reads = 0
        read = store.read_stream

        async def counted(*args: Any) -> StreamPage | None:
            nonlocal reads
            reads += 1
            return await read(*args)

        monkeypatch.setattr(store, "read_stream", counted)
        assert await collect(rt, handle.workflow_id) == list(range(count))
        assert reads == 3


async def test_a_reader_waits_at_a_missing_offset_until_the_workflow_ends(
    backend: MemoryBackend, clock: TestClock
) -> None:
    """A value that committed before an earlier one (concurrent writes) waits for it; once the
    workflow has ended, whatever was written is yielded past the gap."""
    async with memory_runtime(backend, clock) as rt:
        handle = await rt.start_workflow(parked)
        wid = handle.workflow_id
        store = hooks(rt).store

        async def put(function_id: int, offset: int, value: bytes) -> None:
            entry = StepRow(function_id, WRITE_STREAM, "json", None, None, None, 1.0, 1.0)
            assert await store.write_stream(wid, entry, "out", offset, "json", value) is None

        reader = await start_reader(rt, wid)
        await put(101, 1, b'"one"')
        await hooks(rt).notifier.until_waiting(1)
        assert not reader.done()
        await put(100, 0, b'"zero"')
        await put(102, 4, b'"four"')
        await rt.cancel_workflow(wid)
        assert await reader == ["zero", "one", "four"]


async def test_unknown_workflows_bad_keys_and_misplaced_calls_are_refused(
    backend: MemoryBackend, clock: TestClock
) -> None:
    """Reading an unknown workflow raises WorkflowNotFound; an empty or non-text key
    ValueError; write_stream and close_stream outside a workflow or in a step NoRuntimeError."""
    async with memory_runtime(backend, clock) as rt:
        with pytest.raises(WorkflowNotFound):
            await collect(rt, "no-such-workflow")
        with pytest.raises(ValueError, match="stream key"):
            rt.read_stream("some-workflow", "")
        with pytest.raises(ValueError, match="stream key"):
            aiodurable.read_stream("some-workflow", 7)  # type: ignore[arg-type]
        with pytest.raises(NoRuntimeError, match="inside a workflow"):
            await aiodurable.write_stream("out", 1)
        with pytest.raises(NoRuntimeError, match="inside a workflow"):
            await aiodurable.close_stream("out")
        with pytest.raises(NoRuntimeError, match="inside a step"):
            await (await rt.start_workflow(stepper)).get_result()


async def test_a_write_after_close_raises_and_a_bad_value_writes_nothing(
    backend: MemoryBackend, clock: TestClock
) -> None:
    """write_stream after close_stream of the key raises ValueError naming the key and the
    fix; a value that cannot be encoded raises SerializationError and takes no offset."""
    async with memory_runtime(backend, clock) as rt:
        message = await (await rt.start_workflow(after_close)).get_result()
        assert "stream 'out'" in message
        assert "closed" in message
        assert "before closing" in message

        handle = await rt.start_workflow(bad_value)
        assert await handle.get_result() == "done"
        page = await hooks(rt).store.read_stream(handle.workflow_id, "out", 0, 10)
        assert page is not None
        assert [item.offset for item in page.items] == [0]
        assert await collect(rt, handle.workflow_id) == ["ok"]


async def test_a_workflow_can_read_another_workflows_stream(
    backend: MemoryBackend, clock: TestClock
) -> None:
    """read_stream works inside a workflow too (its values are not journaled)."""
    async with memory_runtime(backend, clock) as rt:
        source = await rt.start_workflow(producer, ["x", "y"], False)
        reading = await rt.start_workflow(consumer, source.workflow_id)
        await rt.send(source.workflow_id, "now", "go")
        assert await reading.get_result() == ["x", "y"]


async def test_a_fork_keeps_the_values_written_before_its_cut(
    backend: MemoryBackend, clock: TestClock
) -> None:
    async with memory_runtime(backend, clock) as rt:
        source = await rt.start_workflow(with_mark)
        await source.get_result()
        fork = await rt.fork_workflow(source.workflow_id, 3, new_workflow_id="the-fork")
        await fork.get_result()
        assert await collect(rt, "the-fork") == ["a", "b", "c"]
        assert await collect(rt, source.workflow_id) == ["a", "b", "c"]
