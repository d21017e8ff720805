"""``Starter``: recording new workflows (top-level or children) and launching them.

A workflow ID runs at most once, ever: starting one whose ID is taken attaches to the workflow
recorded under it. A child is journaled in its parent at the function ID of the call that started
it, so that a recovered parent re-attaches to the same child rather than starting another.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from .._context import (
    WorkflowContext,
    current_workflow,
    in_step,
    take_assigned_id,
    workflow_timeout,
)
from .._exceptions import DuplicateWorkflowError, NonDeterminismError
from .._handle import WorkflowHandle
from .._ids import new_workflow_id
from .._journal import JournalCall
from .._options import StartSettings, take_shorthand
from .._records import NewWorkflow, StepRow, WorkflowRow
from .._workflow import WorkflowDef, check_id, definition_of

if TYPE_CHECKING:
    from . import Engine

__all__ = ["Starter"]


class Starter:
    """Starts workflows on one engine."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def start_workflow(
        self,
        fn: Callable[..., Coroutine[Any, Any, Any]],
        args: tuple[object, ...],
        kwargs: dict[str, object],
        *,
        options: StartSettings | None = None,
    ) -> Coroutine[Any, Any, WorkflowHandle[Any]]:
        """What :meth:`aiodurable.Runtime.start_workflow` does: a child of the running workflow
        (its function ID taken now), or a new top-level workflow. Without explicit ``options``,
        the documented ``timeout=`` shorthand is taken out of ``kwargs`` (see
        :func:`aiodurable._options.take_shorthand`)."""
        wdef = definition_of(fn)
        if options is None:
            shorthand = take_shorthand(wdef.fn, kwargs, ("timeout",))
            options = StartSettings(timeout=shorthand.get("timeout"))  # type: ignore[arg-type]  # checked by StartSettings
            explicit = False
        else:
            explicit = True
        assigned = options.workflow_id or take_assigned_id()
        parent = current_workflow()
        if parent is not None and not in_step():
            if explicit and options.timeout is not None:
                raise ValueError(
                    "a child workflow runs within its parent's deadline; with_options(timeout=)"
                    " applies to top-level workflows only"
                )
            function_id = parent.next_function_id()
            return self.start_child(parent, function_id, wdef, args, kwargs, assigned)
        return self.start(wdef, args, kwargs, workflow_id=assigned, timeout=options.timeout)

    async def start(
        self,
        wdef: WorkflowDef,
        args: tuple[object, ...],
        kwargs: dict[str, object],
        *,
        workflow_id: str | None = None,
        parent: WorkflowContext | None = None,
        timeout: float | None = None,
    ) -> WorkflowHandle[Any]:
        """Record and launch a workflow, or attach to the one already recorded under its ID.

        ``timeout`` (seconds) overrides :func:`aiodurable.set_workflow_timeout`."""
        engine = self._engine
        engine.check_open()
        executor = engine.executor
        wid = new_workflow_id() if workflow_id is None else check_id("workflow ID", workflow_id)
        if wid in executor.running:
            return executor.handle(wid, wdef.name)
        inputs = engine.codec.encode_inputs(wdef, args, kwargs)
        if parent is not None:
            deadline = parent.deadline_at  # children inherit their parent's deadline
        else:
            timeout = timeout if timeout is not None else workflow_timeout()
            if timeout is None or timeout == math.inf:
                deadline = None
            else:
                deadline = engine.clock.now() + timeout
        new = NewWorkflow(
            workflow_id=wid,
            name=wdef.name,
            format=engine.serializer.name,
            inputs=inputs,
            created_at=engine.clock.now(),
            app_version=engine.app_version,
            executor_id=engine.executor_id,
            parent_workflow_id=None if parent is None else parent.workflow_id,
            deadline_at=deadline,
        )
        if await engine.store.insert_workflow(new):
            executor.launch(wdef, wid, args, kwargs, {}, deadline)
            return executor.handle(wid, wdef.name)
        # The ID is taken: it ran, or runs, elsewhere or earlier. Attach; never run it again.
        if wid in executor.running:
            return executor.handle(wid, wdef.name)
        row = await engine.store.get_workflow(wid)
        if row is not None and self._is_own_lost_insert(row, new):
            # Our insert committed but its answer was lost with the connection: run it now.
            executor.launch(wdef, wid, args, kwargs, {}, deadline)
        elif row is not None and row.name != wdef.name:
            raise DuplicateWorkflowError(
                f"workflow ID {wid!r} is already taken by a workflow of {row.name!r}, so it"
                f" cannot run {wdef.name!r}; choose another workflow ID"
            )
        return executor.handle(wid, wdef.name)

    def _is_own_lost_insert(self, row: WorkflowRow, new: NewWorkflow) -> bool:
        """Whether ``row`` is exactly the row this call tried to insert (same executor, inputs
        and creation time, to the millisecond) and nothing runs it here."""
        executor = self._engine.executor
        return (
            row.status == "PENDING"
            and row.executor_id == new.executor_id
            and row.inputs == new.inputs
            and round(row.created_at * 1000) == round(new.created_at * 1000)
            and row.workflow_id not in executor.running
            and row.workflow_id not in executor.launching
        )

    def start_child(
        self,
        parent: WorkflowContext,
        function_id: int,
        wdef: WorkflowDef,
        args: tuple[object, ...],
        kwargs: dict[str, object],
        assigned: str | None,
    ) -> Coroutine[Any, Any, WorkflowHandle[Any]]:
        """Start (or, on replay, re-attach to) the child recorded at ``function_id``."""

        def start(child_id: str) -> Coroutine[Any, Any, WorkflowHandle[Any]]:
            return self.start(wdef, args, kwargs, workflow_id=child_id, parent=parent)

        return self.attach_child(parent, function_id, wdef.name, assigned, start)

    async def attach_child(
        self,
        parent: WorkflowContext,
        function_id: int,
        name: str,
        assigned: str | None,
        start: Callable[[str], Coroutine[Any, Any, WorkflowHandle[Any]]],
    ) -> WorkflowHandle[Any]:
        """The child recorded at ``function_id``, or a new one made by ``start(child_id)`` and
        journaled there, so a recovered parent re-attaches to the same child. The child's ID is
        ``{parent}-{function_id}`` unless one was assigned."""
        engine = self._engine
        call = JournalCall(parent, function_id, name)
        entry = call.recorded
        if entry is None:
            if call.start():
                await call.prove()
            handle = await start(assigned or f"{parent.workflow_id}-{function_id}")
            now = engine.clock.now()
            row = StepRow(function_id, name, "json", None, None, handle.workflow_id, now, now)
            await engine.executor.checkpoint(parent, row)
            return handle
        if entry.child_workflow_id is None:
            raise NonDeterminismError(
                f"workflow {parent.workflow_id!r} recorded {name!r} at function ID"
                f" {function_id} as a step, but now starts a child workflow of that name"
                " there; the workflow's code changed since it started"
            )
        return engine.executor.handle(entry.child_workflow_id, name)
