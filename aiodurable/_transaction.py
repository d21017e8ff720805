"""``@transaction()``: a database transaction that commits exactly once.

The body runs in a transaction on the application database and its output is written into the
journal inside that same transaction, so the two commit together: once committed, a replay
returns the recorded output and the body never runs again. Serialization failures and deadlocks
are retried with backoff, as PostgreSQL intends.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar

import asyncpg

from ._context import WorkflowContext, current_workflow, in_step, step_body
from ._serde import encode, encode_exception, return_hint
from ._store import StepRow
from ._tracing import step_span

__all__ = ["Isolation", "transaction"]

P = ParamSpec("P")
R = TypeVar("R")

Isolation = Literal["serializable", "repeatable_read", "read_committed"]
_ISOLATIONS: dict[str, str] = {
    "serializable": "serializable",
    "repeatable_read": "repeatable_read",
    "read_committed": "read_committed",
}
_RETRYABLE = (asyncpg.SerializationError, asyncpg.DeadlockDetectedError)
_MAX_ATTEMPTS = 10


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
    is journaled in the same transaction; outside one it is a plain transaction.
    """
    if isolation not in _ISOLATIONS:
        raise ValueError(
            f"transaction(isolation={isolation!r}) must be one of {sorted(_ISOLATIONS)}"
        )

    def decorate(
        fn: Callable[Concatenate[asyncpg.Connection, P], Coroutine[Any, Any, R]],
    ) -> Callable[P, Coroutine[Any, Any, R]]:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(
                f"@transaction() decorates an async def function, and {fn!r} is not one"
            )
        params = list(inspect.signature(fn).parameters.values())
        if not params or params[0].kind not in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            raise TypeError(
                f"@transaction() needs {fn.__qualname__} to take the connection as its first"
                " positional parameter: async def f(conn: asyncpg.Connection, ...)"
            )
        tx_name = name or fn.__qualname__
        hints: list[object] = []

        @functools.wraps(fn)
        def call(*args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
            ctx = current_workflow()
            if ctx is None or in_step():
                return _plain(fn, isolation, args, kwargs)
            if not hints:
                hints.append(return_hint(fn))
            return _journaled(
                ctx, ctx.next_function_id(), tx_name, hints[0], fn, isolation, args, kwargs
            )

        call.__aiodurable_transaction__ = tx_name  # type: ignore[attr-defined]  # our marker
        return call

    return decorate


async def _retrying(body: Callable[[], Coroutine[Any, Any, R]]) -> R:
    delay = 0.01
    for attempt in range(1, _MAX_ATTEMPTS + 1):
        try:
            return await body()
        except _RETRYABLE:
            if attempt == _MAX_ATTEMPTS:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
    raise AssertionError("unreachable")


async def _plain(
    fn: Callable[..., Coroutine[Any, Any, R]],
    isolation: str,
    args: tuple[object, ...],
    kwargs: dict[str, Any],
) -> R:
    from ._runtime import current_runtime  # (import here: the runtime imports this module)

    pool = current_runtime().app_store.pool

    async def once() -> R:
        async with pool.acquire() as conn, conn.transaction(isolation=isolation):  # type: ignore[arg-type]  # validated Literal
            return await fn(conn, *args, **kwargs)

    return await _retrying(once)


async def _journaled(
    ctx: WorkflowContext,
    function_id: int,
    name: str,
    hint: object,
    fn: Callable[..., Coroutine[Any, Any, R]],
    isolation: str,
    args: tuple[object, ...],
    kwargs: dict[str, Any],
) -> R:
    rt = ctx.runtime
    entry = ctx.recorded(function_id, name)
    if entry is not None:
        return rt.replay(ctx.workflow_id, entry, hint)  # type: ignore[no-any-return]
    separate = rt.app_store is not rt.store
    if separate:
        # Committed in the application database but not yet journaled here: adopt it.
        entry = await rt.app_store.get_step(ctx.workflow_id, function_id)
        if entry is not None:
            await rt.checkpoint(ctx, entry)
            return rt.replay(ctx.workflow_id, entry, hint)  # type: ignore[no-any-return]
    ctx.check_cancelled()
    started = rt.clock.now()

    async def once() -> tuple[R, StepRow, StepRow | None]:
        async with rt.app_store.pool.acquire() as conn:
            tx = conn.transaction(isolation=isolation)  # type: ignore[arg-type]  # validated Literal
            await tx.start()
            try:
                with step_span(name, ctx.workflow_id, function_id), step_body(name):
                    result = await fn(conn, *args, **kwargs)
                data = encode(rt.serializer, result, what=f"the result of transaction {name!r}")
                row = StepRow(
                    function_id,
                    name,
                    rt.serializer.name,
                    data,
                    None,
                    None,
                    started,
                    rt.clock.now(),
                )
                existing = await rt.app_store.record_step_on(conn, ctx.workflow_id, row)
            except BaseException:
                await tx.rollback()
                raise
            if existing is not None:
                await tx.rollback()  # journaled by another execution: its outcome stands
                return result, row, existing
            await tx.commit()
            return result, row, None

    try:
        result, written, existing = await _retrying(once)
    except Exception as exc:
        # The body's writes rolled back; the failure itself is the step's outcome.
        row = StepRow(
            function_id, name, "json", None, encode_exception(exc), None, started, rt.clock.now()
        )
        recorded = await rt.checkpoint(ctx, row)
        if recorded is None:
            raise
        existing = recorded
    if existing is not None:
        return rt.replay(ctx.workflow_id, existing, hint)  # type: ignore[no-any-return]
    if separate:
        await rt.checkpoint(ctx, written)
    return result
