"""``patch()`` and ``deprecate_patch()`` on PostgreSQL: workflows recorded before the patch, with
it, and after its deprecation resume across restarts on the branch their journal recorded.

The broad coverage (errors, races, check_replay of every kind) is in test_patch_memory.py; here a
few runs show the same on the real store. A new version of the code is the workflow's body
registered again under the same ``name=``; a restart is a second runtime on the same schema.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

import aiodurable
from aiodurable import Runtime, step, workflow
from aiodurable.testing import TestClock, check_replay

from .conftest import RuntimeFactory

pytestmark = pytest.mark.anyio

NAME = "patch.pg.order"
MARKER = "aiodurable.patch:x"
OLD = ["before", "old", "go!"]
NEW = ["before", "new", "go!"]
OLD_STEPS = ["patch.pg.record", "patch.pg.record", "aiodurable.recv"]
NEW_STEPS = ["patch.pg.record", MARKER, "patch.pg.record", "aiodurable.recv"]

# Side effects of the steps, by label: a step that runs twice shows here.
calls: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def fresh_effects() -> None:
    calls.clear()


@step(name="patch.pg.record")
async def record(label: str) -> str:
    calls[label] += 1
    return label


async def original() -> list[str]:
    got = [await record("before"), await record("old")]
    got.append(await aiodurable.recv("go", timeout=math.inf))
    return got


async def patched() -> list[str]:
    got = [await record("before")]
    got.append(await record("new" if await aiodurable.patch("x") else "old"))
    got.append(await aiodurable.recv("go", timeout=math.inf))
    return got


async def deprecated() -> list[str]:
    got = [await record("before")]
    if await aiodurable.deprecate_patch("x"):
        got.append(await record("new"))
    got.append(await aiodurable.recv("go", timeout=math.inf))
    return got


def deploy(
    body: Callable[[], Coroutine[Any, Any, list[str]]],
) -> Callable[[], Coroutine[Any, Any, list[str]]]:
    """Make ``body`` the code of the workflow ``NAME``."""
    return workflow(name=NAME)(body)


async def waiting(rt: Runtime, clock: TestClock, fn: Callable[[], Coroutine[Any, Any, Any]]) -> str:
    """Start ``fn`` and return its ID once it waits for its message."""
    handle = await rt.start_workflow(fn)
    await clock.settle()
    return handle.workflow_id


async def finish(rt: Runtime, workflow_id: str) -> list[str]:
    """Send the message the workflow waits for and return its result."""
    await rt.send(workflow_id, "go!", topic="go")
    handle = await rt.retrieve_workflow(workflow_id)
    async with asyncio.timeout(10):
        result: list[str] = await handle.get_result()
    return result


async def journal_names(rt: Runtime, workflow_id: str) -> list[str]:
    return [s.name for s in await rt.list_steps(workflow_id)]


async def test_workflows_from_before_and_after_the_patch_each_resume_on_their_branch(
    durable_runtime_factory: RuntimeFactory, durable_clock: TestClock
) -> None:
    """A workflow recorded before the patch resumes on the old branch, one started on the patched
    code resumes on the new branch; both replay cleanly against the patched code."""
    async with durable_runtime_factory() as rt:
        old = await waiting(rt, durable_clock, deploy(original))
    patched_code = deploy(patched)
    async with durable_runtime_factory() as rt:
        assert rt.recovered_workflow_ids == [old]
        new = await waiting(rt, durable_clock, patched_code)
        assert await finish(rt, old) == OLD
    async with durable_runtime_factory() as rt:
        assert rt.recovered_workflow_ids == [new]
        assert await finish(rt, new) == NEW
        assert await journal_names(rt, old) == OLD_STEPS
        assert await journal_names(rt, new) == NEW_STEPS
        for wid in (old, new):
            await check_replay(wid, rt)
    assert calls == {"before": 2, "old": 1, "new": 1}


async def test_deprecate_patch_resumes_a_marked_workflow_and_journals_nothing_new(
    durable_runtime_factory: RuntimeFactory, durable_clock: TestClock
) -> None:
    """Once the patch is deprecated, a workflow that journaled its marker resumes on the new
    branch, a new one journals no marker, and both replay cleanly against the deprecated code."""
    async with durable_runtime_factory() as rt:
        marked = await waiting(rt, durable_clock, deploy(patched))
    deprecated_code = deploy(deprecated)
    async with durable_runtime_factory() as rt:
        assert await finish(rt, marked) == NEW
        fresh = await waiting(rt, durable_clock, deprecated_code)
        assert await finish(rt, fresh) == NEW
        assert await journal_names(rt, marked) == NEW_STEPS
        assert await journal_names(rt, fresh) == [n for n in NEW_STEPS if n != MARKER]
        for wid in (marked, fresh):
            await check_replay(wid, rt)
    assert calls == {"before": 2, "new": 2}
