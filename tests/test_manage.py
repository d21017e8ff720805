"""Managing workflows: list, steps, cancel, resume, restart, fork, timeouts, versions, limits."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

import aiodurable
from aiodurable import (
    DurableError,
    Runtime,
    WorkflowCancelled,
    WorkflowNotFound,
    WorkflowStatus,
    step,
    workflow,
)
from aiodurable._current import current_runtime
from aiodurable.testing import hooks

from .conftest import RuntimeFactory
from .gates import Gates
from .proc import Child

pytestmark = pytest.mark.anyio

runs: Counter[tuple[str, str]] = Counter()
gates = Gates()
arrived = gates.arrived
release = gates.release


@step()
async def work(label: str) -> str:
    runs[(aiodurable.current_workflow_id(), label)] += 1
    return label.upper()


@step()
async def gate() -> str:
    wid = aiodurable.current_workflow_id()
    runs[(wid, "gate")] += 1
    gates.arrival(wid).set()
    await gates.gate(wid).wait()
    return "passed"


@workflow()
async def three_steps(tag: str) -> str:
    a = await work(f"{tag}-1")
    b = await gate()
    c = await work(f"{tag}-3")
    return f"{a}/{b}/{c}"


@workflow()
async def waits_for_message() -> object:
    gates.arrival(aiodurable.current_workflow_id()).set()
    return await aiodurable.recv("never", timeout=60)


@workflow()
async def slow_steps() -> str:
    await work("first")
    await gate()
    await work("after-deadline")
    return "finished"


@workflow()
async def with_child() -> str:
    return await child_of()


@workflow()
async def child_of() -> str:
    await gate()
    return "child"


async def wait_for_status(rt: Runtime, wid: str, status: WorkflowStatus) -> None:
    """Wait, woken by the runtime's notifications, until the workflow has ``status``."""
    async with asyncio.timeout(10):
        with hooks(rt).notifier.watch("w", wid) as waiter:
            while True:
                waiter.clear()
                if (await rt.get_workflow_status(wid)).status is status:
                    return
                await waiter.wait()


async def test_list_workflows_filters_sorts_and_pages(runtime: RuntimeFactory) -> None:
    """list_workflows filters by status, name, ID prefix and time, and pages in order."""
    async with runtime() as rt:
        before = datetime.now(UTC) - timedelta(seconds=1)
        for i in range(5):
            with aiodurable.set_workflow_id(f"batch-{i}"):
                await rt.start_workflow(three_steps, f"l{i}")
        for i in range(5):
            await arrived(f"batch-{i}")
        for i in (0, 1):
            release(f"batch-{i}")
            await (await rt.retrieve_workflow(f"batch-{i}")).get_result()
        with aiodurable.set_workflow_id("other-1"):
            await rt.start_workflow(waits_for_message)

        done = await aiodurable.list_workflows(
            status="SUCCESS", load_input=False, load_output=False
        )
        assert [w.workflow_id for w in done] == ["batch-0", "batch-1"]
        assert all(w.inputs is None and w.output is None for w in done)
        loaded = await aiodurable.list_workflows(status=WorkflowStatus.SUCCESS)
        assert [w.output for w in loaded] == ["L0-1/passed/L0-3", "L1-1/passed/L1-3"]
        assert loaded[0].inputs == {"args": ["l0"], "kwargs": {}}
        pending = await aiodurable.list_workflows(status=["PENDING"], workflow_id_prefix="batch-")
        assert [w.workflow_id for w in pending] == ["batch-2", "batch-3", "batch-4"]
        named = await aiodurable.list_workflows(name=three_steps.__aiodurable_workflow__.name)  # type: ignore[attr-defined]
        assert len(named) == 5
        page = await aiodurable.list_workflows(sort_desc=True, limit=2, offset=1)
        assert [w.workflow_id for w in page] == ["batch-4", "batch-3"]
        assert len(await aiodurable.list_workflows(start_time=before)) == 6
        assert await aiodurable.list_workflows(end_time=before) == []
        assert await aiodurable.list_workflows(workflow_id_prefix="batch_") == []  # _ is literal
        with pytest.raises(ValueError, match="unknown workflow status"):
            await aiodurable.list_workflows(status="DONE")
        with pytest.raises(ValueError, match="limit"):
            await aiodurable.list_workflows(limit=-1)
        with pytest.raises(ValueError, match="aware"):
            await aiodurable.list_workflows(start_time=datetime(2026, 1, 1))
        for i in range(2, 5):
            release(f"batch-{i}")
        await aiodurable.cancel_workflow("other-1")


async def test_list_steps_shows_outputs_errors_and_children(runtime: RuntimeFactory) -> None:
    """list_steps returns the journal with outputs, names and child workflow IDs."""
    async with runtime() as rt:
        handle = await rt.start_workflow(with_child)
        child_id = f"{handle.workflow_id}-1"
        release(child_id)
        assert await handle.get_result() == "child"
        steps = await aiodurable.list_steps(handle.workflow_id)
        assert [(s.function_id, s.child_workflow_id) for s in steps] == [(1, child_id)]
        child_steps = await aiodurable.list_steps(child_id)
        assert [(s.name, s.output, s.error) for s in child_steps] == [("gate", "passed", None)]
        assert child_steps[0].completed_at >= child_steps[0].started_at
        with pytest.raises(WorkflowNotFound):
            await aiodurable.list_steps("missing")


async def test_cancel_stops_between_steps_and_resume_finishes_once(
    runtime: RuntimeFactory,
) -> None:
    """Cancelled during its second step, a workflow stops before the third; resumed, it runs
    only the third step, once."""
    async with runtime() as rt:
        handle = await rt.start_workflow(three_steps, "c")
        wid = handle.workflow_id
        await arrived(wid)
        await aiodurable.cancel_workflow(wid)
        with pytest.raises(WorkflowCancelled):
            await handle.get_result()  # waiters learn at once, while the step still runs
        release(wid)  # the step in progress completes; the next one must not start
        await hooks(rt).wait_stopped(wid)
        assert (await handle.get_status()).status is WorkflowStatus.CANCELLED
        assert runs[(wid, "c-3")] == 0
        steps = await aiodurable.list_steps(wid)
        assert [s.name for s in steps] == ["work", "gate"]

        resumed = await aiodurable.resume_workflow(wid)
        assert await resumed.get_result() == "C-1/passed/C-3"
        assert (runs[(wid, "c-1")], runs[(wid, "gate")], runs[(wid, "c-3")]) == (1, 1, 1)
        info = await resumed.get_status()
        assert info.status is WorkflowStatus.SUCCESS
        assert info.recovery_attempts == 0


async def test_old_handles_follow_a_resume(runtime: RuntimeFactory) -> None:
    """A handle is a view of its workflow ID: the handle from the start, one retrieved while the
    workflow was cancelled and one held by another runtime all wait for the resumed run."""
    async with runtime() as rt, runtime(executor_id="observer") as observer:
        handle = await rt.start_workflow(three_steps, "h")
        wid = handle.workflow_id
        await arrived(wid)
        await rt.cancel_workflow(wid)
        with pytest.raises(WorkflowCancelled):
            await handle.get_result()
        release(wid)
        await hooks(rt).wait_stopped(wid)
        while_cancelled = await rt.retrieve_workflow(wid)
        remote = await observer.retrieve_workflow(wid)
        with pytest.raises(WorkflowCancelled):
            await while_cancelled.get_result()
        with pytest.raises(WorkflowCancelled):
            await remote.get_result()
        await rt.resume_workflow(wid)
        async with asyncio.timeout(10):
            assert await handle.get_result() == "H-1/passed/H-3"
            assert await while_cancelled.get_result() == "H-1/passed/H-3"
            assert await remote.get_result() == "H-1/passed/H-3"
        assert (runs[(wid, "h-1")], runs[(wid, "gate")], runs[(wid, "h-3")]) == (1, 1, 1)


async def test_cancel_interrupts_recv_at_once(runtime: RuntimeFactory) -> None:
    """A workflow waiting in recv stops as soon as it is cancelled, not at its timeout."""
    async with runtime() as rt:
        handle = await rt.start_workflow(waits_for_message)
        await arrived(handle.workflow_id)
        await hooks(rt).notifier.until_waiting(1)
        await aiodurable.cancel_workflow(handle.workflow_id)
        async with asyncio.timeout(5):
            with pytest.raises(WorkflowCancelled):
                await handle.get_result()


async def test_cancel_from_another_runtime_reaches_the_running_one(
    runtime: RuntimeFactory,
) -> None:
    """A cancel issued by another runtime stops the workflow where it runs, via NOTIFY."""
    async with runtime(executor_id="runner") as runner:
        handle = await runner.start_workflow(waits_for_message)
        await arrived(handle.workflow_id)
        await hooks(runner).notifier.until_waiting(1)
        async with runtime(executor_id="operator") as operator:
            await operator.cancel_workflow(handle.workflow_id)
        async with asyncio.timeout(5):
            with pytest.raises(WorkflowCancelled):
                await handle.get_result()


async def test_finished_workflows_ignore_cancel_and_resume(runtime: RuntimeFactory) -> None:
    """Cancelling or resuming a SUCCESS workflow changes nothing."""
    async with runtime() as rt:
        handle = await rt.start_workflow(three_steps, "f")
        release(handle.workflow_id)
        assert await handle.get_result() == "F-1/passed/F-3"
        await aiodurable.cancel_workflow(handle.workflow_id)
        await aiodurable.resume_workflow(handle.workflow_id)
        info = await handle.get_status()
        assert info.status is WorkflowStatus.SUCCESS
        assert runs[(handle.workflow_id, "f-1")] == 1
        with pytest.raises(WorkflowNotFound):
            await aiodurable.cancel_workflow("nobody")


async def test_restart_runs_everything_again_under_a_new_id(runtime: RuntimeFactory) -> None:
    """restart_workflow runs all steps again with the same inputs under a new ID."""
    async with runtime() as rt:
        first = await rt.start_workflow(three_steps, "r")
        release(first.workflow_id)
        await first.get_result()
        again = await aiodurable.restart_workflow(first.workflow_id)
        assert again.workflow_id != first.workflow_id
        release(again.workflow_id)
        assert await again.get_result() == "R-1/passed/R-3"
        assert runs[(again.workflow_id, "r-1")] == 1
        assert runs[(again.workflow_id, "r-3")] == 1
        assert runs[(first.workflow_id, "r-1")] == 1


async def test_fork_reuses_steps_below_start_step(runtime: RuntimeFactory) -> None:
    """A fork from step 3 reuses steps 1 and 2 from the journal and runs step 3 only."""
    async with runtime() as rt:
        first = await rt.start_workflow(three_steps, "k")
        release(first.workflow_id)
        await first.get_result()
        fork = await aiodurable.fork_workflow(first.workflow_id, 3, new_workflow_id="the-fork")
        assert fork.workflow_id == "the-fork"
        assert await fork.get_result() == "K-1/passed/K-3"
        assert (runs[("the-fork", "k-1")], runs[("the-fork", "gate")]) == (0, 0)
        assert runs[("the-fork", "k-3")] == 1
        assert [s.function_id for s in await aiodurable.list_steps("the-fork")] == [1, 2, 3]
        with pytest.raises(ValueError, match=">= 0"):
            await aiodurable.fork_workflow(first.workflow_id, -1)
        with pytest.raises(ValueError, match="at most 4"):
            await aiodurable.fork_workflow(first.workflow_id, 5)
        with pytest.raises(aiodurable.DuplicateWorkflowError):
            await aiodurable.fork_workflow(first.workflow_id, 1, new_workflow_id="the-fork")


async def test_timeout_expiring_during_a_step_cancels_before_the_next(
    runtime: RuntimeFactory,
) -> None:
    """A workflow whose deadline passes during a step is cancelled; its next step never runs."""
    async with runtime() as rt:
        with aiodurable.set_workflow_timeout(0.3):
            handle = await rt.start_workflow(slow_steps)
        wid = handle.workflow_id
        await arrived(wid)
        await wait_for_status(rt, wid, WorkflowStatus.CANCELLED)  # while the step still runs
        release(wid)
        with pytest.raises(WorkflowCancelled):
            await handle.get_result()
        assert runs[(wid, "after-deadline")] == 0


async def test_timeout_expiring_across_a_restart_cancels_on_recovery(
    runtime: RuntimeFactory,
) -> None:
    """A deadline that passes while the program is down cancels the workflow when it recovers,
    and the deadline is kept from the first start (the timeout= option)."""
    async with runtime() as rt:
        handle = await rt.start_workflow(slow_steps, timeout=0.5)  # type: ignore[call-arg]
        wid = handle.workflow_id
        await arrived(wid)
        info = await handle.get_status()
    await asyncio.sleep(0.6)  # the program is down while its deadline passes
    async with runtime() as rt:
        with pytest.raises(WorkflowCancelled):
            await (await rt.retrieve_workflow(wid)).get_result()
        assert (await rt.get_workflow_status(wid)).status is WorkflowStatus.CANCELLED
    assert info.status is WorkflowStatus.PENDING
    assert runs[(wid, "after-deadline")] == 0


@aiodurable.workflow()
async def takes_its_own_timeout(timeout: float, workflow_id: str) -> str:
    return f"{timeout}/{workflow_id}"


@aiodurable.workflow()
async def starts_a_child_with_a_timeout() -> str:
    try:
        await aiodurable.start_workflow(takes_its_own_timeout, 1.0, "x")
        handle = (
            await current_runtime()
            .with_options(timeout=5)
            .start_workflow(takes_its_own_timeout, 2.0, "y")
        )
    except ValueError as exc:
        return str(exc)
    return await handle.get_result()


async def test_with_options_keeps_start_options_apart_from_the_arguments(
    runtime: RuntimeFactory,
) -> None:
    """rt.with_options() gives a workflow ID and a deadline without looking into the workflow's
    keywords (its own `timeout` and `workflow_id` arguments reach it), `float("inf")` lifts an
    enclosing set_workflow_timeout, and a child is refused a timeout of its own."""
    async with runtime() as rt:
        handle = await rt.with_options(workflow_id="opts-1", timeout=30).start_workflow(
            takes_its_own_timeout, timeout=7.0, workflow_id="mine"
        )
        assert handle.workflow_id == "opts-1"
        assert await handle.get_result() == "7.0/mine"
        with aiodurable.set_workflow_timeout(5):
            unlimited = await rt.with_options(timeout=float("inf")).start_workflow(
                takes_its_own_timeout, 1.0, "z"
            )
            shorthand = await rt.start_workflow(slow_steps, timeout=float("inf"))  # type: ignore[call-arg]
        deadlines = [
            (await hooks(rt).store.require_workflow(h.workflow_id)).deadline_at
            for h in (handle, unlimited, shorthand)
        ]
        assert deadlines[0] is not None and deadlines[0] > time.time() + 25
        assert deadlines[1:] == [None, None]
        release(shorthand.workflow_id)
        parent = await rt.start_workflow(starts_a_child_with_a_timeout)
        assert "within its parent's deadline" in await parent.get_result()
        with pytest.raises(ValueError, match="workflow ID"):
            rt.with_options(workflow_id="")
        with pytest.raises(ValueError, match="timeout"):
            rt.with_options(timeout=-1)


async def test_children_inherit_the_deadline(runtime: RuntimeFactory) -> None:
    """A child started by a workflow with a timeout carries the same deadline."""
    async with runtime() as rt:
        with aiodurable.set_workflow_timeout(30):
            handle = await rt.start_workflow(with_child)
        child_id = f"{handle.workflow_id}-1"
        await arrived(child_id)
        rows = {
            r.workflow_id: r.deadline_at
            for r in [
                await hooks(rt).store.require_workflow(handle.workflow_id),
                await hooks(rt).store.require_workflow(child_id),
            ]
        }
        assert rows[handle.workflow_id] is not None
        assert rows[handle.workflow_id] == rows[child_id]
        child_deadline = rows[child_id]
        assert child_deadline is not None and child_deadline > time.time() + 25
        release(child_id)
        assert await handle.get_result() == "child"


async def test_recovery_runs_only_the_current_version_and_resume_moves_it(
    runtime: RuntimeFactory,
) -> None:
    """A PENDING workflow of another application version is not recovered; resuming it after a
    cancel runs it on the current version."""
    async with runtime(app_version="v1") as rt:
        handle = await rt.start_workflow(three_steps, "v")
        wid = handle.workflow_id
        await arrived(wid)
    async with runtime(app_version="v2") as rt:
        assert rt.recovered_workflow_ids == []
        info = await rt.get_workflow_status(wid)
        assert (info.status, info.app_version) == (WorkflowStatus.PENDING, "v1")
        await rt.cancel_workflow(wid)
        release(wid)
        resumed = await rt.resume_workflow(wid)
        assert await resumed.get_result() == "V-1/passed/V-3"
        assert (await rt.get_workflow_status(wid)).app_version == "v2"


async def test_open_warns_of_workflows_left_on_other_versions(
    runtime: RuntimeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A runtime opening beside unfinished workflows of another version says, once, how many
    will not run here and what to run; resuming one that is PENDING says why it cannot."""
    async with runtime(app_version="v1") as rt:
        handle = await rt.start_workflow(three_steps, "o")
        wid = handle.workflow_id
        await arrived(wid)
    with pytest.raises(aiodurable.NoRuntimeError, match="resumes from its last completed step"):
        await handle.get_result()  # its runtime closed: the waiter is told, never left hanging
    caplog.set_level(logging.WARNING, logger="aiodurable")
    async with runtime(app_version="v2") as rt:
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        message = warnings[0].getMessage()
        assert "1 unfinished workflow(s)" in message and "'v1': 1 PENDING" in message
        assert "aiodurable workflow list --app-version v1" in message
        with pytest.raises(aiodurable.WorkflowNotResumable, match="PENDING on application"):
            await rt.resume_workflow(wid)
        info = await rt.get_workflow_status(wid)
        assert (info.status, info.app_version) == (WorkflowStatus.PENDING, "v1")
    release(wid)
    caplog.clear()
    async with runtime(app_version="v1") as rt:
        assert rt.recovered_workflow_ids == [wid]
        async with asyncio.timeout(10):
            assert await (await rt.retrieve_workflow(wid)).get_result() == "O-1/passed/O-3"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_recover_another_executor_hands_its_workflows_over(
    runtime: RuntimeFactory,
) -> None:
    """The PENDING workflows of a gone executor complete on another after recover(); an
    executor that is still alive is refused."""
    async with runtime(executor_id="gone") as rt:
        handle = await rt.start_workflow(three_steps, "g")
        wid = handle.workflow_id
        await arrived(wid)
    release(wid)
    async with runtime(executor_id="survivor") as rt:
        assert await rt.recover("gone") == [wid]
        assert await (await rt.retrieve_workflow(wid)).get_result() == "G-1/passed/G-3"
        assert (await rt.get_workflow_status(wid)).executor_id == "survivor"
        async with runtime(executor_id="alive"):
            with pytest.raises(DurableError, match="still alive"):
                await rt.recover("alive")
    assert runs[(wid, "g-1")] == 1


async def test_max_recovery_attempts_stops_a_workflow_that_keeps_crashing(
    database_url: str, schema: str
) -> None:
    """A workflow that kills its process every time is recovered max_recovery_attempts times,
    then marked MAX_RECOVERY_ATTEMPTS_EXCEEDED and left alone."""
    env = {
        "AIODURABLE_DATABASE_URL": database_url,
        "AIODURABLE_EXECUTOR_ID": "crashing",
        "TEST_SCHEMA": schema,
    }
    codes = []
    for _ in range(6):
        child = Child("crashing_app.py", env=env)
        codes.append(await child.wait())
        if codes[-1] == 0:
            assert "STATUS MAX_RECOVERY_ATTEMPTS_EXCEEDED" in child.lines
            break
    # The first run and two recoveries crash; the third recovery is refused.
    assert codes == [-9, -9, -9, 0]
