"""Schedules: cron schedules stored in the database, and the ticks they have started."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from .._schedule import ScheduleRow
from ._base import StoreBase
from ._rows import ms

__all__ = ["SchedulesPart", "schedule_row"]


def schedule_row(r: asyncpg.Record) -> ScheduleRow:
    """A row of the schedules table as a record (times in seconds)."""
    last = r["last_tick"]
    return ScheduleRow(
        name=r["name"],
        workflow_name=r["workflow_name"],
        cron=r["cron"],
        tz=r["tz"],
        catch_up=r["catch_up"],
        paused=r["paused"],
        declared=r["declared"],
        last_tick=None if last is None else last / 1000,
        created_at=r["created_at"] / 1000,
        updated_at=r["updated_at"] / 1000,
    )


class SchedulesPart(StoreBase):
    """Create, list, pause, resume and delete schedules."""

    async def create_schedule(
        self, name: str, workflow_name: str, cron: str, tz: str, catch_up: bool, now: float
    ) -> ScheduleRow | None:
        """Store a new schedule (not declared, never ticked) and notify it; None if the name
        is taken."""
        sql = self.sql.create_schedule
        row = await self._run(
            lambda c: c.fetchrow(sql, name, workflow_name, cron, tz, catch_up, ms(now))
        )
        return None if row is None else schedule_row(row)

    async def declare_schedules(
        self, schedules: Sequence[tuple[str, str, str, str, bool]], now: float
    ) -> None:
        """Upsert the declared schedules ``(name, workflow_name, cron, tz, catch_up)``: a new
        one is stored, an existing one takes these values and keeps its paused state and last
        tick; each one that changed is notified."""
        if not schedules:
            return
        names, workflows, crons, zones, catch_ups = (list(c) for c in zip(*schedules, strict=True))
        sql = self.sql.declare_schedules
        await self._run(lambda c: c.fetch(sql, names, workflows, crons, zones, catch_ups, ms(now)))

    async def list_schedules(self) -> list[ScheduleRow]:
        """Every schedule, by name."""
        rows = await self._run(lambda c: c.fetch(self.sql.list_schedules))
        return [schedule_row(r) for r in rows]

    async def get_schedule(self, name: str) -> ScheduleRow | None:
        """The schedule called ``name``, or None."""
        row = await self._run(lambda c: c.fetchrow(self.sql.get_schedule, name))
        return None if row is None else schedule_row(row)

    async def pause_schedule(self, name: str, now: float) -> bool:
        """Pause a schedule and notify it; False if there is none of that name."""
        sql = self.sql.pause_schedule
        return await self._run(lambda c: c.fetchrow(sql, name, ms(now))) is not None

    async def resume_schedule(self, name: str, now: float, passed: float | None) -> bool:
        """Resume a schedule and notify it; a paused one passes over the ticks up to ``passed``
        (the latest tick at or before ``now``). False if there is none of that name."""
        sql = self.sql.resume_schedule
        skip = None if passed is None else ms(passed)
        return await self._run(lambda c: c.fetchrow(sql, name, ms(now), skip)) is not None

    async def advance_schedule(self, name: str, tick: float) -> bool:
        """Record ``tick`` as the schedule's last tick if it is later than the one recorded;
        whether it was."""
        sql = self.sql.advance_schedule
        return bool(await self._run(lambda c: c.fetchval(sql, name, ms(tick))))

    async def delete_schedule(self, name: str) -> bool:
        """Delete a schedule and notify it; False if there is none of that name."""
        sql = self.sql.delete_schedule
        return await self._run(lambda c: c.fetchrow(sql, name)) is not None
