"""``@transaction()`` with a SQLAlchemy ``AsyncConnection`` (the ``sqlalchemy`` extra).

Imported only when a transaction's first parameter is annotated
``sqlalchemy.ext.asyncio.AsyncConnection``. Each runtime then keeps one SQLAlchemy ``AsyncEngine``
over its application database, made at the first such call and disposed when the runtime
closes. Its connections are asyncpg connections of its own, not the runtime's pool's: SQLAlchemy
installs its own JSON codecs on every connection it adopts, which would change what the
runtime's statements and the asyncpg transaction bodies read from a pooled connection.

An attempt begins a transaction of the isolation level asked for, runs the body with the
``AsyncConnection``, writes the journal entry on the asyncpg connection beneath it
(``driver_connection``) inside that same transaction, and commits the two together through
SQLAlchemy. Retrying, the lost connection and the body's failure are
:func:`aiodurable._transaction_commit.commit_once`'s, as for asyncpg; SQLAlchemy wraps the driver's
errors, so they are recognised by their cause.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, cast

import asyncpg
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncTransaction,
    create_async_engine,
)

from ._context import WorkflowContext, step_body
from ._current import current_engine
from ._journal import Live
from ._records import StepRow
from ._store import APPLICATION_NAME, TRANSIENT
from ._tracing import step_span
from ._transaction_commit import RETRYABLE, ConnectionLost, commit_once, retrying

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["plain", "transact"]

R = TypeVar("R")

_LEVELS = {
    "serializable": "SERIALIZABLE",
    "repeatable_read": "REPEATABLE READ",
    "read_committed": "READ COMMITTED",
}
_ROLLBACK_FAILURES: tuple[type[BaseException], ...] = (
    *TRANSIENT,
    asyncpg.PostgresError,
    SQLAlchemyError,
)


def _caused_by(exc: BaseException, types: tuple[type[BaseException], ...]) -> bool:
    """Whether ``exc`` or an exception it was raised from is one of ``types``: SQLAlchemy raises
    its own error from its adapter's, raised from asyncpg's."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, types):
            return True
        seen.add(id(cause))
        cause = cause.__cause__
    return False


def _retryable(exc: BaseException) -> bool:
    return _caused_by(exc, RETRYABLE)


def _unique_statement_name() -> str:
    return f"__aiodurable_sa_{uuid.uuid4().hex}__"


class _Open(NamedTuple):
    """One attempt's connection: SQLAlchemy's, its transaction, and the asyncpg one beneath."""

    conn: AsyncConnection
    tx: AsyncTransaction
    driver: asyncpg.Connection


class _Bridge:
    """The SQLAlchemy engine of one runtime over its application database."""

    def __init__(self, rt: Engine) -> None:
        options = rt.options
        url = options.app_database_url or rt.database_url
        # Behind a transaction pooler (see Runtime(listen_database_url=)), no statement may
        # outlive its transaction under a name another client could also use.
        pooled = options.listen_database_url is not None
        connect_timeout, command_timeout = options.connect_timeout, options.command_timeout

        async def connect() -> asyncpg.Connection:
            return await asyncpg.connect(
                url,
                timeout=connect_timeout,
                command_timeout=command_timeout,
                statement_cache_size=0 if pooled else 100,
                server_settings={"application_name": APPLICATION_NAME},
            )

        connect_args: dict[str, Any] = {}
        if pooled:
            connect_args = {
                "prepared_statement_cache_size": 0,
                "prepared_statement_name_func": _unique_statement_name,
            }
        # The URL names the dialect only: `connect` makes the connections, from the URL the
        # runtime's own pool uses (the embedded server's socket folder and all).
        self.engine: AsyncEngine = create_async_engine(
            "postgresql+asyncpg://",
            async_creator=connect,
            pool_size=options.pool_size,
            max_overflow=0,
            connect_args=connect_args,
        )
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()
        rt.spawn(self._dispose_at_close(), name="aiodurable SQLAlchemy engine")

    async def _dispose_at_close(self) -> None:
        """Wait for the runtime to close (it cancels this task), then for the transactions in
        flight to hand their connections back, and close them all."""
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            await self._idle.wait()
            await self.engine.dispose()

    @contextlib.asynccontextmanager
    async def begin(self, isolation: str) -> AsyncIterator[_Open]:
        """A connection in a new transaction of ``isolation`` (which the caller commits or
        rolls back); closed, and handed back to the engine's pool, on exit."""
        self._busy += 1
        self._idle.clear()
        try:
            async with self.engine.connect() as conn:
                await conn.execution_options(isolation_level=_LEVELS[isolation])
                tx = await conn.begin()
                raw = await conn.get_raw_connection()
                yield _Open(conn, tx, cast(asyncpg.Connection, raw.driver_connection))
        finally:
            self._busy -= 1
            if not self._busy:
                self._idle.set()


_bridges: weakref.WeakKeyDictionary[Engine, _Bridge] = weakref.WeakKeyDictionary()


def _bridge(rt: Engine) -> _Bridge:
    """The runtime's SQLAlchemy engine, made at its first transaction; none once it closed (its
    engine is disposed of, or about to be)."""
    rt.check_open()
    bridge = _bridges.get(rt)
    if bridge is None:
        _ = rt.app_store.pool  # the in-memory backend raises here: it runs no SQL
        bridge = _bridges[rt] = _Bridge(rt)
    return bridge


async def _run_body(
    fn: Callable[..., Coroutine[Any, Any, R]],
    name: str,
    opened: _Open,
    args: tuple[object, ...],
    kwargs: dict[str, Any],
) -> R:
    result = await fn(opened.conn, *args, **kwargs)
    if not opened.tx.is_active:
        raise RuntimeError(
            f"transaction {name!r} committed or rolled back its own transaction: the runtime"
            " commits it, together with its journal entry; leave conn.commit(), conn.rollback()"
            " and conn.begin() out of the body (conn.begin_nested() makes a savepoint)"
        )
    return result


async def _roll_back(opened: _Open) -> None:
    if not opened.driver.is_closed():
        # A failed rollback must not hide the failure that caused it.
        with contextlib.suppress(*_ROLLBACK_FAILURES):
            await opened.conn.rollback()


async def plain(
    fn: Callable[..., Coroutine[Any, Any, R]],
    isolation: str,
    args: tuple[object, ...],
    kwargs: dict[str, Any],
) -> R:
    """Outside a workflow: the body in a transaction of its own, retried after a serialization
    failure or deadlock, journaled nowhere."""
    bridge = _bridge(current_engine())
    name = getattr(fn, "__qualname__", repr(fn))

    async def once() -> R:
        async with bridge.begin(isolation) as opened:
            try:
                result = await _run_body(fn, name, opened, args, kwargs)
            except BaseException:
                await _roll_back(opened)
                raise
            await opened.conn.commit()
            return result

    return await retrying(once, _retryable)


async def transact(
    ctx: WorkflowContext,
    function_id: int,
    name: str,
    fn: Callable[..., Coroutine[Any, Any, R]],
    isolation: str,
    args: tuple[object, ...],
    kwargs: dict[str, Any],
) -> StepRow | Live:
    """A live transaction on a SQLAlchemy connection, committed once by :func:`commit_once`."""
    rt = ctx.engine
    bridge = _bridge(rt)

    async def once(started: float) -> tuple[R, StepRow, StepRow | None]:
        opened: _Open | None = None
        try:
            async with bridge.begin(isolation) as opened:
                return await attempt(opened, started)
        except ConnectionLost:
            raise
        except Exception as exc:
            # Connecting failed, or the connection died under the attempt: not the body's doing.
            if (opened is None or opened.driver.is_closed()) and _caused_by(exc, TRANSIENT):
                raise ConnectionLost(f"{type(exc).__name__}: {exc}") from exc
            raise

    async def attempt(opened: _Open, started: float) -> tuple[R, StepRow, StepRow | None]:
        try:
            with step_span(name, ctx.workflow_id, function_id), step_body(name):
                result = await _run_body(fn, name, opened, args, kwargs)
            data = rt.encode(result, what=f"the result of transaction {name!r}")
            row = StepRow(
                function_id, name, rt.serializer.name, data, None, None, started, rt.clock.now()
            )
            existing = await rt.app_store.record_step_on(opened.driver, ctx.workflow_id, row)
        except BaseException:
            await _roll_back(opened)
            raise
        if existing is not None:
            await opened.conn.rollback()  # journaled by another execution: its outcome stands
            return result, row, existing
        # If the acknowledgement of this COMMIT is lost, the next attempt finds the journal
        # entry it wrote and rolls itself back: the body's writes still commit once.
        await opened.conn.commit()
        return result, row, None

    return await commit_once(ctx, function_id, name, once, _retryable)
