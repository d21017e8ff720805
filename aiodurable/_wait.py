"""Waiting on several workflows: ``wait_first`` (the first to end) and ``as_completed``.

Both are pushed: the wait is woken by the status notifications of the workflows it watches (one
waiter on all their keys) and re-reads their statuses in one query; a workflow that has already
ended counts at once. In a workflow, ``wait_first`` is a journaled call: the chosen workflow ID is
recorded, so a replay (after a crash) returns the same handle without waiting, and each step of
``as_completed`` is one such call over the handles not yet yielded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Coroutine, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from ._context import WorkflowContext, current_workflow, in_step
from ._exceptions import NonDeterminismError, WorkflowNotFound
from ._handle import WorkflowHandle
from ._journal import JournalCall
from ._models import WorkflowStatus
from ._records import StepRow
from ._signals import Signal

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["as_completed", "wait_first"]

WAIT_FIRST = "aiodurable.wait_first"

R = TypeVar("R")


def wait_first(
    handles: Iterable[WorkflowHandle[R]],
) -> Coroutine[Any, Any, WorkflowHandle[R]]:
    """Wait until one of the given workflows ends (SUCCESS, ERROR, CANCELLED or
    MAX_RECOVERY_ATTEMPTS_EXCEEDED) and return its handle, one of those given; its result is
    then ready through ``get_result()``.

    Of several already ended, the one that ended first wins (ties: the first given). In a
    workflow the choice is journaled, so a replay returns the same handle without waiting, and a
    cancel interrupts the wait. Raises ValueError for no handles, TypeError for anything else
    than handles, and :class:`~aiodurable.WorkflowNotFound` for a handle whose workflow is gone.
    """
    given = _checked(handles, "wait_first")
    if not given:
        raise ValueError(
            "wait_first() needs at least one workflow handle; it got none, so no workflow"
            " could end first"
        )
    return _dispatch(given)


def as_completed(handles: Iterable[WorkflowHandle[R]]) -> AsyncIterator[WorkflowHandle[R]]:
    """Yield each of the given handles as its workflow ends, in the order they end (those
    already ended first): ``async for handle in aiodurable.as_completed(handles)``.

    Each step is a :func:`wait_first` over the handles not yet yielded, so in a workflow a
    replay yields them in the same order. No handles yield nothing.
    """
    return _as_completed(_checked(handles, "as_completed"))


async def _as_completed(given: list[WorkflowHandle[R]]) -> AsyncIterator[WorkflowHandle[R]]:
    remaining = list(given)
    while remaining:
        first = await _dispatch(remaining)
        remaining.pop(next(i for i, h in enumerate(remaining) if h is first))
        yield first


def _checked(handles: object, operation: str) -> list[WorkflowHandle[Any]]:
    """The handles as a list, each a :class:`WorkflowHandle` of one runtime."""
    if isinstance(handles, WorkflowHandle) or not isinstance(handles, Iterable):
        raise TypeError(
            f"{operation}() takes an iterable of workflow handles (a list, say), not"
            f" {handles!r}; wrap a single handle in a list"
        )
    given = list(handles)
    for handle in given:
        if not isinstance(handle, WorkflowHandle):
            raise TypeError(
                f"{operation}() takes workflow handles (from start_workflow or"
                f" retrieve_workflow), not {handle!r}"
            )
    engines = {id(_engine_of(handle)) for handle in given}
    if len(engines) > 1:
        raise ValueError(
            f"{operation}() got handles of {len(engines)} different runtimes; wait on the"
            " workflows of one runtime at a time"
        )
    return given


def _engine_of(handle: WorkflowHandle[Any]) -> Engine:
    return handle._engine  # the runtime the handle came from


def _dispatch(given: Sequence[WorkflowHandle[R]]) -> Coroutine[Any, Any, WorkflowHandle[R]]:
    """The wait, journaled when called from a workflow of the handles' runtime (its function
    ID taken now, before any await)."""
    engine = _engine_of(given[0])
    ctx = current_workflow()
    if ctx is None or in_step() or ctx.engine is not engine:
        return _wait_first(engine, given)
    return _wait_first_durably(ctx, ctx.next_function_id(), given)


async def _wait_first(engine: Engine, given: Sequence[WorkflowHandle[R]]) -> WorkflowHandle[R]:
    engine.check_open()
    return given[await _first_to_end(engine, given, None)]


async def _wait_first_durably(
    ctx: WorkflowContext, function_id: int, given: Sequence[WorkflowHandle[R]]
) -> WorkflowHandle[R]:
    call = JournalCall(ctx, function_id, WAIT_FIRST)
    entry = call.recorded
    if entry is None:
        if call.start():
            await call.prove()
        engine = ctx.engine
        started = engine.clock.now()
        chosen = given[await _first_to_end(engine, given, ctx)].workflow_id
        now = engine.clock.now()
        row = StepRow(
            function_id, WAIT_FIRST, "json", orjson.dumps(chosen), None, chosen, started, now
        )
        entry = await engine.checkpoint(ctx, row) or row
    return _recorded_choice(ctx, entry, given)


def _recorded_choice(
    ctx: WorkflowContext, entry: StepRow, given: Sequence[WorkflowHandle[R]]
) -> WorkflowHandle[R]:
    """The given handle of the workflow ID the entry recorded."""
    for handle in given:
        if handle.workflow_id == entry.child_workflow_id:
            return handle
    ids = [handle.workflow_id for handle in given]
    raise NonDeterminismError(
        f"workflow {ctx.workflow_id!r} recorded that workflow {entry.child_workflow_id!r} ended"
        f" first in wait_first at function ID {entry.function_id}, but now waits on {ids!r};"
        " the workflow's code changed since it started. Finish or cancel it on the old code,"
        " or fork it from an earlier step."
    )


async def _first_to_end(
    engine: Engine, given: Sequence[WorkflowHandle[Any]], ctx: WorkflowContext | None
) -> int:
    """The index of the given workflow that ended first, once one has: woken by their status
    notifications, interruptible by a cancel of ``ctx``."""
    keys = [(Signal.WORKFLOW.value, handle.workflow_id) for handle in given]
    with engine.notifier.watch_any(keys) as waiter:
        while True:
            waiter.clear()
            found = await _ended_first(engine, [handle.workflow_id for handle in given])
            if found is not None:
                return found
            wait = waiter.wait()
            await (wait if ctx is None else ctx.interruptible(wait))


async def _ended_first(engine: Engine, ids: list[str]) -> int | None:
    """The index of the workflow that ended first among ``ids`` (ties: the first listed), or
    None while none has ended. One query, and one more per workflow only when several ended."""
    store = engine.store
    briefs = await store.workflow_briefs(ids)
    ended: list[int] = []
    for index, workflow_id in enumerate(ids):
        brief = briefs.get(workflow_id)
        if brief is None:
            raise WorkflowNotFound(workflow_id)
        if WorkflowStatus(brief.status).is_terminal:
            ended.append(index)
    if len(ended) <= 1:
        return ended[0] if ended else None
    ended_at: dict[str, float] = {}
    for workflow_id in dict.fromkeys(ids[index] for index in ended):
        row = await store.get_workflow(workflow_id)
        if row is None:
            raise WorkflowNotFound(workflow_id)
        ended_at[workflow_id] = row.updated_at
    return min(ended, key=lambda index: (ended_at[ids[index]], index))
