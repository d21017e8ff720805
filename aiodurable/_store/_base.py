"""The store's foundation: the pool, the schema, retries, and the owner that fences its writes.

Every part of :class:`~aiodurable._store.Store` subclasses :class:`StoreBase` and runs its
statements through :meth:`StoreBase._run`, which retries an operation after a connection
failure; an operation must therefore be safe to repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Self, TypeVar

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

from .._batch import Batcher
from .._exceptions import DatabaseUnavailable, OwnershipLost, SchemaError
from .._records import StepRow
from .._sql import migrations
from ._rows import step_row
from ._statements import Statements

__all__ = ["APPLICATION_NAME", "TRANSIENT", "Conn", "StoreBase", "redact_url"]

logger = logging.getLogger("aiodurable")

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741 (item)
O = TypeVar("O")  # noqa: E741 (outcome)

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,47}")  # (used with fullmatch: no trailing newline)
# A lock key all aiodurable processes agree on, so migrations run one at a time.
_MIGRATION_LOCK = 0x61696F64  # "aiod"

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


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Hand a connection back to the pool as it is. asyncpg has already rolled back any open
    transaction; its default reset (RESET ALL, UNLISTEN *, unlocking advisory locks) would cost
    a second round trip on every checkpoint, and the store leaves no such state behind."""


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, for error messages and logs."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def _check_schema(schema: object) -> None:
    if not isinstance(schema, str) or not _IDENTIFIER.fullmatch(schema):
        raise ValueError(
            f"schema {schema!r} is not a plain lower-case SQL identifier;"
            " use letters, digits and underscores, starting with a letter"
        )


class StoreBase:
    """SQL over an asyncpg pool, in one schema: what every part of the store shares."""

    def __init__(self, pool: asyncpg.Pool, schema: str, *, retry_for: float = 30.0) -> None:
        self.pool = pool
        self.schema = schema
        self.sql = Statements.for_schema(schema)
        self.channel: str = self.sql.channel
        self.retry_for = retry_for
        self.max_backoff: float = 2.0
        # The executor whose journal writes this store makes (see :meth:`set_owner`), and who
        # to tell when the fence refuses one.
        self.owner: str | None = None
        self.on_fenced: Callable[[str], None] | None = None
        self.reachable: bool = True  # False from a failed attempt to reach PostgreSQL to a success
        self._batchers: list[Batcher[Any, Any]] = []

    def _batcher(self, flush: Callable[[Sequence[I]], Awaitable[Sequence[O]]]) -> Batcher[I, O]:
        """A group-commit batcher over ``flush``, stopped by :meth:`close`."""
        batcher = Batcher(flush)
        self._batchers.append(batcher)
        return batcher

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
        statement_cache: bool = True,
    ) -> Self:
        """Connect a pool to ``url``; raise :class:`DatabaseUnavailable` within the timeout.

        ``statement_cache=False`` for a URL behind a transaction pooler (PgBouncer before 1.21,
        or without ``max_prepared_statements``): each statement is then prepared unnamed, in
        the same transaction as its execution, so that no server connection needs to keep a
        named one between transactions."""
        _check_schema(schema)
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
                    statement_cache_size=100 if statement_cache else 0,
                )
        except (*TRANSIENT, *_CONNECT_REFUSALS) as exc:
            raise DatabaseUnavailable(
                f"cannot connect to PostgreSQL at {redact_url(url)} within {connect_timeout:g} s"
                f" ({type(exc).__name__}: {exc}). Check that the server is running and that the"
                " URL (argument or AIODURABLE_DATABASE_URL) is right, or give no URL to use the"
                " embedded PostgreSQL."
            ) from exc
        return cls(pool, schema)

    async def close(self) -> None:
        """Stop the batches in flight and close the pool."""
        for batcher in self._batchers:
            await batcher.close()
        await self.pool.close()

    async def migrate(self) -> int:
        """Bring the schema up to date under an advisory lock; return its version."""
        known = migrations()
        latest = known[-1][0]
        s, sql = self.schema, self.sql
        async with self.pool.acquire() as conn, conn.transaction():
            if await conn.fetchval(sql.reserved_word, s):
                raise ValueError(
                    f"schema {s!r} is a reserved word in PostgreSQL's SQL, which cannot name a"
                    " schema unquoted; choose another name (the default is 'aiodurable')"
                )
            await conn.execute(sql.migration_lock, _MIGRATION_LOCK)
            await conn.execute(sql.create_schema)
            await conn.execute(sql.create_version_table)
            current = await conn.fetchval(sql.schema_version) or 0
            if current > latest:
                raise SchemaError(
                    f"the database schema {s!r} is at version {current}, newer than this"
                    f" aiodurable understands (up to {latest}); upgrade aiodurable"
                    " (pip install -U aiodurable), or use another schema= for this program"
                )
            for version, template in known[current:]:
                await conn.execute(template.replace("{schema}", s))
                await conn.execute(sql.record_version, version)
        return latest

    # -- running statements ------------------------------------------------------------------

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

    async def notify(self, *key: str) -> None:
        """Send one notification with ``key`` on the store's channel, as the statements that
        change a row do (see :mod:`aiodurable._signals`): a JSON array of the key's items."""
        payload = orjson.dumps(list(key)).decode()
        await self._run(lambda c: c.execute(self.sql.notify, self.channel, payload))

    # -- fencing -----------------------------------------------------------------------------

    def _lost(self, workflow_id: str) -> OwnershipLost:
        """The fence refused a write for ``workflow_id``: say so, and the error to raise."""
        if self.on_fenced is not None:
            self.on_fenced(workflow_id)
        return OwnershipLost(workflow_id, f"its journal refused a write by executor {self.owner!r}")

    async def _entry_outcomes(
        self, c: Conn, keys: Sequence[tuple[str, int]], written: set[tuple[str, int]]
    ) -> list[StepRow | OwnershipLost | None]:
        """Per journal entry a batch tried to write, by ``(workflow ID, function ID)``: None
        when it was written; else :class:`OwnershipLost` when the fence refused it, or the entry
        already at that function ID (journaled by another execution, or by a first attempt of
        this one whose answer was lost)."""
        missed = [key for key in keys if key not in written]
        if not missed:
            return [None] * len(keys)
        ids = list({w for w, _ in missed})
        lost = set(ids) - {r["workflow_id"] for r in await c.fetch(self.sql.owned_many, ids)}
        rows = await c.fetch(self.sql.get_steps, [w for w, _ in missed], [f for _, f in missed])
        existing = {(r["workflow_id"], r["function_id"]): step_row(r) for r in rows}
        return [self._lost(w) if w in lost else existing.get((w, f)) for w, f in keys]

    async def set_owner(self, executor_id: str) -> None:
        """Write journal entries and final statuses as ``executor_id`` from now on, fenced: a
        workflow another executor has taken over refuses them. The statements carry the ID
        themselves (no session setting), so any connection, pooled by PgBouncer too, will do."""
        self.owner = executor_id
        self.sql = Statements.for_schema(self.schema, owner=executor_id)

    async def same_server(self, conn: asyncpg.Connection) -> bool:
        """Whether ``conn`` reaches the same database of the same running server as the pool
        (a direct URL beside a pooled one, say)."""
        sql = self.sql.server_identity
        ours = await self._run(lambda c: c.fetchrow(sql))
        theirs = await conn.fetchrow(sql)
        return ours is not None and theirs is not None and tuple(ours) == tuple(theirs)
