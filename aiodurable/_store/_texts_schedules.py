"""The SQL of cron schedules: the ``schedules`` table (migration ``0005_schedules.sql``).

Every statement that creates, changes, pauses, resumes or deletes a schedule notifies
``(SCHEDULE, name)`` in the same statement, so each runtime's scheduler re-reads the table once
the change is committed. Moving ``last_tick`` forward notifies nothing: the other runtimes
compute the same ticks, and the tick's workflow ID already makes their starts idempotent.
"""

from __future__ import annotations

from .._signals import Signal
from ._texts import _notify

__all__ = ["SCHEDULE_COLUMNS", "schedule_texts"]

SCHEDULE_COLUMNS = (
    "name, workflow_name, cron, tz, catch_up, paused, declared, last_tick, created_at, updated_at"
)


def schedule_texts(s: str, ch: str) -> dict[str, str]:
    """Create, declare, list, pause, resume, advance and delete schedules."""
    notify = _notify(ch, Signal.SCHEDULE, "name")
    return {
        # $1 name, $2 workflow, $3 cron, $4 tz, $5 catch_up, $6 now: one row, or none if taken.
        "create_schedule": (
            f"WITH made AS (INSERT INTO {s}.schedules ({SCHEDULE_COLUMNS})"
            " VALUES ($1, $2, $3, $4, $5, false, false, NULL, $6, $6)"
            f" ON CONFLICT (name) DO NOTHING RETURNING {SCHEDULE_COLUMNS})"
            f" SELECT {SCHEDULE_COLUMNS}, {notify} AS notified FROM made"
        ),
        # Declared schedules, as arrays: a new one is inserted; an existing one takes the code's
        # workflow, expression, zone and catch-up (its paused state and last tick are kept) and
        # is notified only when something changed.
        "declare_schedules": (
            f"WITH upserted AS (INSERT INTO {s}.schedules ({SCHEDULE_COLUMNS})"
            " SELECT d.name, d.workflow_name, d.cron, d.tz, d.catch_up, false, true, NULL, $6, $6"
            " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::boolean[])"
            " AS d(name, workflow_name, cron, tz, catch_up)"
            " ON CONFLICT (name) DO UPDATE SET workflow_name = excluded.workflow_name,"
            " cron = excluded.cron, tz = excluded.tz, catch_up = excluded.catch_up,"
            " declared = true, updated_at = excluded.updated_at"
            f" WHERE ({s}.schedules.workflow_name, {s}.schedules.cron, {s}.schedules.tz,"
            f" {s}.schedules.catch_up, {s}.schedules.declared) IS DISTINCT FROM"
            " (excluded.workflow_name, excluded.cron, excluded.tz, excluded.catch_up, true)"
            " RETURNING name)"
            f" SELECT name, {notify} AS notified FROM upserted"
        ),
        "list_schedules": f"SELECT {SCHEDULE_COLUMNS} FROM {s}.schedules ORDER BY name",
        "get_schedule": f"SELECT {SCHEDULE_COLUMNS} FROM {s}.schedules WHERE name = $1",
        # $1 name, $2 now.
        "pause_schedule": (
            f"WITH changed AS (UPDATE {s}.schedules SET paused = true, updated_at = $2"
            " WHERE name = $1 RETURNING name)"
            f" SELECT name, {notify} AS notified FROM changed"
        ),
        # $1 name, $2 now, $3 the latest tick at or before now (NULL: none): a paused schedule
        # passes over the ticks that fell while it was paused.
        "resume_schedule": (
            f"WITH changed AS (UPDATE {s}.schedules SET paused = false, updated_at = $2,"
            " last_tick = CASE WHEN paused THEN greatest(last_tick, $3::bigint) ELSE last_tick END"
            " WHERE name = $1 RETURNING name)"
            f" SELECT name, {notify} AS notified FROM changed"
        ),
        # Only ever forward: of two runtimes that started the same tick, one moves it.
        "advance_schedule": (
            f"UPDATE {s}.schedules SET last_tick = $2"
            " WHERE name = $1 AND (last_tick IS NULL OR last_tick < $2) RETURNING true"
        ),
        "delete_schedule": (
            f"WITH gone AS (DELETE FROM {s}.schedules WHERE name = $1 RETURNING name)"
            f" SELECT name, {notify} AS notified FROM gone"
        ),
    }
