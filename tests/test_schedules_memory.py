"""Cron schedules on the in-memory backend and the TestClock: ticks, the workflow IDs and times,
run-time management, notifications between runtimes, catch-up, daylight saving time, errors,
and the console's schedules page. (PostgreSQL, several processes and the command line:
test_schedules.py.)"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

import aiodurable
from aiodurable import Runtime, ScheduleNotFound
from aiodurable import _schedule as schedule_module
from aiodurable._cron import MAX_CATCH_UP, Cron
from aiodurable.console import create_app
from aiodurable.testing import MemoryBackend, TestClock, hooks

pytestmark = pytest.mark.anyio

START = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)
ran: list[tuple[str, datetime, datetime]] = []


@aiodurable.workflow(name="sched-memo")
async def memo(scheduled_time: datetime, actual_time: datetime) -> str:
    ran.append((aiodurable.current_workflow_id(), scheduled_time, actual_time))
    return scheduled_time.isoformat()


@aiodurable.workflow(name="sched-memo-parked")
async def parked(scheduled_time: datetime, actual_time: datetime) -> str:
    ran.append((aiodurable.current_workflow_id(), scheduled_time, actual_time))
    await aiodurable.recv("go", timeout=3600)
    return f"{scheduled_time.isoformat()} {type(scheduled_time.tzinfo).__name__}"


@aiodurable.workflow(name="sched-not-a-schedule")
async def three(a: int, b: int, c: int) -> int:
    return a + b + c


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    """Each test starts with no recorded run and no declared schedule, and leaves none: a
    schedule declared here must not run in the runtimes of other test modules."""
    ran.clear()
    saved = dict(schedule_module._declared)
    schedule_module._declared.clear()
    yield
    schedule_module._declared.clear()
    schedule_module._declared.update(saved)


@asynccontextmanager
async def opened(
    backend: MemoryBackend, clock: TestClock, **options: Any
) -> AsyncIterator[Runtime]:
    options.setdefault("executor_id", "memo-executor")
    async with Runtime(backend=backend, clock=clock, app_version="v1", **options) as rt:
        yield rt


def timer(clock: TestClock) -> float | None:
    """The clock's earliest timer (a function: mypy would narrow a property between reads)."""
    return clock.next_deadline


def ids() -> list[str]:
    return sorted(ran_id for ran_id, _, _ in ran)


async def workflow_ids(rt: Runtime, name: str) -> list[str]:
    return sorted(w.workflow_id for w in await rt.list_workflows(name=name))


# -- the decorator, the IDs and the times -------------------------------------------------------


async def test_a_decorated_schedule_is_stored_listed_and_starts_one_workflow_per_tick(
    backend: MemoryBackend,
) -> None:
    """@scheduled above @workflow() is written to the store as the runtime begins (declared,
    named after the workflow), starts one workflow per tick under sched-{name}-{tick UTC ISO}
    with the tick and the start time, aware on the zone's wall clock, and can be paused."""

    @aiodurable.scheduled("*/10 * * * * *", tz="Asia/Tokyo")
    @aiodurable.workflow(name="every-ten")
    async def every_ten(scheduled_time: datetime, actual_time: datetime) -> str:
        ran.append((aiodurable.current_workflow_id(), scheduled_time, actual_time))
        return "ok"

    clock = TestClock(START + timedelta(seconds=5))
    async with opened(backend, clock) as rt:
        await clock.settle()
        [info] = await aiodurable.list_schedules()
        assert (info.name, info.workflow_name, info.cron, info.tz) == (
            "every-ten",
            "every-ten",
            "*/10 * * * * *",
            "Asia/Tokyo",
        )
        assert info.declared and not info.paused and not info.catch_up
        assert info.last_tick is None
        assert info.next_tick == START + timedelta(seconds=10)
        assert info.next_tick is not None and info.next_tick.utcoffset() == timedelta(hours=9)
        await clock.advance(30)
        assert [r[0] for r in ran] == [
            "sched-every-ten-2026-01-05T12:00:10+00:00",
            "sched-every-ten-2026-01-05T12:00:20+00:00",
            "sched-every-ten-2026-01-05T12:00:30+00:00",
        ]
        _, scheduled_time, actual_time = ran[0]
        assert scheduled_time == START + timedelta(seconds=10) == actual_time
        assert scheduled_time.utcoffset() == timedelta(hours=9)
        assert scheduled_time.isoformat() == "2026-01-05T21:00:10+09:00"
        handle = await rt.retrieve_workflow(ran[0][0])
        assert await handle.get_result() == "ok"

        await aiodurable.pause_schedule("every-ten")
        await clock.advance(30)
        assert len(ran) == 3
        [info] = await rt.list_schedules()
        assert info.paused and info.next_tick is None
        assert info.last_tick == START + timedelta(seconds=30)


async def test_a_recovered_scheduled_workflow_sees_the_times_its_first_run_saw(
    backend: MemoryBackend,
) -> None:
    """The times are given with the zone's UTC offset as a fixed offset, which is what the
    recorded inputs decode to: a workflow recovered after a crash sees equal values of the same
    type."""
    clock = TestClock(START)
    async with opened(backend, clock) as rt:
        await rt.create_schedule("parked", parked, "0 * * * *", tz="Europe/Berlin")
        await clock.advance(timedelta(hours=1))
        [(wid, first_time, _)] = ran
        await hooks(rt).crash()
        assert await hooks(rt).recover() == [wid]
        await clock.settle()
        assert [r[0] for r in ran] == [wid, wid]
        assert ran[1][1] == first_time and type(ran[1][1].tzinfo) is type(first_time.tzinfo)
        await rt.send(wid, "now", topic="go")
        result = await (await rt.retrieve_workflow(wid)).get_result()
        assert result == "2026-01-05T14:00:00+01:00 timezone"


# -- run-time management ------------------------------------------------------------------------


async def test_create_list_pause_resume_and_delete_at_run_time(backend: MemoryBackend) -> None:
    """A schedule created at run time runs from its next tick; paused, it starts nothing, and
    once resumed it passes over the ticks that fell meanwhile (even with catch_up); deleted, it
    is gone and starts nothing; unknown names raise ScheduleNotFound, a taken one ValueError."""
    clock = TestClock(START)
    async with opened(backend, clock) as rt:
        info = await aiodurable.create_schedule("minutely", memo, "* * * * *", catch_up=True)
        assert (info.name, info.workflow_name, info.declared, info.catch_up) == (
            "minutely",
            "sched-memo",
            False,
            True,
        )
        assert info.next_tick == START + timedelta(minutes=1)
        with pytest.raises(ValueError, match="already exists"):
            await rt.create_schedule("minutely", memo, "*/5 * * * *")
        await clock.advance(timedelta(minutes=2))
        assert ids() == [
            "sched-minutely-2026-01-05T12:01:00+00:00",
            "sched-minutely-2026-01-05T12:02:00+00:00",
        ]

        await rt.pause_schedule("minutely")
        await clock.advance(timedelta(minutes=3))
        assert len(ran) == 2
        await rt.resume_schedule("minutely")
        [info] = await rt.list_schedules()
        assert not info.paused
        assert info.last_tick == START + timedelta(minutes=5)  # passed over while paused
        await clock.advance(timedelta(minutes=1))
        assert ids()[-1] == "sched-minutely-2026-01-05T12:06:00+00:00"
        assert len(ran) == 3

        await rt.delete_schedule("minutely")
        assert await rt.list_schedules() == []
        await clock.advance(timedelta(minutes=2))
        assert len(ran) == 3
        for call in (rt.pause_schedule, rt.resume_schedule, rt.delete_schedule):
            with pytest.raises(ScheduleNotFound, match="no schedule named 'minutely'"):
                await call("minutely")


async def test_a_change_made_in_another_runtime_reaches_the_running_one_by_notification(
    backend: MemoryBackend,
) -> None:
    """A schedule created, paused and resumed through another runtime (one that runs nothing)
    takes effect in the runtime running schedules at once: its scheduler is woken by the
    notification, not by a tick or a poll."""
    clock = TestClock(START)
    other_clock = TestClock(START)
    async with (
        opened(backend, clock),
        opened(backend, other_clock, recover=False, executor_id="other") as other,
    ):
        await clock.settle()
        assert timer(clock) is None  # nothing scheduled: the scheduler sleeps
        await other.create_schedule("remote", memo, "*/10 * * * * *")
        await clock.settle()
        assert timer(clock) == START.timestamp() + 10  # woken, it set a timer
        await clock.advance(10)
        await other_clock.advance(10)
        assert ids() == ["sched-remote-2026-01-05T12:00:10+00:00"]

        await other.pause_schedule("remote")
        await clock.settle()
        assert timer(clock) is None  # the paused schedule's timer is gone
        await clock.advance(30)
        await other_clock.advance(30)
        assert len(ran) == 1

        await other.resume_schedule("remote")
        await clock.settle()
        assert timer(clock) == START.timestamp() + 50
        await clock.advance(10)
        assert ids()[-1] == "sched-remote-2026-01-05T12:00:50+00:00"
        assert len(ran) == 2


# -- catch-up -----------------------------------------------------------------------------------


async def test_ticks_missed_while_no_runtime_ran_are_started_once_with_catch_up_only(
    backend: MemoryBackend,
) -> None:
    """Ticks that fell while no runtime ran are started, once each, when one begins again if
    the schedule catches up; a schedule that does not starts only the ticks after it began."""
    clock = TestClock(START)
    async with opened(backend, clock) as rt:
        await rt.create_schedule("caught", memo, "* * * * *", catch_up=True)
        await rt.create_schedule("skipped", memo, "* * * * *", catch_up=False)
        await clock.advance(timedelta(minutes=1))
        assert len(ran) == 2
    await clock.advance(timedelta(minutes=5, seconds=30))  # down from 12:01 to 12:06:30
    async with opened(backend, clock) as rt:
        await clock.settle()
        caught = await workflow_ids(rt, "sched-memo")
        assert [i for i in caught if "caught" in i] == [
            f"sched-caught-2026-01-05T12:0{m}:00+00:00" for m in range(1, 7)
        ]
        assert [i for i in caught if "skipped" in i] == ["sched-skipped-2026-01-05T12:01:00+00:00"]
        await clock.advance(30)
        assert set(await workflow_ids(rt, "sched-memo")) >= {
            "sched-caught-2026-01-05T12:07:00+00:00",
            "sched-skipped-2026-01-05T12:07:00+00:00",
        }
    before = list(ran)
    async with opened(backend, clock):
        await clock.settle()
    assert ran == before  # begun again with nothing missed: no tick runs twice
    assert len({r[0] for r in ran}) == len(ran) == 6 + 1 + 2


def test_catch_up_is_bounded_to_the_latest_ticks() -> None:
    """A per-second schedule missed for a week catches up on the latest 1,000 ticks only, and
    says it left older ones out."""
    cron = Cron.parse("* * * * * *")
    now = START.timestamp() + 7 * 86400
    ticks, truncated = cron.due(START.timestamp(), now)
    assert truncated and len(ticks) == MAX_CATCH_UP == 1000
    assert ticks == [now - MAX_CATCH_UP + 1 + i for i in range(MAX_CATCH_UP)]
    few, truncated = cron.due(now - 5, now)
    assert few == [now - 4, now - 3, now - 2, now - 1, now] and not truncated


# -- time zones and daylight saving time ---------------------------------------------------------

# (zone, the day before a change, what the tick's wall time becomes on the three days from it)
DST = [
    (  # spring forward: 02:30 does not exist on 29 March; it runs once, at 03:00 CEST
        "Europe/Berlin",
        datetime(2026, 3, 28, 12, tzinfo=UTC),
        [
            "2026-03-29T03:00:00+02:00",
            "2026-03-30T02:30:00+02:00",
            "2026-03-31T02:30:00+02:00",
        ],
    ),
    (  # fall back: 02:30 happens twice on 25 October; it runs at each
        "Europe/Berlin",
        datetime(2026, 10, 24, 12, tzinfo=UTC),
        [
            "2026-10-25T02:30:00+02:00",
            "2026-10-25T02:30:00+01:00",
            "2026-10-26T02:30:00+01:00",
            "2026-10-27T02:30:00+01:00",
        ],
    ),
    (  # spring forward in New York on 8 March
        "America/New_York",
        datetime(2026, 3, 7, 17, tzinfo=UTC),
        [
            "2026-03-08T03:00:00-04:00",
            "2026-03-09T02:30:00-04:00",
            "2026-03-10T02:30:00-04:00",
        ],
    ),
]


@pytest.mark.parametrize(
    ("tz", "start", "expected"), DST, ids=["berlin-spring", "berlin-fall", "ny-spring"]
)
async def test_daily_ticks_across_daylight_saving_changes(
    backend: MemoryBackend, tz: str, start: datetime, expected: list[str]
) -> None:
    """'30 2 * * *' follows the zone's wall clock: on the spring-forward night the missing 02:30
    runs once, at the end of the gap (03:00); on the fall-back night the repeated 02:30 runs
    twice, once per instant; each tick's workflow ID is its distinct UTC instant."""
    clock = TestClock(start)
    async with opened(backend, clock) as rt:
        await rt.create_schedule("night", memo, "30 2 * * *", tz=tz)
        await clock.advance(timedelta(days=3, hours=1))
    assert [r[1].isoformat() for r in ran] == expected
    zone = ZoneInfo(tz)
    for wid, scheduled_time, _ in ran:
        utc = scheduled_time.astimezone(UTC)
        assert wid == f"sched-night-{utc.isoformat()}"
        assert scheduled_time.utcoffset() == utc.astimezone(zone).utcoffset()


def test_a_leading_sixth_field_is_seconds() -> None:
    """Six fields: the first is the second (DBOS's and Quartz's order); five: second 0."""
    base = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC).timestamp()
    assert Cron.parse("15 * * * * *").due(base, base + 120)[0] == [base + 15, base + 75]
    assert Cron.parse("*/2 * * * *").due(base, base + 240)[0] == [base + 120, base + 240]
    assert Cron.parse("@hourly").next_after(base) == base + 3600


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("* * *", r"has 3 field\(s\); write 5 fields .* or 6 with a leading seconds field"),
        ("0 0 1 1 * 0 2030", r"has 7 field\(s\)"),
        ("61 * * * *", r"bad cron expression '61 \* \* \* \*'"),
        ("0 0 30 2 *", "never matches"),
        ("H * * * *", "hashed or random field"),
        ("", r"has 0 field\(s\)"),
    ],
)
def test_a_bad_cron_expression_is_refused_at_decoration(cron: str, message: str) -> None:
    """A cron expression that has the wrong number of fields, a value out of range, never
    matches, or would tick differently in each process raises ValueError saying so and how to
    write one; nothing is declared."""
    with pytest.raises(ValueError, match=message):

        @aiodurable.scheduled(cron)
        @aiodurable.workflow(name="bad-cron")
        async def bad(scheduled_time: datetime, actual_time: datetime) -> None: ...

    assert schedule_module.declared_schedules() == []


def test_a_bad_time_zone_is_refused_naming_it() -> None:
    """An unknown zone name raises ValueError naming it and what to give instead."""
    with pytest.raises(ValueError, match=r"unknown time zone 'Europe/Berln'; give an IANA"):
        aiodurable.scheduled("* * * * *", tz="Europe/Berln")
    with pytest.raises(ValueError, match="tz must be the name of a time zone"):
        aiodurable.scheduled("* * * * *", tz="")


def test_a_bad_signature_or_order_is_refused_naming_the_fix() -> None:
    """A scheduled workflow must take (scheduled_time, actual_time), and @scheduled must sit
    above @workflow(); catch_up must be a bool. Each error says what to write."""
    with pytest.raises(TypeError, match=r"takes \(a, b, c\); write it as"):
        aiodurable.scheduled("* * * * *")(three)

    async def one(scheduled_time: datetime) -> None: ...

    with pytest.raises(TypeError, match=r"scheduled_time: datetime, actual_time: datetime"):
        aiodurable.scheduled("* * * * *")(aiodurable.workflow(name="sched-one")(one))

    async def keyword(a: datetime, b: datetime, *, c: int) -> None: ...

    with pytest.raises(TypeError, match="is called with two arguments"):
        aiodurable.scheduled("* * * * *")(aiodurable.workflow(name="sched-kw")(keyword))

    async def plain(scheduled_time: datetime, actual_time: datetime) -> None: ...

    with pytest.raises(TypeError, match=r"place @aiodurable.scheduled\(...\) above"):
        aiodurable.workflow(name="sched-below")(aiodurable.scheduled("* * * * *")(plain))
    with pytest.raises(ValueError, match="catch_up must be True or False"):
        aiodurable.scheduled("* * * * *", catch_up="yes")  # type: ignore[arg-type]  # the error under test
    assert schedule_module.declared_schedules() == []


async def test_create_schedule_checks_its_arguments_before_writing(
    backend: MemoryBackend, clock: TestClock
) -> None:
    """create_schedule refuses a function that is not a workflow, a workflow of the wrong
    shape, a bad expression or zone, and a name too long for its ticks' IDs; none is stored."""

    async def not_a_workflow(scheduled_time: datetime, actual_time: datetime) -> None: ...

    async with opened(backend, clock) as rt:
        with pytest.raises(TypeError, match="is not a workflow"):
            await rt.create_schedule("x", not_a_workflow, "* * * * *")
        with pytest.raises(TypeError, match="is called with two arguments"):
            await rt.create_schedule("x", three, "* * * * *")
        with pytest.raises(ValueError, match="unknown time zone 'Nowhere'"):
            await rt.create_schedule("x", memo, "* * * * *", tz="Nowhere")
        with pytest.raises(ValueError, match="bad cron expression"):
            await rt.create_schedule("x", memo, "* 99 * * *")
        with pytest.raises(ValueError, match="too long"):
            await rt.create_schedule("x" * 990, memo, "* * * * *")
        with pytest.raises(ValueError, match="schedule name must be a non-empty string"):
            await rt.create_schedule("", memo, "* * * * *")
        assert await rt.list_schedules() == []


# -- the console ----------------------------------------------------------------------------------


async def test_the_console_lists_schedules_and_pauses_and_resumes_them(
    backend: MemoryBackend, clock: TestClock
) -> None:
    """The console's schedules page lists each schedule with its state and next tick; its
    pause and resume buttons work with the page's CSRF token, and are refused without it."""
    async with opened(backend, clock, recover=False) as rt:
        await rt.create_schedule("nightly <b>", memo, "0 3 * * *", tz="Europe/Paris")
        transport = httpx.ASGITransport(app=create_app(rt), client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            page = await http.get("/schedules")
            assert page.status_code == 200
            assert "nightly &lt;b&gt;" in page.text and "<b>" not in page.text.split("<main>")[1]
            assert "Europe/Paris" in page.text and "state-active" in page.text
            assert 'href="/schedules"' in (await http.get("/")).text
            match = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
            assert match is not None
            csrf = match.group(1)
            url = "/schedules/nightly%20%3Cb%3E"
            refused = await http.post(f"{url}/pause", data={"csrf": "forged"})
            assert refused.status_code == 403
            assert not (await rt.list_schedules())[0].paused
            done = await http.post(f"{url}/pause", data={"csrf": csrf})
            assert done.status_code == 303 and "Paused" in done.headers["location"]
            assert (await rt.list_schedules())[0].paused
            page = await http.get(done.headers["location"])
            assert "state-paused" in page.text and "Paused nightly &lt;b&gt;." in page.text
            assert (await http.post(f"{url}/resume", data={"csrf": csrf})).status_code == 303
            assert not (await rt.list_schedules())[0].paused
            missing = await http.post("/schedules/nope/pause", data={"csrf": csrf})
            assert missing.status_code == 404
            odd = await http.post(f"{url}/explode", data={"csrf": csrf})
            assert odd.status_code == 404


# -- a sanity check of the time zones' fixed offsets ----------------------------------------------


def test_local_times_carry_the_offset_of_their_instant() -> None:
    """``Cron.local`` gives the wall time with the zone's offset at that instant, as a fixed
    offset equal to what ``datetime.fromisoformat`` makes of its ISO text."""
    cron = Cron.parse("* * * * *", "Europe/Berlin")
    winter, summer = cron.local(START.timestamp()), cron.local(START.timestamp() + 180 * 86400)
    assert winter.tzinfo == timezone(timedelta(hours=1))
    assert summer.tzinfo == timezone(timedelta(hours=2))
    assert datetime.fromisoformat(summer.isoformat()) == summer
    assert datetime.fromisoformat(summer.isoformat()).tzinfo == summer.tzinfo
