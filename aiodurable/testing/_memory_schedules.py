"""Schedules over a :class:`MemoryState`: a base of ``MemoryStore``."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from .._schedule import ScheduleRow
from .._signals import Signal
from ._memory_state import MemoryState, ms

__all__ = ["MemorySchedules"]


def _at(seconds: float) -> float:
    """``seconds`` as the table keeps it: to the millisecond."""
    return ms(seconds) / 1000


class MemorySchedules:
    """The store's schedule members, in memory (see ``SchedulesPart`` for each contract)."""

    state: MemoryState

    async def create_schedule(
        self, name: str, workflow_name: str, cron: str, tz: str, catch_up: bool, now: float
    ) -> ScheduleRow | None:
        """Store a new schedule (not declared, never ticked) and notify it; None if the name
        is taken."""
        if name in self.state.schedules:
            return None
        at = _at(now)
        row = ScheduleRow(name, workflow_name, cron, tz, catch_up, False, False, None, at, at)
        self.state.schedules[name] = row
        self.state.notify(Signal.SCHEDULE, name)
        return row

    async def declare_schedules(
        self, schedules: Sequence[tuple[str, str, str, str, bool]], now: float
    ) -> None:
        """Upsert the declared schedules, keeping an existing one's paused state and last tick;
        notify each one that changed."""
        at = _at(now)
        for name, workflow_name, cron, tz, catch_up in schedules:
            old = self.state.schedules.get(name)
            if old is None:
                new = ScheduleRow(
                    name, workflow_name, cron, tz, catch_up, False, True, None, at, at
                )
            elif (old.workflow_name, old.cron, old.tz, old.catch_up, old.declared) == (
                workflow_name,
                cron,
                tz,
                catch_up,
                True,
            ):
                continue
            else:
                new = dataclasses.replace(
                    old,
                    workflow_name=workflow_name,
                    cron=cron,
                    tz=tz,
                    catch_up=catch_up,
                    declared=True,
                    updated_at=at,
                )
            self.state.schedules[name] = new
            self.state.notify(Signal.SCHEDULE, name)

    async def list_schedules(self) -> list[ScheduleRow]:
        """Every schedule, by name."""
        return [self.state.schedules[name] for name in sorted(self.state.schedules)]

    async def get_schedule(self, name: str) -> ScheduleRow | None:
        """The schedule called ``name``, or None."""
        return self.state.schedules.get(name)

    async def pause_schedule(self, name: str, now: float) -> bool:
        """Pause a schedule and notify it; False if there is none of that name."""
        row = self.state.schedules.get(name)
        if row is None:
            return False
        self.state.schedules[name] = dataclasses.replace(row, paused=True, updated_at=_at(now))
        self.state.notify(Signal.SCHEDULE, name)
        return True

    async def resume_schedule(self, name: str, now: float, passed: float | None) -> bool:
        """Resume a schedule and notify it; a paused one passes over the ticks up to
        ``passed``. False if there is none of that name."""
        row = self.state.schedules.get(name)
        if row is None:
            return False
        last = row.last_tick
        if row.paused and passed is not None:
            last = _at(passed) if last is None else max(last, _at(passed))
        self.state.schedules[name] = dataclasses.replace(
            row, paused=False, last_tick=last, updated_at=_at(now)
        )
        self.state.notify(Signal.SCHEDULE, name)
        return True

    async def advance_schedule(self, name: str, tick: float) -> bool:
        """Record ``tick`` as the last tick if it is later than the one recorded; whether it
        was."""
        row = self.state.schedules.get(name)
        at = _at(tick)
        if row is None or (row.last_tick is not None and row.last_tick >= at):
            return False
        self.state.schedules[name] = dataclasses.replace(row, last_tick=at)
        return True

    async def delete_schedule(self, name: str) -> bool:
        """Delete a schedule and notify it; False if there is none of that name."""
        if self.state.schedules.pop(name, None) is None:
            return False
        self.state.notify(Signal.SCHEDULE, name)
        return True
