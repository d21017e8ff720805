"""Workflow logic on the in-memory backend: replay, recovery, cancellation, queues, no database.

Every runtime here is ``Runtime(backend=MemoryBackend())``; none of the PostgreSQL fixtures is
used, and the whole module runs in well under a second. A restart is a second runtime opened on
the same backend object after the first closed.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

import aiodurable
from aiodurable import (
    NonDeterminismError,
    NoRuntimeError,
    Queue,
    Retry,
    Runtime,
    WorkflowCancelled,
    WorkflowStatus,
    step,
    transaction,
    workflow,
)
from aiodurable.testing import MemoryBackend, TestClock, check_replay, crash_after

pytestmark = pytest.mark.anyio

# Side effects of the steps below, by label: a step that runs again shows here.
calls: Counter[str] = Counter()
# Set by a step when it finishes: lets another step wait for it (see ``tagged``).
finished: dict[str, asyncio.Event] = {}
completion_order: list[str] = []
# ``blocking`` sets ``entered`` when it starts and returns once ``release`` is set.
gates: dict[str, asyncio.Event] = {}


@pytest.fixture(autouse=True)
def fresh_effects() -> None:
    """Forget the side effects and events of the previous test."""
    calls.clear()
    completion_order.clear()
    finished.clear()
    finished.update({tag: asyncio.Event() for tag in "abc"})
    gates.clear()
    gates.update(entered=asyncio.Event(), release=asyncio.Event())


@asynccontextmanager
async def memory_runtime(
    backend: MemoryBackend, clock: TestClock | None = None, executor_id: str = "memory"
) -> AsyncIterator[Runtime]:
    """A runtime on ``backend``: open it again on the same backend to restart."""
    async with Runtime(
        backend=backend, clock=clock, executor_id=executor_id, app_version="memory-test"
    ) as rt:
        yield rt


# -- steps and workflows ---------------------------------------------------------------------


@step(name="memory.add")
async def add(a: int, b: int) -> int:
    calls["add"] += 1
    return a + b


@step(name="memory.record")
async def record(label: str) -> str:
    calls[label] += 1
    return label


@step(name="memory.tagged")
async def tagged(tag: str, after: str | None) -> str:
    """Finish once the step tagged ``after`` has finished: ``c``, then ``b``, then ``a``."""
    calls[tag] += 1
    if after is not None:
        await finished[after].wait()
    completion_order.append(tag)
    finished[tag].set()
    return f"{tag}!"


@step(name="memory.blocking")
async def blocking() -> None:
    gates["entered"].set()
    await gates["release"].wait()


@step(name="memory.charge")
async def charge() -> str:
    calls["charge"] += 1
    return "charged"


@step(name="memory.refund")
async def refund() -> str:
    calls["refund"] += 1
    return "refunded"


flaky_failures = 2


@step(name="memory.flaky", retry=Retry(max_attempts=3, interval=10, backoff=2))
async def flaky() -> str:
    calls["flaky"] += 1
    if calls["flaky"] <= flaky_failures:
        raise ConnectionError(f"attempt {calls['flaky']} fails")
    return "finally"


@workflow(name="memory.sum")
async def sum_to(n: int) -> int:
    total = 0
    for i in range(n):
        total = await add(total, i)
    return total


@workflow(name="memory.until_message")
async def until_message() -> list[object]:
    first = await record("before")
    message = await aiodurable.recv("go", timeout=math.inf)
    last = await record("after")
    return [first, message, last]


@workflow(name="memory.gather")
async def fan_out_gather() -> list[str]:
    results = await asyncio.gather(tagged("a", "b"), tagged("b", "c"), tagged("c", None))
    await aiodurable.recv("go", timeout=math.inf)
    return list(results)


@workflow(name="memory.task_group")
async def fan_out_task_group() -> list[str]:
    async with asyncio.TaskGroup() as tg:
        tasks = [
            tg.create_task(tagged("a", "b")),
            tg.create_task(tagged("b", "c")),
            tg.create_task(tagged("c", None)),
        ]
    await aiodurable.recv("go", timeout=math.inf)
    return [t.result() for t in tasks]


@workflow(name="memory.two_messages")
async def two_messages() -> list[object]:
    first = await aiodurable.recv("first", timeout=math.inf)
    await record("between")
    second = await aiodurable.recv("second", timeout=math.inf)
    return [first, second]


@workflow(name="memory.nap")
async def nap(seconds: float) -> str:
    await record("before-nap")
    await aiodurable.sleep(seconds)
    await record("after-nap")
    return "rested"


@workflow(name="memory.retrying")
async def retrying() -> str:
    return await flaky()


@workflow(name="memory.progress")
async def progress() -> str:
    await aiodurable.set_event("progress", 1)
    await aiodurable.recv("go", timeout=math.inf)
    await aiodurable.set_event("progress", 2)
    return "done"


@workflow(name="memory.waiting_child")
async def waiting_child() -> object:
    return await aiodurable.recv("never", timeout=math.inf)


# One workflow per kind of checkpoint that a cancel must interrupt: each calls ``after`` next.
@workflow(name="memory.cancel.step")
async def cancelled_in_step() -> None:
    await blocking()
    await record("after")


@workflow(name="memory.cancel.sleep")
async def cancelled_in_sleep() -> None:
    await aiodurable.sleep(60)
    await record("after")


@workflow(name="memory.cancel.recv")
async def cancelled_in_recv() -> None:
    await aiodurable.recv("never", timeout=math.inf)
    await record("after")


@workflow(name="memory.cancel.get_event")
async def cancelled_in_get_event() -> None:
    await aiodurable.get_event("memory-nobody", "never", timeout=math.inf)
    await record("after")


@workflow(name="memory.cancel.child")
async def cancelled_in_child() -> None:
    await waiting_child()
    await record("after")


serial = Queue("memory-serial", concurrency=1)


@workflow(name="memory.queued")
async def queued(tag: str) -> str:
    await record(f"start-{tag}")
    await aiodurable.recv("go", timeout=math.inf)
    return tag


@transaction(name="memory.tx")
async def insert_row(conn: asyncpg.Connection) -> None:
    await conn.execute("SELECT 1")


async def result_within(handle: aiodurable.WorkflowHandle[Any], seconds: float = 1) -> Any:
    """The workflow's result; ``TimeoutError`` if it does not come within ``seconds``."""
    async with asyncio.timeout(seconds):
        return await handle.get_result()


# -- running and recovering --------------------------------------------------------------------


async def test_a_workflow_of_steps_runs_and_returns(backend: MemoryBackend) -> None:
    async with memory_runtime(backend) as rt:
        handle = await rt.start_workflow(sum_to, 4)
        assert await result_within(handle) == 0 + 1 + 2 + 3
        steps = await rt.list_steps(handle.workflow_id)
        assert [(s.function_id, s.name, s.output) for s in steps] == [
            (1, "memory.add", 0),
            (2, "memory.add", 1),
            (3, "memory.add", 3),
            (4, "memory.add", 6),
        ]
        info = await handle.get_status()
        assert info.status is WorkflowStatus.SUCCESS
        assert info.output == 6
        assert rt.health().ok, rt.health().problems
    assert calls["add"] == 4


async def test_a_restarted_runtime_resumes_without_running_completed_steps_again(
    backend: MemoryBackend, clock: TestClock
) -> None:
    async with memory_runtime(backend, clock) as rt:
        handle = await rt.start_workflow(until_message)
        await clock.settle()  # waiting in recv
    assert calls == {"before": 1}

    async with memory_runtime(backend, clock) as rt:
        assert rt.recovered_workflow_ids == [handle.workflow_id]
        await rt.send(handle.workflow_id, "hello", topic="go")
        resumed = await rt.retrieve_workflow(handle.workflow_id)
        assert await result_within(resumed) == ["before", "hello", "after"]
    assert calls == {"before": 1, "after": 1}


async def test_crash_after_works_on_the_memory_store(backend: MemoryBackend) -> None:
    async with memory_runtime(backend) as rt:
        handle = await crash_after(rt, sum_to, 3, step="memory.add", occurrence=2)
        assert await result_within(handle) == 0 + 1 + 2
    assert calls["add"] == 3  # the two checkpointed before the crash did not run again


async def test_notifications_reach_every_runtime_of_the_backend(backend: MemoryBackend) -> None:
    async with memory_runtime(backend) as a, memory_runtime(backend) as b:
        assert (a.executor_id, b.executor_id) == ("memory", "memory-2")  # one holder per ID
        handle = await a.start_workflow(until_message)
        await b.send(handle.workflow_id, "from b", topic="go")
        assert await result_within(handle) == ["before", "from b", "after"]


async def test_a_runtime_whose_workflow_moved_to_another_executor_writes_nothing_more(
    backend: MemoryBackend, clock: TestClock
) -> None:
    async with memory_runtime(backend, clock) as rt:
        handle = await rt.start_workflow(until_message)
        await clock.settle()
        # Another executor takes the workflow over (as after this one's lease ran out).
        backend.state().workflows[handle.workflow_id].executor_id = "other"
        await rt.send(handle.workflow_id, "late", topic="go")
        await clock.settle()  # woken, its consume refused by the fence: stopped here
        assert [s.name for s in await rt.list_steps(handle.workflow_id)] == ["memory.record"]
    assert calls == {"before": 1}

    async with memory_runtime(backend, executor_id="other") as other:
        assert other.recovered_workflow_ids == [handle.workflow_id]
        moved = await other.retrieve_workflow(handle.workflow_id)
        assert await result_within(moved) == ["before", "late", "after"]
    assert calls == {"before": 1, "after": 1}


async def test_events_keep_the_latest_value_and_wake_their_readers(
    backend: MemoryBackend,
) -> None:
    async with memory_runtime(backend) as rt:
        handle = await rt.start_workflow(progress)
        async with asyncio.timeout(1):
            assert await rt.get_event(handle.workflow_id, "progress") == 1
        await rt.send(handle.workflow_id, None, topic="go")
        assert await result_within(handle) == "done"
        assert await rt.get_event(handle.workflow_id, "progress") == 2


async def test_cancel_resume_fork_and_listings_work_on_the_memory_backend(
    backend: MemoryBackend, clock: TestClock
) -> None:
    async with memory_runtime(backend, clock) as rt:
        handle = await rt.start_workflow(until_message)
        await clock.settle()
        await rt.cancel_workflow(handle.workflow_id)
        await rt.resume_workflow(handle.workflow_id)
        await rt.send(handle.workflow_id, "hello", topic="go")
        assert await result_within(handle) == ["before", "hello", "after"]

        fork = await rt.fork_workflow(handle.workflow_id, 3, new_workflow_id="memory-fork")
        assert await result_within(fork) == ["before", "hello", "after"]  # only step 3 ran
        assert calls == {"before": 1, "after": 2}

        done = await rt.list_workflows(status="SUCCESS", load_input=False)
        assert {w.workflow_id for w in done} == {handle.workflow_id, "memory-fork"}
        assert [w.inputs for w in done] == [None, None]
        forks = await rt.list_workflows(workflow_id_prefix="memory-f")
        assert [w.workflow_id for w in forks] == ["memory-fork"]


# -- replay --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fan_out", [fan_out_gather, fan_out_task_group], ids=["gather", "tg"])
async def test_concurrent_steps_take_their_function_ids_in_call_order(
    backend: MemoryBackend,
    clock: TestClock,
    fan_out: Callable[[], Coroutine[Any, Any, list[str]]],
) -> None:
    async with memory_runtime(backend, clock) as rt:
        handle = await rt.start_workflow(fan_out)
        await clock.settle()
        assert completion_order == ["c", "b", "a"]
        steps = await rt.list_steps(handle.workflow_id)
        assert [(s.function_id, s.output) for s in steps] == [(1, "a!"), (2, "b!"), (3, "c!")]

    async with memory_runtime(backend, clock) as rt:
        await rt.send(handle.workflow_id, None, topic="go")
        resumed = await rt.retrieve_workflow(handle.workflow_id)
        assert await result_within(resumed) == ["a!", "b!", "c!"]
    assert calls == {"a": 1, "b": 1, "c": 1}  # each replayed from its own entry


async def test_changed_code_raises_non_determinism_naming_both_steps(
    backend: MemoryBackend, clock: TestClock
) -> None:
    @workflow(name="memory.changing")
    async def before_the_change() -> str:
        await charge()
        await aiodurable.recv("go", timeout=math.inf)
        return "done"

    async with memory_runtime(backend, clock) as rt:
        handle = await rt.start_workflow(before_the_change)
        await clock.settle()

    @workflow(name="memory.changing")
    async def after_the_change() -> str:
        await refund()
        await aiodurable.recv("go", timeout=math.inf)
        return "done"

    async with memory_runtime(backend, clock) as rt:
        resumed = await rt.retrieve_workflow(handle.workflow_id)
        with pytest.raises(NonDeterminismError) as raised:
            await result_within(resumed)
    assert "'memory.charge'" in str(raised.value)
    assert "'memory.refund'" in str(raised.value)
    assert calls == {"charge": 1}


async def test_a_replayed_recv_returns_its_recorded_message_without_waiting(
    backend: MemoryBackend, clock: TestClock
) -> None:
    async with memory_runtime(backend, clock) as rt:
        handle = await rt.start_workflow(two_messages)
        await rt.send(handle.workflow_id, "one", topic="first")
        await clock.settle()  # past the first recv, waiting in the second
    assert calls == {"between": 1}

    async with memory_runtime(backend, clock) as rt:
        await rt.send(handle.workflow_id, "two", topic="second")  # no new "first" message
        resumed = await rt.retrieve_workflow(handle.workflow_id)
        assert await result_within(resumed) == ["one", "two"]
    assert calls == {"between": 1}


async def test_a_sleep_recovered_after_its_wake_time_does_not_wait(
    backend: MemoryBackend, clock: TestClock
) -> None:
    async with memory_runtime(backend, clock) as rt:
        handle = await rt.start_workflow(nap, 60)
        await clock.settle()  # asleep until 60 s from now
    await clock.advance(timedelta(seconds=61))  # the process was down past the wake time
    fired = clock.fired

    async with memory_runtime(backend, clock) as rt:
        resumed = await rt.retrieve_workflow(handle.workflow_id)
        assert await result_within(resumed) == "rested"
    assert clock.fired == fired  # no timer was needed: the sleep was over
    assert calls == {"before-nap": 1, "after-nap": 1}


async def test_check_replay_of_a_workflow_mid_sleep_returns_at_once(
    backend: MemoryBackend, clock: TestClock
) -> None:
    async with memory_runtime(backend, clock) as rt:
        handle = await rt.start_workflow(nap, 60)
        await clock.settle()  # 60 s to go
        async with asyncio.timeout(1):
            await check_replay(handle.workflow_id, rt)
        assert calls == {"before-nap": 1}  # replay ran no step
        assert clock.fired == 0


async def test_a_step_retries_with_backoff_on_the_clock(
    backend: MemoryBackend, clock: TestClock
) -> None:
    started = clock.now()
    async with memory_runtime(backend, clock) as rt, clock.auto_advance():
        handle = await rt.start_workflow(retrying)
        assert await result_within(handle) == "finally"
    assert calls["flaky"] == 3
    assert clock.now() - started == 10 + 20  # interval, then twice that


# -- cancellation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cancelled_workflow",
    [
        cancelled_in_step,
        cancelled_in_sleep,
        cancelled_in_recv,
        cancelled_in_get_event,
        cancelled_in_child,
    ],
    ids=["step", "sleep", "recv", "get_event", "child"],
)
async def test_a_cancel_stops_the_workflow_at_each_kind_of_checkpoint(
    backend: MemoryBackend,
    clock: TestClock,
    cancelled_workflow: Callable[[], Coroutine[Any, Any, None]],
) -> None:
    async with memory_runtime(backend, clock) as rt:
        handle = await rt.start_workflow(cancelled_workflow)
        if cancelled_workflow is cancelled_in_step:
            async with asyncio.timeout(1):
                await gates["entered"].wait()
        else:
            await clock.settle()
        await rt.cancel_workflow(handle.workflow_id)
        gates["release"].set()  # a step in progress runs to its end
        with pytest.raises(WorkflowCancelled):
            await result_within(handle)
        await clock.settle()  # nothing of the workflow runs any more
        assert (await handle.get_status()).status is WorkflowStatus.CANCELLED
        assert calls["after"] == 0
        assert clock.fired == 0


# -- queues and what needs PostgreSQL ---------------------------------------------------------


async def test_a_queue_of_concurrency_one_runs_its_workflows_one_at_a_time(
    backend: MemoryBackend, clock: TestClock
) -> None:
    async with memory_runtime(backend, clock) as rt:
        handles = [await serial.enqueue(queued, tag) for tag in "abc"]
        for tag, handle in zip("abc", handles, strict=True):
            await clock.settle()
            running = await rt.list_workflows(queue_name=serial.name, status="PENDING")
            assert [w.workflow_id for w in running] == [handle.workflow_id]
            await rt.send(handle.workflow_id, "go", topic="go")
            assert await result_within(handle) == tag
    assert calls == {"start-a": 1, "start-b": 1, "start-c": 1}


async def test_a_transaction_says_it_needs_postgresql(backend: MemoryBackend) -> None:
    async with memory_runtime(backend):
        with pytest.raises(NoRuntimeError, match="needs PostgreSQL"):
            await insert_row()
