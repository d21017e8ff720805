"""``@transaction()``: a database transaction that commits exactly once.

The body runs in a transaction on the application database and its output is written into the
journal inside that same transaction, so the two commit together: once committed, a replay
returns the recorded output and the body never runs again. Serialization failures and deadlocks
are retried with backoff, as PostgreSQL intends. A connection lost mid-transaction is not the
body's outcome: the transaction runs again on a fresh connection (its journal entry makes a
repeat of a commit whose acknowledgement was lost harmless), and if the database stays
unreachable the workflow stops with :class:`DatabaseUnavailable` and resumes at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import random
import typing
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from ._context import WorkflowContext, current_workflow, in_step, step_body
from ._current import current_engine
from ._exceptions import DatabaseUnavailable
from ._journal import Live, journaled
from ._records import StepRow
from ._serde import return_hint
from ._step import checkpoint_failure
from ._store import TRANSIENT
from ._tracing import step_span

__all__ = ["Isolation", "transaction"]

P = ParamSpec("P")
R = TypeVar("R")

Isolation = Literal["serializable", "repeatable_read", "read_committed"]
_ISOLATIONS = frozenset(typing.get_args(Isolation))
_RETRYABLE = (asyncpg.SerializationError, asyncpg.DeadlockDetectedError)
_MAX_ATTEMPTS = 10
# How long a journaled transaction keeps trying on fresh connections before the workflow stops.
_UNREACHABLE_FOR = 30.0


def transaction(
    *, isolation: Isolation = "serializable", name: str | None = None
) -> Callable[
    [Callable[Concatenate[asyncpg.Connection, P], Coroutine[Any, Any, R]]],
    Callable[P, Coroutine[Any, Any, R]],
]:
    """Make ``async def f(conn: asyncpg.Connection, ...) -> R`` an exactly-once transaction.

    Callers call ``await f(...)`` without ``conn``: the runtime supplies a connection inside a
    transaction of the given ``isolation`` on the application database
    (``Runtime(app_database_url=)``, by default the system database). In a workflow, the output
    is journaled in the same transaction; outside one it is a plain transaction. An exception
    from the body rolls back its writes and is journaled as the call's outcome. The connection
    is pooled and not reset between uses beyond the rollback: change session settings with
    ``SET LOCAL`` and take advisory locks with the ``_xact_`` functions.
    """
    if not isinstance(isolation, str) or isolation not in _ISOLATIONS:
        raise ValueError(
            f"transaction(isolation={isolation!r}) must be one of {sorted(_ISOLATIONS)}"
        )

    def decorate(
        fn: Callable[Concatenate[asyncpg.Connection, P], Coroutine[Any, Any, R]],
    ) -> Callable[P, Coroutine[Any, Any, R]]:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(
                f"@transaction() decorates an async def function, and {fn!r} is not one;"
                " write it as `async def f(conn: asyncpg.Connection, ...)`"
            )
        _check_connection_parameter(fn)
        tx_name = name or fn.__qualname__
        hints: list[object] = []

        @functools.wraps(fn)
        def call(*args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
            ctx = current_workflow()
            if ctx is None or in_step():
                return _plain(fn, isolation, args, kwargs)
            if not hints:
                hints.append(return_hint(fn))
            function_id = ctx.next_function_id()
            return journaled(
                ctx,
                function_id,
                tx_name,
                _transact,
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


def _check_connection_parameter(fn: Callable[..., object]) -> None:
    """Refuse, at decoration time, a function whose first parameter cannot take the connection."""
    params = list(inspect.signature(fn).parameters.values())
    fix = "async def f(conn: asyncpg.Connection, ...)"
    if not params or params[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        raise TypeError(
            f"@transaction() needs {fn.__qualname__} to take the connection as its first"
            f" positional parameter: {fix}"
        )
    first = params[0]
    if first.annotation is inspect.Parameter.empty:
        return
    try:
        hint = typing.get_type_hints(fn).get(first.name, object)
    except Exception:  # an annotation that does not resolve here (TYPE_CHECKING imports)
        return
    if not _may_be_connection(hint):
        raise TypeError(
            f"@transaction() passes an asyncpg connection as the first argument of"
            f" {fn.__qualname__}, but its parameter {first.name!r} is annotated {hint!r};"
            f" add the connection parameter first: {fix}"
        )


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


async def _retrying(body: Callable[[], Coroutine[Any, Any, R]]) -> R:
    """Run ``body``, again after a serialization failure or deadlock, with jittered backoff (the
    two transactions that collided must not collide again in lockstep)."""
    delay = 0.01
    for attempt in range(1, _MAX_ATTEMPTS + 1):
        try:
            return await body()
        except _RETRYABLE:
            if attempt == _MAX_ATTEMPTS:
                raise
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))  # jitter only
            delay = min(delay * 2, 1.0)
    raise AssertionError("unreachable")


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

    return await _retrying(once)


class _ConnectionLost(Exception):
    """The transaction's connection failed (not its body): run it again on a fresh one."""


async def _transact(
    ctx: WorkflowContext,
    function_id: int,
    name: str,
    fn: Callable[..., Coroutine[Any, Any, R]],
    isolation: str,
    args: tuple[object, ...],
    kwargs: dict[str, Any],
) -> StepRow | Live:
    """A live transaction: run it until it commits with its journal entry (retrying on a lost
    connection), or journal the failure of its body. With a separate application database, an
    entry committed there but not yet journaled here is adopted, and the body not run again."""
    rt = ctx.engine
    separate = rt.app_store is not rt.store
    if separate:
        adopted = await rt.app_store.get_step(ctx.workflow_id, function_id)
        if adopted is not None:
            await rt.checkpoint(ctx, adopted)
            return adopted
    started = rt.clock.now()

    async def once() -> tuple[R, StepRow, StepRow | None]:
        try:
            async with rt.app_store.pool.acquire() as conn:
                try:
                    return await attempt(conn)
                except TRANSIENT as exc:
                    if not conn.is_closed():
                        raise  # the body's own failure, on a live connection
                    raise _ConnectionLost(f"{type(exc).__name__}: {exc}") from exc
        except TRANSIENT as exc:  # acquiring the connection failed
            raise _ConnectionLost(f"{type(exc).__name__}: {exc}") from exc

    async def attempt(conn: PoolConnectionProxy) -> tuple[R, StepRow, StepRow | None]:
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

    loop = asyncio.get_running_loop()
    give_up = loop.time() + _UNREACHABLE_FOR
    delay = 0.05
    while True:
        try:
            result, written, existing = await _retrying(once)
        except _ConnectionLost as lost:
            if loop.time() + delay > give_up:
                raise DatabaseUnavailable(
                    f"transaction {name!r} of workflow {ctx.workflow_id!r} could not reach the"
                    f" application database for {_UNREACHABLE_FOR:g} s ({lost}); the workflow"
                    " resumes from its last completed step at the next start"
                ) from lost.__cause__
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
            continue
        except Exception as exc:
            # The body's writes rolled back; the failure itself is the step's outcome.
            recorded = await checkpoint_failure(ctx, function_id, name, exc, started)
            if recorded is None:
                raise
            existing = recorded
        break
    if existing is not None:
        if separate:
            await rt.checkpoint(ctx, existing)
        return existing
    if separate:
        await rt.checkpoint(ctx, written)
    return Live(result)
