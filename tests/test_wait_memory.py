"""wait_first and as_completed on the in-memory backend: no database, well under a second.

A racer workflow records that it ran, then waits for a message on "go": a test ends it by sending
one (or cancelling it). Every test synchronises on the notifier's waiters, on journal writes and
on results, never on sleeps.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest

import aiodurable
from aiodurable import (
    NonDeterminismError,
    Runtime,
    SystemClock,
    WorkflowCancelled,
    WorkflowHandle,
    WorkflowNotFound,
    WorkflowStatus,
    step,
    workflow,
)
from aiodurable._notify import Notifier
from aiodurable._records import StepRow
from aiodurable._wait import WAIT_FIRST
from aiodurable.testing import MemoryBackend, TestClock, check_replay, crash_after, hooks

pytestmark = pytest.mark.anyio

calls: Counter[str] = Counter()
# Which of its children ``first_of`` leaves out (see the non-determinism test).
leave_out: set[str] = set()


@pytest.fixture(autouse=True)
def fresh_effects() -> None:
    calls.clear()
    leave_out.clear()


@asynccontextmanager
async def memory_runtime(
    backend: MemoryBackend, clock: TestClock | None = None
) -> AsyncIterator[Runtime]:
    async with Runtime(
        backend=backend, clock=clock, executor_id="wait-memory", app_version="wait-memory"
    ) as rt:
        yield rt


@step(name="wait_memory.record")
async def record(label: str) -> None:
    calls[label] += 1


@workflow(name="wait_memory.racer")
async def racer(tag: str) -> str:
    await record(f"run-{tag}")
    await aiodurable.recv("go", timeout=math.inf)
    return tag


async def start_racers(tags: list[str]) -> list[WorkflowHandle[str]]:
    """Start one racer per tag and publish their IDs as the event "children"."""
    handles = [await aiodurable.start_workflow(racer, tag) for tag in tags]
    await aiodurable.set_event("children", [h.workflow_id for h in handles])
    return handles


@workflow(name="wait_memory.first_of")
async def first_of(tags: list[str]) -> str:
    handles = await start_racers(tags)
    chosen = [h for h in handles if h.workflow_id not in leave_out]
    first = await aiodurable.wait_first(chosen)
    await record("after-wait")
    return first.workflow_id


@workflow(name="wait_memory.in_order")
async def in_order(tags: list[str]) -> list[str]:
    handles = await start_racers(tags)
    order = [h.workflow_id async for h in aiodurable.as_completed(handles)]
    await record("after-all")
    return order


async def children(rt: Runtime, parent: str) -> list[str]:
    ids = await rt.get_event(parent, "children", timeout=1)
    assert isinstance(ids, list)
    return ids


async def finish(rt: Runtime, workflow_id: str) -> None:
    """End a racer and wait until it has ended."""
    await rt.send(workflow_id, None, topic="go")
    async with asyncio.timeout(1):
        await (await rt.retrieve_workflow(workflow_id)).get_result()


async def status(rt: Runtime, workflow_id: str) -> WorkflowStatus:
    return (await rt.get_workflow_status(workflow_id)).status


async def result_within(handle: WorkflowHandle[Any], seconds: float = 1) -> Any:
    async with asyncio.timeout(seconds):
        return await handle.get_result()


def recorded_waits() -> tuple[asyncio.Queue[str], Callable[..., Awaitable[None]]]:
    """A queue of the workflow IDs wait_first records, and the checkpoint observer that fills
    it (for ``hooks(rt).on_checkpoint``)."""
    chosen: asyncio.Queue[str] = asyncio.Queue()

    async def observe(workflow_id: str, entry: StepRow) -> None:
        if entry.name == WAIT_FIRST and entry.child_workflow_id is not None:
            chosen.put_nowait(entry.child_workflow_id)

    return chosen, observe


# -- outside a workflow --------------------------------------------------------------------------


async def test_wait_first_returns_the_first_to_end_while_the_others_run(
    backend: MemoryBackend,
) -> None:
    async with memory_runtime(backend) as rt:
        handles = [await rt.start_workflow(racer, tag) for tag in "abc"]
        notifier = hooks(rt).notifier
        await notifier.until_waiting(3)
        waiting = asyncio.create_task(aiodurable.wait_first(handles))
        await notifier.until_waiting(4)  # one waiter for all three workflows
        assert not waiting.done()
        await rt.send(handles[1].workflow_id, None, topic="go")
        async with asyncio.timeout(1):
            first = await waiting
        assert first is handles[1]
        assert await first.get_result() == "b"
        assert await status(rt, handles[0].workflow_id) is WorkflowStatus.PENDING
        assert await status(rt, handles[2].workflow_id) is WorkflowStatus.PENDING
        assert notifier.waiting == 2  # the wait left no waiter behind


async def test_workflows_already_ended_count_at_once_the_earliest_first(
    backend: MemoryBackend, clock: TestClock
) -> None:
    async with memory_runtime(backend, clock) as rt:
        a, b, c = [await rt.start_workflow(racer, tag) for tag in "abc"]
        await finish(rt, c.workflow_id)
        await clock.advance(timedelta(seconds=1))
        await finish(rt, a.workflow_id)
        async with asyncio.timeout(1):
            assert await aiodurable.wait_first([a, b, c]) is c
            assert await aiodurable.wait_first([a, b]) is a
            assert [h async for h in aiodurable.as_completed([a, c])] == [c, a]


async def test_as_completed_yields_in_completion_order(backend: MemoryBackend) -> None:
    async with memory_runtime(backend) as rt:
        handles = [await rt.start_workflow(racer, tag) for tag in "abc"]
        await hooks(rt).notifier.until_waiting(3)
        seen: list[str] = []

        async def collect() -> None:
            seen.extend([await h.get_result() async for h in aiodurable.as_completed(handles)])

        collecting = asyncio.create_task(collect())
        for tag in "cab":
            await finish(rt, handles["abc".index(tag)].workflow_id)
        async with asyncio.timeout(1):
            await collecting
        assert seen == ["c", "a", "b"]


async def test_bad_arguments_fail_clearly(backend: MemoryBackend) -> None:
    async with memory_runtime(backend) as rt:
        handle = await rt.start_workflow(racer, "a")
        # Typed Any: the arguments are wrong on purpose, and each call raises before it
        # returns a coroutine.
        wait_first: Any = aiodurable.wait_first
        as_completed: Any = aiodurable.as_completed
        with pytest.raises(ValueError, match="at least one workflow handle"):
            wait_first([])
        with pytest.raises(TypeError, match="wrap a single handle in a list"):
            wait_first(handle)
        with pytest.raises(TypeError, match="not 'a'"):
            wait_first([handle, "a"])
        with pytest.raises(TypeError, match="as_completed"):
            as_completed([handle.workflow_id])
        none: list[WorkflowHandle[str]] = []
        assert [h async for h in aiodurable.as_completed(none)] == []
        unknown = hooks(rt).handle("no-such-workflow", "wait_memory.racer")
        with pytest.raises(WorkflowNotFound, match="no-such-workflow"):
            await aiodurable.wait_first([handle, unknown])


async def test_handles_of_two_runtimes_are_refused(backend: MemoryBackend) -> None:
    async with memory_runtime(backend) as one, memory_runtime(MemoryBackend()) as two:
        first = await one.start_workflow(racer, "a")
        second = await two.start_workflow(racer, "b")
        with pytest.raises(ValueError, match="2 different runtimes"):
            await aiodurable.wait_first([first, second])


# -- in a workflow -------------------------------------------------------------------------------


async def test_wait_first_in_a_workflow_is_journaled(backend: MemoryBackend) -> None:
    async with memory_runtime(backend) as rt:
        parent = await rt.start_workflow(first_of, list("abc"))
        a, b, c = await children(rt, parent.workflow_id)
        await hooks(rt).notifier.until_waiting(4)  # three racers and the parent
        await rt.send(b, None, topic="go")
        assert await result_within(parent) == b
        assert await status(rt, a) is WorkflowStatus.PENDING
        assert await status(rt, c) is WorkflowStatus.PENDING
        waits = [s for s in await rt.list_steps(parent.workflow_id) if s.name == WAIT_FIRST]
        assert [(s.child_workflow_id, s.output) for s in waits] == [(b, b)]
        await check_replay(parent.workflow_id, rt)
    assert calls == {"run-a": 1, "run-b": 1, "run-c": 1, "after-wait": 1}


async def test_a_replay_returns_the_recorded_handle_without_waiting(
    backend: MemoryBackend,
) -> None:
    """The parent records that b ended first and crashes; b is resumed (running again, so no
    workflow has ended) before the parent recovers: a wait would never end, the replay returns
    b at once. No racer's step runs twice."""
    async with memory_runtime(backend) as rt:
        reached = asyncio.Event()
        frozen = asyncio.get_running_loop().create_future()

        async def freeze(workflow_id: str, entry: StepRow) -> None:
            if entry.name == WAIT_FIRST:
                reached.set()
                await frozen  # the process "dies" right after the checkpoint

        try:
            with hooks(rt).on_checkpoint(freeze):
                parent = await rt.start_workflow(first_of, ["a", "b"])
                a, b = await children(rt, parent.workflow_id)
                await hooks(rt).notifier.until_waiting(3)
                await rt.cancel_workflow(b)
                async with asyncio.timeout(1):
                    await reached.wait()
                await rt.crash()
        finally:
            frozen.cancel()
        await rt.resume_workflow(b)
        await rt.restart()
        recovered = await rt.retrieve_workflow(parent.workflow_id)
        assert await result_within(recovered) == b
        assert await status(rt, a) is WorkflowStatus.PENDING
        assert await status(rt, b) is WorkflowStatus.PENDING
    assert calls == {"run-a": 1, "run-b": 1, "after-wait": 1}


async def test_as_completed_in_a_workflow_replays_the_same_order(backend: MemoryBackend) -> None:
    """Crashed after its second wait, the workflow recovers and yields the recorded order."""
    async with memory_runtime(backend) as rt:
        chosen, observe = recorded_waits()
        with hooks(rt).on_checkpoint(observe):
            parent_id = "in-order-1"
            crashing = asyncio.create_task(
                crash_after(
                    rt, in_order, list("abc"), step=WAIT_FIRST, occurrence=2, workflow_id=parent_id
                )
            )
            a, b, c = await children(rt, parent_id)
            await hooks(rt).notifier.until_waiting(4)
            await finish(rt, c)
            assert await asyncio.wait_for(chosen.get(), 1) == c
            await finish(rt, a)
            assert await asyncio.wait_for(chosen.get(), 1) == a
            recovered = await asyncio.wait_for(crashing, 1)
        await finish(rt, b)
        assert await result_within(recovered) == [c, a, b]
        await check_replay(parent_id, rt)
    assert calls == {"run-a": 1, "run-b": 1, "run-c": 1, "after-all": 1}


async def test_a_cancel_interrupts_a_workflow_waiting_in_wait_first(
    backend: MemoryBackend,
) -> None:
    async with memory_runtime(backend) as rt:
        parent = await rt.start_workflow(first_of, ["a"])
        await hooks(rt).notifier.until_waiting(2)
        await rt.cancel_workflow(parent.workflow_id)
        with pytest.raises(WorkflowCancelled):
            await result_within(parent)
        await hooks(rt).wait_stopped(parent.workflow_id)
    assert "after-wait" not in calls


async def test_check_replay_of_a_workflow_waiting_in_wait_first_returns_at_once(
    backend: MemoryBackend,
) -> None:
    async with memory_runtime(backend) as rt:
        parent = await rt.start_workflow(first_of, ["a", "b"])
        await hooks(rt).notifier.until_waiting(3)
        async with asyncio.timeout(1):
            await check_replay(parent.workflow_id, rt)
        assert calls == {"run-a": 1, "run-b": 1}  # the replay ran no step


async def test_a_recorded_workflow_no_longer_waited_on_is_a_mismatch(
    backend: MemoryBackend,
) -> None:
    async with memory_runtime(backend) as rt:
        parent = await rt.start_workflow(first_of, ["a", "b"])
        a, b = await children(rt, parent.workflow_id)
        await hooks(rt).notifier.until_waiting(3)
        await rt.send(b, None, topic="go")
        assert await result_within(parent) == b
        leave_out.add(b)  # the code now waits on a alone
        with pytest.raises(NonDeterminismError, match=f"{b}.*{a}"):
            await check_replay(parent.workflow_id, rt)


# -- the notifier's waiter on several keys -------------------------------------------------------


async def test_a_waiter_on_several_keys_wakes_on_any_and_counts_once() -> None:
    async def never() -> Any:
        raise AssertionError("not connected in this test")

    notifier = Notifier(never, "test", SystemClock())
    with pytest.raises(ValueError, match="at least one key"):
        notifier.watch_any([])
    with notifier.watch_any([("w", "x"), ("w", "y")]) as waiter:
        assert notifier.waiting == 1
        for key in (("w", "x", "SUCCESS"), ("w", "y", "ERROR")):
            waiter.clear()
            notifier.wake(*key)
            assert await waiter.wait()
    assert notifier.waiting == 0
