"""The SQL of workflow streams: values written with their journal entries, read in pages.

Split from :mod:`._texts` (whose shared fragments it uses) to keep each texts module short. The
table is made by ``_sql/0004_streams.sql``: a close marker is a row whose value is NULL.
"""

from __future__ import annotations

from .._signals import Signal
from ._texts import STEP_COLUMNS, _notify, _owned

__all__ = ["stream_texts"]


def stream_texts(s: str, ch: str) -> dict[str, str]:
    """Writing (group-committed), reading and summarising streams."""
    notify = _notify(ch, Signal.STREAM, "workflow_id", "key")
    return {
        # A fork keeps the source's stream rows written before its journal is cut.
        "fork_copy_streams": (
            f'INSERT INTO {s}.streams (workflow_id, key, "offset", function_id, format, value,'
            ' created_at) SELECT $1, key, "offset", function_id, format, value, created_at'
            f" FROM {s}.streams WHERE workflow_id = $2 AND function_id < $3"
        ),
        # One write (or close), alone: its journal entry fenced and written at most once, and
        # the stream's row only with it. (The batch's unnest costs more to plan than this.)
        "write_stream": (
            f"WITH step AS (INSERT INTO {s}.steps (workflow_id, {STEP_COLUMNS}) SELECT $1::text,"
            " $2::integer, $3::text, 'json', NULL, NULL, NULL, $4::bigint, $4::bigint"
            f" WHERE {_owned(s, '$1')} ON CONFLICT (workflow_id, function_id) DO NOTHING"
            " RETURNING workflow_id, function_id),"
            f' row AS (INSERT INTO {s}.streams (workflow_id, key, "offset", function_id, format,'
            " value, created_at) SELECT workflow_id, $5::text, $6::integer, function_id,"
            " $7::text, $8::bytea, $4 FROM step RETURNING workflow_id, function_id, key)"
            f" SELECT workflow_id, function_id, {notify} FROM row"
        ),
        # Any number of writes (and closes) in one statement: each journal entry is fenced and
        # written at most once (ON CONFLICT: a function ID journaled already writes nothing),
        # and a stream row goes in only with the entry written beside it. Returns the entries
        # written, and notifies each stream that grew.
        "write_streams": (
            "WITH d AS (SELECT * FROM unnest($1::text[], $2::integer[], $3::text[],"
            " $4::bigint[], $5::text[], $6::integer[], $7::text[], $8::bytea[])"
            ' AS d(workflow_id, function_id, name, at, key, "offset", format, value)),'
            f" step AS (INSERT INTO {s}.steps (workflow_id, {STEP_COLUMNS})"
            " SELECT d.workflow_id, d.function_id, d.name, 'json', NULL, NULL, NULL, d.at, d.at"
            f" FROM d WHERE {_owned(s, 'd.workflow_id')}"
            " ON CONFLICT (workflow_id, function_id) DO NOTHING"
            " RETURNING workflow_id, function_id),"
            f' row AS (INSERT INTO {s}.streams (workflow_id, key, "offset", function_id, format,'
            ' value, created_at) SELECT d.workflow_id, d.key, d."offset", d.function_id,'
            " d.format, d.value, d.at FROM d JOIN step USING (workflow_id, function_id)"
            " RETURNING workflow_id, function_id, key)"
            # (PostgreSQL sends identical notifications of one transaction once.)
            f" SELECT workflow_id, function_id, {notify} FROM row"
        ),
        # One snapshot: the workflow's status and a page of its stream from offset $3. No row
        # when the workflow is unknown; one row with a NULL offset when the page is empty.
        "read_stream": (
            f'SELECT w.status, v."offset", v.format, v.value FROM {s}.workflows w'
            ' LEFT JOIN LATERAL (SELECT "offset", format, value FROM'
            f" {s}.streams WHERE workflow_id = $1 AND key = $2"
            ' AND "offset" >= $3 ORDER BY "offset" LIMIT $4) v ON true'
            ' WHERE w.workflow_id = $1 ORDER BY v."offset"'
        ),
        # The console: per key (the first $4 keys), the number of values, whether closed, and
        # the last $2 values cut to $3 bytes.
        "workflow_streams": (
            'SELECT k.key, k.count, k.closed, v."offset", v.format,'
            " substring(v.value FROM 1 FOR $3) AS value, octet_length(v.value) > $3 AS clipped,"
            " v.created_at FROM (SELECT key, count(value) AS count, bool_or(value IS NULL)"
            f" AS closed FROM {s}.streams WHERE workflow_id = $1 GROUP BY key ORDER BY key"
            ' LIMIT $4) k LEFT JOIN LATERAL (SELECT "offset", format, value, created_at FROM'
            f" {s}.streams t WHERE t.workflow_id = $1 AND t.key = k.key AND t.value IS NOT NULL"
            ' ORDER BY "offset" DESC LIMIT $2) v ON true ORDER BY k.key, v."offset"'
        ),
    }
