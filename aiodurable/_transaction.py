"""``@transaction()``: a database transaction that commits exactly once.

The body runs in a transaction on the application database and its output is written into the
journal inside that same transaction, so the two commit together: once committed, a replay
returns the recorded output and the body never runs again. Serialization failures and deadlocks
are retried with backoff, as PostgreSQL intends. A connection lost mid-transaction is not the
body's outcome: the transaction runs again on a fresh connection (its journal entry makes a
repeat of a commit whose acknowledgement was lost harmless), and if the database stays
unreachable the workflow stops with :class:`DatabaseUnavailable` and resumes at the next start
(the loop is :func:`aiodurable._transaction_commit.commit_once`). A body whose first parameter is
annotated ``sqlalchemy.ext.asyncio.AsyncConnection`` gets a SQLAlchemy connection instead, with
the same guarantees (:mod:`aiodurable._transaction_sqlalchemy`, imported only then).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import typing
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Concatenate, Literal, ParamSpec, Protocol, TypeVar, overload

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from ._context import WorkflowContext, current_workflow, in_step, step_body
from ._current import current_engine
from ._journal import Live, journaled
from ._records import StepRow
from ._serde import return_hint
from ._store import TRANSIENT
from ._tracing import step_span
from ._transaction_commit import ConnectionLost, commit_once, retrying

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["Isolation", "transaction"]

P = ParamSpec("P")
R = TypeVar("R")

Isolation = Literal["serializable", "repeatable_read", "read_committed"]
_ISOLATIONS = frozenset(typing.get_args(Isolation))
_FIX = (
    "async def f(conn: asyncpg.Connection, ...)"
    " (or conn: sqlalchemy.ext.asyncio.AsyncConnection, with the sqlalchemy extra)"
)


class _TransactionDecorator(Protocol):
    """What ``transaction()`` returns: it takes ``async def f(conn, ...)``, ``conn`` an asyncpg
    or a SQLAlchemy connection, and returns ``f`` without ``conn``."""

    @overload
    def __call__(
        self, fn: Callable[Concatenate[asyncpg.Connection, P], Coroutine[Any, Any, R]], /
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...

    @overload
    def __call__(
        self, fn: Callable[Concatenate[AsyncConnection, P], Coroutine[Any, Any, R]], /
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...


def transaction(
    *, isolation: Isolation = "serializable", name: str | None = None
) -> _TransactionDecorator:
    """Make ``async def f(conn: asyncpg.Connection, ...) -> R`` an exactly-once transaction.

    Callers call ``await f(...)`` without ``conn``: the runtime supplies a connection inside a
    transaction of the given ``isolation`` on the application database
    (``Runtime(app_database_url=)``, by default the system database). In a workflow, the output
    is journaled in the same transaction; outside one it is a plain transaction. An exception
    from the body rolls back its writes and is journaled as the call's outcome. The connection
    is pooled and not reset between uses beyond the rollback: change session settings with
    ``SET LOCAL`` and take advisory locks with the ``_xact_`` functions.

    With the ``sqlalchemy`` extra, ``f`` may take ``conn: sqlalchemy.ext.asyncio.AsyncConnection``
    instead (Core statements, or ORM ones through ``AsyncSession(bind=conn)``): it is already in
    the transaction, which the runtime commits with the journal entry, so the body neither
    begins nor commits it (``conn.begin_nested()`` makes a savepoint).
    """
    if not isinstance(isolation, str) or isolation not in _ISOLATIONS:
        raise ValueError(
            f"transaction(isolation={isolation!r}) must be one of {sorted(_ISOLATIONS)}"
        )

    def decorate(
        fn: Callable[Concatenate[Any, P], Coroutine[Any, Any, R]],
    ) -> Callable[P, Coroutine[Any, Any, R]]:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(
                f"@transaction() decorates an async def function, and {fn!r} is not one;"
                " write it as `async def f(conn: asyncpg.Connection, ...)`"
            )
        plain, transact = _plain, _transact
        if _check_connection_parameter(fn):
            plain, transact = _sqlalchemy_path(fn)
        tx_name = name or fn.__qualname__
        hints: list[object] = []

        @functools.wraps(fn)
        def call(*args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
            ctx = current_workflow()
            if ctx is None or in_step():
                return plain(fn, isolation, args, kwargs)
            if not hints:
                hints.append(return_hint(fn))
            function_id = ctx.next_function_id()
            return journaled(
                ctx,
                function_id,
                tx_name,
                transact,
                ctx,
                function_id,
                tx_name,
                fn,
                isolation,
                args,
                kwargs,
                hint=hints[0],
            )

        call.__aiodurable_transaction__ = tx_name  # type: ignore[attr-defined]  # our marker
        return call

    return decorate


def _check_connection_parameter(fn: Callable[..., object]) -> bool:
    """Refuse, at decoration time, a function whose first parameter cannot take the connection;
    True when it is annotated as a SQLAlchemy ``AsyncConnection``."""
    params = list(inspect.signature(fn).parameters.values())
    if not params or params[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        raise TypeError(
            f"@transaction() needs {fn.__qualname__} to take the connection as its first"
            f" positional parameter: {_FIX}"
        )
    first = params[0]
    if first.annotation is inspect.Parameter.empty:
        return False
    try:
        hint = typing.get_type_hints(fn).get(first.name, object)
    except Exception:  # an annotation that does not resolve here (TYPE_CHECKING imports)
        annotation = first.annotation
        # Unresolved, it is known by its name: `conn: AsyncConnection` under an import that
        # only the type checker makes, which is also where SQLAlchemy may be missing.
        return isinstance(annotation, str) and annotation.rpartition(".")[2] == "AsyncConnection"
    if _is_sqlalchemy_connection(hint):
        return True
    if not _may_be_connection(hint):
        raise TypeError(
            f"@transaction() passes an asyncpg connection as the first argument of"
            f" {fn.__qualname__}, but its parameter {first.name!r} is annotated {hint!r};"
            f" add the connection parameter first: {_FIX}"
        )
    return False


def _is_sqlalchemy_connection(hint: object) -> bool:
    """Whether ``hint`` is SQLAlchemy's ``AsyncConnection`` (or a subclass), without importing
    SQLAlchemy: a program that has the class has SQLAlchemy already."""
    return any(
        c.__name__ == "AsyncConnection" and c.__module__.startswith("sqlalchemy.")
        for c in getattr(hint, "__mro__", ())
    )


_Plain = Callable[..., Coroutine[Any, Any, Any]]
_Transact = Callable[..., Coroutine[Any, Any, StepRow | Live]]


def _sqlalchemy_path(fn: Callable[..., object]) -> tuple[_Plain, _Transact]:
    """The SQLAlchemy forms of :func:`_plain` and :func:`_transact`, for ``fn``."""
    try:
        from . import _transaction_sqlalchemy
    except ImportError as exc:
        raise ImportError(
            f"@transaction() on {fn.__qualname__}: its connection parameter is a SQLAlchemy"
            " AsyncConnection, which needs SQLAlchemy with its asyncio support; install it with"
            f" `pip install 'aiodurable[sqlalchemy]'` ({exc})"
        ) from exc
    return _transaction_sqlalchemy.plain, _transaction_sqlalchemy.transact


def _may_be_connection(hint: object) -> bool:
    if hint is Any or hint is object:
        return True
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if args and origin is not None and not isinstance(origin, type):  # a Union or Optional
        return any(_may_be_connection(a) for a in args)
    cls = origin if isinstance(origin, type) else hint
    if not isinstance(cls, type):
        return True  # a TypeVar, a NewType, ...: not ours to judge
    try:
        return issubclass(cls, asyncpg.Connection | PoolConnectionProxy) or issubclass(
            asyncpg.Connection, cls
        )
    except TypeError:  # a non-runtime Protocol, say
        return True


async def _plain(
    fn: Callable[..., Coroutine[Any, Any, R]],
    isolation: str,
    args: tuple[object, ...],
    kwargs: dict[str, Any],
) -> R:

    pool = current_engine().app_store.pool

    async def once() -> R:
        async with pool.acquire() as conn, conn.transaction(isolation=isolation):  # type: ignore[arg-type]  # validated Literal
            return await fn(conn, *args, **kwargs)

    return await retrying(once)


async def _transact(
    ctx: WorkflowContext,
    function_id: int,
    name: str,
    fn: Callable[..., Coroutine[Any, Any, R]],
    isolation: str,
    args: tuple[object, ...],
    kwargs: dict[str, Any],
) -> StepRow | Live:
    """A live transaction on an asyncpg connection of the application store's pool, committed
    once by :func:`commit_once`."""
    rt = ctx.engine

    async def once(started: float) -> tuple[R, StepRow, StepRow | None]:
        try:
            async with rt.app_store.pool.acquire() as conn:
                try:
                    return await attempt(conn, started)
                except TRANSIENT as exc:
                    if not conn.is_closed():
                        raise  # the body's own failure, on a live connection
                    raise ConnectionLost(f"{type(exc).__name__}: {exc}") from exc
        except TRANSIENT as exc:  # acquiring the connection failed
            raise ConnectionLost(f"{type(exc).__name__}: {exc}") from exc

    async def attempt(
        conn: PoolConnectionProxy, started: float
    ) -> tuple[R, StepRow, StepRow | None]:
        tx = conn.transaction(isolation=isolation)  # type: ignore[arg-type]  # validated Literal
        await tx.start()
        try:
            with step_span(name, ctx.workflow_id, function_id), step_body(name):
                result = await fn(conn, *args, **kwargs)
            data = rt.encode(result, what=f"the result of transaction {name!r}")
            row = StepRow(
                function_id, name, rt.serializer.name, data, None, None, started, rt.clock.now()
            )
            existing = await rt.app_store.record_step_on(conn, ctx.workflow_id, row)
        except BaseException:
            if not conn.is_closed():
                # A failed rollback must not hide the failure that caused it.
                with contextlib.suppress(*TRANSIENT, asyncpg.PostgresError):
                    await tx.rollback()
            raise
        if existing is not None:
            await tx.rollback()  # journaled by another execution: its outcome stands
            return result, row, existing
        # If the acknowledgement of this COMMIT is lost, the next attempt finds the journal
        # entry it wrote and rolls itself back: the body's writes still commit once.
        await tx.commit()
        return result, row, None

    return await commit_once(ctx, function_id, name, once)
