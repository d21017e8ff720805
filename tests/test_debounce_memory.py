"""The Debouncer on the in-memory backend with a TestClock: bursts, their arguments, their timing,
and a debounce journaled in a workflow. No database and no real waiting."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

import aiodurable
from aiodurable import Debouncer, Runtime, WorkflowStatus, step, workflow
from aiodurable._debounce import DEBOUNCE
from aiodurable.testing import MemoryBackend, TestClock, check_replay, crash_after

pytestmark = pytest.mark.anyio

runs: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def fresh_runs() -> None:
    runs.clear()


@workflow(name="debounce_memory.reindex")
async def reindex(doc: str, version: int) -> str:
    runs[doc] += 1
    return f"{doc}@{version}"


@step(name="debounce_memory.after")
async def after() -> None:
    runs["after"] += 1


deb = Debouncer(reindex, period=10.0)
bounded = Debouncer(reindex, period=10.0, max_wait=25.0)


@workflow(name="debounce_memory.editor")
async def editor(doc: str) -> str:
    handle = await deb.debounce(doc, doc, 7)
    await after()
    return handle.workflow_id


@asynccontextmanager
async def memory_runtime(backend: MemoryBackend, clock: TestClock) -> AsyncIterator[Runtime]:
    async with Runtime(
        backend=backend, clock=clock, executor_id="debounce-memory", app_version="debounce"
    ) as rt:
        yield rt


async def status(rt: Runtime, workflow_id: str) -> WorkflowStatus:
    return (await rt.get_workflow_status(workflow_id)).status


async def test_a_burst_runs_once_with_the_last_calls_arguments(
    backend: MemoryBackend, clock: TestClock
) -> None:
    async with memory_runtime(backend, clock) as rt:
        handles = []
        for version in range(1, 4):
            handles.append(await deb.debounce("doc-1", "doc-1", version))
            await clock.advance(6)  # each call 6 s after the previous one: still one burst
        assert len({h.workflow_id for h in handles}) == 1
        burst = handles[0].workflow_id
        assert await status(rt, burst) is WorkflowStatus.ENQUEUED
        assert runs == {}
        await clock.advance(3.9)  # 9.9 s after the last call
        assert await status(rt, burst) is WorkflowStatus.ENQUEUED
        await clock.advance(0.1)  # period after the last call: the burst closes and runs
        assert await asyncio.wait_for(handles[0].get_result(), 5) == "doc-1@3"
        assert runs == {"doc-1": 1}
        # A call after the burst closed opens the next one: another workflow.
        later = await deb.debounce("doc-1", "doc-1", 4)
        assert later.workflow_id != burst
        await clock.advance(10)
        assert await asyncio.wait_for(later.get_result(), 5) == "doc-1@4"
        assert runs == {"doc-1": 2}


async def test_keys_burst_apart(backend: MemoryBackend, clock: TestClock) -> None:
    async with memory_runtime(backend, clock):
        a = await deb.debounce("a", "a", 1)
        b = await deb.debounce("b", "b", 2)
        assert a.workflow_id != b.workflow_id
        await clock.advance(10)
        assert await asyncio.wait_for(a.get_result(), 5) == "a@1"
        assert await asyncio.wait_for(b.get_result(), 5) == "b@2"


async def test_max_wait_bounds_a_burst_that_keeps_going(
    backend: MemoryBackend, clock: TestClock
) -> None:
    async with memory_runtime(backend, clock) as rt:
        first = await bounded.debounce("doc", "doc", 0)
        for version in range(1, 5):  # calls at 6, 12, 18, 24 s: never 10 s apart
            await clock.advance(6)
            assert (await bounded.debounce("doc", "doc", version)).workflow_id == first.workflow_id
        await clock.advance(0.9)  # 24.9 s after the first call
        assert await status(rt, first.workflow_id) is WorkflowStatus.ENQUEUED
        await clock.advance(0.1)  # max_wait after the first call, 1 s after the last
        assert await asyncio.wait_for(first.get_result(), 5) == "doc@4"


async def test_a_cancelled_burst_is_replaced_by_a_new_one(
    backend: MemoryBackend, clock: TestClock
) -> None:
    async with memory_runtime(backend, clock) as rt:
        first = await deb.debounce("doc", "doc", 1)
        await rt.cancel_workflow(first.workflow_id)
        second = await deb.debounce("doc", "doc", 2)
        assert second.workflow_id != first.workflow_id
        await clock.advance(10)
        assert await asyncio.wait_for(second.get_result(), 5) == "doc@2"
        assert await status(rt, first.workflow_id) is WorkflowStatus.CANCELLED
        assert runs == {"doc": 1}


async def test_a_burst_survives_a_restart(backend: MemoryBackend, clock: TestClock) -> None:
    """The burst is in the store, not in the process: a runtime opened later closes it."""
    async with memory_runtime(backend, clock):
        handle = await deb.debounce("doc", "doc", 1)
    async with memory_runtime(backend, clock) as rt:
        await clock.advance(10)
        reopened = await rt.retrieve_workflow(handle.workflow_id)
        assert await asyncio.wait_for(reopened.get_result(), 5) == "doc@1"


async def test_debounce_in_a_workflow_replays_the_same_handle(
    backend: MemoryBackend, clock: TestClock
) -> None:
    """Crashed right after its debounce was journaled, the workflow recovers with the same
    burst; the burst runs once."""
    async with memory_runtime(backend, clock) as rt:
        recovered = await crash_after(rt, editor, "doc", step=DEBOUNCE, workflow_id="editor-1")
        burst = await asyncio.wait_for(recovered.get_result(), 5)
        assert burst == "editor-1-1"  # the ID the workflow gave the burst it opened
        await clock.advance(10)
        assert await asyncio.wait_for(rt.retrieve_workflow(burst), 5) is not None
        assert await asyncio.wait_for((await rt.retrieve_workflow(burst)).get_result(), 5) == (
            "doc@7"
        )
        await check_replay("editor-1", rt)
        assert [s.child_workflow_id for s in await rt.list_steps("editor-1")][:1] == [burst]
    assert runs == {"doc": 1, "after": 1}


async def test_bad_input_is_refused_before_anything_is_written(
    backend: MemoryBackend, clock: TestClock
) -> None:
    async def plain() -> None: ...

    with pytest.raises(TypeError, match="workflow"):
        Debouncer(plain, period=1.0)
    with pytest.raises(ValueError, match="period"):
        Debouncer(reindex, period=0)
    with pytest.raises(ValueError, match="infinite period"):
        Debouncer(reindex, period=float("inf"))
    with pytest.raises(ValueError, match="max_wait >= period"):
        Debouncer(reindex, period=5.0, max_wait=1.0)
    async with memory_runtime(backend, clock) as rt:
        with pytest.raises(ValueError, match="debounce key"):
            await deb.debounce("", "doc", 1)
        with pytest.raises(TypeError):
            await deb.debounce("doc", "doc", 1, 2)  # type: ignore[call-arg]  # one too many
        assert await rt.list_workflows() == []


def test_repr_names_the_workflow_and_the_timing() -> None:
    assert repr(bounded) == (
        "aiodurable.Debouncer('debounce_memory.reindex', period=10.0, max_wait=25.0)"
    )
    assert aiodurable.Debouncer is Debouncer
