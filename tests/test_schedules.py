"""Cron schedules on PostgreSQL: exactly one workflow per tick across runtimes sharing the
database, a killed program catching up (or not) when restarted, the schedule statements' contract
(on PostgreSQL and in memory), and the ``aiodurable schedule`` command line."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import orjson
import pytest

import aiodurable
from aiodurable import Runtime, WorkflowStatus
from aiodurable._cli import main as cli_main
from aiodurable._store import Store, StoreProtocol
from aiodurable.testing._memory_state import MemoryState
from aiodurable.testing._memory_store import MemoryStore

from .conftest import RuntimeFactory
from .proc import Child

pytestmark = pytest.mark.anyio

runs: list[str] = []


@aiodurable.workflow(name="sched-counted")
async def counted(scheduled_time: datetime, actual_time: datetime) -> str:
    runs.append(aiodurable.current_workflow_id())
    return scheduled_time.isoformat()


class SharedClock:
    """A :class:`~aiodurable.Clock` several runtimes share (a TestClock serves one): its time
    moves only by :meth:`advance_to`, and it knows which deadlines are being waited for, so a test
    can tell when every scheduler sleeps until a given tick."""

    def __init__(self, start: float) -> None:
        self._now = start
        self._moved = asyncio.Event()
        self._changed = asyncio.Event()
        self._waits: list[float | None] = []

    def now(self) -> float:
        return self._now

    async def sleep_until(self, deadline: float) -> None:
        await self.wait(asyncio.Event(), deadline)

    async def wait(self, event: asyncio.Event, deadline: float | None) -> bool:
        self._waits.append(deadline)
        self._changed.set()
        try:
            while not event.is_set() and (deadline is None or self._now < deadline):
                moved = self._moved
                either = {
                    asyncio.ensure_future(event.wait()),
                    asyncio.ensure_future(moved.wait()),
                }
                try:
                    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiting in either:
                        waiting.cancel()
            return event.is_set()
        finally:
            self._waits.remove(deadline)
            self._changed.set()

    def advance_to(self, when: float) -> None:
        self._now = when
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()

    async def until(self, done: Callable[[list[float | None]], bool]) -> None:
        """Return once ``done(the deadlines waited for)`` holds."""
        async with asyncio.timeout(30):
            while True:
                self._changed.clear()
                if done(self._waits):
                    return
                await self._changed.wait()


def both_waiting_for(tick: float) -> Callable[[list[float | None]], bool]:
    """Whether two waits (the two runtimes' schedulers) have ``tick`` as their deadline."""
    return lambda waits: waits.count(tick) == 2


async def test_two_runtimes_on_one_database_start_exactly_one_workflow_per_tick(
    runtime: RuntimeFactory,
) -> None:
    """Two runtimes (two executors, one database) both wake at each tick of a per-second
    schedule, five ticks long, and both try to start it: each tick's workflow is recorded and
    runs exactly once. A pause made through one then stops both schedulers (a notification)."""
    runs.clear()
    base = float(math.floor(time.time()))
    clock = SharedClock(base + 0.5)
    async with (
        runtime(executor_id="a", clock=clock) as a,
        runtime(executor_id="b", clock=clock) as b,
    ):
        await a.create_schedule("per-second", counted, "* * * * * *")
        for i in range(1, 6):
            tick = base + i
            await clock.until(both_waiting_for(tick))  # both schedulers sleep until it
            clock.advance_to(tick + 0.25)
        await clock.until(both_waiting_for(base + 6))  # both are done with tick 5
        rows = await a.list_workflows(workflow_id_prefix="sched-per-second-")
        expected = [
            f"sched-per-second-{datetime.fromtimestamp(base + i, UTC).isoformat()}"
            for i in range(1, 6)
        ]
        assert sorted(r.workflow_id for r in rows) == expected
        for wid in expected:
            handle = await b.retrieve_workflow(wid)
            assert await handle.get_result() == wid.removeprefix("sched-per-second-")
        assert Counter(runs) == dict.fromkeys(expected, 1)
        assert {r.status for r in await a.list_workflows(workflow_id_prefix="sched-")} == {
            WorkflowStatus.SUCCESS
        }
        await b.pause_schedule("per-second")
        await clock.until(lambda waits: base + 6 not in waits)  # both dropped their timers
        [info] = await a.list_schedules()
        assert info.paused and info.last_tick == datetime.fromtimestamp(base + 5, UTC)


async def test_a_killed_program_runs_the_missed_ticks_once_on_restart_with_catch_up_only(
    database_url: str, schema: str, tmp_path: Path
) -> None:
    """A program running two per-second schedules is SIGKILLed and started again 2 s later:
    the catch-up schedule's missed ticks are each started once (its workflow IDs have no gap),
    the other's are not (a gap as long as the outage)."""
    log = tmp_path / "log"
    env = {
        "AIODURABLE_DATABASE_URL": database_url,
        "AIODURABLE_EXECUTOR_ID": "schedule-app",
        "TEST_SCHEMA": schema,
        "SCHEDULE_LOG": str(log),
    }
    first = Child("schedule_app.py", env=env)
    await first.expect("READY")
    await first.expect("TICK caught")
    await first.expect("TICK skipped")
    await first.kill()
    killed = time.time()
    await asyncio.sleep(2.0)  # the outage: ticks fall while no process runs
    second = Child("schedule_app.py", env=env)
    await second.expect("READY")
    restarted = time.time()
    after = datetime.fromtimestamp(math.floor(restarted) + 2, UTC).isoformat()
    await second.expect(f"TICK caught {after}")
    await second.expect(f"TICK skipped {after}")
    await second.kill()

    logged = Counter(log.read_text().split("\n"))
    conn = await asyncpg.connect(database_url)
    try:
        ids = await conn.fetch(f"SELECT workflow_id FROM {schema}.workflows")
    finally:
        await conn.close()

    def ticks(name: str) -> list[float]:
        prefix = f"sched-{name}-"
        return sorted(
            datetime.fromisoformat(r["workflow_id"][len(prefix) :]).timestamp()
            for r in ids
            if r["workflow_id"].startswith(prefix)
        )

    caught, skipped = ticks("caught"), ticks("skipped")
    assert caught == [caught[0] + i for i in range(len(caught))]  # every second, no gap
    outage = [t for t in caught if killed < t < restarted]
    assert len(outage) >= 2
    for t in outage:  # started only by the restarted program, once
        assert logged[f"caught {datetime.fromtimestamp(t, UTC).isoformat()}"] == 1
    assert not [t for t in skipped if killed + 1 < t < restarted]
    assert skipped[-1] - skipped[0] + 1 > len(skipped)  # the gap


# -- the statements' contract, on PostgreSQL and in memory ----------------------------------------


@pytest.fixture(params=["postgres", "memory"])
async def store_and_signals(
    request: pytest.FixtureRequest, database_url: str, schema: str
) -> AsyncIterator[tuple[StoreProtocol, asyncio.Queue[list[str]]]]:
    """A migrated store and the notifications it sends, as lists."""
    received: asyncio.Queue[list[str]] = asyncio.Queue()
    if request.param == "memory":
        state = MemoryState()
        state.listeners.add(lambda key: received.put_nowait(list(key)))
        yield MemoryStore(state, schema), received
        return
    store = await Store.open(database_url, schema)
    conn = await asyncpg.connect(database_url)
    try:
        await store.migrate()
        await conn.add_listener(
            store.channel, lambda *args: received.put_nowait(orjson.loads(args[3]))
        )
        yield store, received
    finally:
        await conn.close()
        await store.close()


async def test_the_schedule_statements_notify_changes_and_move_last_tick_forward_only(
    store_and_signals: tuple[StoreProtocol, asyncio.Queue[list[str]]],
) -> None:
    """Creating, declaring (when it changes something), pausing, resuming and deleting a
    schedule each notify (SCHEDULE, name); a name is created once; a declaration keeps the
    schedule's paused state and last tick; last_tick only moves forward; resuming a paused
    schedule passes over the ticks up to the one given, resuming an active one does not."""
    store, received = store_and_signals

    async def signals() -> list[list[str]]:
        await store.notify("barrier")
        found: list[list[str]] = []
        async with asyncio.timeout(10):
            while (key := await received.get()) != ["barrier"]:
                found.append(key)
        return found

    made = await store.create_schedule("s", "wf", "* * * * *", "UTC", False, 100.0)
    assert made is not None and (made.declared, made.paused, made.last_tick) == (False, False, None)
    assert await store.create_schedule("s", "other", "* * * * *", "UTC", True, 101.0) is None
    assert await signals() == [["c", "s"]]

    await store.declare_schedules([("d", "wf", "* * * * *", "UTC", True)], 100.0)
    assert await store.pause_schedule("d", 101.0)
    assert await store.advance_schedule("d", 160.0)
    assert not await store.advance_schedule("d", 120.0)
    assert not await store.advance_schedule("d", 160.0)
    assert await signals() == [["c", "d"], ["c", "d"]]
    await store.declare_schedules([("d", "wf2", "*/5 * * * *", "Europe/Berlin", True)], 200.0)
    await store.declare_schedules([("d", "wf2", "*/5 * * * *", "Europe/Berlin", True)], 201.0)
    assert await signals() == [["c", "d"]]  # the second changed nothing
    row = await store.get_schedule("d")
    assert row is not None
    assert (row.workflow_name, row.cron, row.tz, row.declared) == (
        "wf2",
        "*/5 * * * *",
        "Europe/Berlin",
        True,
    )
    assert (row.paused, row.last_tick, row.created_at, row.updated_at) == (
        True,
        160.0,
        100.0,
        200.0,
    )

    assert await store.resume_schedule("d", 300.0, 240.0)
    assert await store.resume_schedule("d", 310.0, 300.0)  # active: nothing passed over
    row = await store.get_schedule("d")
    assert row is not None and (row.paused, row.last_tick) == (False, 240.0)
    assert [r.name for r in await store.list_schedules()] == ["d", "s"]
    assert await store.delete_schedule("d")
    assert not await store.delete_schedule("d")
    assert not await store.pause_schedule("d", 1.0)
    assert not await store.resume_schedule("d", 1.0, None)
    assert await store.get_schedule("d") is None
    assert await signals() == [["c", "d"], ["c", "d"], ["c", "d"]]


# -- the command line -----------------------------------------------------------------------------


def test_the_command_line_lists_pauses_resumes_and_deletes_schedules(
    database_url: str, schema: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``aiodurable schedule list|pause|resume|delete`` show and change the schedules; an
    unknown name exits 1 naming it."""

    async def create() -> None:
        async with Runtime(database_url, schema=schema, recover=False, app_version="v") as rt:
            await rt.create_schedule("cli-sched", counted, "0 3 * * *", tz="Europe/Paris")

    asyncio.run(create())

    def run(*args: str) -> tuple[int, str, str]:
        code = cli_main(["schedule", *args, "--schema", schema, "--database-url", database_url])
        out = capsys.readouterr()
        return code, out.out, out.err

    code, out, _ = run("list")
    assert code == 0
    header, line = out.splitlines()
    assert header.split()[:4] == ["NAME", "WORKFLOW", "CRON", "TZ"]
    assert line.split()[:7] == ["cli-sched", "sched-counted", "0", "3", "*", "*", "*"]
    assert line.split()[7:9] == ["Europe/Paris", "active"]
    assert run("pause", "cli-sched")[:2] == (0, "cli-sched  paused\n")
    code, out, _ = run("list", "--json")
    [listed] = json.loads(out)
    assert (listed["name"], listed["paused"], listed["next_tick"]) == ("cli-sched", True, None)
    assert listed["tz"] == "Europe/Paris" and listed["declared"] is False
    assert run("resume", "cli-sched")[0] == 0
    [listed] = json.loads(run("list", "--json")[1])
    assert not listed["paused"] and listed["next_tick"].endswith(("+01:00", "+02:00"))
    assert run("delete", "cli-sched")[0] == 0
    code, _, err = run("pause", "cli-sched")
    assert code == 1 and "no schedule named 'cli-sched'" in err
    assert json.loads(run("list", "--json")[1]) == []
