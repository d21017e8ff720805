"""Cron schedules: ``@scheduled``, the schedules made at run time, and what they record.

A schedule starts one workflow per tick of its cron expression (see :mod:`aiodurable._cron` for
the expressions and time zones), under the workflow ID ``sched-{name}-{tick}`` (the tick in UTC,
ISO 8601): that ID is the idempotency key that makes every process sharing the database start
each tick's workflow exactly once. The workflow takes ``(scheduled_time, actual_time)``.

Two kinds, one table (``schedules``):

- *declared* with ``@aiodurable.scheduled(cron)`` above ``@aiodurable.workflow()``: named after
  the workflow, kept in a registry of the process (like workflows themselves), and written to the
  table by every runtime as it begins (an upsert that keeps its paused state and last tick);
- *created* at run time with :func:`create_schedule`, by name, for a registered workflow.

Both are listed, paused, resumed and deleted alike; the scheduler loop (``_engine/_scheduler``)
runs them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from ._cron import Cron
from ._current import current_runtime
from ._validate import check_id
from ._workflow import WorkflowDef, definition_of

__all__ = [
    "Declared",
    "ScheduleInfo",
    "ScheduleRow",
    "check_new",
    "check_schedule_name",
    "check_signature",
    "create_schedule",
    "declared_schedules",
    "delete_schedule",
    "info_of",
    "list_schedules",
    "pause_schedule",
    "resume_schedule",
    "schedule_workflow_id",
    "scheduled",
    "watermark",
]

F = TypeVar("F", bound=Callable[..., Coroutine[Any, Any, Any]])


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    """One row of the schedules table. Times are POSIX seconds; ``last_tick`` is the latest
    tick started, or passed over while the schedule was paused (None before the first)."""

    name: str
    workflow_name: str
    cron: str
    tz: str
    catch_up: bool
    paused: bool
    declared: bool
    last_tick: float | None
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    """A snapshot of one schedule, as :func:`aiodurable.list_schedules` returns it.

    ``name`` (for a decorated schedule, its workflow's name), ``workflow_name`` (the workflow
    each tick starts), ``cron`` and ``tz`` (the expression and the IANA time zone its ticks are
    computed in), ``catch_up``, ``paused``, ``declared`` (True for ``@scheduled``, False for
    :func:`aiodurable.create_schedule`), ``last_tick`` (the latest tick started, or passed over
    while paused; None before the first), ``next_tick`` (the next tick to start; None while
    paused) and ``created_at``. Ticks are aware datetimes in ``tz``; ``created_at`` is in UTC.
    """

    name: str
    workflow_name: str
    cron: str
    tz: str
    catch_up: bool
    paused: bool
    declared: bool
    last_tick: datetime | None
    next_tick: datetime | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Declared:
    """A schedule declared with ``@scheduled``: what each runtime writes as it begins."""

    name: str
    cron: Cron
    catch_up: bool


# Declared schedules by name, filled at import time as ``@scheduled`` runs, like the registry of
# workflows (a schedule is part of the program's code). Runtimes only read it.
_declared: dict[str, Declared] = {}


def declared_schedules() -> list[Declared]:
    """The schedules declared with ``@scheduled`` in this process."""
    return list(_declared.values())


def schedule_workflow_id(name: str, tick: float) -> str:
    """The workflow ID of a schedule's tick: ``sched-{name}-{tick in UTC, ISO 8601}``, for
    example ``sched-report-2026-12-02T15:00:00+00:00``."""
    return f"sched-{name}-{datetime.fromtimestamp(tick, UTC).isoformat()}"


def check_schedule_name(name: object) -> str:
    """Validate a schedule name: a text key short enough for its ticks' workflow IDs."""
    check_id("schedule name", name)
    assert isinstance(name, str)
    try:
        check_id("workflow ID", schedule_workflow_id(name, 0.0))
    except ValueError:
        raise ValueError(
            f"schedule name {name[:60]!r}... is too long: the workflow ID of each tick,"
            " 'sched-{name}-{tick}', must fit 1,000 bytes; use a name of at most 960 bytes"
            " (for a decorated schedule, pin a shorter @workflow(name=...))"
        ) from None
    return name


def check_signature(wdef: WorkflowDef) -> None:
    """TypeError unless the workflow takes exactly two positional parameters, ``(scheduled_time,
    actual_time)``, with no other required one."""
    sig = inspect.signature(wdef.fn)
    positional = [
        p for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    try:
        sig.bind(None, None)
        fits = len(positional) == 2
    except TypeError:
        fits = False
    if not fits:
        taken = ", ".join(
            ("*" if p.kind is p.VAR_POSITIONAL else "**" if p.kind is p.VAR_KEYWORD else "")
            + p.name
            for p in sig.parameters.values()
        )
        raise TypeError(
            f"a scheduled workflow is called with two arguments, the tick's time and the time"
            f" it started, but {wdef.name!r} takes ({taken}); write it as `async def"
            f" {wdef.fn.__name__}(scheduled_time: datetime, actual_time: datetime)`"
        )


def _check_catch_up(catch_up: object) -> bool:
    if not isinstance(catch_up, bool):
        raise ValueError(f"catch_up must be True or False, not {catch_up!r}")
    return catch_up


def scheduled(cron: str, *, tz: str = "UTC", catch_up: bool = False) -> Callable[[F], F]:
    """Run a workflow on a cron schedule: place it above ``@workflow()``.

    The workflow takes ``(scheduled_time: datetime, actual_time: datetime)``: the tick and the
    time its workflow was started, aware datetimes on ``tz``'s wall clock. ``cron`` has 5 fields
    (minute hour day-of-month month day-of-week) or 6, the first then being seconds
    (``"*/10 * * * * *"``: every 10 seconds); ``tz`` is an IANA time zone name (the ticks follow
    its wall clock, daylight saving time included). Each tick starts one workflow, under the ID
    ``sched-{name}-{tick in UTC ISO 8601}``, exactly once across every process sharing the
    database, where ``name`` is the workflow's registered name. With ``catch_up=True``, the ticks
    missed while no process ran (at most 1,000, the latest) are started when one begins again;
    with ``catch_up=False`` only ticks from then on are.

    Every runtime that registers the workflow writes the schedule to the database as it begins
    and runs it; it then shows in :func:`aiodurable.list_schedules` and can be paused. A bad
    expression or time zone raises ValueError, a workflow that does not take those two
    parameters TypeError, here, when the module is imported.
    """
    spec = Cron.parse(cron, tz)
    flag = _check_catch_up(catch_up)

    def decorate(fn: F) -> F:
        wdef = getattr(fn, "__aiodurable_workflow__", None)
        if not isinstance(wdef, WorkflowDef):
            raise TypeError(
                f"@scheduled() goes on a workflow, and {fn!r} is not one; place"
                " @aiodurable.scheduled(...) above @aiodurable.workflow()"
            )
        check_signature(wdef)
        name = check_schedule_name(wdef.name)
        _declared[name] = Declared(name, spec, flag)
        return fn

    return decorate


def watermark(row: ScheduleRow, since: float | None = None) -> float:
    """The instant after which a schedule's ticks are due: its last tick (or creation), and for
    a schedule without catch-up, not before ``since`` (when the runtime began)."""
    mark = row.created_at if row.last_tick is None else row.last_tick
    if since is not None and not row.catch_up:
        mark = max(mark, since)
    return mark


def info_of(row: ScheduleRow, now: float) -> ScheduleInfo:
    """The public snapshot of ``row`` at ``now`` (POSIX seconds)."""
    try:
        cron: Cron | None = Cron.parse(row.cron, row.tz)
    except ValueError:  # (written by a program whose time zone database knew more)
        cron = None
    next_tick = None
    if cron is not None and not row.paused:
        next_tick = cron.next_after(max(watermark(row), now))

    def zoned(instant: float | None) -> datetime | None:
        if instant is None:
            return None
        return datetime.fromtimestamp(instant, UTC) if cron is None else cron.zoned(instant)

    return ScheduleInfo(
        name=row.name,
        workflow_name=row.workflow_name,
        cron=row.cron,
        tz=row.tz,
        catch_up=row.catch_up,
        paused=row.paused,
        declared=row.declared,
        last_tick=zoned(row.last_tick),
        next_tick=zoned(next_tick),
        created_at=datetime.fromtimestamp(row.created_at, UTC),
    )


def check_new(
    schedule_name: str,
    fn: Callable[..., Coroutine[Any, Any, Any]],
    cron: str,
    tz: str,
    catch_up: bool,
) -> tuple[str, WorkflowDef, Cron, bool]:
    """Validate the arguments of :func:`create_schedule`: the name, the workflow, its signature,
    the expression and time zone, ``catch_up``."""
    name = check_schedule_name(schedule_name)
    wdef = definition_of(fn)
    check_signature(wdef)
    return name, wdef, Cron.parse(cron, tz), _check_catch_up(catch_up)


# -- module-level functions: they act on the running workflow's runtime, else the open one -------


async def create_schedule(
    schedule_name: str,
    fn: Callable[..., Coroutine[Any, Any, Any]],
    cron: str,
    *,
    tz: str = "UTC",
    catch_up: bool = False,
) -> ScheduleInfo:
    """Store a new schedule that starts ``fn`` (a registered workflow taking ``(scheduled_time,
    actual_time)``) on each tick of ``cron`` in ``tz``, as :func:`scheduled` describes, and
    return it. Every live runtime that registers the workflow (by its name) runs it from its
    next tick; a runtime without that workflow leaves it alone. ValueError if a schedule of
    that name exists (delete it first, or choose another name)."""
    return await current_runtime().create_schedule(
        schedule_name, fn, cron, tz=tz, catch_up=catch_up
    )


async def list_schedules() -> list[ScheduleInfo]:
    """Every schedule, declared or created, by name."""
    return await current_runtime().list_schedules()


async def pause_schedule(name: str) -> None:
    """Stop starting the schedule's ticks, in every process, until it is resumed (a tick being
    started as the pause commits may still start). :class:`ScheduleNotFound` if unknown."""
    await current_runtime().pause_schedule(name)


async def resume_schedule(name: str) -> None:
    """Start the schedule's ticks again from the next one; the ticks that fell while it was
    paused are passed over, even with ``catch_up``. :class:`ScheduleNotFound` if unknown."""
    await current_runtime().resume_schedule(name)


async def delete_schedule(name: str) -> None:
    """Delete the schedule; the workflows it started are left as they are. A declared schedule
    is written again by the next runtime of the program that begins. :class:`ScheduleNotFound`
    if unknown."""
    await current_runtime().delete_schedule(name)
