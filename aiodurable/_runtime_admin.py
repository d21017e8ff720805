"""``AdminMethods``: the runtime's operations on its database as a whole (upgrades, schedules,
retention), a base of :class:`aiodurable.Runtime`: each forwards to its engine."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ._retention import collect
from ._schedule import ScheduleInfo
from ._upgrade import UpgradeReport

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["AdminMethods"]


class AdminMethods:
    """What :class:`aiodurable.Runtime` does to the workflows and schedules of its database as
    a whole."""

    _engine: Engine

    async def upgrade_workflows(
        self, from_version: str | None = None, *, dry_run: bool = False
    ) -> UpgradeReport:
        """Move to this runtime's application version every PENDING or ENQUEUED workflow of
        another version (of ``from_version`` only, when given) whose recorded journal replays
        cleanly against the current code: no step runs and nothing waits while it is checked.
        Each adopted workflow resumes from its last completed step: here, at once, when this
        runtime runs workflows, else on any live runtime of this version. The others stay on
        their own version, untouched: a journal the code no longer matches (the report names
        the step recorded and the step called now), a workflow name this program does not
        register, or a PENDING workflow that a live executor of its version still runs.

        Each workflow is adopted by one conditional write, so a crash leaves it adopted or
        untouched. ``dry_run=True`` writes nothing and reports what would be adopted. See
        :class:`aiodurable.UpgradeReport`."""
        return await self._engine.upgrade_workflows(from_version, dry_run=dry_run)

    # -- schedules ---------------------------------------------------------------------------

    async def create_schedule(
        self,
        schedule_name: str,
        fn: Callable[..., Coroutine[Any, Any, Any]],
        cron: str,
        *,
        tz: str = "UTC",
        catch_up: bool = False,
    ) -> ScheduleInfo:
        """Store a new cron schedule; see :func:`aiodurable.create_schedule`."""
        return await self._engine.scheduler.create(schedule_name, fn, cron, tz, catch_up)

    async def list_schedules(self) -> list[ScheduleInfo]:
        """Every schedule; see :func:`aiodurable.list_schedules`."""
        return await self._engine.scheduler.list_all()

    async def pause_schedule(self, name: str) -> None:
        """Pause a schedule; see :func:`aiodurable.pause_schedule`."""
        await self._engine.scheduler.pause(name)

    async def resume_schedule(self, name: str) -> None:
        """Resume a schedule; see :func:`aiodurable.resume_schedule`."""
        await self._engine.scheduler.resume(name)

    async def delete_schedule(self, name: str) -> None:
        """Delete a schedule; see :func:`aiodurable.delete_schedule`."""
        await self._engine.scheduler.delete(name)

    # -- retention ---------------------------------------------------------------------------

    async def garbage_collect(
        self, *, older_than: timedelta | None = None, keep_latest: int | None = None
    ) -> int:
        """Delete the finished workflows that neither ``older_than`` nor ``keep_latest``
        keeps, with everything recorded under their IDs; return how many were deleted. See
        :func:`aiodurable.garbage_collect`."""
        return await collect(self._engine, older_than, keep_latest)
