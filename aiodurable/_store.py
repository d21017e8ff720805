"""The one I/O seam: every SQL statement aiodurable runs lives here.

The store speaks to PostgreSQL through an asyncpg pool and hands back frozen dataclasses, never
asyncpg records. It knows nothing of replay, retries or scheduling; that policy is pure code
elsewhere.

Cost model: a *checkpoint* (one journal write) is one statement in autocommit, one round trip.
Writes that may be repeated after a dropped connection are written to be idempotent
(``ON CONFLICT DO NOTHING``, ``WHERE status = 'PENDING'``), so the store retries them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from ._batch import Batcher
from ._exceptions import (
    DatabaseUnavailable,
    DuplicateWorkflowError,
    OwnershipLost,
    SchemaError,
    WorkflowNotFound,
)
from ._sql import migrations
from ._validate import check_epoch, check_id, check_priority, check_text

__all__ = ["NewWorkflow", "StepRow", "Store", "WorkflowQuery", "WorkflowRow", "redact_url"]

logger = logging.getLogger("aiodurable")

T = TypeVar("T")

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,47}")  # (used with fullmatch: no trailing newline)
# A lock key all aiodurable processes agree on, so migrations run one at a time.
_MIGRATION_LOCK = 0x61696F64  # "aiod"

_DB_NOW_MS = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
_SERVER_START_MS = "(extract(epoch FROM pg_postmaster_start_time()) * 1000)::bigint"

AUTO_KEY_PREFIX = "aiodurable:"
"""Idempotency keys the store makes itself start so; callers' keys may not."""

APPLICATION_NAME = "aiodurable"
"""The application_name of every connection aiodurable opens (see pg_stat_activity)."""

# Errors after which the statement may be sent again on a fresh connection.
TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
    # A connection whose backend was terminated can be left mid-protocol; drop it and retry.
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)

# Errors that mean "this URL will not do", reported at connect time like a dead server.
_CONNECT_REFUSALS: tuple[type[BaseException], ...] = (
    asyncpg.InvalidCatalogNameError,
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InvalidPasswordError,
)

Conn = asyncpg.Connection | PoolConnectionProxy
"""A connection, or a pooled connection's proxy: the store's statements run on either."""

# Fencing: a runtime's connections carry its executor ID in the session setting aiodurable.owner
# (see Store.set_owner); a journal entry or final status is written only for a workflow that
# executor still owns, in the same statement as the write. Without the setting (tools, the
# command line, a separate application database) nothing is fenced.
_OWNER = "coalesce(nullif(current_setting('aiodurable.owner', true), ''), {col})"
_OWNED_HERE = f"executor_id = {_OWNER.format(col='executor_id')}"


def _owned(schema: str, workflow_id: str) -> str:
    """SQL: whether this connection's executor owns the workflow ``workflow_id`` (an SQL
    expression) now; always true on a connection without an owner (a separate application
    database has no workflow rows to check)."""
    # A correlated scalar subquery: one index probe per row, never a join over the table.
    return (
        "coalesce(current_setting('aiodurable.owner', true), '') IN ('', (SELECT f.executor_id"
        f" FROM {schema}.workflows f WHERE f.workflow_id = {workflow_id}))"
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Hand a connection back to the pool as it is. asyncpg has already rolled back any open
    transaction; its default reset (RESET ALL, UNLISTEN *, unlocking advisory locks) would cost
    a second round trip on every checkpoint, and the store leaves no such state behind."""


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, for error messages and logs."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def ms(seconds: float) -> int:
    """A POSIX time in seconds as the epoch milliseconds the tables store."""
    return round(seconds * 1000)


def storable(text: str) -> bool:
    """Whether PostgreSQL text can hold ``text``: no NUL, no lone surrogate. No row holds text
    that fails this, so a read looking for it finds nothing (the driver would raise instead)."""
    if "\x00" in text:
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class NewWorkflow:
    """A workflow row about to be written."""

    workflow_id: str
    name: str
    format: str
    inputs: bytes
    created_at: float
    app_version: str
    executor_id: str
    parent_workflow_id: str | None = None
    deadline_at: float | None = None
    status: str = "PENDING"
    queue_name: str | None = None
    priority: int = 0
    deduplication_id: str | None = None


@dataclass(frozen=True, slots=True)
class WorkflowRow:
    """A workflow as recorded."""

    workflow_id: str
    status: str
    name: str
    format: str
    inputs: bytes | None
    output: bytes | None
    error: bytes | None
    created_at: float
    updated_at: float
    app_version: str
    executor_id: str
    recovery_attempts: int
    queue_name: str | None
    parent_workflow_id: str | None
    deadline_at: float | None
    priority: int = 0
    deduplication_id: str | None = None


@dataclass(frozen=True, slots=True)
class WorkflowQuery:
    """Filters for :meth:`Store.list_workflows`; times are POSIX seconds."""

    statuses: tuple[str, ...] = ()
    name: str | None = None
    workflow_id_prefix: str | None = None
    app_version: str | None = None
    executor_id: str | None = None
    queue_name: str | None = None
    start_time: float | None = None
    end_time: float | None = None
    limit: int | None = None
    offset: int | None = None
    sort_desc: bool = False
    load_input: bool = False
    load_output: bool = False


def _check_new(w: NewWorkflow) -> None:
    """Refuse a row PostgreSQL would refuse, before it joins a batch: one bad value would fail
    the statement, and with it every other caller's row in that batch. The public calls check
    their arguments first, with errors in their own words; this guards every path to a batch."""
    check_id("workflow ID", w.workflow_id)
    check_id("workflow name", w.name)
    check_text("application version", w.app_version, empty=True)
    check_text("executor ID", w.executor_id, empty=True)
    if w.parent_workflow_id is not None:
        check_id("parent workflow ID", w.parent_workflow_id)
    if w.queue_name is not None:
        check_id("queue name", w.queue_name)
    if w.deduplication_id is not None:
        check_id("deduplication ID", w.deduplication_id)
    check_epoch("creation time", w.created_at)
    if w.deadline_at is not None:
        check_epoch("workflow deadline", w.deadline_at)
    check_priority(w.priority)


def _enqueue_args(w: NewWorkflow) -> tuple[object, ...]:
    return (
        w.workflow_id,
        w.name,
        w.format,
        w.inputs,
        ms(w.created_at),
        w.app_version,
        w.parent_workflow_id,
        None if w.deadline_at is None else ms(w.deadline_at),
        w.queue_name,
        w.priority,
        w.deduplication_id,
    )


def _first_claims(workflow_ids: Sequence[str], inserted: set[str]) -> list[bool]:
    """Which rows of a batch took their workflow ID: of two callers in one batch with the same
    new ID, only the first, so the workflow is launched once."""
    claims: list[bool] = []
    for wid in workflow_ids:
        claims.append(wid in inserted)
        inserted.discard(wid)
    return claims


class _Finish(NamedTuple):
    workflow_id: str
    status: str
    format: str
    output: bytes | None
    error: bytes | None
    at: int


@dataclass(frozen=True, slots=True)
class DequeueRequest:
    """What a dispatcher asks of :meth:`Store.dequeue`."""

    queue_name: str
    executor_id: str
    app_version: str
    names: tuple[str, ...]
    now: float
    batch: int
    concurrency: int | None
    worker_concurrency: int | None
    rate_limit: tuple[int, float] | None
    priority_enabled: bool


@dataclass(frozen=True, slots=True)
class Dequeued:
    """The workflows a dispatcher started, and when a rate limit lets it try again."""

    rows: list[WorkflowRow]
    retry_at: float | None


@dataclass(frozen=True, slots=True)
class StepRow:
    """One journal entry: the recorded outcome of the call at ``function_id``."""

    function_id: int
    name: str
    format: str
    output: bytes | None
    error: bytes | None
    child_workflow_id: str | None
    started_at: float
    completed_at: float


_WF_COLUMNS = (
    "workflow_id, status, name, format, inputs, output, error, created_at, updated_at, "
    "app_version, executor_id, recovery_attempts, queue_name, parent_workflow_id, deadline_at,"
    " priority, deduplication_id"
)
_STEP_COLUMNS = (
    "function_id, name, format, output, error, child_workflow_id, started_at, completed_at"
)


def _workflow(r: asyncpg.Record) -> WorkflowRow:
    deadline = r["deadline_at"]
    return WorkflowRow(
        workflow_id=r["workflow_id"],
        status=r["status"],
        name=r["name"],
        format=r["format"],
        inputs=r["inputs"],
        output=r["output"],
        error=r["error"],
        created_at=r["created_at"] / 1000,
        updated_at=r["updated_at"] / 1000,
        app_version=r["app_version"],
        executor_id=r["executor_id"],
        recovery_attempts=r["recovery_attempts"],
        queue_name=r["queue_name"],
        parent_workflow_id=r["parent_workflow_id"],
        deadline_at=None if deadline is None else deadline / 1000,
        priority=r["priority"],
        deduplication_id=r["deduplication_id"],
    )


def _step(r: asyncpg.Record) -> StepRow:
    return StepRow(
        function_id=r["function_id"],
        name=r["name"],
        format=r["format"],
        output=r["output"],
        error=r["error"],
        child_workflow_id=r["child_workflow_id"],
        started_at=r["started_at"] / 1000,
        completed_at=r["completed_at"] / 1000,
    )


class Store:
    """SQL over an asyncpg pool, in one schema."""

    def __init__(self, pool: asyncpg.Pool, schema: str, *, retry_for: float = 30.0) -> None:
        self.pool = pool
        self.schema = schema
        self.channel: str = f"{schema}_signal"
        self.retry_for = retry_for
        self.max_backoff: float = 2.0
        # The executor whose journal writes this store makes (see :meth:`set_owner`), and who
        # to tell when the fence refuses one.
        self.owner: str | None = None
        self.on_fenced: Callable[[str], None] | None = None
        self.reachable: bool = True  # False from a failed attempt to reach PostgreSQL to a success
        s = schema
        notify = f"pg_notify('{self.channel}', json_build_array('w', workflow_id, status)::text)"
        # A start is announced too, so consoles and tools see workflows appear at once.
        self._sql_insert_workflow = (
            f"WITH ins AS (INSERT INTO {s}.workflows (workflow_id, status, name, format, inputs,"
            " created_at, updated_at, app_version, executor_id, parent_workflow_id, deadline_at,"
            " queue_name) VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8, $9, $10, $11)"
            " ON CONFLICT (workflow_id) DO NOTHING RETURNING workflow_id, status)"
            f" SELECT true, {notify} FROM ins"
        )
        self._sql_get_workflow = f"SELECT {_WF_COLUMNS} FROM {s}.workflows WHERE workflow_id = $1"
        self._sql_journal = (
            f"SELECT {_STEP_COLUMNS} FROM {s}.steps WHERE workflow_id = $1 ORDER BY function_id"
        )
        self._sql_journals = (
            f"SELECT workflow_id, {_STEP_COLUMNS} FROM {s}.steps WHERE workflow_id = ANY($1)"
        )
        # A journal entry, fenced: written only while this executor owns the workflow.
        step_insert = (
            f"INSERT INTO {s}.steps (workflow_id, {_STEP_COLUMNS}) SELECT $1::text, $2::integer,"
            " $3::text, $4::text, $5::bytea, $6::bytea, $7::text, $8::bigint, $9::bigint"
            f" WHERE {_owned(s, '$1')}"
        )
        self._sql_owned = f"SELECT {_owned(s, '$1')}"
        self._sql_owned_many = (
            f"SELECT workflow_id FROM {s}.workflows WHERE workflow_id = ANY($1) AND {_OWNED_HERE}"
        )
        self._sql_record_step_unfenced = (
            f"INSERT INTO {s}.steps (workflow_id, {_STEP_COLUMNS})"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            " ON CONFLICT (workflow_id, function_id) DO NOTHING RETURNING true"
        )
        # With an owner: the workflow's own row, found by its key, is the source of the insert.
        self._sql_record_step_fenced = (
            f"INSERT INTO {s}.steps (workflow_id, {_STEP_COLUMNS}) SELECT f.workflow_id, $2,"
            f" $3, $4, $5, $6, $7, $8, $9 FROM {s}.workflows f WHERE f.workflow_id = $1"
            " AND f.executor_id = current_setting('aiodurable.owner')"
            " ON CONFLICT (workflow_id, function_id) DO NOTHING RETURNING true"
        )
        self._sql_get_step = (
            f"SELECT {_STEP_COLUMNS} FROM {s}.steps WHERE workflow_id = $1 AND function_id = $2"
        )
        # A queued workflow's end frees a slot of its queue: say so too.
        self._sql_finish = (
            f"WITH done AS (UPDATE {s}.workflows SET status = $2, format = $3, output = $4,"
            " error = $5, updated_at = $6 WHERE workflow_id = $1 AND status = 'PENDING'"
            f" AND {_OWNED_HERE}"
            f" RETURNING workflow_id, status, queue_name) SELECT {notify},"
            f" CASE WHEN queue_name IS NOT NULL THEN pg_notify('{self.channel}',"
            " json_build_array('q', queue_name)::text) END FROM done"
        )
        self._sql_record_steps = (
            f"INSERT INTO {s}.steps (workflow_id, {_STEP_COLUMNS}) SELECT * FROM unnest($1::text[],"
            " $2::integer[], $3::text[], $4::text[], $5::bytea[], $6::bytea[], $7::text[],"
            f" $8::bigint[], $9::bigint[]) AS d(workflow_id, {_STEP_COLUMNS})"
            f" WHERE {_owned(s, 'd.workflow_id')}"
            " ON CONFLICT (workflow_id, function_id) DO NOTHING RETURNING workflow_id, function_id"
        )
        self._sql_get_steps = (
            f"SELECT workflow_id, {_STEP_COLUMNS} FROM {s}.steps WHERE (workflow_id, function_id)"
            " IN (SELECT * FROM unnest($1::text[], $2::integer[]))"
        )
        self._sql_finish_many = (
            "WITH data AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[],"
            " $5::bytea[], $6::bigint[]) AS d(workflow_id, status, format, output, error, at)),"
            f" done AS (UPDATE {s}.workflows w SET status = d.status, format = d.format,"
            " output = d.output, error = d.error, updated_at = d.at FROM data d"
            " WHERE w.workflow_id = d.workflow_id AND w.status = 'PENDING'"
            f" AND {_OWNED_HERE.replace('executor_id', 'w.executor_id')}"
            " RETURNING w.workflow_id, w.status, w.queue_name)"
            f" SELECT workflow_id, {notify}, CASE WHEN queue_name IS NOT NULL THEN"
            f" pg_notify('{self.channel}', json_build_array('q', queue_name)::text) END FROM done"
        )
        self._sql_insert_workflows = (
            f"WITH ins AS (INSERT INTO {s}.workflows (workflow_id, status, name, format, inputs,"
            " created_at, updated_at, app_version, executor_id, parent_workflow_id, deadline_at,"
            " queue_name) SELECT i, st, n, f, inp, c, c, v, e, p, d, q FROM unnest($1::text[],"
            " $2::text[], $3::text[], $4::text[], $5::bytea[], $6::bigint[], $7::text[],"
            " $8::text[], $9::text[], $10::bigint[], $11::text[])"
            " AS t(i, st, n, f, inp, c, v, e, p, d, q)"
            " ON CONFLICT (workflow_id) DO NOTHING RETURNING workflow_id, status)"
            f" SELECT workflow_id, {notify} FROM ins"
        )
        self._insert_batch: Batcher[tuple[object, ...], bool] = Batcher(self._insert_many)
        queued = (
            f"INSERT INTO {s}.workflows (workflow_id, status, name, format, inputs, created_at,"
            " updated_at, app_version, executor_id, parent_workflow_id, deadline_at, queue_name,"
            " priority, deduplication_id)"
        )
        notify_queue = f"pg_notify('{self.channel}', json_build_array('q', queue_name)::text)"
        self._sql_enqueue = (
            f"WITH ins AS ({queued} VALUES ($1, 'ENQUEUED', $2, $3, $4, $5, $5, $6, '', $7, $8,"
            " $9, $10, $11) ON CONFLICT (workflow_id) DO NOTHING RETURNING queue_name)"
            f" SELECT {notify_queue} FROM ins"
        )
        self._sql_enqueue_many = (
            f"WITH ins AS ({queued} SELECT i, 'ENQUEUED', n, f, inp, c, c, v, '', p, d, q, pr, dd"
            " FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::bigint[],"
            " $6::text[], $7::text[], $8::bigint[], $9::text[], $10::integer[], $11::text[])"
            " AS t(i, n, f, inp, c, v, p, d, q, pr, dd)"
            " ON CONFLICT (workflow_id) DO NOTHING RETURNING workflow_id, queue_name)"
            f" SELECT workflow_id, {notify_queue} FROM ins"
        )
        self._enqueue_batch: Batcher[NewWorkflow, bool] = Batcher(self._enqueue_many)
        self._steps_batch: Batcher[tuple[str, StepRow], StepRow | OwnershipLost | None] = Batcher(
            self._record_steps
        )
        self._finish_batch: Batcher[_Finish, bool] = Batcher(self._finish_many)
        self._sql_pending = (
            f"SELECT workflow_id, name FROM {s}.workflows WHERE status = 'PENDING'"
            " AND executor_id = $1 AND app_version = $2 ORDER BY created_at"
        )
        self._sql_claim = (
            f"UPDATE {s}.workflows SET recovery_attempts = recovery_attempts + 1, updated_at = $2"
            f" WHERE workflow_id = ANY($1) AND status = 'PENDING' RETURNING {_WF_COLUMNS}"
        )
        self._sql_set_status = (
            f"WITH done AS (UPDATE {s}.workflows SET status = $2, updated_at = $3"
            f" WHERE workflow_id = $1 AND status = ANY($4::text[]) RETURNING workflow_id, status)"
            f" SELECT {notify} FROM done"
        )

        notify_msg = (
            f"pg_notify('{self.channel}', json_build_array('m', destination_id, topic)::text)"
        )
        self._sql_send_from_workflow = (
            f"WITH step AS ({step_insert} RETURNING workflow_id),"
            f" msg AS (INSERT INTO {s}.messages (destination_id, topic, format, value, created_at)"
            " SELECT $10, $11, $12, $13, $8 FROM step RETURNING destination_id, topic)"
            f" SELECT {notify_msg} FROM msg"
        )
        self._sql_send_once = (
            f"WITH k AS (INSERT INTO {s}.message_keys VALUES ($1, $6, $5) ON CONFLICT DO NOTHING"
            " RETURNING destination_id),"
            f" msg AS (INSERT INTO {s}.messages (destination_id, topic, format, value, created_at)"
            " SELECT $1, $2, $3, $4, $5 FROM k RETURNING destination_id, topic)"
            f" SELECT {notify_msg} FROM msg"
        )
        # The consume and its checkpoint are one statement: both happen or neither. A plain
        # INSERT (no ON CONFLICT): if the function ID is taken, the statement fails whole and the
        # message stays queued.
        self._sql_consume = (
            f"WITH m AS (DELETE FROM {s}.messages WHERE message_id = (SELECT message_id FROM"
            f" {s}.messages WHERE destination_id = $1 AND topic = $2 ORDER BY message_id LIMIT 1"
            f" FOR UPDATE SKIP LOCKED) AND {_owned(s, '$1')} RETURNING format, value),"
            f" step AS (INSERT INTO {s}.steps (workflow_id, {_STEP_COLUMNS})"
            " SELECT $1, $3, $4, m.format, m.value, NULL, NULL, $5, $5 FROM m RETURNING 1)"
            f" SELECT {_owned(s, '$1')} AS owned, m.format, m.value,"
            " (SELECT count(*) FROM step) AS written FROM (SELECT 1) AS one LEFT JOIN m ON true"
        )
        self._sql_wait_deadline = (
            f"INSERT INTO {s}.waits VALUES ($1, $2, $3) ON CONFLICT (workflow_id, function_id)"
            f" DO UPDATE SET deadline_at = {s}.waits.deadline_at RETURNING deadline_at"
        )
        self._sql_set_event = (
            f"WITH step AS ({step_insert} RETURNING workflow_id),"
            f" ev AS (INSERT INTO {s}.events (workflow_id, key, format, value, updated_at)"
            " SELECT $1, $10, $4, $11, $8 FROM step ON CONFLICT (workflow_id, key) DO UPDATE SET"
            " format = excluded.format, value = excluded.value, updated_at = excluded.updated_at"
            " RETURNING workflow_id, key),"
            f" hist AS (INSERT INTO {s}.event_history"
            " (workflow_id, function_id, key, format, value) SELECT $1, $2, $10, $4, $11 FROM step)"
            f" SELECT pg_notify('{self.channel}', json_build_array('e', workflow_id, key)::text)"
            " FROM ev"
        )
        self._sql_get_event = (
            f"SELECT format, value FROM {s}.events WHERE workflow_id = $1 AND key = $2"
        )

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        url: str,
        schema: str,
        *,
        pool_size: int = 16,
        connect_timeout: float = 10.0,
        command_timeout: float | None = 30.0,
    ) -> Store:
        """Connect a pool to ``url``; raise :class:`DatabaseUnavailable` within the timeout."""
        if not isinstance(schema, str) or not _IDENTIFIER.fullmatch(schema):
            raise ValueError(
                f"schema {schema!r} is not a plain lower-case SQL identifier;"
                " use letters, digits and underscores, starting with a letter"
            )
        store: Store | None = None

        async def init(conn: asyncpg.Connection) -> None:
            if store is not None:
                await store._init_connection(conn)

        try:
            async with asyncio.timeout(connect_timeout):
                pool = await asyncpg.create_pool(
                    url,
                    min_size=1,
                    max_size=pool_size,
                    timeout=connect_timeout,
                    command_timeout=command_timeout,
                    server_settings={"application_name": APPLICATION_NAME},
                    reset=_keep_session,
                    init=init,
                )
        except (*TRANSIENT, *_CONNECT_REFUSALS) as exc:
            raise DatabaseUnavailable(
                f"cannot connect to PostgreSQL at {redact_url(url)} within {connect_timeout:g} s"
                f" ({type(exc).__name__}: {exc}). Check that the server is running and that the"
                " URL (argument or AIODURABLE_DATABASE_URL) is right, or give no URL to use the"
                " embedded PostgreSQL."
            ) from exc
        store = cls(pool, schema)
        return store

    async def close(self) -> None:
        """Stop the batches in flight and close the pool."""
        await self._insert_batch.close()
        await self._enqueue_batch.close()
        await self._steps_batch.close()
        await self._finish_batch.close()
        await self.pool.close()

    async def migrate(self) -> int:
        """Bring the schema up to date under an advisory lock; return its version."""
        known = migrations()
        latest = known[-1][0]
        s = self.schema
        async with self.pool.acquire() as conn, conn.transaction():
            reserved = await conn.fetchval(
                "SELECT catcode IN ('R', 'T') FROM pg_get_keywords() WHERE word = $1", s
            )
            if reserved:
                raise ValueError(
                    f"schema {s!r} is a reserved word in PostgreSQL's SQL, which cannot name a"
                    " schema unquoted; choose another name (the default is 'aiodurable')"
                )
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {s}.schema_version (version integer NOT NULL)"
            )
            current = await conn.fetchval(f"SELECT max(version) FROM {s}.schema_version") or 0
            if current > latest:
                raise SchemaError(
                    f"the database schema {s!r} is at version {current}, newer than this"
                    f" aiodurable understands (up to {latest}); upgrade aiodurable"
                    " (pip install -U aiodurable), or use another schema= for this program"
                )
            for version, template in known[current:]:
                await conn.execute(template.replace("{schema}", s))
                await conn.execute(f"INSERT INTO {s}.schema_version VALUES ($1)", version)
        return latest

    async def _run(self, op: Callable[[Conn], Awaitable[T]]) -> T:
        """Run ``op`` on a pooled connection, retrying it after connection failures. Every
        ``op`` must be safe to repeat: a write whose answer was lost may have committed."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.retry_for
        delay = 0.05
        while True:
            try:
                async with self.pool.acquire() as conn:
                    try:
                        result = await op(conn)
                    except TRANSIENT:
                        with contextlib.suppress(asyncpg.InterfaceError):
                            conn.terminate()  # never hand a broken connection out again
                        raise
                self.reachable = True
                return result
            except TRANSIENT as exc:
                self.reachable = False
                if loop.time() + delay > give_up:
                    raise DatabaseUnavailable(
                        f"PostgreSQL stayed unreachable for {self.retry_for:g} s"
                        f" ({type(exc).__name__}: {exc})"
                    ) from exc
                # A dropped connection that the next attempt replaces is routine; say so loudly
                # only once the database has stayed away for a while.
                level = logging.WARNING if delay >= 0.4 else logging.INFO
                logger.log(level, "database connection failed (%s); retrying in %.2f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff)

    def _lost(self, workflow_id: str) -> OwnershipLost:
        """The fence refused a write for ``workflow_id``: say so, and the error to raise."""
        if self.on_fenced is not None:
            self.on_fenced(workflow_id)
        return OwnershipLost(workflow_id, f"its journal refused a write by executor {self.owner!r}")

    async def set_owner(self, executor_id: str) -> None:
        """Make every later connection write journal entries and final statuses as
        ``executor_id``, fenced: a workflow another executor has taken over refuses them."""
        self.owner = executor_id
        await self.pool.expire_connections()  # the next acquire opens them with the setting

    async def _init_connection(self, conn: asyncpg.Connection) -> None:
        if self.owner is not None:
            await conn.execute("SELECT set_config('aiodurable.owner', $1, false)", self.owner)

    # -- workflows ---------------------------------------------------------------------------

    async def insert_workflow(self, w: NewWorkflow) -> bool:
        """Record a new workflow; return False if its ID is already taken. Starts that arrive
        together share one statement (group commit)."""
        _check_new(w)
        args = (
            w.workflow_id,
            w.status,
            w.name,
            w.format,
            w.inputs,
            ms(w.created_at),
            w.app_version,
            w.executor_id,
            w.parent_workflow_id,
            None if w.deadline_at is None else ms(w.deadline_at),
            w.queue_name,
        )
        return await self._insert_batch.submit(args)

    async def _insert_many(self, batch: Sequence[tuple[object, ...]]) -> list[bool]:
        """Record several new workflows in one statement (group commit)."""
        if len(batch) == 1:
            inserted = await self._run(lambda c: c.fetchval(self._sql_insert_workflow, *batch[0]))
            return [bool(inserted)]
        columns = [list(column) for column in zip(*batch, strict=True)]
        rows = await self._run(lambda c: c.fetch(self._sql_insert_workflows, *columns))
        return _first_claims([str(args[0]) for args in batch], {r["workflow_id"] for r in rows})

    async def get_workflow(self, workflow_id: str) -> WorkflowRow | None:
        """The workflow's row, or None (also for an ID no row can have, such as one with NUL)."""
        if not isinstance(workflow_id, str):
            raise ValueError(f"a workflow ID must be a string, not {workflow_id!r:.80}")
        if not storable(workflow_id):
            return None
        row = await self._run(lambda c: c.fetchrow(self._sql_get_workflow, workflow_id))
        return None if row is None else _workflow(row)

    async def require_workflow(self, workflow_id: str) -> WorkflowRow:
        """The workflow's row; :class:`WorkflowNotFound` if there is none."""
        row = await self.get_workflow(workflow_id)
        if row is None:
            raise WorkflowNotFound(workflow_id)
        return row

    async def finish_workflow(
        self,
        workflow_id: str,
        status: str,
        fmt: str,
        output: bytes | None,
        error: bytes | None,
        now: float,
    ) -> bool:
        """Write a PENDING workflow's final status and notify waiters; False if not PENDING."""
        return await self._finish_batch.submit(
            _Finish(workflow_id, status, fmt, output, error, ms(now))
        )

    async def _finish_many(self, batch: Sequence[_Finish]) -> list[bool]:
        """Write several final statuses in one statement (group commit)."""
        if len(batch) == 1:
            rows = await self._run(lambda c: c.fetch(self._sql_finish, *batch[0]))
            return [bool(rows)]
        columns = [list(column) for column in zip(*batch, strict=True)]
        rows = await self._run(lambda c: c.fetch(self._sql_finish_many, *columns))
        done = {r["workflow_id"] for r in rows}
        return [f.workflow_id in done for f in batch]

    async def set_status(
        self, workflow_id: str, status: str, *, only_from: Sequence[str], now: float
    ) -> bool:
        """Move a workflow to ``status`` if it is in one of ``only_from``; notify waiters."""
        args = (workflow_id, status, ms(now), list(only_from))
        rows = await self._run(lambda c: c.fetch(self._sql_set_status, *args))
        return bool(rows)

    async def pending_workflows(self, executor_id: str, app_version: str) -> list[tuple[str, str]]:
        """``(workflow ID, name)`` of the PENDING workflows of an executor on an application
        version, oldest first."""
        rows = await self._run(lambda c: c.fetch(self._sql_pending, executor_id, app_version))
        return [(r["workflow_id"], r["name"]) for r in rows]

    async def other_version_counts(self, app_version: str) -> list[tuple[str, str, int]]:
        """``(application version, status, count)`` of the PENDING and ENQUEUED workflows
        recorded on versions other than ``app_version`` (and not waiting for any version)."""
        sql = (
            f"SELECT app_version, status, count(*) AS n FROM {self.schema}.workflows"
            " WHERE status IN ('PENDING', 'ENQUEUED') AND app_version NOT IN ('', $1)"
            " GROUP BY app_version, status ORDER BY app_version, status"
        )
        rows = await self._run(lambda c: c.fetch(sql, app_version))
        return [(r["app_version"], r["status"], r["n"]) for r in rows]

    async def claim_for_recovery(
        self, workflow_ids: Sequence[str], now: float
    ) -> list[WorkflowRow]:
        """Count one more recovery attempt on each still-PENDING workflow; return their rows."""
        ids = list(workflow_ids)
        rows = await self._run(lambda c: c.fetch(self._sql_claim, ids, ms(now)))
        return [_workflow(r) for r in rows]

    # -- the journal -------------------------------------------------------------------------

    async def load_journal(self, workflow_id: str) -> dict[int, StepRow]:
        """Every journal entry of a workflow, by function ID: one query."""
        rows = await self._run(lambda c: c.fetch(self._sql_journal, workflow_id))
        return {r["function_id"]: _step(r) for r in rows}

    async def load_journals(self, workflow_ids: Sequence[str]) -> dict[str, dict[int, StepRow]]:
        """The journals of several workflows in one query."""
        ids = list(workflow_ids)
        rows = await self._run(lambda c: c.fetch(self._sql_journals, ids))
        journals: dict[str, dict[int, StepRow]] = {wid: {} for wid in ids}
        for r in rows:
            journals[r["workflow_id"]][r["function_id"]] = _step(r)
        return journals

    async def record_step_on(self, conn: Conn, workflow_id: str, step: StepRow) -> StepRow | None:
        """:meth:`record_step` on a given connection, inside the caller's transaction;
        :class:`OwnershipLost` when another executor owns the workflow now."""
        sql = self._sql_record_step_unfenced if self.owner is None else self._sql_record_step_fenced
        written = await conn.fetchval(sql, *self._step_args(workflow_id, step))
        if written:
            return None
        # Not written: the entry exists already, or the fence refused it.
        if not await conn.fetchval(self._sql_owned, workflow_id):
            raise self._lost(workflow_id)
        existing = await conn.fetchrow(self._sql_get_step, workflow_id, step.function_id)
        return None if existing is None else _step(existing)

    async def get_step(self, workflow_id: str, function_id: int) -> StepRow | None:
        """One journal entry, or None."""
        row = await self._run(lambda c: c.fetchrow(self._sql_get_step, workflow_id, function_id))
        return None if row is None else _step(row)

    async def record_step(self, workflow_id: str, step: StepRow) -> StepRow | None:
        """Write a journal entry: one round trip, shared with the entries written at the same
        moment (group commit). If the function ID already has one (another executor got there
        first), return that entry instead; None when ours was written; :class:`OwnershipLost`
        when another executor owns the workflow now."""
        outcome = await self._steps_batch.submit((workflow_id, step))
        if isinstance(outcome, OwnershipLost):
            raise outcome
        return outcome

    async def _record_steps(
        self, batch: Sequence[tuple[str, StepRow]]
    ) -> list[StepRow | OwnershipLost | None]:
        if len(batch) == 1:
            wid, step = batch[0]
            return [await self._run(lambda c: self.record_step_on(c, wid, step))]
        columns = [
            list(column) for column in zip(*(self._step_args(w, s) for w, s in batch), strict=True)
        ]

        async def op(c: Conn) -> list[StepRow | OwnershipLost | None]:
            written = {
                (r["workflow_id"], r["function_id"])
                for r in await c.fetch(self._sql_record_steps, *columns)
            }
            missed = [(w, s.function_id) for w, s in batch if (w, s.function_id) not in written]
            existing: dict[tuple[str, int], StepRow] = {}
            lost: set[str] = set()
            if missed:
                ids = list({w for w, _ in missed})
                owned = {r["workflow_id"] for r in await c.fetch(self._sql_owned_many, ids)}
                lost = set(ids) - owned
                rows = await c.fetch(
                    self._sql_get_steps, [w for w, _ in missed], [f for _, f in missed]
                )
                existing = {(r["workflow_id"], r["function_id"]): _step(r) for r in rows}
            return [
                self._lost(w) if w in lost else existing.get((w, s.function_id)) for w, s in batch
            ]

        return await self._run(op)

    # -- messages and events -----------------------------------------------------------------

    def _step_args(self, workflow_id: str, step: StepRow) -> tuple[object, ...]:
        return (
            workflow_id,
            step.function_id,
            step.name,
            step.format,
            step.output,
            step.error,
            step.child_workflow_id,
            ms(step.started_at),
            ms(step.completed_at),
        )

    async def send(
        self,
        destination_id: str,
        topic: str,
        fmt: str,
        value: bytes,
        now: float,
        *,
        idempotency_key: str | None = None,
        checkpoint: tuple[str, StepRow] | None = None,
    ) -> bool:
        """Queue a message and notify its receiver; False when it was already sent (its
        idempotency key or its sender's journal entry says so). ``checkpoint`` is the sending
        workflow's journal entry, written in the same statement.
        :class:`WorkflowNotFound` for an unknown destination."""

        async def op(c: Conn) -> bool:
            if checkpoint is not None:
                sender, step = checkpoint
                sql = self._sql_send_from_workflow
                args: tuple[object, ...] = (
                    *self._step_args(sender, step),
                    destination_id,
                    topic,
                    fmt,
                    value,
                )
            else:
                # Without a key of the caller's, a key of our own still makes a repeat after a
                # lost answer harmless; such keys are forgotten after a day.
                key = idempotency_key or f"{AUTO_KEY_PREFIX}{uuid.uuid4()}"
                sql = self._sql_send_once
                args = (destination_id, topic, fmt, value, ms(now), key)
            if await c.fetch(sql, *args):
                return True
            if checkpoint is not None and not await c.fetchval(self._sql_owned, checkpoint[0]):
                raise self._lost(checkpoint[0])  # the fence refused the sender's entry
            return False

        try:
            return await self._run(op)
        except asyncpg.UniqueViolationError:
            return False  # the sender's function ID is taken: sent already
        except asyncpg.ForeignKeyViolationError:
            raise WorkflowNotFound(destination_id) from None

    async def consume_message(
        self, workflow_id: str, topic: str, function_id: int, name: str, now: float
    ) -> StepRow | None:
        """Take the oldest message for ``topic`` and journal it at ``function_id``, atomically.

        Returns the journal entry, or None when no message is queued. When the function ID is
        already journaled, nothing is consumed and the existing entry is returned."""

        attempts = 0

        async def op(c: Conn) -> StepRow | None:
            nonlocal attempts
            attempts += 1
            try:
                row = await c.fetchrow(
                    self._sql_consume, workflow_id, topic, function_id, name, ms(now)
                )
            except asyncpg.UniqueViolationError:
                pass
            else:
                assert row is not None  # (one row always: whether owned, and the message)
                if not row["owned"]:
                    raise self._lost(workflow_id)
                if row["format"] is not None:
                    return StepRow(
                        function_id, name, row["format"], row["value"], None, None, now, now
                    )
                if attempts == 1:
                    return None
            # Journaled already: by another execution, or by our own first attempt whose answer
            # was lost with its connection (the message it consumed is in the entry).
            existing = await c.fetchrow(self._sql_get_step, workflow_id, function_id)
            return None if existing is None else _step(existing)

        return await self._run(op)

    async def wait_deadline(self, workflow_id: str, function_id: int, deadline: float) -> float:
        """Record the deadline of a wait at ``function_id``, or return the one recorded first."""
        recorded = await self._run(
            lambda c: c.fetchval(self._sql_wait_deadline, workflow_id, function_id, ms(deadline))
        )
        return float(recorded) / 1000

    async def set_event(
        self, workflow_id: str, step: StepRow, key: str, fmt: str, value: bytes
    ) -> bool:
        """Publish an event value with its journal entry and notify; False if already journaled."""
        args = (*self._step_args(workflow_id, step), key, value)

        async def op(c: Conn) -> bool:
            if await c.fetch(self._sql_set_event, *args):
                return True
            if not await c.fetchval(self._sql_owned, workflow_id):
                raise self._lost(workflow_id)  # the fence refused the entry
            return False

        try:
            return await self._run(op)
        except asyncpg.UniqueViolationError:
            return False

    async def get_event(self, workflow_id: str, key: str) -> tuple[str, bytes] | None:
        """The latest value of an event as ``(format, bytes)``, or None if never set."""
        row = await self._run(lambda c: c.fetchrow(self._sql_get_event, workflow_id, key))
        return None if row is None else (row["format"], row["value"])

    # -- management --------------------------------------------------------------------------

    async def list_workflows(self, query: WorkflowQuery) -> list[WorkflowRow]:
        """Workflows matching ``query``, newest or oldest first, without or with their data."""
        s = self.schema
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
        columns = _WF_COLUMNS
        if not query.load_input:
            columns = columns.replace("inputs,", "NULL::bytea AS inputs,")
        if not query.load_output:
            columns = columns.replace("output, error,", "NULL::bytea AS output, error,")
        order = "DESC" if query.sort_desc else "ASC"
        sql = f"SELECT {columns} FROM {s}.workflows"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY created_at {order}, workflow_id {order}"
        if query.limit is not None:
            sql += f" LIMIT {arg(query.limit)}"
        if query.offset:
            sql += f" OFFSET {arg(query.offset)}"
        rows = await self._run(lambda c: c.fetch(sql, *args))
        return [_workflow(r) for r in rows]

    async def last_function_id(self, workflow_id: str) -> int:
        """The highest journaled function ID of a workflow (0 when none)."""
        sql = (
            f"SELECT coalesce(max(function_id), 0) FROM {self.schema}.steps WHERE workflow_id = $1"
        )
        return int(await self._run(lambda c: c.fetchval(sql, workflow_id)))

    async def resume(
        self, workflow_id: str, executor_id: str, app_version: str, now: float
    ) -> WorkflowRow | None:
        """Make a CANCELLED, MAX_RECOVERY_ATTEMPTS_EXCEEDED or ENQUEUED workflow PENDING again on
        ``executor_id`` ('' = any live runtime) and ``app_version``; None if it was in no such
        state."""
        s = self.schema
        sql = (
            f"WITH r AS (UPDATE {s}.workflows SET status = 'PENDING', recovery_attempts = 0,"
            " executor_id = $2, app_version = $3, updated_at = $4, deadline_at = NULL"
            " WHERE workflow_id = $1 AND status IN"
            " ('CANCELLED', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED', 'ENQUEUED')"
            f" RETURNING {_WF_COLUMNS}) SELECT r.*, {self._notify_sql('r')} FROM r"
        )
        row = await self._run(
            lambda c: c.fetchrow(sql, workflow_id, executor_id, app_version, ms(now))
        )
        return None if row is None else _workflow(row)

    def _notify_sql(self, table: str) -> str:
        """A pg_notify of ``table``'s workflow status, and of its being claimable when it is
        PENDING with no executor."""
        ch = self.channel
        return (
            f"pg_notify('{ch}', json_build_array('w', {table}.workflow_id, {table}.status)::text),"
            f" CASE WHEN {table}.executor_id = '' THEN"
            f" pg_notify('{ch}', json_build_array('x', {table}.workflow_id)::text) END"
        )

    async def fork(self, source_id: str, new: NewWorkflow, below: int) -> None:
        """Record ``new`` with the source's journal entries (and events) whose function ID is
        below ``below``, in one transaction."""
        s = self.schema
        insert = (
            f"INSERT INTO {s}.workflows (workflow_id, status, name, format, inputs, created_at,"
            " updated_at, app_version, executor_id, parent_workflow_id, deadline_at, queue_name)"
            " VALUES ($1, 'PENDING', $2, $3, $4, $5, $5, $6, $7, NULL, NULL, NULL)"
        )
        copy_steps = (
            f"INSERT INTO {s}.steps (workflow_id, {_STEP_COLUMNS}) SELECT $1, {_STEP_COLUMNS}"
            f" FROM {s}.steps WHERE workflow_id = $2 AND function_id < $3"
        )
        copy_history = (
            f"INSERT INTO {s}.event_history (workflow_id, function_id, key, format, value)"
            f" SELECT $1, function_id, key, format, value FROM {s}.event_history"
            " WHERE workflow_id = $2 AND function_id < $3"
        )
        copy_events = (
            f"INSERT INTO {s}.events (workflow_id, key, format, value, updated_at)"
            f" SELECT DISTINCT ON (key) $1, key, format, value, $4 FROM {s}.event_history"
            " WHERE workflow_id = $2 AND function_id < $3 ORDER BY key, function_id DESC"
        )
        notify = f"SELECT {self._notify_sql('w')} FROM {s}.workflows w WHERE workflow_id = $1"

        async def op(c: Conn) -> None:
            async with c.transaction():
                # The copied entries belong to the fork, which may run elsewhere: not fenced.
                await c.execute("SET LOCAL aiodurable.owner TO ''")
                await c.execute(
                    insert,
                    new.workflow_id,
                    new.name,
                    new.format,
                    new.inputs,
                    ms(new.created_at),
                    new.app_version,
                    new.executor_id,
                )
                await c.execute(copy_steps, new.workflow_id, source_id, below)
                await c.execute(copy_history, new.workflow_id, source_id, below)
                await c.execute(copy_events, new.workflow_id, source_id, below, ms(new.created_at))
                await c.execute(notify, new.workflow_id)

        try:
            await self._run(op)
        except asyncpg.UniqueViolationError:
            raise DuplicateWorkflowError(
                f"workflow ID {new.workflow_id!r} is already taken; choose another for the fork"
            ) from None

    async def claim_unassigned(
        self, names: Sequence[str], executor_id: str, app_version: str, now: float
    ) -> list[WorkflowRow]:
        """Take the PENDING workflows no executor runs, of these names and of this application
        version (or of none), for ``executor_id``."""
        s = self.schema
        sql = (
            f"UPDATE {s}.workflows SET executor_id = $2, app_version = $3, updated_at = $4"
            f" WHERE workflow_id IN (SELECT workflow_id FROM {s}.workflows"
            " WHERE status = 'PENDING' AND executor_id = '' AND name = ANY($1)"
            " AND app_version IN ('', $3) FOR UPDATE SKIP LOCKED LIMIT 500)"
            f" RETURNING {_WF_COLUMNS}"
        )
        rows = await self._run(
            lambda c: c.fetch(sql, list(names), executor_id, app_version, ms(now))
        )
        return [_workflow(r) for r in rows]

    async def release_executor(self, executor_id: str, now: float) -> list[str]:
        """Hand the PENDING workflows of a gone executor to any live runtime of their version."""
        s = self.schema
        sql = (
            f"WITH r AS (UPDATE {s}.workflows SET executor_id = '', updated_at = $2"
            " WHERE status = 'PENDING' AND executor_id = $1 RETURNING workflow_id, status,"
            f" executor_id) SELECT r.workflow_id, {self._notify_sql('r')} FROM r"
        )
        rows = await self._run(lambda c: c.fetch(sql, executor_id, ms(now)))
        return [r["workflow_id"] for r in rows]

    async def executor_alive(self, executor_id: str) -> bool:
        """Whether a live runtime holds ``executor_id``'s session lock."""

        async def op(c: Conn) -> bool:
            free = await c.fetchval(
                "SELECT pg_try_advisory_lock(hashtext($1), hashtext($2))", self.schema, executor_id
            )
            if free:
                await c.execute(
                    "SELECT pg_advisory_unlock(hashtext($1), hashtext($2))",
                    self.schema,
                    executor_id,
                )
            return not free

        return await self._run(op)

    # -- queues ------------------------------------------------------------------------------

    async def enqueue(self, w: NewWorkflow) -> bool:
        """Record an ENQUEUED workflow and wake the queue's dispatchers; False if its workflow ID
        is taken. :class:`DuplicateWorkflowError` if its deduplication ID is queued or running.
        Enqueues that arrive together share one statement (group commit)."""
        _check_new(w)
        return await self._enqueue_batch.submit(w)

    async def _enqueue_many(self, batch: Sequence[NewWorkflow]) -> list[bool]:
        # A batch that fails (a deduplication ID taken, say) is written again one row at a time
        # by the Batcher, so that only the rows at fault fail.
        if len(batch) == 1:
            return [await self._enqueue_one(batch[0])]
        columns = [list(column) for column in zip(*map(_enqueue_args, batch), strict=True)]
        rows = await self._run(lambda c: c.fetch(self._sql_enqueue_many, *columns))
        return _first_claims([w.workflow_id for w in batch], {r["workflow_id"] for r in rows})

    async def _enqueue_one(self, w: NewWorkflow) -> bool:
        args = _enqueue_args(w)
        try:
            return bool(await self._run(lambda c: c.fetch(self._sql_enqueue, *args)))
        except asyncpg.UniqueViolationError:
            raise DuplicateWorkflowError(
                f"deduplication ID {w.deduplication_id!r} is already queued or running on queue"
                f" {w.queue_name!r}; wait for that workflow, or pass on_duplicate='return' to get"
                " its handle"
            ) from None

    async def deduplicated(self, queue_name: str, deduplication_id: str) -> str | None:
        """The ID of the queued or running workflow holding a deduplication ID."""
        sql = (
            f"SELECT workflow_id FROM {self.schema}.workflows WHERE queue_name = $1"
            " AND deduplication_id = $2 AND status IN ('ENQUEUED', 'PENDING')"
        )
        value = await self._run(lambda c: c.fetchval(sql, queue_name, deduplication_id))
        return None if value is None else str(value)

    async def dequeue(self, request: DequeueRequest) -> Dequeued:
        """Start as many ENQUEUED workflows of a queue as its limits allow, for ``executor_id``.

        One transaction under a per-queue advisory lock, so the global concurrency and the rate
        limit hold across every process sharing the database."""
        s = self.schema
        q = request

        def window_opens(recent: list[int]) -> float | None:
            """When the rate limit next admits a start, given the starts within its period
            (epoch milliseconds, newest first); None when it has room now."""
            if q.rate_limit is None:
                return None
            limit, period = q.rate_limit
            if len(recent) < limit:
                return None
            # A slot frees when the oldest of the latest ``limit`` starts leaves the window.
            return recent[limit - 1] / 1000 + period

        async def op(c: Conn) -> Dequeued:
            async with c.transaction():
                await c.execute(
                    "SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))",
                    s,
                    "queue:" + q.queue_name,
                )
                free = q.batch
                running = await c.fetchrow(
                    f"SELECT count(*) AS everywhere, count(*) FILTER (WHERE executor_id = $2)"
                    f" AS here FROM {s}.workflows WHERE queue_name = $1 AND status = 'PENDING'",
                    q.queue_name,
                    q.executor_id,
                )
                assert running is not None
                if q.concurrency is not None:
                    free = min(free, q.concurrency - running["everywhere"])
                if q.worker_concurrency is not None:
                    free = min(free, q.worker_concurrency - running["here"])
                # The rate limit's window: the latest starts within the period, newest first.
                recent: list[int] = []
                if q.rate_limit is not None:
                    limit, period = q.rate_limit
                    window = await c.fetch(
                        f"SELECT started_at FROM {s}.workflows WHERE queue_name = $1"
                        " AND started_at > $2 ORDER BY started_at DESC LIMIT $3",
                        q.queue_name,
                        ms(q.now - period),
                        limit,
                    )
                    recent = [r["started_at"] for r in window]
                    free = min(free, limit - len(recent))
                if free <= 0:
                    return Dequeued([], window_opens(recent))
                order = "priority, created_at" if q.priority_enabled else "created_at"
                rows = await c.fetch(
                    f"UPDATE {s}.workflows SET status = 'PENDING', executor_id = $2,"
                    " app_version = $3, started_at = $4, updated_at = $4"
                    f" WHERE workflow_id IN (SELECT workflow_id FROM {s}.workflows"
                    " WHERE queue_name = $1 AND status = 'ENQUEUED' AND name = ANY($5)"
                    f" AND app_version IN ('', $3) ORDER BY {order} LIMIT $6"
                    f" FOR UPDATE SKIP LOCKED) RETURNING {_WF_COLUMNS}",
                    q.queue_name,
                    q.executor_id,
                    q.app_version,
                    ms(q.now),
                    list(q.names),
                    free,
                )
                # Count the starts just made, so that a window they fill wakes the dispatcher
                # when it opens again (no other event would: nothing is enqueued or finishes).
                recent = [ms(q.now)] * len(rows) + recent
                return Dequeued([_workflow(r) for r in rows], window_opens(recent))

        return await self._run(op)

    async def queue_positions(self, queue_name: str) -> dict[str, int]:
        """The position (1 = next) of each ENQUEUED workflow of a queue, in dispatch order."""
        sql = (
            f"SELECT workflow_id FROM {self.schema}.workflows WHERE queue_name = $1"
            " AND status = 'ENQUEUED' ORDER BY priority, created_at"
        )
        rows = await self._run(lambda c: c.fetch(sql, queue_name))
        return {r["workflow_id"]: i for i, r in enumerate(rows, 1)}

    # -- executors ---------------------------------------------------------------------------

    async def heartbeat(self, executor_id: str, host: str, pid: int, app_version: str) -> bool:
        """Record that ``executor_id`` is alive now (the database server's clock); return
        whether its row was there already (a takeover deletes it)."""
        sql = (
            f"INSERT INTO {self.schema}.executors VALUES ($1, $2, $3, $4, {_DB_NOW_MS},"
            f" {_DB_NOW_MS}) ON CONFLICT (executor_id) DO UPDATE SET host = excluded.host,"
            " pid = excluded.pid, app_version = excluded.app_version,"
            " last_seen = excluded.last_seen RETURNING (xmax <> 0) AS existed"
        )
        return bool(await self._run(lambda c: c.fetchval(sql, executor_id, host, pid, app_version)))

    async def not_owned(self, workflow_ids: Sequence[str], executor_id: str) -> dict[str, str]:
        """Of ``workflow_ids``, those no longer PENDING on ``executor_id``: ID -> where they are
        now, in words (``executor 'x'``, or their status)."""
        sql = (
            f"SELECT workflow_id, status, executor_id FROM {self.schema}.workflows"
            " WHERE workflow_id = ANY($1) AND (status <> 'PENDING' OR executor_id <> $2)"
        )
        rows = await self._run(lambda c: c.fetch(sql, list(workflow_ids), executor_id))
        return {
            r["workflow_id"]: (
                f"executor {r['executor_id']!r}"
                if r["status"] == "PENDING"
                else f"{r['status']} (by executor {r['executor_id']!r})"
            )
            for r in rows
        }

    async def silent_executors(self, app_version: str, lease: float, me: str) -> list[str]:
        """Executors of ``app_version`` silent for longer than ``lease`` seconds: no heartbeat
        for that long, counted from the server's own start at the earliest, since a restart of
        PostgreSQL silences everybody at once and is no sign that anyone died."""
        sql = (
            f"SELECT executor_id FROM {self.schema}.executors WHERE app_version = $1"
            f" AND executor_id <> $2 AND greatest(last_seen, {_SERVER_START_MS})"
            f" < {_DB_NOW_MS} - $3 ORDER BY last_seen"
        )
        rows = await self._run(lambda c: c.fetch(sql, app_version, me, round(lease * 1000)))
        return [r["executor_id"] for r in rows]

    async def take_over(
        self, dead: str, executor_id: str, app_version: str, names: Sequence[str], now: float
    ) -> list[WorkflowRow] | None:
        """Move a gone executor's PENDING workflows (of these names and this version) to
        ``executor_id``, holding the gone executor's session lock meanwhile so one survivor takes
        each; None when that lock is held (the executor is alive after all)."""
        s = self.schema
        sql = (
            f"UPDATE {s}.workflows SET executor_id = $2, updated_at = $5,"
            " recovery_attempts = recovery_attempts + 1 WHERE executor_id = $1"
            " AND status = 'PENDING' AND app_version = $3 AND name = ANY($4)"
            f" RETURNING {_WF_COLUMNS}"
        )

        async def op(c: Conn) -> list[WorkflowRow] | None:
            got = await c.fetchval(
                "SELECT pg_try_advisory_lock(hashtext($1), hashtext($2))", s, dead
            )
            if not got:
                return None
            try:
                rows = await c.fetch(sql, dead, executor_id, app_version, list(names), ms(now))
                await c.execute(f"DELETE FROM {s}.executors WHERE executor_id = $1", dead)
            finally:
                await c.execute("SELECT pg_advisory_unlock(hashtext($1), hashtext($2))", s, dead)
            return [_workflow(r) for r in rows]

        return await self._run(op)

    async def forget_auto_keys(self, older_than: float) -> int:
        """Drop the store's own idempotency keys recorded before ``older_than``."""
        sql = (
            f"DELETE FROM {self.schema}.message_keys WHERE idempotency_key LIKE"
            f" '{AUTO_KEY_PREFIX}%' AND created_at < $1"
        )
        done = await self._run(lambda c: c.execute(sql, ms(older_than)))
        return int(done.split()[-1])
