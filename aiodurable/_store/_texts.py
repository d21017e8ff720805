"""Every SQL text the store runs: the statements of each part, and the fragments they share.

Each function here spells out a group of statements against one schema's tables and its
notification channel, for :meth:`Statements.for_schema <._statements.Statements.for_schema>` to
collect; :func:`list_workflows` builds the one statement whose text depends on its arguments. This
module is the one place to read, review or change aiodurable's SQL; the tables themselves are
created by the migrations in ``aiodurable/_sql``.

Notifications are sent from inside the statements that make the change, in the format
:mod:`aiodurable._signals` describes, so a change and its announcement commit together.
"""

from __future__ import annotations

import re

from .._records import WorkflowQuery
from .._signals import Signal
from ._rows import ms

__all__ = [
    "OWNER",
    "STEP_COLUMNS",
    "WF_COLUMNS",
    "channel_for",
    "connection_texts",
    "console_texts",
    "executor_texts",
    "journal_texts",
    "list_workflows",
    "owner_literal",
    "workflow_texts",
]

WF_COLUMNS = (
    "workflow_id, status, name, format, inputs, output, error, created_at, updated_at, "
    "app_version, executor_id, recovery_attempts, queue_name, parent_workflow_id, deadline_at,"
    " priority, deduplication_id, partition_key"
)
STEP_COLUMNS = (
    "function_id, name, format, output, error, child_workflow_id, started_at, completed_at"
)

_DB_NOW_MS = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
_SERVER_START_MS = "(extract(epoch FROM pg_postmaster_start_time()) * 1000)::bigint"

# Fencing: the statements of a runtime's store carry its executor ID as a string literal in
# place of OWNER (see Statements.for_schema and Store.set_owner); a journal entry or final status
# is written only for a workflow that executor still owns, in the same statement as the write.
# Without an owner (tools, the command line, a separate application database) OWNER stands for
# '' and nothing is fenced. No session setting is involved, so the statements mean the same on
# any connection, behind a transaction pooler (PgBouncer) too.
OWNER = "{owner}"
_OWNED_HERE = f"executor_id = coalesce(nullif({OWNER}, ''), executor_id)"


def owner_literal(owner: str | None) -> str:
    """SQL: the string literal that stands for :data:`OWNER` in the statements of executor
    ``owner`` (``''`` for None: unfenced), quoted whatever it holds."""
    text = owner or ""
    quoted = "'" + text.replace("'", "''") + "'"
    # An escape string reads the same whatever standard_conforming_strings says.
    return "E" + quoted.replace("\\", "\\\\") if "\\" in text else quoted


def channel_for(schema: str) -> str:
    """The notification channel of a schema."""
    return f"{schema}_signal"


def _owned(schema: str, workflow_id: str) -> str:
    """SQL: whether the statements' executor (:data:`OWNER`) owns the workflow ``workflow_id``
    (an SQL expression) now; always true in statements without an owner (a separate
    application database has no workflow rows to check)."""
    # A correlated scalar subquery: one index probe per row, never a join over the table.
    return (
        f"{OWNER} IN ('', (SELECT f.executor_id"
        f" FROM {schema}.workflows f WHERE f.workflow_id = {workflow_id}))"
    )


def _notify(channel: str, signal: Signal, *key: str) -> str:
    """SQL: a ``pg_notify`` of ``signal`` with the key ``key`` (SQL expressions)."""
    items = ", ".join((f"'{signal.value}'", *key))
    return f"pg_notify('{channel}', json_build_array({items})::text)"


def _notify_status(channel: str, table: str) -> str:
    """SQL: a notification of ``table``'s workflow status, and of its being claimable when it
    is PENDING with no executor."""
    t = table
    return (
        f"{_notify(channel, Signal.WORKFLOW, f'{t}.workflow_id', f'{t}.status')},"
        f" CASE WHEN {t}.executor_id = '' THEN"
        f" {_notify(channel, Signal.CLAIMABLE, f'{t}.workflow_id')} END"
    )


def list_workflows(schema: str, query: WorkflowQuery) -> tuple[str, list[object]]:
    """The statement that lists the workflows matching ``query``, and its arguments."""
    where: list[str] = []
    args: list[object] = []

    def arg(value: object) -> str:
        args.append(value)
        return f"${len(args)}"

    if query.statuses:
        where.append(f"status = ANY({arg(list(query.statuses))}::text[])")
    if query.name is not None:
        where.append(f"name = {arg(query.name)}")
    if query.workflow_id_prefix is not None:
        escaped = re.sub(r"([\\%_])", r"\\\1", query.workflow_id_prefix)
        where.append(f"workflow_id LIKE {arg(escaped + '%')}")
    if query.app_version is not None:
        where.append(f"app_version = {arg(query.app_version)}")
    if query.executor_id is not None:
        where.append(f"executor_id = {arg(query.executor_id)}")
    if query.queue_name is not None:
        where.append(f"queue_name = {arg(query.queue_name)}")
    if query.start_time is not None:
        where.append(f"created_at >= {arg(ms(query.start_time))}")
    if query.end_time is not None:
        where.append(f"created_at <= {arg(ms(query.end_time))}")
    columns = WF_COLUMNS
    if not query.load_input:
        columns = columns.replace("inputs,", "NULL::bytea AS inputs,")
    if not query.load_output:
        columns = columns.replace("output, error,", "NULL::bytea AS output, error,")
    order = "DESC" if query.sort_desc else "ASC"
    sql = f"SELECT {columns} FROM {schema}.workflows"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY created_at {order}, workflow_id {order}"
    if query.limit is not None:
        sql += f" LIMIT {arg(query.limit)}"
    if query.offset:
        sql += f" OFFSET {arg(query.offset)}"
    return sql, args


def connection_texts(s: str) -> dict[str, str]:
    """Migrating the schema, a plain notification, and which server and database a connection
    reaches."""
    return {
        "server_identity": "SELECT current_database(), pg_postmaster_start_time()",
        "reserved_word": "SELECT catcode IN ('R', 'T') FROM pg_get_keywords() WHERE word = $1",
        "migration_lock": "SELECT pg_advisory_xact_lock($1)",
        "create_schema": f"CREATE SCHEMA IF NOT EXISTS {s}",
        "create_version_table": (
            f"CREATE TABLE IF NOT EXISTS {s}.schema_version (version integer NOT NULL)"
        ),
        "schema_version": f"SELECT max(version) FROM {s}.schema_version",
        "record_version": f"INSERT INTO {s}.schema_version VALUES ($1)",
        "notify": "SELECT pg_notify($1, $2)",
    }


def workflow_texts(s: str, ch: str) -> dict[str, str]:
    """Workflow rows: start, read, finish, status changes, recovery, adoption, resume, fork."""
    notify = _notify(ch, Signal.WORKFLOW, "workflow_id", "status")
    notify_queue = _notify(ch, Signal.QUEUE, "queue_name")
    return {
        # A start is announced too, so consoles and tools see workflows appear at once; one
        # left to no executor (a Client's start) is announced as claimable, as a resume is.
        "insert_workflow": (
            f"WITH ins AS (INSERT INTO {s}.workflows (workflow_id, status, name, format, inputs,"
            " created_at, updated_at, app_version, executor_id, parent_workflow_id, deadline_at,"
            " queue_name) VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8, $9, $10, $11)"
            " ON CONFLICT (workflow_id) DO NOTHING RETURNING workflow_id, status, executor_id)"
            f" SELECT true, {_notify_status(ch, 'ins')} FROM ins"
        ),
        "insert_workflows": (
            f"WITH ins AS (INSERT INTO {s}.workflows (workflow_id, status, name, format, inputs,"
            " created_at, updated_at, app_version, executor_id, parent_workflow_id, deadline_at,"
            " queue_name) SELECT i, st, n, f, inp, c, c, v, e, p, d, q FROM unnest($1::text[],"
            " $2::text[], $3::text[], $4::text[], $5::bytea[], $6::bigint[], $7::text[],"
            " $8::text[], $9::text[], $10::bigint[], $11::text[])"
            " AS t(i, st, n, f, inp, c, v, e, p, d, q)"
            " ON CONFLICT (workflow_id) DO NOTHING RETURNING workflow_id, status, executor_id)"
            f" SELECT workflow_id, {_notify_status(ch, 'ins')} FROM ins"
        ),
        "get_workflow": f"SELECT {WF_COLUMNS} FROM {s}.workflows WHERE workflow_id = $1",
        # A queued workflow's end frees a slot of its queue: say so too.
        "finish": (
            f"WITH done AS (UPDATE {s}.workflows SET status = $2, format = $3, output = $4,"
            " error = $5, updated_at = $6 WHERE workflow_id = $1 AND status = 'PENDING'"
            f" AND {_OWNED_HERE}"
            f" RETURNING workflow_id, status, queue_name) SELECT {notify},"
            f" CASE WHEN queue_name IS NOT NULL THEN {notify_queue} END FROM done"
        ),
        "finish_many": (
            "WITH data AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[],"
            " $5::bytea[], $6::bigint[]) AS d(workflow_id, status, format, output, error, at)),"
            f" done AS (UPDATE {s}.workflows w SET status = d.status, format = d.format,"
            " output = d.output, error = d.error, updated_at = d.at FROM data d"
            " WHERE w.workflow_id = d.workflow_id AND w.status = 'PENDING'"
            f" AND {_OWNED_HERE.replace('executor_id', 'w.executor_id')}"
            " RETURNING w.workflow_id, w.status, w.queue_name)"
            f" SELECT workflow_id, {notify}, CASE WHEN queue_name IS NOT NULL THEN"
            f" {notify_queue} END FROM done"
        ),
        "set_status": (
            f"WITH done AS (UPDATE {s}.workflows SET status = $2, updated_at = $3"
            f" WHERE workflow_id = $1 AND status = ANY($4::text[]) RETURNING workflow_id, status)"
            f" SELECT {notify} FROM done"
        ),
        "pending": (
            f"SELECT workflow_id, name FROM {s}.workflows WHERE status = 'PENDING'"
            " AND executor_id = $1 AND app_version = $2 ORDER BY created_at"
        ),
        "claim": (
            f"UPDATE {s}.workflows SET recovery_attempts = recovery_attempts + 1, updated_at = $2"
            f" WHERE workflow_id = ANY($1) AND status = 'PENDING' RETURNING {WF_COLUMNS}"
        ),
        "claim_unassigned": (
            f"UPDATE {s}.workflows SET executor_id = $2, app_version = $3, updated_at = $4"
            f" WHERE workflow_id IN (SELECT workflow_id FROM {s}.workflows"
            " WHERE status = 'PENDING' AND executor_id = '' AND name = ANY($1)"
            " AND app_version IN ('', $3) FOR UPDATE SKIP LOCKED LIMIT 500)"
            f" RETURNING {WF_COLUMNS}"
        ),
        # Adoption by the current code (aiodurable._upgrade): candidates in creation order, and
        # each adopted only while its row is as read (or as adopted: a repeated statement).
        "upgrade_candidates": (
            f"SELECT {WF_COLUMNS} FROM {s}.workflows WHERE status IN ('PENDING', 'ENQUEUED')"
            " AND app_version NOT IN ('', $1) AND app_version = coalesce($2, app_version)"
            " AND ($3::text[] IS NULL OR workflow_id = ANY($3)) AND (created_at, workflow_id)"
            " > ($4, $5) ORDER BY created_at, workflow_id LIMIT $6"
        ),
        "adopt": (
            "WITH d AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],"
            " $5::text[], $6::text[], $7::bigint[]) AS d(i, ov, st, oe, nv, ne, at)),"
            f" a AS (UPDATE {s}.workflows w SET app_version = d.nv, executor_id = d.ne,"
            " updated_at = d.at FROM d WHERE w.workflow_id = d.i AND w.status = d.st"
            " AND (w.app_version, w.executor_id) IN ((d.ov, d.oe), (d.nv, d.ne))"
            " RETURNING w.workflow_id, w.status, w.executor_id, w.queue_name)"
            f" SELECT workflow_id, CASE WHEN status = 'ENQUEUED' THEN {notify_queue}"
            f" WHEN executor_id = '' THEN {_notify(ch, Signal.CLAIMABLE, 'workflow_id')} END"
            " FROM a"
        ),
        "other_version_counts": (
            f"SELECT app_version, status, count(*) AS n FROM {s}.workflows"
            " WHERE status IN ('PENDING', 'ENQUEUED') AND app_version NOT IN ('', $1)"
            " GROUP BY app_version, status ORDER BY app_version, status"
        ),
        "last_function_id": (
            f"SELECT coalesce(max(function_id), 0) FROM {s}.steps WHERE workflow_id = $1"
        ),
        "resume": (
            f"WITH r AS (UPDATE {s}.workflows SET status = 'PENDING', recovery_attempts = 0,"
            " executor_id = $2, app_version = $3, updated_at = $4, deadline_at = NULL"
            " WHERE workflow_id = $1 AND status IN"
            " ('CANCELLED', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED', 'ENQUEUED')"
            f" RETURNING {WF_COLUMNS}) SELECT r.*, {_notify_status(ch, 'r')} FROM r"
        ),
        "fork_insert": (
            f"INSERT INTO {s}.workflows (workflow_id, status, name, format, inputs, created_at,"
            " updated_at, app_version, executor_id, parent_workflow_id, deadline_at, queue_name)"
            " VALUES ($1, 'PENDING', $2, $3, $4, $5, $5, $6, $7, NULL, NULL, NULL)"
        ),
        "fork_copy_steps": (
            f"INSERT INTO {s}.steps (workflow_id, {STEP_COLUMNS}) SELECT $1, {STEP_COLUMNS}"
            f" FROM {s}.steps WHERE workflow_id = $2 AND function_id < $3"
        ),
        "fork_copy_history": (
            f"INSERT INTO {s}.event_history (workflow_id, function_id, key, format, value)"
            f" SELECT $1, function_id, key, format, value FROM {s}.event_history"
            " WHERE workflow_id = $2 AND function_id < $3"
        ),
        "fork_copy_events": (
            f"INSERT INTO {s}.events (workflow_id, key, format, value, updated_at)"
            f" SELECT DISTINCT ON (key) $1, key, format, value, $4 FROM {s}.event_history"
            " WHERE workflow_id = $2 AND function_id < $3 ORDER BY key, function_id DESC"
        ),
        "fork_notify": (
            f"SELECT {_notify_status(ch, 'w')} FROM {s}.workflows w WHERE workflow_id = $1"
        ),
    }


def journal_texts(s: str) -> dict[str, str]:
    """Journal reads and (fenced) journal writes."""
    return {
        "journal": (
            f"SELECT {STEP_COLUMNS} FROM {s}.steps WHERE workflow_id = $1 ORDER BY function_id"
        ),
        "journals": (
            f"SELECT workflow_id, {STEP_COLUMNS} FROM {s}.steps WHERE workflow_id = ANY($1)"
        ),
        "owned": f"SELECT {_owned(s, '$1')}",
        "owned_many": (
            f"SELECT workflow_id FROM {s}.workflows WHERE workflow_id = ANY($1) AND {_OWNED_HERE}"
        ),
        "record_step_unfenced": (
            f"INSERT INTO {s}.steps (workflow_id, {STEP_COLUMNS})"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            " ON CONFLICT (workflow_id, function_id) DO NOTHING RETURNING true"
        ),
        # With an owner: the workflow's own row, found by its key, is the source of the insert.
        "record_step_fenced": (
            f"INSERT INTO {s}.steps (workflow_id, {STEP_COLUMNS}) SELECT f.workflow_id, $2,"
            f" $3, $4, $5, $6, $7, $8, $9 FROM {s}.workflows f WHERE f.workflow_id = $1"
            f" AND f.executor_id = {OWNER}"
            " ON CONFLICT (workflow_id, function_id) DO NOTHING RETURNING true"
        ),
        "record_steps": (
            f"INSERT INTO {s}.steps (workflow_id, {STEP_COLUMNS}) SELECT * FROM unnest($1::text[],"
            " $2::integer[], $3::text[], $4::text[], $5::bytea[], $6::bytea[], $7::text[],"
            f" $8::bigint[], $9::bigint[]) AS d(workflow_id, {STEP_COLUMNS})"
            f" WHERE {_owned(s, 'd.workflow_id')}"
            " ON CONFLICT (workflow_id, function_id) DO NOTHING RETURNING workflow_id, function_id"
        ),
        "get_step": (
            f"SELECT {STEP_COLUMNS} FROM {s}.steps WHERE workflow_id = $1 AND function_id = $2"
        ),
        "get_steps": (
            f"SELECT workflow_id, {STEP_COLUMNS} FROM {s}.steps WHERE (workflow_id, function_id)"
            " IN (SELECT * FROM unnest($1::text[], $2::integer[]))"
        ),
    }


def executor_texts(s: str, ch: str) -> dict[str, str]:
    """Heartbeats, executor session locks, takeover and release."""
    return {
        "heartbeat": (
            f"INSERT INTO {s}.executors VALUES ($1, $2, $3, $4, {_DB_NOW_MS},"
            f" {_DB_NOW_MS}) ON CONFLICT (executor_id) DO UPDATE SET host = excluded.host,"
            " pid = excluded.pid, app_version = excluded.app_version,"
            " last_seen = excluded.last_seen RETURNING (xmax <> 0) AS existed"
        ),
        "not_owned": (
            f"SELECT workflow_id, status, executor_id FROM {s}.workflows"
            " WHERE workflow_id = ANY($1) AND (status <> 'PENDING' OR executor_id <> $2)"
        ),
        "silent_executors": (
            f"SELECT executor_id FROM {s}.executors WHERE app_version = $1"
            f" AND executor_id <> $2 AND greatest(last_seen, {_SERVER_START_MS})"
            f" < {_DB_NOW_MS} - $3 ORDER BY last_seen"
        ),
        "take_over": (
            f"UPDATE {s}.workflows SET executor_id = $2, updated_at = $5,"
            " recovery_attempts = recovery_attempts + 1 WHERE executor_id = $1"
            " AND status = 'PENDING' AND app_version = $3 AND name = ANY($4)"
            f" RETURNING {WF_COLUMNS}"
        ),
        "delete_executor": f"DELETE FROM {s}.executors WHERE executor_id = $1",
        "release_executor": (
            f"WITH r AS (UPDATE {s}.workflows SET executor_id = '', updated_at = $2"
            " WHERE status = 'PENDING' AND executor_id = $1 RETURNING workflow_id, status,"
            f" executor_id) SELECT r.workflow_id, {_notify_status(ch, 'r')} FROM r"
        ),
        # An executor ID's session lock, keyed by (schema, executor ID): held by the live
        # runtime of that ID on its LISTEN connection for as long as that connection lives.
        "try_lock_executor": "SELECT pg_try_advisory_lock(hashtext($1), hashtext($2))",
        # The same lock for a transaction only (probing it, or a takeover): never left held by
        # a pooled connection, which a transaction pooler may hand to another client next.
        "try_xact_lock_executor": "SELECT pg_try_advisory_xact_lock(hashtext($1), hashtext($2))",
    }


def console_texts(s: str) -> dict[str, str]:
    """The console's read-only views."""
    # $n "clip": values longer than that many bytes come back cut to it, flagged ``clipped``.
    return {
        "events": (
            "SELECT key, format, substring(value FROM 1 FOR $2) AS value,"
            " octet_length(value) > $2 AS clipped, updated_at"
            f" FROM {s}.events WHERE workflow_id = $1 ORDER BY key"
        ),
        "messages": (
            "SELECT message_id, topic, format, substring(value FROM 1 FOR $3) AS value,"
            " octet_length(value) > $3 AS clipped, created_at"
            f" FROM {s}.messages WHERE destination_id = $1 ORDER BY message_id LIMIT $2"
        ),
        "workflow_briefs": (
            f"SELECT workflow_id, name, status FROM {s}.workflows"
            " WHERE workflow_id = ANY($1::text[])"
        ),
        "list_watermark": (
            f"SELECT created_at, count(*) FROM {s}.workflows"
            f" WHERE created_at = (SELECT max(created_at) FROM {s}.workflows)"
            " GROUP BY created_at"
        ),
        "workflow_watermark": (
            f"SELECT w.status, w.updated_at, (SELECT count(*) FROM {s}.steps s"
            " WHERE s.workflow_id = w.workflow_id) AS steps,"
            f" (SELECT count(*) FROM {s}.messages m WHERE m.destination_id = w.workflow_id)"
            " AS messages,"
            f" (SELECT max(e.updated_at) FROM {s}.events e"
            " WHERE e.workflow_id = w.workflow_id) AS events"
            f" FROM {s}.workflows w WHERE w.workflow_id = $1"
        ),
        "ranked_positions": (
            "SELECT workflow_id, position FROM (SELECT workflow_id, row_number() OVER"
            " (ORDER BY priority, created_at, workflow_id) AS position"
            f" FROM {s}.workflows WHERE queue_name = $1 AND status = 'ENQUEUED') ranked"
            " WHERE workflow_id = ANY($2::text[])"
        ),
    }
