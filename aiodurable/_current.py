"""Which runtime module-level functions act on, and what calling a decorated workflow does.

The lowest layer that knows of runtimes: the workflow decorator, queues, messages and
transactions reach the current runtime through here, never by importing the runtime module.
"""

from __future__ import annotations

import weakref
from collections.abc import Coroutine
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from ._context import WorkflowContext, current_workflow, in_step, take_assigned_id
from ._exceptions import NoRuntimeError

if TYPE_CHECKING:
    from ._runtime import Runtime
    from ._workflow import WorkflowDef

__all__ = ["call_workflow", "current_engine", "current_runtime"]

# Runtimes open in this process. Each adds itself when it opens and removes itself when it
# closes, so there is nothing here for a test to reset.
_open_runtimes: weakref.WeakSet[Runtime] = weakref.WeakSet()
_current: ContextVar[Runtime | None] = ContextVar("aiodurable_runtime", default=None)


def current_runtime() -> Runtime:
    """The runtime module-level functions act on: the running workflow's, else this task's
    (the one whose ``async with`` encloses it), else the only one open in the process."""
    ctx = current_workflow()
    if ctx is not None:
        return ctx.engine
    rt = _current.get()
    if rt is not None and rt.is_open:
        return rt
    candidates = [r for r in _open_runtimes if r.is_open]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise NoRuntimeError(
            "no aiodurable Runtime is open; run this inside `async with aiodurable.Runtime():`"
            " (or call the method on an open Runtime object)"
        )
    raise NoRuntimeError(
        f"{len(candidates)} Runtimes are open in this process and none encloses this code;"
        " call the method on the Runtime you mean (for example rt.start_workflow(...))"
    )


def current_engine() -> Runtime:
    """The engine module-level functions act on (that of :func:`current_runtime`)."""
    return current_runtime()


def call_workflow(
    wdef: WorkflowDef, args: tuple[object, ...], kwargs: dict[str, object]
) -> Coroutine[Any, Any, Any]:
    """What calling a decorated workflow does: a child of the running workflow (its function ID
    taken now), or a new top-level workflow on the current runtime; awaits its result."""
    assigned = take_assigned_id()
    parent = current_workflow()
    if parent is not None and not in_step():
        function_id = parent.next_function_id()
        return _await_child(parent, function_id, wdef, args, kwargs, assigned)
    return _run_top_level(wdef, args, kwargs, assigned)


async def _await_child(
    parent: WorkflowContext,
    function_id: int,
    wdef: WorkflowDef,
    args: tuple[object, ...],
    kwargs: dict[str, object],
    assigned: str | None,
) -> object:
    handle = await parent.engine.start_child(parent, function_id, wdef, args, kwargs, assigned)
    return await parent.interruptible(handle.get_result())


async def _run_top_level(
    wdef: WorkflowDef, args: tuple[object, ...], kwargs: dict[str, object], assigned: str | None
) -> object:
    handle = await current_engine().start(wdef, args, kwargs, workflow_id=assigned)
    return await handle.get_result()
