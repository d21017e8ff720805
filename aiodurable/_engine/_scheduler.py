"""``Scheduler``: start each schedule's workflow on its ticks, and manage schedules.

Every runtime that begins runs one scheduler loop. It reads the schedules table, starts the due
ticks of each active schedule whose workflow this program registers, then sleeps on the runtime's
clock until the earliest next tick, or until a ``(SCHEDULE, name)`` notification (a schedule
created, changed, paused, resumed or deleted by any process) wakes it; nothing polls, bar the slow
safety re-read every ``notify_fallback`` seconds.

Exactly one workflow per tick: the tick's workflow is started under the ID
``sched-{name}-{tick}``, so when several runtimes start the same tick, one inserts it and runs it
and the others attach to it. A schedule's ``last_tick`` moves forward only after its tick's
workflow is recorded, by a conditional UPDATE; a crash in between starts the same IDs again,
which changes nothing.

Which ticks are due: those after the schedule's last tick (its creation, before the first). With
``catch_up=False``, not before this runtime began either, so ticks missed while no process ran
are passed over; with ``catch_up=True`` they are started, the latest
:data:`~aiodurable._cron.MAX_CATCH_UP` at most.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from .._clock import wait_woken
from .._cron import MAX_CATCH_UP, Cron
from .._exceptions import DuplicateWorkflowError, ScheduleNotFound, SerializationError
from .._schedule import (
    ScheduleInfo,
    ScheduleRow,
    check_new,
    declared_schedules,
    info_of,
    schedule_workflow_id,
    watermark,
)
from .._workflow import WorkflowDef, lookup

if TYPE_CHECKING:
    from . import Engine

__all__ = ["Scheduler"]

logger = logging.getLogger("aiodurable")


class Scheduler:
    """The schedule loop of one engine, what wakes it, and the management of schedules."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._wanted = asyncio.Event()
        self._since: float | None = None
        self._crons: dict[tuple[str, str], Cron | None] = {}

    def wake(self) -> None:
        """Re-read the schedules now (one was created, changed, paused, resumed or deleted)."""
        self._wanted.set()

    # -- the loop ----------------------------------------------------------------------------

    async def loop(self) -> None:
        """Write the declared schedules, then start due ticks, sleeping on the runtime's clock
        until the next one or a notification."""
        engine = self._engine
        if self._since is None:
            self._since = engine.clock.now()
        await self.declare()
        self.wake()  # at each (re)start: a wake-up may have been missed meanwhile
        next_tick: float | None = None
        while True:
            # Ticks are durable time (the clock); the safety re-read is real time.
            await wait_woken(engine.clock, self._wanted, next_tick, engine.options.notify_fallback)
            self._wanted.clear()
            next_tick = await self.run_due()

    async def declare(self) -> None:
        """Write this program's ``@scheduled`` schedules whose workflow it registers."""
        engine = self._engine
        rows = [
            (d.name, d.name, d.cron.expression, d.cron.tz, d.catch_up)
            for d in declared_schedules()
            if lookup(d.name) is not None
        ]
        await engine.store.declare_schedules(rows, engine.clock.now())

    async def run_due(self) -> float | None:
        """Start the due ticks of every active schedule this program can run; return the time
        of the earliest next tick (None: none)."""
        engine = self._engine
        since = self._since
        earliest: float | None = None
        for row in await engine.store.list_schedules():
            wdef = lookup(row.workflow_name)
            cron = self._cron(row)
            if row.paused or wdef is None or cron is None:
                continue
            now = engine.clock.now()
            after = watermark(row, since)
            ticks, truncated = cron.due(after, now)
            if truncated:
                logger.warning(
                    "schedule %r missed more than %d ticks; starting the latest %d, from %s",
                    row.name,
                    MAX_CATCH_UP,
                    MAX_CATCH_UP,
                    cron.zoned(ticks[0]).isoformat(),
                )
            if ticks:
                await self._start(row, wdef, cron, ticks)
                await engine.store.advance_schedule(row.name, ticks[-1])
                after = ticks[-1]
            upcoming = cron.next_after(max(after, now))
            if upcoming is not None and (earliest is None or upcoming < earliest):
                earliest = upcoming
        return earliest

    async def _start(
        self, row: ScheduleRow, wdef: WorkflowDef, cron: Cron, ticks: list[float]
    ) -> None:
        engine = self._engine
        actual = cron.local(engine.clock.now())
        for tick in ticks:
            wid = schedule_workflow_id(row.name, tick)
            try:
                await engine.starter.start(
                    wdef, (cron.local(tick), actual), {}, workflow_id=wid, timeout=math.inf
                )
            except (DuplicateWorkflowError, SerializationError, ValueError) as exc:
                logger.error("schedule %r could not start tick %s: %s", row.name, wid, exc)

    def _cron(self, row: ScheduleRow) -> Cron | None:
        """The schedule's parsed expression (cached); None, logged once, if this program cannot
        read it (a time zone its database lacks)."""
        key = (row.cron, row.tz)
        if key not in self._crons:
            try:
                self._crons[key] = Cron.parse(row.cron, row.tz)
            except ValueError as exc:
                logger.error("schedule %r is left alone here: %s", row.name, exc)
                self._crons[key] = None
        return self._crons[key]

    # -- management --------------------------------------------------------------------------

    async def create(
        self,
        schedule_name: str,
        fn: Callable[..., Coroutine[Any, Any, Any]],
        cron: str,
        tz: str,
        catch_up: bool,
    ) -> ScheduleInfo:
        """Store a new schedule; see :func:`aiodurable.create_schedule`."""
        engine = self._engine
        engine.check_open()
        name, wdef, parsed, flag = check_new(schedule_name, fn, cron, tz, catch_up)
        now = engine.clock.now()
        row = await engine.store.create_schedule(
            name, wdef.name, parsed.expression, parsed.tz, flag, now
        )
        if row is None:
            raise ValueError(
                f"a schedule named {name!r} already exists; delete it first (delete_schedule)"
                " or choose another name"
            )
        return info_of(row, now)

    async def list_all(self) -> list[ScheduleInfo]:
        """Every schedule, by name; see :func:`aiodurable.list_schedules`."""
        engine = self._engine
        engine.check_open()
        now = engine.clock.now()
        return [info_of(row, now) for row in await engine.store.list_schedules()]

    async def pause(self, name: str) -> None:
        """Pause a schedule; see :func:`aiodurable.pause_schedule`."""
        engine = self._engine
        engine.check_open()
        if not await engine.store.pause_schedule(name, engine.clock.now()):
            raise ScheduleNotFound(name)

    async def resume(self, name: str) -> None:
        """Resume a schedule; see :func:`aiodurable.resume_schedule`."""
        engine = self._engine
        engine.check_open()
        row = await engine.store.get_schedule(name)
        if row is None:
            raise ScheduleNotFound(name)
        now = engine.clock.now()
        cron = self._cron(row)
        passed = None if cron is None else cron.latest_at(now)
        if not await engine.store.resume_schedule(name, now, passed):
            raise ScheduleNotFound(name)

    async def delete(self, name: str) -> None:
        """Delete a schedule; see :func:`aiodurable.delete_schedule`."""
        engine = self._engine
        engine.check_open()
        if not await engine.store.delete_schedule(name):
            raise ScheduleNotFound(name)
