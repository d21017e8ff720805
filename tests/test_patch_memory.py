"""``patch()`` and ``deprecate_patch()`` on the in-memory backend: which branch each kind of
recorded workflow takes across restarts, what replays, what is journaled, and the errors.

A restart is a second runtime opened on the same backend after the first closed; a new version
of the code is the workflow's body registered again under the same ``name=``, as a deploy of
that version would. The module needs no database and runs in well under a second.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest

import aiodurable
from aiodurable import NonDeterminismError, NoRuntimeError, Runtime, step, workflow
from aiodurable._records import StepRow
from aiodurable.testing import MemoryBackend, TestClock, check_replay, hooks

pytestmark = pytest.mark.anyio

NAME = "patch.memory.order"
MARKER = "aiodurable.patch:x"
OLD = ["before", "old-1", "go!", "old-2"]
NEW = ["before", "new-1", "go!", "new-2"]
OLD_STEPS = ["patch.record", "patch.record", "aiodurable.recv", "patch.record"]
NEW_STEPS = ["patch.record", MARKER, "patch.record", "aiodurable.recv", "patch.record"]

# Side effects of the steps, by label: a step that runs twice shows here.
calls: Counter[str] = Counter()
gates: dict[str, asyncio.Event] = {}


@pytest.fixture(autouse=True)
def fresh_effects() -> None:
    calls.clear()
    gates.clear()
    gates.update(entered=asyncio.Event(), release=asyncio.Event())


@asynccontextmanager
async def memory_runtime(
    backend: MemoryBackend, clock: TestClock, *, recover: bool = True
) -> AsyncIterator[Runtime]:
    """A runtime on ``backend``: open it again on the same backend to restart."""
    async with Runtime(
        backend=backend,
        clock=clock,
        executor_id="memory",
        app_version="patch-test",
        recover=recover,
    ) as rt:
        yield rt


@step(name="patch.record")
async def record(label: str) -> str:
    calls[label] += 1
    return label


@step(name="patch.hold")
async def hold() -> None:
    gates["entered"].set()
    await gates["release"].wait()


# -- the versions of one workflow ----------------------------------------------------------------
# Both branches journal the same calls (so a journal of either replays against any version); what
# tells them apart is which labels the steps record.


async def _old_branch(got: list[str]) -> None:
    got.append(await record("old-1"))
    got.append(await aiodurable.recv("go", timeout=math.inf))
    got.append(await record("old-2"))


async def _new_branch(got: list[str]) -> None:
    got.append(await record("new-1"))
    got.append(await aiodurable.recv("go", timeout=math.inf))
    got.append(await record("new-2"))


async def original() -> list[str]:
    got = [await record("before")]
    await _old_branch(got)
    return got


async def patched() -> list[str]:
    got = [await record("before")]
    if await aiodurable.patch("x"):
        await _new_branch(got)
    else:
        await _old_branch(got)
    return got


async def deprecated() -> list[str]:
    got = [await record("before")]
    if await aiodurable.deprecate_patch("x"):
        await _new_branch(got)
    return got


async def cleaned_up() -> list[str]:
    got = [await record("before")]
    await _new_branch(got)
    return got


def deploy(
    body: Callable[[], Coroutine[Any, Any, list[str]]],
) -> Callable[[], Coroutine[Any, Any, list[str]]]:
    """Make ``body`` the code of the workflow ``NAME``."""
    return workflow(name=NAME)(body)


async def finish(rt: Runtime, workflow_id: str) -> list[str]:
    """Send the message the workflow waits for and return its result."""
    await rt.send(workflow_id, "go!", topic="go")
    handle = await rt.retrieve_workflow(workflow_id)
    async with asyncio.timeout(5):
        result: list[str] = await handle.get_result()
    return result


async def journal_names(rt: Runtime, workflow_id: str) -> list[str]:
    return [s.name for s in await rt.list_steps(workflow_id)]


async def waiting(rt: Runtime, clock: TestClock, fn: Callable[[], Coroutine[Any, Any, Any]]) -> str:
    """Start ``fn`` and return its ID once it waits for its message."""
    handle = await rt.start_workflow(fn)
    await clock.settle()
    return handle.workflow_id


# -- which branch runs ---------------------------------------------------------------------------


async def test_a_new_execution_takes_the_new_branch_and_journals_a_marker(
    backend: MemoryBackend, clock: TestClock
) -> None:
    workflow_fn = deploy(patched)
    async with memory_runtime(backend, clock) as rt:
        wid = await waiting(rt, clock, workflow_fn)
        assert await finish(rt, wid) == NEW
        steps = await rt.list_steps(wid)
    assert [s.name for s in steps] == NEW_STEPS
    assert (steps[1].function_id, steps[1].output) == (2, True)
    assert calls == {"before": 1, "new-1": 1, "new-2": 1}


async def test_a_workflow_recorded_before_the_patch_takes_the_old_branch_after_a_restart(
    backend: MemoryBackend, clock: TestClock
) -> None:
    async with memory_runtime(backend, clock) as rt:
        wid = await waiting(rt, clock, deploy(original))
    deploy(patched)
    async with memory_runtime(backend, clock) as rt:
        assert rt.recovered_workflow_ids == [wid]
        assert await finish(rt, wid) == OLD
        assert await journal_names(rt, wid) == OLD_STEPS
    assert calls == {"before": 1, "old-1": 1, "old-2": 1}


async def test_a_workflow_started_on_the_patched_code_takes_the_new_branch_after_a_restart(
    backend: MemoryBackend, clock: TestClock
) -> None:
    async with memory_runtime(backend, clock) as rt:
        wid = await waiting(rt, clock, deploy(patched))
    async with memory_runtime(backend, clock) as rt:
        assert rt.recovered_workflow_ids == [wid]
        assert await finish(rt, wid) == NEW
        assert await journal_names(rt, wid) == NEW_STEPS  # the marker once
    assert calls == {"before": 1, "new-1": 1, "new-2": 1}


async def test_a_workflow_that_had_not_reached_the_patch_takes_the_new_branch(
    backend: MemoryBackend, clock: TestClock
) -> None:
    """Its journal ends just before the patch: check_replay stops there writing nothing, and the
    resumed run reaches the patch for the first time."""

    @workflow(name="patch.memory.late")
    async def unpatched() -> list[str]:
        got = [await record("before")]
        await hold()
        got.append(await record("old"))
        return got

    async with memory_runtime(backend, clock) as rt:
        handle = await rt.start_workflow(unpatched)
        await gates["entered"].wait()
        await rt.crash()
    wid = handle.workflow_id

    @workflow(name="patch.memory.late")
    async def late_patch() -> list[str]:
        got = [await record("before")]
        if await aiodurable.patch("late"):
            got.append(await record("new"))
        else:
            await hold()
            got.append(await record("old"))
        return got

    async with memory_runtime(backend, clock, recover=False) as rt:
        async with asyncio.timeout(1):
            await check_replay(wid, rt)
        assert await journal_names(rt, wid) == ["patch.record"]
    async with memory_runtime(backend, clock) as rt:
        assert rt.recovered_workflow_ids == [wid]
        resumed = await rt.retrieve_workflow(wid)
        async with asyncio.timeout(5):
            assert await resumed.get_result() == ["before", "new"]
        assert await journal_names(rt, wid) == [
            "patch.record",
            "aiodurable.patch:late",
            "patch.record",
        ]
    assert calls == {"before": 1, "new": 1}


async def test_a_workflow_that_ended_before_reaching_the_patch_replays_on_the_old_branch(
    backend: MemoryBackend, clock: TestClock
) -> None:
    """A recorded run that ended where a patch now stands did not take its new branch: the
    replay takes the old one (here: nothing more) and matches."""

    @workflow(name="patch.memory.tail")
    async def short() -> str:
        return await record("before")

    async with memory_runtime(backend, clock) as rt:
        handle = await rt.start_workflow(short)
        async with asyncio.timeout(5):
            assert await handle.get_result() == "before"

        @workflow(name="patch.memory.tail")
        async def with_a_tail() -> str:
            done = await record("before")
            if await aiodurable.patch("tail"):
                await record("tail")
            return done

        await check_replay(handle.workflow_id, rt)
        assert await journal_names(rt, handle.workflow_id) == ["patch.record"]
    assert calls == {"before": 1}


async def test_a_patch_added_before_another_one_takes_its_old_branch_there(
    backend: MemoryBackend, clock: TestClock
) -> None:
    """Another patch's marker is not this patch's: the workflow recorded before patch ``a``
    existed takes its old branch, then the new branch of patch ``b`` it recorded."""

    @workflow(name="patch.memory.two")
    async def one_patch() -> list[str]:
        got = []
        if await aiodurable.patch("b"):
            got.append(await record("b-new"))
        got.append(await aiodurable.recv("go", timeout=math.inf))
        return got

    async with memory_runtime(backend, clock) as rt:
        wid = await waiting(rt, clock, one_patch)

    @workflow(name="patch.memory.two")
    async def two_patches() -> list[str]:
        got = []
        if await aiodurable.patch("a"):
            got.append(await record("a-new"))
        if await aiodurable.patch("b"):
            got.append(await record("b-new"))
        got.append(await aiodurable.recv("go", timeout=math.inf))
        return got

    async with memory_runtime(backend, clock) as rt:
        assert await finish(rt, wid) == ["b-new", "go!"]
        assert await journal_names(rt, wid) == [
            "aiodurable.patch:b",
            "patch.record",
            "aiodurable.recv",
        ]
    assert calls == {"b-new": 1}


# -- deprecating the patch -----------------------------------------------------------------------


async def test_deprecate_patch_passes_over_a_recorded_marker_and_journals_none(
    backend: MemoryBackend, clock: TestClock
) -> None:
    async with memory_runtime(backend, clock) as rt:
        marked = await waiting(rt, clock, deploy(patched))
    new_code = deploy(deprecated)
    async with memory_runtime(backend, clock) as rt:
        assert await finish(rt, marked) == NEW
        assert await journal_names(rt, marked) == NEW_STEPS
        fresh = await waiting(rt, clock, new_code)
        assert await finish(rt, fresh) == NEW
        assert await journal_names(rt, fresh) == [n for n in NEW_STEPS if n != MARKER]
    assert calls == {"before": 2, "new-1": 2, "new-2": 2}


async def test_check_replay_accepts_both_kinds_against_the_patched_and_the_deprecated_code(
    backend: MemoryBackend, clock: TestClock
) -> None:
    """Workflows recorded on the old code and on the patched code, finished or waiting, replay
    cleanly against the patched and the deprecated code, running no step and writing nothing.
    Once the deprecated call is deleted, only workflows that journaled no marker still do."""
    async with memory_runtime(backend, clock) as rt:
        old_code = deploy(original)
        old_done = await waiting(rt, clock, old_code)
        assert await finish(rt, old_done) == OLD
        old_waiting = await waiting(rt, clock, old_code)
        new_code = deploy(patched)
        new_done = await waiting(rt, clock, new_code)
        assert await finish(rt, new_done) == NEW
        new_waiting = await waiting(rt, clock, new_code)
        deprecated_done = await waiting(rt, clock, deploy(deprecated))
        assert await finish(rt, deprecated_done) == NEW
        recorded = [old_done, old_waiting, new_done, new_waiting, deprecated_done]
        journals = [await rt.list_steps(wid) for wid in recorded]
        effects = calls.copy()

        for version in (patched, deprecated):
            deploy(version)
            for wid in recorded:
                async with asyncio.timeout(1):
                    await check_replay(wid, rt)
        assert [await rt.list_steps(wid) for wid in recorded] == journals
        assert calls == effects

        deploy(cleaned_up)
        await check_replay(deprecated_done, rt)
        for wid in (new_done, new_waiting):
            with pytest.raises(NonDeterminismError, match=f"{MARKER!r}.*'patch.record'"):
                await check_replay(wid, rt)


# -- a marker written meanwhile, and the errors --------------------------------------------------


@pytest.mark.parametrize("written", [MARKER, "patch.other"])
async def test_an_entry_written_meanwhile_at_the_patch_stands_or_is_a_mismatch(
    backend: MemoryBackend, clock: TestClock, written: str
) -> None:
    """Another execution that wrote this patch's marker first took the new branch too; an entry
    of another call there is a mismatch naming both."""
    workflow_fn = deploy(patched)

    async def race(workflow_id: str, entry: StepRow) -> None:
        if entry.function_id == 1:
            now = entry.completed_at
            other = StepRow(2, written, "json", b"true", None, None, now, now)
            assert await hooks(rt).store.record_step(workflow_id, other) is None

    async with memory_runtime(backend, clock) as rt:
        with hooks(rt).on_checkpoint(race):
            handle = await rt.start_workflow(workflow_fn)
            await clock.settle()
        if written == MARKER:
            assert await finish(rt, handle.workflow_id) == NEW
        else:
            with pytest.raises(NonDeterminismError, match=f"'patch.other'.*{MARKER!r}"):
                await finish(rt, handle.workflow_id)
    assert calls["before"] == 1


@pytest.mark.parametrize("call", [aiodurable.patch, aiodurable.deprecate_patch])
async def test_a_patch_outside_a_workflow_or_in_a_step_raises_no_runtime_error(
    backend: MemoryBackend, clock: TestClock, call: Callable[[str], Coroutine[Any, Any, bool]]
) -> None:
    label = f"aiodurable.{call.__name__}()"
    with pytest.raises(NoRuntimeError, match=re.escape(f"{label} can only be called inside")):
        await call("x")

    @step(name="patch.in_step")
    async def in_step() -> str:
        try:
            await call("x")
        except NoRuntimeError as exc:
            return str(exc)
        return "no error"

    @workflow(name="patch.memory.in_step")
    async def calls_a_step() -> str:
        return await in_step()

    async with memory_runtime(backend, clock) as rt:
        handle = await rt.start_workflow(calls_a_step)
        async with asyncio.timeout(5):
            message = await handle.get_result()
    assert message == f"{label} cannot be called inside a step; call it from the workflow itself"


@pytest.mark.parametrize("call", [aiodurable.patch, aiodurable.deprecate_patch])
@pytest.mark.parametrize("name", ["", 3, "a\x00b", "x" * 1001])
async def test_a_bad_patch_name_raises_value_error(
    call: Callable[[object], Coroutine[Any, Any, bool]], name: object
) -> None:
    with pytest.raises(ValueError, match="patch name"):
        await call(name)
