"""The SQL of debouncing: joining or opening a burst of calls, and closing the bursts that are
due. A burst's workflow waits ENQUEUED on a queue of aiodurable's own (never dispatched) and
becomes PENDING for any runtime with its code when the burst closes.
"""

from __future__ import annotations

from .._records import DEBOUNCE_QUEUE
from .._signals import Signal
from ._texts import _notify, _notify_status

__all__ = ["debounce_texts"]

# When a burst closes: `period` after its last call, or `max_wait` after its first.
_DUE_AT = "least(last_at + period_ms, coalesce(first_at + max_wait_ms, last_at + period_ms))"


def debounce_texts(s: str, ch: str) -> dict[str, str]:
    """Join, discard and close bursts; the next time one closes."""
    return {
        # One statement: the burst's row (opened, or its last call moved) and its workflow (made
        # ENQUEUED, or given the latest inputs). `joined` is false when the open burst's workflow
        # is no longer ENQUEUED (it was cancelled): the caller discards that burst and opens one.
        "debounce_join": (
            f"WITH b AS (INSERT INTO {s}.debounces AS d VALUES ($1, $2, $3, $4, $4, $5, $6)"
            " ON CONFLICT (name, key) DO UPDATE SET last_at = greatest(d.last_at, excluded.last_at)"
            " RETURNING workflow_id, (xmax = 0) AS opened),"
            f" ins AS (INSERT INTO {s}.workflows (workflow_id, status, name, format, inputs,"
            " created_at, updated_at, app_version, executor_id, queue_name)"
            f" SELECT b.workflow_id, 'ENQUEUED', $1, $7, $8, $4, $4, '', '', '{DEBOUNCE_QUEUE}'"
            " FROM b WHERE b.opened ON CONFLICT (workflow_id) DO NOTHING"
            " RETURNING workflow_id, status),"
            f" upd AS (UPDATE {s}.workflows w SET format = $7, inputs = $8, updated_at = $4"
            " FROM b WHERE NOT b.opened AND w.workflow_id = b.workflow_id"
            " AND w.status = 'ENQUEUED' RETURNING w.workflow_id)"
            " SELECT b.workflow_id, b.opened,"
            " (SELECT count(*) FROM ins) + (SELECT count(*) FROM upd) > 0 AS joined,"
            f" (SELECT count(*) FROM (SELECT {_notify(ch, Signal.DEBOUNCE)},"
            f" {_notify(ch, Signal.WORKFLOW, 'ins.workflow_id', 'ins.status')} FROM ins) AS n)"
            " FROM b"
        ),
        "debounce_discard": (
            f"DELETE FROM {s}.debounces WHERE name = $1 AND key = $2 AND workflow_id = $3"
        ),
        "debounce_close": (
            f"WITH due AS (DELETE FROM {s}.debounces WHERE (name, key) IN (SELECT name, key"
            f" FROM {s}.debounces WHERE {_DUE_AT} <= $1 FOR UPDATE SKIP LOCKED)"
            " RETURNING workflow_id),"
            f" go AS (UPDATE {s}.workflows w SET status = 'PENDING', executor_id = '',"
            " app_version = '', queue_name = NULL, updated_at = $1 FROM due"
            " WHERE w.workflow_id = due.workflow_id AND w.status = 'ENQUEUED'"
            " RETURNING w.workflow_id, w.status, w.executor_id)"
            f" SELECT go.workflow_id, {_notify_status(ch, 'go')} FROM go"
        ),
        "debounce_next": f"SELECT min({_DUE_AT}) FROM {s}.debounces",
    }
