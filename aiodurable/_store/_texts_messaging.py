"""The SQL of messages, events and durable waits, each written with its journal entry.

Split from :mod:`._texts` (whose shared fragments it uses) to keep each texts module short.
"""

from __future__ import annotations

from .._records import AUTO_KEY_PREFIX
from .._signals import Signal
from ._texts import STEP_COLUMNS, _notify, _owned

__all__ = ["messaging_texts"]

# The journal entries of a batch, from unnest arrays ($1 to $9, as ``step_args`` orders them),
# then the batch's own columns, numbered by their place in the batch (``ord``, from 1).
_STEP_ARRAYS = (
    "$1::text[], $2::integer[], $3::text[], $4::text[], $5::bytea[], $6::bytea[], $7::text[],"
    " $8::bigint[], $9::bigint[]"
)


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
        **_batch_texts(s, ch),
        "forget_auto_keys": (
            f"DELETE FROM {s}.message_keys WHERE idempotency_key LIKE"
            f" '{AUTO_KEY_PREFIX}%' AND created_at < $1"
        ),
    }


def _batch_texts(s: str, ch: str) -> dict[str, str]:
    """Sends, events and consumes of many workflows, each batch in one statement (group commit).

    Each reports the batch's items that took effect by their place (``ord``, from 1); the store
    works out why the others did not (journaled already, or fenced). A journal entry twice in a
    batch (the same workflow and function ID) is written once, for its first item.
    """

    def entries(**more: str) -> str:
        """The batch's distinct journal entries, with the ``more`` columns (name: type) of its
        items after them, from ``$10`` on."""
        arrays = "".join(f", ${10 + i}::{kind}[]" for i, kind in enumerate(more.values()))
        return (
            f"SELECT DISTINCT ON (workflow_id, function_id) * FROM unnest({_STEP_ARRAYS}{arrays})"
            f" WITH ORDINALITY AS d(workflow_id, {STEP_COLUMNS}, {', '.join(more)}, ord)"
            " ORDER BY workflow_id, function_id, ord"
        )

    # Fenced like record_steps; an entry journaled already is skipped (its item takes no
    # effect). Rows are written in key order (DISTINCT ON sorts them), so that two batches in
    # flight that touch the same keys take their locks in the same order: no deadlock.
    write_steps = (
        f"INSERT INTO {s}.steps (workflow_id, {STEP_COLUMNS}) SELECT workflow_id, {STEP_COLUMNS}"
        f" FROM d WHERE {_owned(s, 'd.workflow_id')}"
        " ON CONFLICT (workflow_id, function_id) DO NOTHING RETURNING workflow_id, function_id"
    )
    written = "SELECT d.* FROM d JOIN step USING (workflow_id, function_id)"
    sends = entries(destination_id="text", topic="text", message_format="text", message="bytea")
    events = entries(key="text", event="bytea")
    notify_msg = _notify(ch, Signal.MESSAGE, "destination_id", "topic")
    # Messages are inserted in the order of the batch, so their IDs (the order recv takes them
    # in) follow the order in which they were sent.
    return {
        "send_from_workflows": (
            f"WITH d AS ({sends}),"
            f" step AS ({write_steps}), sent AS ({written}),"
            f" msg AS (INSERT INTO {s}.messages (destination_id, topic, format, value, created_at)"
            " SELECT destination_id, topic, message_format, message, started_at FROM sent"
            " ORDER BY ord)"
            f" SELECT ord, {notify_msg} FROM sent"
        ),
        # An idempotency key twice in a batch sends its first item only.
        "send_many": (
            "WITH d AS (SELECT DISTINCT ON (destination_id, idempotency_key) * FROM"
            " unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::bigint[], $6::text[])"
            " WITH ORDINALITY AS d(destination_id, topic, format, value, created_at,"
            " idempotency_key, ord) ORDER BY destination_id, idempotency_key, ord),"
            f" k AS (INSERT INTO {s}.message_keys (destination_id, idempotency_key, created_at)"
            " SELECT destination_id, idempotency_key, created_at FROM d ON CONFLICT DO NOTHING"
            " RETURNING destination_id, idempotency_key),"
            " sent AS (SELECT d.* FROM d JOIN k USING (destination_id, idempotency_key)),"
            f" msg AS (INSERT INTO {s}.messages (destination_id, topic, format, value, created_at)"
            " SELECT destination_id, topic, format, value, created_at FROM sent ORDER BY ord)"
            f" SELECT ord, {notify_msg} FROM sent"
        ),
        # Two values of one key in a batch: the event keeps the later (one row may be updated
        # only once per statement), the history gets both.
        "set_events": (
            f"WITH d AS ({events}),"
            f" step AS ({write_steps}), done AS ({written}),"
            f" ev AS (INSERT INTO {s}.events (workflow_id, key, format, value, updated_at)"
            " SELECT DISTINCT ON (workflow_id, key) workflow_id, key, format, event, started_at"
            " FROM done ORDER BY workflow_id, key, ord DESC"
            " ON CONFLICT (workflow_id, key) DO UPDATE SET format = excluded.format,"
            " value = excluded.value, updated_at = excluded.updated_at),"
            f" hist AS (INSERT INTO {s}.event_history (workflow_id, function_id, key, format,"
            " value) SELECT workflow_id, function_id, key, format, event FROM done)"
            f" SELECT ord, {_notify(ch, Signal.EVENT, 'workflow_id', 'key')} FROM done"
        ),
        # Consumes of many (workflow, topic): each takes the oldest message left, the k
        # consumers of one (workflow, topic) in a batch its k oldest, in the batch's order. As in
        # consume, a plain INSERT: a function ID journaled already fails the statement whole.
        "consume_many": (
            "WITH d AS (SELECT *, row_number() OVER (PARTITION BY workflow_id, topic ORDER BY ord)"
            " AS rank FROM unnest($1::text[], $2::text[], $3::integer[], $4::text[],"
            " $5::bigint[]) WITH ORDINALITY AS d(workflow_id, topic, function_id, name, at, ord)),"
            " g AS (SELECT workflow_id, topic, count(*) AS n FROM d"
            f" WHERE {_owned(s, 'd.workflow_id')} GROUP BY workflow_id, topic),"
            " pick AS (SELECT g.workflow_id, g.topic, x.message_id, row_number() OVER"
            " (PARTITION BY g.workflow_id, g.topic ORDER BY x.message_id) AS rank FROM g"
            f" CROSS JOIN LATERAL (SELECT message_id FROM {s}.messages"
            " WHERE destination_id = g.workflow_id AND topic = g.topic ORDER BY message_id"
            " LIMIT g.n FOR UPDATE SKIP LOCKED) AS x),"
            f" m AS (DELETE FROM {s}.messages WHERE message_id IN (SELECT message_id FROM pick)"
            " RETURNING message_id, format, value),"
            " got AS (SELECT d.*, m.format, m.value FROM d JOIN pick USING (workflow_id, topic,"
            " rank) JOIN m USING (message_id)),"
            f" step AS (INSERT INTO {s}.steps (workflow_id, {STEP_COLUMNS}) SELECT workflow_id,"
            " function_id, name, format, value, NULL, NULL, at, at FROM got)"
            f" SELECT d.ord, {_owned(s, 'd.workflow_id')} AS owned, got.format, got.value"
            " FROM d LEFT JOIN got USING (ord)"
        ),
    }
