"""Retention on the in-memory backend and the TestClock: which finished workflows
``garbage_collect`` deletes (by age, by count, both), everything that goes with them, what it
never touches (PENDING, ENQUEUED, the children of unfinished parents), the periodic collection
of ``Runtime(retention=...)`` on the runtime's clock, and bad arguments. (PostgreSQL's
statements, batches, locks and the command line: test_retention.py.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import aiodurable
from aiodurable import Runtime, WorkflowHandle, WorkflowNotFound, WorkflowStatus
from aiodurable._cli import main
from aiodurable._cli_gc import duration
from aiodurable._retention import interval
from aiodurable.testing import MemoryBackend, TestClock, clock_of
from aiodurable.testing._memory_state import MemoryState

pytestmark = pytest.mark.anyio

START = datetime(2026, 3, 2, 12, 0, 0, tzinfo=UTC)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
LONG = 30 * 86400.0  # a recv timeout no test's clock reaches


@aiodurable.step(name="gc-note")
async def note(tag: str) -> str:
    return tag.upper()


@aiodurable.workflow(name="gc-rich")
async def rich(tag: str) -> str:
    """Leaves a row in every table keyed by its ID: a journal, an event and its history, a
    closed stream, a wait deadline and a consumed idempotent message."""
    loud = await note(tag)
    await aiodurable.set_event("state", loud)
    await aiodurable.write_stream("out", loud)
    await aiodurable.close_stream("out")
    got = await aiodurable.recv("in", timeout=LONG)
    return f"{loud}:{got}"


@aiodurable.workflow(name="gc-quick")
async def quick(n: int) -> int:
    return n


@aiodurable.workflow(name="gc-boom")
async def boom() -> None:
    await note("boom")
    raise ValueError("boom")


@aiodurable.workflow(name="gc-parked")
async def parked() -> object:
    return await aiodurable.recv("go", timeout=LONG)


@aiodurable.workflow(name="gc-parent")
async def parent(wait_for_child: bool) -> str:
    child = await aiodurable.start_workflow(parked)
    if not wait_for_child:
        return child.workflow_id
    await aiodurable.recv("go", timeout=LONG)
    return f"child said {await child.get_result()}"


gc_queue = aiodurable.Queue("gc-memory-queue", concurrency=1)


@asynccontextmanager
async def opened(
    backend: MemoryBackend, clock: TestClock, **options: Any
) -> AsyncIterator[Runtime]:
    async with Runtime(
        backend=backend, clock=clock, executor_id="gc", app_version="v1", **options
    ) as rt:
        yield rt


def rows_of(state: MemoryState, wid: str) -> dict[str, int]:
    """How many rows each table keyed by a workflow holds for ``wid``."""
    return {
        "workflows": int(wid in state.workflows),
        "steps": len(state.steps.get(wid, {})),
        "events": sum(1 for w, _ in state.events if w == wid),
        "event_history": len(state.event_history.get(wid, {})),
        "streams": sum(len(rows) for (w, _), rows in state.streams.items() if w == wid),
        "messages": sum(len(q) for (w, _), q in state.messages.items() if w == wid),
        "message_keys": sum(1 for w, _ in state.message_keys if w == wid),
        "waits": sum(1 for w, _ in state.waits if w == wid),
    }


async def finish_rich(rt: Runtime, tag: str) -> str:
    """Run ``rich`` to the end (its message sent with an idempotency key), then send it a
    message it will never read: every table gets a row."""
    handle = await rt.start_workflow(rich, tag)
    await clock_of(rt).settle()  # (waiting in recv: its deadline is recorded)
    await rt.send(handle.workflow_id, "hi", "in", idempotency_key=f"key-{tag}")
    assert await handle.get_result() == f"{tag.upper()}:hi"
    await rt.send(handle.workflow_id, "too late", "after")
    return handle.workflow_id


async def test_collects_old_finished_workflows_with_every_row(
    backend: MemoryBackend, clock: TestClock
) -> None:
    """Finished workflows last updated before the cutoff go, each with its journal, events,
    history, streams, messages (a message sent after it finished included), idempotency keys and
    wait deadlines; younger finished ones, and PENDING and ENQUEUED ones however old, stay
    untouched."""
    state = backend.state()
    async with opened(backend, clock) as rt:
        old = await finish_rich(rt, "old")
        failed = await rt.start_workflow(rich, "bad")
        await rt.cancel_workflow(failed.workflow_id)
        errored = await rt.start_workflow(boom)
        with pytest.raises(ValueError, match="boom"):
            await errored.get_result()
        stuck = await rt.start_workflow(quick, 1)
        await stuck.get_result()
        state.workflows[stuck.workflow_id].status = "MAX_RECOVERY_ATTEMPTS_EXCEEDED"
        running = await gc_queue.enqueue(parked)
        queued = await gc_queue.enqueue(quick, 2)
        await clock.settle()
        assert (await running.get_status()).status is WorkflowStatus.PENDING
        assert (await queued.get_status()).status is WorkflowStatus.ENQUEUED
        await clock.advance(2 * DAY)
        young = await finish_rich(rt, "young")

        kept = [young, running.workflow_id, queued.workflow_id]
        before = {wid: rows_of(state, wid) for wid in kept}
        assert all(count > 0 for count in rows_of(state, old).values()), rows_of(state, old)
        assert await aiodurable.garbage_collect(older_than=DAY) == 4
        for wid in (old, failed.workflow_id, errored.workflow_id, stuck.workflow_id):
            assert set(rows_of(state, wid).values()) == {0}, wid
        assert {wid: rows_of(state, wid) for wid in kept} == before
        with pytest.raises(WorkflowNotFound):
            await rt.send(old, "to nobody", "after")
        # The PENDING one runs on, and the queue moves on to the ENQUEUED one.
        await rt.send(running.workflow_id, "done", "go")
        assert await running.get_result() == "done"
        assert await queued.get_result() == 2
        assert await rt.garbage_collect(keep_latest=0) == 3
        assert await rt.list_workflows() == []


async def test_keep_latest_alone_and_with_older_than(
    backend: MemoryBackend, clock: TestClock
) -> None:
    """``keep_latest`` keeps the newest finished workflows by last update (ties broken by ID,
    so exactly that many stay); with ``older_than`` too, a workflow goes only when neither
    keeps it."""
    async with opened(backend, clock) as rt:
        ids = []
        for n in range(6):  # finished at 0 h, 1 h, ... 5 h
            ids.append((await rt.start_workflow(quick, n)).workflow_id)
            await (await rt.retrieve_workflow(ids[-1])).get_result()
            await clock.advance(HOUR)
        # Now 6 h: older_than keeps those of 3 h and later, keep_latest 4 those of 2 h on.
        assert await rt.garbage_collect(older_than=timedelta(hours=3.5), keep_latest=4) == 2
        assert await rt.garbage_collect(older_than=timedelta(hours=1.5), keep_latest=3) == 1
        left = sorted(w.workflow_id for w in await rt.list_workflows())
        assert left == sorted(ids[3:])
        assert await rt.garbage_collect(keep_latest=5) == 0
        assert await rt.garbage_collect(keep_latest=2) == 1
        assert sorted(w.workflow_id for w in await rt.list_workflows()) == sorted(ids[4:])
        # Three finished at the same instant: keep_latest=1 keeps exactly one, the last by ID.
        same = [(await rt.start_workflow(quick, n)).workflow_id for n in range(3)]
        for wid in same:
            await (await rt.retrieve_workflow(wid)).get_result()
        assert await rt.garbage_collect(keep_latest=1) == 4
        assert [w.workflow_id for w in await rt.list_workflows()] == [max(same)]
        assert await rt.garbage_collect(keep_latest=0) == 1


async def test_children_of_unfinished_parents_stay(
    backend: MemoryBackend, clock: TestClock
) -> None:
    """A finished child stays while its parent is PENDING (the parent reads its outcome, on
    replay too), and goes once the parent has finished; a finished parent goes while its child
    still runs, and the child runs on."""
    async with opened(backend, clock) as rt:
        waiting = await rt.start_workflow(parent, True)
        await clock.settle()
        (child,) = [w for w in await rt.list_workflows(name="gc-parked") if w.parent_workflow_id]
        await rt.send(child.workflow_id, "ok", "go")
        assert await (await rt.retrieve_workflow(child.workflow_id)).get_result() == "ok"
        assert await rt.garbage_collect(keep_latest=0) == 0
        await rt.send(waiting.workflow_id, None, "go")
        assert await waiting.get_result() == "child said ok"
        assert await rt.garbage_collect(keep_latest=0) == 2

        done: WorkflowHandle[str] = await rt.start_workflow(parent, False)
        orphan = await done.get_result()
        assert await rt.garbage_collect(keep_latest=0) == 1
        with pytest.raises(WorkflowNotFound):
            await rt.get_workflow_status(done.workflow_id)
        await rt.send(orphan, "still here", "go")
        assert await (await rt.retrieve_workflow(orphan)).get_result() == "still here"


async def test_runtime_retention_collects_periodically_on_its_clock(
    backend: MemoryBackend,
) -> None:
    """``Runtime(retention=1 day)`` collects as it begins and then every hour of the runtime's
    clock: a workflow goes within the hour after it is a day old, a younger one stays; a
    runtime without ``retention`` runs no such loop."""
    clock = TestClock(START)
    async with opened(backend, clock, retention=DAY) as rt:
        assert "retention" in [loop.name for loop in rt.health().loops]
        first = await rt.start_workflow(quick, 1)
        await first.get_result()
        await clock.advance(timedelta(hours=23))
        await clock.advance(HOUR)
        assert len(await rt.list_workflows()) == 1  # exactly a day old: not older
        second = await rt.start_workflow(quick, 2)
        await second.get_result()
        await clock.advance(HOUR)
        assert [w.workflow_id for w in await rt.list_workflows()] == [second.workflow_id]
    async with opened(backend, clock) as rt:
        assert "retention" not in [loop.name for loop in rt.health().loops]


async def test_bad_arguments_name_the_fix(backend: MemoryBackend, clock: TestClock) -> None:
    """No argument, a negative or non-timedelta age, a negative or non-int count, a
    non-positive retention and an unreadable CLI duration are refused with what to give."""
    with pytest.raises(ValueError, match=r"needs older_than=.*keep_latest="):
        await aiodurable.garbage_collect()  # (refused before any runtime is looked for)
    async with opened(backend, clock) as rt:
        with pytest.raises(ValueError, match=r"needs older_than="):
            await rt.garbage_collect()
        for age in (timedelta(seconds=-1), 30, "30d"):
            with pytest.raises(ValueError, match=r"older_than= must be a timedelta"):
                await rt.garbage_collect(older_than=age)  # type: ignore[arg-type]
        for count in (-1, True, 2.0, "3", 2**63):
            with pytest.raises(ValueError, match=r"keep_latest= must be a whole number"):
                await rt.garbage_collect(keep_latest=count)  # type: ignore[arg-type]
    for retention in (timedelta(0), timedelta(days=-1), 86400, "30d"):
        with pytest.raises(ValueError, match=r"Runtime\(retention=\) must be a positive"):
            Runtime(backend=backend, retention=retention)  # type: ignore[arg-type]
    assert duration("30d") == timedelta(days=30) and duration("1d12h") == timedelta(hours=36)
    assert (duration("90m"), duration("45s")) == (timedelta(minutes=90), timedelta(seconds=45))
    assert interval(timedelta(days=30)) == 3600 and interval(DAY) == 3600
    assert interval(timedelta(hours=2)) == 300 and interval(timedelta(seconds=2)) == 1


def test_command_line_refuses_a_bad_duration_or_no_limit(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``workflow gc`` with an unreadable duration, or with neither ``--older-than`` nor
    ``--keep-latest``, is a usage error (exit 2) saying what to give, before it connects."""
    with pytest.raises(SystemExit) as exited:
        main(["workflow", "gc", "--older-than", "3x"])
    assert exited.value.code == 2
    assert "'3x' is not a duration; use whole numbers with a unit" in capsys.readouterr().err
    assert main(["workflow", "gc"]) == 2
    assert "needs --older-than DURATION (such as 30d), --keep-latest N" in capsys.readouterr().err
