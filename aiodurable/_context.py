"""Context variables: the current workflow, its function-ID counter, the next workflow ID.

A workflow runs in a task of its own whose context holds its :class:`WorkflowContext`. Tasks the
workflow creates (``asyncio.gather``, task groups) copy that context, so they share the same object
and the same function-ID counter; that is why every durable call takes its function ID
synchronously, when it is called, before its first ``await``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from ._exceptions import NonDeterminismError, NoRuntimeError
from ._records import StepRow
from ._validate import check_id, check_timeout

if TYPE_CHECKING:
    from ._engine import Engine
    from ._workflow import WorkflowDef

T = TypeVar("T")

__all__ = [
    "EndOfJournal",
    "WorkflowContext",
    "check_timeout",
    "current_workflow",
    "current_workflow_id",
    "in_step",
    "require_workflow",
    "set_workflow_id",
    "take_assigned_id",
]


class EndOfJournal(BaseException):
    """Raised in a replay (``check_replay``) where the journal of an unfinished workflow ends:
    everything it recorded matched, and what comes next has not happened yet. A BaseException,
    so that the workflow's own ``except Exception`` does not catch it."""


@dataclass(eq=False, slots=True)
class WorkflowContext:
    """What a running workflow knows about itself."""

    engine: Engine
    workflow_id: str
    definition: WorkflowDef
    journal: dict[int, StepRow]
    deadline_at: float | None = None
    last_function_id: int = 0
    cancelled: bool = False
    replay_only: bool = False
    # With replay_only: whether the recorded run ended (then its journal is the whole run).
    ended: bool = False
    waits: int = 0
    task: asyncio.Task[Any] | None = field(default=None, repr=False)
    # The streams this execution wrote to, taken at call time like function IDs (so a replay
    # counts the same): key -> (the next value's offset, whether close_stream was called).
    streams: dict[str, tuple[int, bool]] = field(default_factory=dict, repr=False)

    def next_function_id(self) -> int:
        """Take the next function ID: 1, 2, 3... in call order."""
        self.last_function_id += 1
        return self.last_function_id

    def recorded(self, function_id: int, name: str) -> StepRow | None:
        """The journal entry at ``function_id``, checked against the call made there."""
        entry = self.journal.get(function_id)
        if entry is not None and entry.name != name:
            raise NonDeterminismError(
                f"workflow {self.workflow_id!r} recorded {entry.name!r} at function ID"
                f" {function_id} but now calls {name!r} there; the workflow's code changed"
                " since it started. Finish or cancel it on the old code, or fork it from an"
                " earlier step."
            )
        if entry is None and self.replay_only:
            if not self.ended and function_id > max(self.journal, default=0):
                raise EndOfJournal(function_id)
            raise NonDeterminismError(
                f"workflow {self.workflow_id!r} now calls {name!r} at function ID {function_id},"
                " where its journal has nothing: the code makes a call the recorded run did not"
                " make (an added or moved step)"
            )
        return entry

    def check_cancelled(self) -> None:
        """Stop the workflow here if it was cancelled (a checkpoint boundary)."""
        if self.cancelled:
            raise asyncio.CancelledError(f"workflow {self.workflow_id!r} was cancelled")

    async def interruptible(self, wait: Coroutine[Any, Any, T]) -> T:
        """Await a durable wait (sleep, recv, backoff) that a cancel may interrupt at once."""
        if self.cancelled:
            wait.close()  # never started: close it rather than leave it unawaited
            self.check_cancelled()
        self.waits += 1
        try:
            return await wait
        finally:
            self.waits -= 1

    def cancel(self) -> None:
        """Mark the workflow cancelled: it stops at its next checkpoint, or now if it waits."""
        self.cancelled = True
        if self.waits and self.task is not None:
            self.task.cancel(f"workflow {self.workflow_id!r} was cancelled")


_workflow: ContextVar[WorkflowContext | None] = ContextVar("aiodurable_workflow", default=None)
_in_step: ContextVar[bool] = ContextVar("aiodurable_in_step", default=False)
_step_name: ContextVar[str | None] = ContextVar("aiodurable_step_name", default=None)
_next_id: ContextVar[list[str] | None] = ContextVar("aiodurable_next_workflow_id", default=None)
_timeout: ContextVar[float | None] = ContextVar("aiodurable_workflow_timeout", default=None)


def current_workflow() -> WorkflowContext | None:
    """The running workflow's context, or None outside a workflow."""
    return _workflow.get()


def enter_workflow(ctx: WorkflowContext) -> None:
    """Make ``ctx`` current in this task (called first thing in a workflow's own task)."""
    _workflow.set(ctx)
    _in_step.set(False)
    _next_id.set(None)


def in_step() -> bool:
    """Whether code runs inside a step's body (where durable calls are plain calls)."""
    return _in_step.get()


def current_step_name() -> str | None:
    """The name of the step whose body is running, or None (for log records)."""
    return _step_name.get()


@contextmanager
def step_body(name: str) -> Iterator[None]:
    """Mark the enclosed code as the body of step ``name``."""
    token = _in_step.set(True)
    name_token = _step_name.set(name)
    try:
        yield
    finally:
        _step_name.reset(name_token)
        _in_step.reset(token)


def require_workflow(operation: str) -> WorkflowContext:
    """The running workflow's context; a clear error when called elsewhere."""
    ctx = _workflow.get()
    if ctx is None:
        raise NoRuntimeError(
            f"{operation} can only be called inside a workflow (a function decorated with"
            " @aiodurable.workflow()), not outside one"
        )
    if _in_step.get():
        raise NoRuntimeError(
            f"{operation} cannot be called inside a step; call it from the workflow itself"
        )
    return ctx


def current_workflow_id() -> str:
    """The ID of the workflow this code runs in (also inside its steps)."""
    ctx = _workflow.get()
    if ctx is None:
        raise NoRuntimeError(
            "current_workflow_id() was called outside a workflow; call it inside a function"
            " decorated with @aiodurable.workflow() or in a step it calls"
        )
    return ctx.workflow_id


@contextmanager
def set_workflow_id(workflow_id: str) -> Iterator[None]:
    """Run the next workflow started in this block under ``workflow_id``.

    The ID is an idempotency key: a workflow ID runs at most once, ever; starting it again returns
    the recorded outcome. Only the first workflow started in the block takes the ID.
    """
    token = _next_id.set([check_id("workflow ID", workflow_id)])
    try:
        yield
    finally:
        _next_id.reset(token)


def take_assigned_id() -> str | None:
    """Consume the ID set by :func:`set_workflow_id` for this start, if any."""
    slot = _next_id.get()
    if slot:
        return slot.pop()
    return None


@contextmanager
def set_workflow_timeout(seconds: float | None) -> Iterator[None]:
    """Give every workflow started in this block a deadline ``seconds`` after its start.

    Past it the workflow is cancelled (as by ``cancel_workflow``). The deadline is recorded, so
    it holds across recovery, and child workflows inherit it. ``None`` (or ``float("inf")``)
    lifts an outer timeout. ``seconds`` is checked here, by :func:`check_timeout`: > 0 and at
    most ``MAX_SECONDS``, so a deadline never fails the write that records it.
    """
    token = _timeout.set(None if seconds is None else check_timeout(seconds))
    try:
        yield
    finally:
        _timeout.reset(token)


def workflow_timeout() -> float | None:
    """The timeout set by :func:`set_workflow_timeout` around this start, if any."""
    return _timeout.get()
