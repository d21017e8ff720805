"""Which runtime module-level functions act on, and what calling a decorated workflow does.

The lowest layer that knows of runtimes: the workflow decorator, queues, messages and
transactions reach the current runtime through here, never by importing the runtime module.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Coroutine
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any

from ._context import (
    WorkflowContext,
    current_workflow,
    in_step,
    take_assigned_id,
)
from ._exceptions import NoRuntimeError

if TYPE_CHECKING:
    from ._engine import Engine
    from ._runtime import Runtime
    from ._workflow import WorkflowDef

__all__ = [
    "call_workflow",
    "closed",
    "current_engine",
    "current_runtime",
    "make_current",
    "open_runtimes",
    "opened",
    "restore_current",
]

# The engines of the runtimes open in this process. Each adds itself when it opens and removes
# itself when it closes, so there is nothing here for a test to reset.
_open_engines: weakref.WeakSet[Engine] = weakref.WeakSet()
# The engine of the runtime this task opened (``async with Runtime()`` or ``await rt.open()``).
_current: ContextVar[Engine | None] = ContextVar("aiodurable_runtime", default=None)


def opened(engine: Engine) -> None:
    """Count ``engine`` among the open ones (until :func:`closed`)."""
    _open_engines.add(engine)


def closed(engine: Engine) -> None:
    """No longer count ``engine`` among the open ones."""
    _open_engines.discard(engine)


def make_current(engine: Engine) -> Token[Engine | None]:
    """Make ``engine`` this task's (and the tasks it starts from now on): the module-level
    functions act on it while it is open, until :func:`restore_current`."""
    return _current.set(engine)


def restore_current(token: Token[Engine | None]) -> None:
    """Undo a :func:`make_current`; nothing to undo in another context than it was made in."""
    with contextlib.suppress(ValueError):
        _current.reset(token)


def current_engine() -> Engine:
    """The engine module-level functions act on: the running workflow's, else that of this
    task's runtime (the one whose ``async with`` encloses it), else the only one open in the
    process."""
    ctx = current_workflow()
    if ctx is not None:
        return ctx.engine
    engine = _current.get()
    if engine is not None and engine.is_open:
        return engine
    candidates = [e for e in _open_engines if e.is_open]
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


def current_runtime() -> Runtime:
    """The runtime module-level functions act on (that of :func:`current_engine`)."""
    return current_engine().runtime


def open_runtimes() -> list[Runtime]:
    """The runtimes open in this process now."""
    return [e.runtime for e in list(_open_engines) if e.is_open]


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
    starter = parent.engine.starter
    handle = await starter.start_child(parent, function_id, wdef, args, kwargs, assigned)
    return await parent.interruptible(handle.get_result())


async def _run_top_level(
    wdef: WorkflowDef, args: tuple[object, ...], kwargs: dict[str, object], assigned: str | None
) -> object:
    handle = await current_engine().starter.start(wdef, args, kwargs, workflow_id=assigned)
    return await handle.get_result()
