"""The Debouncer on PostgreSQL: calls from two processes agree on one workflow per burst, and the
store's statements join, replace and close bursts as the in-memory backend does."""

from __future__ import annotations

import asyncio

import pytest

from aiodurable import Debouncer, Runtime, WorkflowStatus, workflow
from aiodurable.testing import TestClock, hooks
from tests.proc import Child

pytestmark = pytest.mark.anyio

CALLS = 100
NAME = "debounce_app.reindex"


@workflow(name="debounce_app.reindex")  # the same workflow as tests/apps/debounce_app.py's
async def reindex(caller: str, version: int) -> str:
    return f"{caller}@{version}"


deb = Debouncer(reindex, period=2.0)


async def test_two_processes_start_one_workflow_per_burst(database_url: str, schema: str) -> None:
    """Both processes call the same key at once, for two bursts: each burst is one workflow,
    the same in both processes, run once with the last call's arguments (one of the two
    processes' last calls)."""
    env = {"AIODURABLE_DATABASE_URL": database_url, "TEST_SCHEMA": schema}
    async with Runtime(database_url, schema=schema, executor_id="debounce-test") as rt:
        child = Child("debounce_app.py", "doc-9", str(CALLS), "2", env=env)
        try:
            await child.expect("READY")
            bursts = []
            for round_ in (1, 2):
                handles = [await deb.debounce("doc-9", "parent", i) for i in range(CALLS)]
                ids = {h.workflow_id for h in handles}
                child_ids = (await child.expect(f"IDS {round_}")).split()[2:]
                assert len(ids) == 1 and sorted(ids) == child_ids
                result = await asyncio.wait_for(handles[-1].get_result(), 30)
                assert result in (f"parent@{CALLS - 1}", f"child@{CALLS - 1}")
                assert (await child.expect(f"DONE {round_}")).split()[2] == result
                bursts.append(ids.pop())
            assert await child.wait() == 0
        finally:
            if child.proc.poll() is None:
                await child.kill()
        assert bursts[0] != bursts[1]
        runs = await rt.list_workflows(name="debounce_app.reindex")
        assert sorted(w.workflow_id for w in runs) == sorted(bursts)
        assert {w.status for w in runs} == {WorkflowStatus.SUCCESS}


async def test_bursts_join_close_and_replace_a_cancelled_one(
    database_url: str, schema: str
) -> None:
    clock = TestClock()
    async with Runtime(database_url, schema=schema, clock=clock) as rt:
        first = await deb.debounce("doc", "parent", 1)
        await clock.advance(1.5)
        assert (await deb.debounce("doc", "parent", 2)).workflow_id == first.workflow_id
        status = await rt.get_workflow_status(first.workflow_id)
        assert status.status is WorkflowStatus.ENQUEUED
        await clock.advance(2)
        assert await asyncio.wait_for(first.get_result(), 10) == "parent@2"

        cancelled = await deb.debounce("doc", "parent", 3)
        assert cancelled.workflow_id != first.workflow_id
        await rt.cancel_workflow(cancelled.workflow_id)
        replaced = await deb.debounce("doc", "parent", 4)
        assert replaced.workflow_id not in (first.workflow_id, cancelled.workflow_id)
        await clock.advance(2)
        assert await asyncio.wait_for(replaced.get_result(), 10) == "parent@4"
        statuses = {w.workflow_id: w.status for w in await rt.list_workflows(name=NAME)}
        assert statuses == {
            first.workflow_id: WorkflowStatus.SUCCESS,
            cancelled.workflow_id: WorkflowStatus.CANCELLED,
            replaced.workflow_id: WorkflowStatus.SUCCESS,
        }

        # A burst opened under a workflow ID that is taken gets a fresh one (the statement
        # finds no ENQUEUED workflow to join, discards the burst and opens it again).
        store = hooks(rt).store
        now = clock.now()
        taken = first.workflow_id
        opened = await store.join_burst(NAME, "other", taken, "json", b"[]", now, 1.0, None)
        assert opened != taken
        assert (await rt.get_workflow_status(opened)).status is WorkflowStatus.ENQUEUED
