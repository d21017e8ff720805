"""The SQL of messages, events and durable waits, each written with its journal entry.

Split from :mod:`._texts` (whose shared fragments it uses) to keep each texts module short.
"""

from __future__ import annotations

from .._records import AUTO_KEY_PREFIX
from .._signals import Signal
from ._texts import STEP_COLUMNS, _notify, _owned

__all__ = ["messaging_texts"]


def messaging_texts(s: str, ch: str) -> dict[str, str]:
    """Messages, events and wait deadlines, each written with its journal entry."""
    # A journal entry, fenced: written only while this executor owns the workflow.
    step_insert = (
        f"INSERT INTO {s}.steps (workflow_id, {STEP_COLUMNS}) SELECT $1::text, $2::integer,"
        " $3::text, $4::text, $5::bytea, $6::bytea, $7::text, $8::bigint, $9::bigint"
        f" WHERE {_owned(s, '$1')}"
    )
    notify_msg = _notify(ch, Signal.MESSAGE, "destination_id", "topic")
    return {
        "send_from_workflow": (
            f"WITH step AS ({step_insert} RETURNING workflow_id),"
            f" msg AS (INSERT INTO {s}.messages (destination_id, topic, format, value, created_at)"
            " SELECT $10, $11, $12, $13, $8 FROM step RETURNING destination_id, topic)"
            f" SELECT {notify_msg} FROM msg"
        ),
        "send_once": (
            f"WITH k AS (INSERT INTO {s}.message_keys VALUES ($1, $6, $5) ON CONFLICT DO NOTHING"
            " RETURNING destination_id),"
            f" msg AS (INSERT INTO {s}.messages (destination_id, topic, format, value, created_at)"
            " SELECT $1, $2, $3, $4, $5 FROM k RETURNING destination_id, topic)"
            f" SELECT {notify_msg} FROM msg"
        ),
        # The consume and its checkpoint are one statement: both happen or neither. A plain
        # INSERT (no ON CONFLICT): if the function ID is taken, the statement fails whole and
        # the message stays queued.
        "consume": (
            f"WITH m AS (DELETE FROM {s}.messages WHERE message_id = (SELECT message_id FROM"
            f" {s}.messages WHERE destination_id = $1 AND topic = $2 ORDER BY message_id LIMIT 1"
            f" FOR UPDATE SKIP LOCKED) AND {_owned(s, '$1')} RETURNING format, value),"
            f" step AS (INSERT INTO {s}.steps (workflow_id, {STEP_COLUMNS})"
            " SELECT $1, $3, $4, m.format, m.value, NULL, NULL, $5, $5 FROM m RETURNING 1)"
            f" SELECT {_owned(s, '$1')} AS owned, m.format, m.value,"
            " (SELECT count(*) FROM step) AS written FROM (SELECT 1) AS one LEFT JOIN m ON true"
        ),
        "wait_deadline": (
            f"INSERT INTO {s}.waits VALUES ($1, $2, $3) ON CONFLICT (workflow_id, function_id)"
            f" DO UPDATE SET deadline_at = {s}.waits.deadline_at RETURNING deadline_at"
        ),
        "set_event": (
            f"WITH step AS ({step_insert} RETURNING workflow_id),"
            f" ev AS (INSERT INTO {s}.events (workflow_id, key, format, value, updated_at)"
            " SELECT $1, $10, $4, $11, $8 FROM step ON CONFLICT (workflow_id, key) DO UPDATE SET"
            " format = excluded.format, value = excluded.value, updated_at = excluded.updated_at"
            " RETURNING workflow_id, key),"
            f" hist AS (INSERT INTO {s}.event_history"
            " (workflow_id, function_id, key, format, value) SELECT $1, $2, $10, $4, $11 FROM step)"
            f" SELECT {_notify(ch, Signal.EVENT, 'workflow_id', 'key')} FROM ev"
        ),
        "get_event": f"SELECT format, value FROM {s}.events WHERE workflow_id = $1 AND key = $2",
        "forget_auto_keys": (
            f"DELETE FROM {s}.message_keys WHERE idempotency_key LIKE"
            f" '{AUTO_KEY_PREFIX}%' AND created_at < $1"
        ),
    }
