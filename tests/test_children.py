"""Child workflows on a real PostgreSQL: deterministic IDs, the parent's journal entry, starting
without awaiting, re-attaching after a lost checkpoint, and a parent SIGKILLed mid-child."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import asyncpg
import pytest

import aiodurable
from aiodurable import WorkflowHandle, WorkflowStatus, step, workflow
from aiodurable.testing import hooks

from .conftest import RuntimeFactory
from .gates import Gates
from .proc import Child

pytestmark = pytest.mark.anyio

# How many times each child's step ran, by workflow ID: the side-effect counter the tests read.
runs: Counter[str] = Counter()
gates = Gates()
parked = gates.arrived
release = gates.release


class ChildError(Exception):
    """A failure raised by a child, which its parent must see as itself."""


@step()
async def wait_for_gate() -> None:
    await gates.park()


@step()
async def prepare() -> str:
    return "prepared"


@step()
async def kid_work() -> None:
    runs[aiodurable.current_workflow_id()] += 1


@workflow()
async def kid(tag: str) -> str:
    await kid_work()
    await wait_for_gate()
    if tag == "bad":
        raise ChildError(f"child refused {tag}")
    return tag.upper()


@workflow()
async def parent_awaits(tag: str) -> str:
    await prepare()
    return "got " + await kid(tag)


@workflow()
async def parent_names_child(child_id: str) -> str:
    with aiodurable.set_workflow_id(child_id):
        return await kid("named")


@workflow()
async def parent_starts(tag: str) -> str:
    handle = await aiodurable.start_workflow(kid, tag)
    return handle.workflow_id


@workflow()
async def parent_catches() -> str:
    try:
        await kid("bad")
    except ChildError as exc:
        return f"caught {exc}"
    return "unreachable"


async def _rows(rt: aiodurable.Runtime) -> dict[str, tuple[str, str | None]]:
    async with hooks(rt).store.pool.acquire() as conn:
        rows = await conn.fetch(
            f"SELECT workflow_id, status, parent_workflow_id FROM {rt.schema}.workflows"
        )
    return {r["workflow_id"]: (r["status"], r["parent_workflow_id"]) for r in rows}


async def test_child_id_is_parent_and_function_id_and_journaled_in_the_parent(
    runtime: RuntimeFactory,
) -> None:
    """A child awaited at function ID 2 runs as "{parent}-2", records its parent, and the
    parent's journal entry at that function ID carries the child's ID."""
    release("p1-2")
    async with runtime() as rt:
        with aiodurable.set_workflow_id("p1"):
            assert await parent_awaits("a") == "got A"
        journal = await hooks(rt).store.load_journal("p1")
        rows = await _rows(rt)
    assert [(e.function_id, e.name, e.child_workflow_id) for e in journal.values()] == [
        (1, "prepare", None),
        (2, kid.__aiodurable_workflow__.name, "p1-2"),  # type: ignore[attr-defined]  # marker
    ]
    assert rows == {"p1": ("SUCCESS", None), "p1-2": ("SUCCESS", "p1")}
    assert runs["p1-2"] == 1


async def test_set_workflow_id_names_the_child(runtime: RuntimeFactory) -> None:
    """Inside a parent, set_workflow_id gives the child the chosen ID instead of the derived one."""
    release("chosen-child")
    async with runtime() as rt:
        with aiodurable.set_workflow_id("p2"):
            assert await parent_names_child("chosen-child") == "NAMED"
        journal = await hooks(rt).store.load_journal("p2")
        rows = await _rows(rt)
    assert journal[1].child_workflow_id == "chosen-child"
    assert rows == {"p2": ("SUCCESS", None), "chosen-child": ("SUCCESS", "p2")}


async def test_start_workflow_in_a_workflow_starts_a_child_without_awaiting_it(
    runtime: RuntimeFactory,
) -> None:
    """start_workflow inside a workflow starts a child and returns at once: the parent finishes
    while its child still waits, and the child then finishes on its own."""
    async with runtime() as rt:
        with aiodurable.set_workflow_id("p3"):
            child_id = await parent_starts("later")
        assert child_id == "p3-1"
        await parked("p3-1")
        assert (await rt.get_workflow_status("p3")).status is WorkflowStatus.SUCCESS
        assert (await rt.get_workflow_status("p3-1")).status is WorkflowStatus.PENDING
        assert (await hooks(rt).store.load_journal("p3"))[1].child_workflow_id == "p3-1"
        release("p3-1")
        handle: WorkflowHandle[str] = await rt.retrieve_workflow("p3-1")
        assert await handle.get_result() == "LATER"
        assert (await rt.get_workflow_status("p3-1")).parent_workflow_id == "p3"


async def test_child_exception_reaches_the_parent_as_its_type(runtime: RuntimeFactory) -> None:
    """An exception that ends a child is raised in its awaiting parent as its own type."""
    release("p4-1")
    async with runtime() as rt:
        with aiodurable.set_workflow_id("p4"):
            assert await parent_catches() == "caught child refused bad"
        assert (await rt.get_workflow_status("p4-1")).status is WorkflowStatus.ERROR


async def test_recovered_parent_attaches_to_the_same_child_even_without_its_checkpoint(
    runtime: RuntimeFactory,
) -> None:
    """A parent that lost its journal entry for a started child (a crash between the two writes)
    re-attaches on recovery to the child of the same derived ID: one child row, one run."""
    async with runtime() as rt:
        with aiodurable.set_workflow_id("p5"):
            await rt.start_workflow(parent_awaits, "b")
        await parked("p5-2")
        async with hooks(rt).store.pool.acquire() as conn:
            await conn.execute(
                f"DELETE FROM {rt.schema}.steps WHERE workflow_id = 'p5' AND function_id = 2"
            )
    release("p5-2")
    async with runtime() as rt:
        assert await (await rt.retrieve_workflow("p5")).get_result() == "got B"
        rows = await _rows(rt)
        journal = await hooks(rt).store.load_journal("p5")
    assert rows == {"p5": ("SUCCESS", None), "p5-2": ("SUCCESS", "p5")}
    assert journal[2].child_workflow_id == "p5-2"
    assert runs["p5-2"] == 1


async def test_sigkilled_parent_recovers_and_awaits_the_same_child(
    database_url: str, schema: str, tmp_path: Path
) -> None:
    """Killed while its child runs, the restarted program resumes parent and child: one child
    row, the child's completed step not run again, the parent's result from that child."""
    log = tmp_path / "log"
    env = {
        "AIODURABLE_DATABASE_URL": database_url,
        "AIODURABLE_EXECUTOR_ID": "child-app",
        "TEST_SCHEMA": schema,
        "CRASH_LOG": str(log),
    }
    first = Child("child_app.py", "parent-1", env={**env, "CRASH_BLOCK": "1"})
    assert "parent-1-2" in await first.expect("CHILD_WORK_DONE")
    await first.kill()

    second = Child("child_app.py", "parent-1", env=env)
    assert "got X" in await second.expect("RESULT")
    assert await second.wait() == 0

    assert log.read_text().splitlines() == ["parent_work parent-1", "child_work parent-1-2"]
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            f"SELECT workflow_id, status, parent_workflow_id, recovery_attempts"
            f" FROM {schema}.workflows ORDER BY workflow_id"
        )
        entry = await conn.fetchval(
            f"SELECT child_workflow_id FROM {schema}.steps"
            " WHERE workflow_id = 'parent-1' AND function_id = 2"
        )
    finally:
        await conn.close()
    assert [tuple(r) for r in rows] == [
        ("parent-1", "SUCCESS", None, 1),
        ("parent-1-2", "SUCCESS", "parent-1", 1),
    ]
    assert entry == "parent-1-2"
