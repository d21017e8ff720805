"""Committing a journaled transaction exactly once, whatever connection it runs on.

An *attempt* opens a transaction on the application database, runs the body, writes its journal
entry on the same connection and commits the two together (``@transaction()`` has one attempt for
asyncpg connections, :mod:`aiodurable._transaction`, and one for SQLAlchemy's,
:mod:`aiodurable._transaction_sqlalchemy`). :func:`commit_once` runs attempts until one commits:
again after a serialization failure or deadlock (:func:`retrying`), again on a fresh connection
after the connection was lost (the attempt raises :class:`ConnectionLost`: the journal entry
makes a repeat of a commit whose acknowledgement was lost harmless), and it journals the body's
own failure as the call's outcome.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import asyncpg

from ._context import WorkflowContext
from ._exceptions import DatabaseUnavailable
from ._journal import Live
from ._records import StepRow
from ._step import checkpoint_failure

__all__ = ["RETRYABLE", "UNREACHABLE_FOR", "Attempt", "ConnectionLost", "commit_once", "retrying"]

R = TypeVar("R")

RETRYABLE = (asyncpg.SerializationError, asyncpg.DeadlockDetectedError)
"""The failures after which a transaction runs again: PostgreSQL aborted it for another's sake."""
_MAX_ATTEMPTS = 10
UNREACHABLE_FOR = 30.0
"""How long a journaled transaction keeps trying on fresh connections before the workflow stops."""

Attempt = Callable[[float], Coroutine[Any, Any, tuple[Any, StepRow, StepRow | None]]]
"""One try at committing, given when the call started: the body's result, the journal entry
written with it, and the entry another execution had written first (the attempt then rolled
itself back), or None."""


def _asyncpg_retryable(exc: BaseException) -> bool:
    return isinstance(exc, RETRYABLE)


async def retrying(
    body: Callable[[], Coroutine[Any, Any, R]],
    retryable: Callable[[BaseException], bool] = _asyncpg_retryable,
) -> R:
    """Run ``body``, again after a serialization failure or deadlock (as ``retryable`` tells
    them), with jittered backoff: the two transactions that collided must not collide again in
    lockstep."""
    delay = 0.01
    for attempt in range(1, _MAX_ATTEMPTS + 1):
        try:
            return await body()
        except Exception as exc:
            if attempt == _MAX_ATTEMPTS or not retryable(exc):
                raise
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))  # jitter only
            delay = min(delay * 2, 1.0)
    raise AssertionError("unreachable")


class ConnectionLost(Exception):
    """The transaction's connection failed (not its body): run it again on a fresh one."""


async def commit_once(
    ctx: WorkflowContext,
    function_id: int,
    name: str,
    attempt: Attempt,
    retryable: Callable[[BaseException], bool] = _asyncpg_retryable,
) -> StepRow | Live:
    """A live transaction: run ``attempt`` until it commits with its journal entry (retrying on
    a lost connection), or journal the failure of its body. With a separate application
    database, an entry committed there but not yet journaled here is adopted, and the body not
    run again."""
    rt = ctx.engine
    separate = rt.app_store is not rt.store
    if separate:
        adopted = await rt.app_store.get_step(ctx.workflow_id, function_id)
        if adopted is not None:
            await rt.checkpoint(ctx, adopted)
            return adopted
    started = rt.clock.now()
    loop = asyncio.get_running_loop()
    give_up = loop.time() + UNREACHABLE_FOR
    delay = 0.05
    while True:
        try:
            result, written, existing = await retrying(lambda: attempt(started), retryable)
        except ConnectionLost as lost:
            if loop.time() + delay > give_up:
                raise DatabaseUnavailable(
                    f"transaction {name!r} of workflow {ctx.workflow_id!r} could not reach the"
                    f" application database for {UNREACHABLE_FOR:g} s ({lost}); the workflow"
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
