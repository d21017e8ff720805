"""aiodurable.testing: the test clock, crash simulation and replay checks, through the plugin's
fixtures (load the plugin with ``-p aiodurable.testing``)."""

from __future__ import annotations

import asyncio
import importlib.util
import math
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import asyncpg
import pytest

import aiodurable
from aiodurable import NonDeterminismError, Retry, Runtime, WorkflowStatus, step, workflow
from aiodurable._current import current_runtime
from aiodurable.testing import (
    ClockMismatchError,
    CrashPointNotReached,
    RuntimeFactory,
    TestClock,
    check_replay,
    clock_of,
    crash_after,
    hooks,
)

from .proc import ROOT, Child

pytestmark = pytest.mark.anyio

DAY = timedelta(days=1)


# -- workflows under test ------------------------------------------------------------------------

executed: list[str] = []


@step()
async def note(what: str) -> str:
    executed.append(what)
    return what


@workflow()
async def trial_then_payment(order: str) -> str:
    await note(f"{order} reserved")
    await aiodurable.sleep(30 * 86400)  # a 30-day trial
    payment = await aiodurable.recv("payment", timeout=7 * 86400)
    if payment is None:
        await note(f"{order} expired")
        return "expired"
    await note(f"{order} paid")
    return f"paid {payment}"


@workflow()
async def sleeper(label: str, seconds: float) -> str:
    await aiodurable.sleep(seconds)
    return await note(label)


@workflow()
async def event_reader(source: str) -> object:
    return await aiodurable.get_event(source, "ready", timeout=86400)


flaky_attempts: list[float] = []


@step(retry=Retry(max_attempts=4, interval=3600, backoff=2, max_interval=86400))
async def flaky() -> str:
    flaky_attempts.append(clock_of(current_runtime()).now())
    if len(flaky_attempts) < 3:
        raise ConnectionError("not yet")
    return "done"


@workflow()
async def retrying() -> str:
    return await flaky()


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    executed.clear()
    flaky_attempts.clear()
    yield


# -- time skipping -------------------------------------------------------------------------------


async def test_thirty_day_sleep_and_seven_day_recv_run_in_well_under_a_second(
    durable_runtime: Runtime, durable_clock: TestClock
) -> None:
    """A workflow that sleeps 30 days, then gets a message on day 33 of its 7-day wait, finishes
    in well under a second of real time, with its durable sleep recorded in virtual time."""
    began = time.perf_counter()
    start = durable_clock.now()
    handle = await durable_runtime.start_workflow(trial_then_payment, "o1")
    await durable_clock.advance(29 * DAY)
    assert executed == ["o1 reserved"]  # still asleep on day 29
    await durable_clock.advance(4 * DAY)  # day 33: the trial is over, the payment wait is on
    await durable_runtime.send(handle.workflow_id, "42 EUR", topic="payment")
    assert await handle.get_result() == "paid 42 EUR"
    elapsed = time.perf_counter() - began
    assert elapsed < 1.0, f"took {elapsed:.3f} s"
    steps = await durable_runtime.list_steps(handle.workflow_id)
    assert [s.name for s in steps] == [
        "note",
        "aiodurable.sleep",
        "aiodurable.recv",
        "note",
    ]
    assert steps[1].output == pytest.approx(start + 30 * 86400)
    assert durable_clock.now() == start + 33 * 86400


async def test_the_payment_timeout_fires_after_seven_more_days(
    durable_runtime: Runtime, durable_clock: TestClock
) -> None:
    """Without a message, the recv times out exactly 7 days after the 30-day sleep ends, not
    a second earlier, and in well under a second of real time."""
    began = time.perf_counter()
    handle = await durable_runtime.start_workflow(trial_then_payment, "o2")
    await durable_clock.advance(37 * DAY - timedelta(seconds=1))
    assert (await handle.get_status()).status is WorkflowStatus.PENDING
    await durable_clock.advance(timedelta(seconds=1))
    assert await handle.get_result() == "expired"
    assert executed == ["o2 reserved", "o2 expired"]
    assert time.perf_counter() - began < 1.0


async def test_timers_fire_in_deadline_order(
    durable_runtime: Runtime, durable_clock: TestClock
) -> None:
    """Sleeps due at different times wake in deadline order within one advance."""
    handles = [
        await durable_runtime.start_workflow(sleeper, label, hours * 3600)
        for label, hours in [("third", 3), ("first", 1), ("second", 2)]
    ]
    await durable_clock.advance(timedelta(hours=3))
    assert [await h.get_result() for h in handles] == ["third", "first", "second"]
    assert executed == ["first", "second", "third"]


async def test_get_event_times_out_on_the_test_clock(
    durable_runtime: Runtime, durable_clock: TestClock
) -> None:
    """A get_event inside a workflow returns None once a day of virtual time has passed."""
    handle = await durable_runtime.start_workflow(event_reader, "nobody")
    await durable_clock.advance(DAY)
    assert await handle.get_result() is None


async def test_retry_backoff_waits_on_the_test_clock(
    durable_runtime: Runtime, durable_clock: TestClock
) -> None:
    """A failing step retries after 1 hour, then 2 more hours, of virtual time."""
    start = durable_clock.now()
    handle = await durable_runtime.start_workflow(retrying)
    await durable_clock.advance(timedelta(minutes=59))
    assert len(flaky_attempts) == 1
    await durable_clock.advance(timedelta(hours=2, minutes=1))
    assert await handle.get_result() == "done"
    assert flaky_attempts == [start, start + 3600, start + 3 * 3600]


async def test_workflow_deadline_fires_on_the_test_clock(
    durable_runtime: Runtime, durable_clock: TestClock
) -> None:
    """A workflow with a 1-day timeout that sleeps 2 days is cancelled when a day passes."""
    with aiodurable.set_workflow_timeout(86400):
        handle = await durable_runtime.start_workflow(sleeper, "never", 2 * 86400)
    await durable_clock.advance(DAY)
    with pytest.raises(aiodurable.WorkflowCancelled):
        await handle.get_result()
    assert (await handle.get_status()).status is WorkflowStatus.CANCELLED
    assert executed == []


async def test_auto_advance_skips_to_each_timer_while_the_workflow_is_idle(
    durable_runtime: Runtime, durable_clock: TestClock
) -> None:
    """Inside auto_advance(), a workflow that sleeps 30 days and waits 7 more finishes by
    itself, in well under a second."""
    began = time.perf_counter()
    start = durable_clock.now()
    async with durable_clock.auto_advance():
        handle = await durable_runtime.start_workflow(trial_then_payment, "o3")
        assert await handle.get_result() == "expired"
    assert durable_clock.now() == start + 37 * 86400
    assert time.perf_counter() - began < 1.0


@pytest.mark.durable(auto_advance=True)
async def test_auto_advance_marker_runs_the_runtime_on_an_auto_advancing_clock(
    durable_runtime: Runtime,
) -> None:
    """With @pytest.mark.durable(auto_advance=True), durable_runtime runs on a clock that skips
    to each timer by itself."""
    clock = clock_of(durable_runtime)
    handle = await durable_runtime.start_workflow(sleeper, "woke", 365 * 86400)
    assert await handle.get_result() == "woke"
    assert clock.fired >= 1


async def test_advancing_backwards_is_an_error(durable_clock: TestClock) -> None:
    """A negative advance, or advance_to a past time, raises ValueError naming the rule."""
    with pytest.raises(ValueError, match="only moves forward"):
        await durable_clock.advance(timedelta(seconds=-1))
    with pytest.raises(ValueError, match="only moves forward"):
        await durable_clock.advance_to(durable_clock.now() - 1)


async def test_clock_of_a_runtime_on_the_wall_clock_names_the_fix(
    durable_runtime_factory: RuntimeFactory,
) -> None:
    """clock_of() on a runtime created without a TestClock raises ClockMismatchError saying how
    to create one that has it."""
    async with durable_runtime_factory() as rt:
        with pytest.raises(ClockMismatchError, match=r"clock=aiodurable\.testing\.TestClock\(\)"):
            clock_of(rt)


async def test_a_test_clock_refuses_a_second_open_runtime(
    durable_runtime_factory: RuntimeFactory,
) -> None:
    """A TestClock bound to one open runtime refuses another, and another runtime's clock
    refuses to serve it; once the first runtime closes, a new one may take the clock over."""
    clock = TestClock()
    other = TestClock()
    async with durable_runtime_factory(clock=clock, executor_id="a") as first:
        clock.bind(first)
        async with durable_runtime_factory(clock=clock, executor_id="b") as second:
            with pytest.raises(ClockMismatchError, match="still open"):
                clock_of(second)
        with pytest.raises(ClockMismatchError, match="does not run on this TestClock"):
            other.bind(first)
    async with durable_runtime_factory(clock=clock, executor_id="c") as third:
        assert clock_of(third) is clock


async def test_time_goes_on_across_runtimes_sharing_a_clock(
    durable_runtime_factory: RuntimeFactory, durable_clock: TestClock
) -> None:
    """A workflow asleep when its runtime crashes resumes in the next runtime and sleeps only
    what remains of its recorded wake-up time."""
    async with durable_runtime_factory() as first:
        handle = await first.start_workflow(sleeper, "resumed", 10 * 86400)
        await durable_clock.advance(4 * DAY)
        await first.crash()
    async with durable_runtime_factory() as second:
        assert second.recovered_workflow_ids == [handle.workflow_id]
        await durable_clock.advance(6 * DAY - timedelta(seconds=1))
        assert executed == []
        await durable_clock.advance(timedelta(seconds=1))
        recovered = await second.retrieve_workflow(handle.workflow_id)
        assert await recovered.get_result() == "resumed"


# -- crash simulation ----------------------------------------------------------------------------


@pytest.fixture
def crash_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """A fresh import of tests/apps/crash_app.py logging to this test's file (it reads
    CRASH_LOG when imported)."""
    monkeypatch.setenv("CRASH_LOG", str(tmp_path / "inproc-log"))
    monkeypatch.delenv("CRASH_BLOCK", raising=False)
    name = f"crash_app_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / "apps" / "crash_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


async def _journal(url: str, schema: str, workflow_id: str) -> list[tuple[int, str, Any]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            f"SELECT function_id, name, output FROM {schema}.steps WHERE workflow_id = $1"
            " ORDER BY function_id",
            workflow_id,
        )
        workflow = await conn.fetchrow(
            f"SELECT status, recovery_attempts FROM {schema}.workflows WHERE workflow_id = $1",
            workflow_id,
        )
    finally:
        await conn.close()
    assert workflow is not None
    outputs = [(r["function_id"], r["name"], r["output"]) for r in rows]
    return [*outputs, (0, workflow["status"], workflow["recovery_attempts"])]


async def test_crash_after_matches_a_sigkill_of_the_same_workflow(
    durable_runtime: Runtime,
    crash_app: ModuleType,
    database_url: str,
    schema: str,
    tmp_path: Path,
) -> None:
    """crash_after(step="step_one") then recovery leaves the same journal, outcome, recovery
    count and execution log as SIGKILLing the crash test's program after step one."""
    log = tmp_path / "sigkill-log"
    env = {
        "AIODURABLE_DATABASE_URL": database_url,
        "AIODURABLE_EXECUTOR_ID": "crash-app",
        "TEST_SCHEMA": schema,
        "CRASH_LOG": str(log),
    }
    first = Child("crash_app.py", "two_steps", "order-1", env={**env, "CRASH_BLOCK": "1"})
    await first.expect("STEP_ONE_DONE")
    await first.kill()
    second = Child("crash_app.py", "two_steps", "order-1", env=env)
    assert "RESULT one+two" in await second.expect("RESULT")
    assert await second.wait() == 0

    handle = await crash_after(
        durable_runtime, crash_app.two_steps, step="step_one", workflow_id="order-1"
    )
    assert await handle.get_result() == "one+two"

    killed = await _journal(database_url, schema, "order-1")
    crashed = await _journal(database_url, durable_runtime.schema, "order-1")
    assert crashed == killed
    assert [name for _, name, _ in crashed] == ["step_one", "hold", "step_two", "SUCCESS"]
    assert crashed[-1][2] == 1  # recovered once
    inproc_log = (await anyio.Path(crash_app.LOG).read_text()).splitlines()
    assert inproc_log == (await anyio.Path(log).read_text()).splitlines() == ["one", "two"]


async def test_crash_after_a_middle_step_reruns_nothing_that_was_checkpointed(
    durable_runtime: Runtime, crash_app: ModuleType
) -> None:
    """Crashed right after the third checkpoint of many_steps, the recovered workflow completes;
    each step ran once and its journaled token is the one it logged, as the SIGKILL test
    requires."""
    handle = await crash_after(
        durable_runtime, crash_app.many_steps, 5, step="numbered", occurrence=3
    )
    assert durable_runtime.recovered_workflow_ids == []  # recovered by restart(), not at open
    assert await handle.get_result() == 5
    lines = (await anyio.Path(crash_app.LOG).read_text()).splitlines()
    executions = [line.split() for line in lines]
    assert [int(index) for _, index, _ in executions] == [0, 1, 2, 3, 4]
    steps = await durable_runtime.list_steps(handle.workflow_id)
    assert [s.output for s in steps] == [token for _, _, token in executions]
    info = await handle.get_status()
    assert (info.status, info.recovery_attempts) == (WorkflowStatus.SUCCESS, 1)


async def test_crash_after_a_step_that_never_runs_fails_clearly(
    durable_runtime: Runtime, crash_app: ModuleType
) -> None:
    """crash_after() naming a step the workflow never checkpoints raises CrashPointNotReached
    listing the steps it did record."""
    with pytest.raises(CrashPointNotReached, match=r"'no_such_step'.*\['step_one', 'hold'"):
        await crash_after(durable_runtime, crash_app.two_steps, step="no_such_step")


# -- replay checking -----------------------------------------------------------------------------


@step()
async def reserve() -> str:
    return "reserved"


@step()
async def charge() -> str:
    return "charged"


@step(name="charge_card")
async def charge_renamed() -> str:
    return "charged"


@step()
async def ship() -> str:
    return "shipped"


async def _recorded(rt: Runtime, name: str) -> str:
    @workflow(name=name)
    async def original() -> str:
        return await reserve() + await charge() + await ship()

    handle = await rt.start_workflow(original)
    await handle.get_result()
    return handle.workflow_id


async def test_check_replay_passes_on_unchanged_code(durable_runtime: Runtime) -> None:
    """A workflow replayed against the code that recorded it raises nothing."""
    wid = await _recorded(durable_runtime, "replay-same")
    await check_replay(wid, durable_runtime)
    await check_replay(wid)  # the runtime of this task by default


async def test_check_replay_catches_a_renamed_step(durable_runtime: Runtime) -> None:
    """A step renamed since the recording is named, old and new, with its function ID."""
    wid = await _recorded(durable_runtime, "replay-renamed")

    @workflow(name="replay-renamed")
    async def changed() -> str:
        return await reserve() + await charge_renamed() + await ship()

    with pytest.raises(NonDeterminismError, match=r"'charge' at function ID 2.*'charge_card'"):
        await check_replay(wid, durable_runtime)


async def test_check_replay_catches_a_removed_step(durable_runtime: Runtime) -> None:
    """A step removed from the middle, or from the end, is named."""
    wid = await _recorded(durable_runtime, "replay-removed")

    @workflow(name="replay-removed")
    async def without_charge() -> str:
        return await reserve() + await ship()

    with pytest.raises(NonDeterminismError, match=r"'charge' at function ID 2.*now calls 'ship'"):
        await check_replay(wid, durable_runtime)

    @workflow(name="replay-removed")
    async def without_ship() -> str:
        return await reserve() + await charge()

    with pytest.raises(NonDeterminismError, match=r"'ship' at function ID 3.*no longer calls"):
        await check_replay(wid, durable_runtime)


async def test_check_replay_catches_two_swapped_steps(durable_runtime: Runtime) -> None:
    """Two steps called in the other order are named at the first function ID that differs."""
    wid = await _recorded(durable_runtime, "replay-swapped")

    @workflow(name="replay-swapped")
    async def swapped() -> str:
        return await reserve() + await ship() + await charge()

    with pytest.raises(NonDeterminismError, match=r"'charge' at function ID 2.*now calls 'ship'"):
        await check_replay(wid, durable_runtime)


async def test_check_replay_runs_no_step(durable_runtime: Runtime) -> None:
    """Replaying a recorded workflow runs none of its steps again."""
    handle = await durable_runtime.start_workflow(sleeper, "once", 0)
    await handle.get_result()
    assert executed == ["once"]
    await check_replay(handle.workflow_id, durable_runtime)
    assert executed == ["once"]


@workflow()
async def waits_for_a_word() -> object:
    return await aiodurable.recv("word", timeout=math.inf)


@workflow()
async def parent_of_a_waiter(started_by_call: bool) -> object:
    await note("parent")
    if started_by_call:
        return await waits_for_a_word()
    handle = await aiodurable.start_workflow(waits_for_a_word)
    return await handle.get_result()


@workflow(name="replay-in-a-task-group")
async def two_in_a_task_group() -> list[str]:
    async with asyncio.TaskGroup() as tg:
        first = tg.create_task(reserve())
        second = tg.create_task(charge())
    return [first.result(), second.result()]


async def test_check_replay_returns_at_once_mid_sleep_recv_and_child(
    durable_runtime: Runtime, durable_clock: TestClock
) -> None:
    """check_replay never waits: a workflow in a 60 s durable sleep, in a recv, or awaiting a
    child (called, or started and awaited through its handle) is checked up to the end of its
    journal at once, with no step run."""
    paying = await durable_runtime.start_workflow(trial_then_payment, "o2")
    await durable_clock.advance(31 * DAY)  # past the trial: waiting for the payment
    asleep = await durable_runtime.start_workflow(sleeper, "later", 60)
    await durable_clock.settle()  # asleep, 60 s to go
    called = await durable_runtime.start_workflow(parent_of_a_waiter, True)
    started = await durable_runtime.start_workflow(parent_of_a_waiter, False)
    await hooks(durable_runtime).notifier.until_waiting(3)  # the payment, and both children
    ran = list(executed)
    for handle in (asleep, paying, called, started):
        async with asyncio.timeout(5):  # (a replay that waited would take 60 s or forever)
            await check_replay(handle.workflow_id, durable_runtime)
        assert (await handle.get_status()).status is WorkflowStatus.PENDING
    assert executed == ran  # no step ran again
    steps = await durable_runtime.list_steps(paying.workflow_id)
    assert [s.name for s in steps] == ["note", "aiodurable.sleep"]  # the recv is not recorded


async def test_check_replay_finds_a_change_inside_a_task_group(durable_runtime: Runtime) -> None:
    """A mismatch raised in a task of the workflow's task group is reported, not swallowed with
    the exception group that carries it."""
    handle = await durable_runtime.start_workflow(two_in_a_task_group)
    await handle.get_result()
    await check_replay(handle.workflow_id, durable_runtime)

    @workflow(name="replay-in-a-task-group")
    async def changed() -> list[str]:
        async with asyncio.TaskGroup() as tg:
            first = tg.create_task(reserve())
            second = tg.create_task(charge_renamed())
        return [first.result(), second.result()]

    with pytest.raises(NonDeterminismError, match=r"'charge' at function ID 2.*'charge_card'"):
        await check_replay(handle.workflow_id, durable_runtime)


async def test_durable_runtime_gets_a_fresh_schema(
    durable_runtime: Runtime, durable_schema: str
) -> None:
    """The durable_runtime fixture runs on this test's own, empty schema."""
    assert durable_runtime.schema == durable_schema
    assert await durable_runtime.list_workflows() == []
