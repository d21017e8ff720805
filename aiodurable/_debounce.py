"""``Debouncer``: one workflow per burst of calls with the same key, run with the last call's
arguments.

A burst is a row of its own in the database (per workflow name and key) beside its workflow,
which waits ENQUEUED, with the latest call's inputs, until the burst closes: ``period`` after its
last call, or ``max_wait`` after its first. Every call is one statement that either joins the open
burst (moving its last call, replacing its workflow's inputs) or opens a new one, so calls from
any number of processes agree on the burst. Each runtime's debounce keeper sleeps on the clock
until the next burst is due (woken when a burst opens anywhere) and closes what is due in one
statement: the burst's row goes and its workflow becomes PENDING for any runtime that has its
code, which claims and runs it at once. A call racing the close either joined before it (and its
arguments are the ones run) or opens the next burst.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from ._clock import wait_woken
from ._context import WorkflowContext, current_workflow, in_step
from ._current import current_engine
from ._exceptions import NonDeterminismError
from ._handle import WorkflowHandle
from ._ids import new_workflow_id
from ._journal import JournalCall
from ._records import StepRow
from ._validate import check_id, check_timeout
from ._workflow import WorkflowDef, definition_of

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["DEBOUNCE", "DebounceKeeper", "Debouncer"]

DEBOUNCE = "aiodurable.debounce"
"""The journal entry of a ``debounce()`` called in a workflow (the burst's workflow ID in it)."""

P = ParamSpec("P")
R = TypeVar("R")


class Debouncer(Generic[P, R]):
    """Runs workflow ``fn`` once per burst of :meth:`debounce` calls with the same key.

    A burst starts with a call for a key that has no open burst; each further call with that
    key joins it and replaces the arguments. The workflow starts ``period`` seconds after the
    burst's last call, or ``max_wait`` seconds after its first (whichever comes first), with the
    last call's arguments; calls after that start the next burst. This holds across every
    process sharing the database. ``period`` > 0; ``max_wait`` None (no bound) or >= ``period``.

    ``debouncer = Debouncer(reindex, period=2.0, max_wait=30.0)``, then
    ``handle = await debouncer.debounce(doc_id, doc_id, version)``.
    """

    __slots__ = ("_wdef", "max_wait", "period")

    def __init__(
        self,
        fn: Callable[P, Coroutine[Any, Any, R]],
        *,
        period: float,
        max_wait: float | None = None,
    ) -> None:
        self._wdef: WorkflowDef = definition_of(fn)
        seconds = check_timeout(period, "Debouncer(period)")
        if seconds is None:
            raise ValueError(
                "Debouncer(period) must be a finite number of seconds > 0: with an infinite"
                " period a burst would never end; pass max_wait to bound a burst instead"
            )
        self.period: float = seconds
        self.max_wait: float | None = None
        if max_wait is not None:
            bound = check_timeout(max_wait, "Debouncer(max_wait)")
            if bound is not None and bound < seconds:
                raise ValueError(
                    f"Debouncer(max_wait={max_wait!r}) is shorter than period={period!r}; a"
                    " burst's workflow starts at most max_wait after its first call, so make"
                    " max_wait >= period, or None for no bound"
                )
            self.max_wait = bound

    def __repr__(self) -> str:
        return (
            f"aiodurable.Debouncer({self._wdef.name!r}, period={self.period!r},"
            f" max_wait={self.max_wait!r})"
        )

    def debounce(
        self, key: str, *args: P.args, **kwargs: P.kwargs
    ) -> Coroutine[Any, Any, WorkflowHandle[R]]:
        """Join (or open) the burst of calls with ``key``, with these arguments for the
        workflow; return the handle of the workflow the burst will run (ENQUEUED until the
        burst closes). In a workflow the call is journaled: a replay returns the same handle
        without calling again."""
        check_id("debounce key", key)
        engine = current_engine()
        engine.check_open()
        inputs = engine.codec.encode_inputs(self._wdef, args, kwargs)
        ctx = current_workflow()
        if ctx is None or in_step() or ctx.engine is not engine:
            return self._join(engine, key, inputs, new_workflow_id())
        return self._join_durably(ctx, ctx.next_function_id(), key, inputs)

    async def _join(
        self, engine: Engine, key: str, inputs: bytes, candidate: str
    ) -> WorkflowHandle[R]:
        workflow_id = await engine.store.join_burst(
            self._wdef.name,
            key,
            candidate,
            engine.serializer.name,
            inputs,
            engine.clock.now(),
            self.period,
            self.max_wait,
        )
        return engine.executor.handle(workflow_id, self._wdef.name)

    async def _join_durably(
        self, ctx: WorkflowContext, function_id: int, key: str, inputs: bytes
    ) -> WorkflowHandle[R]:
        engine = ctx.engine
        call = JournalCall(ctx, function_id, DEBOUNCE)
        entry = call.recorded
        if entry is not None:
            if entry.child_workflow_id is None:
                raise NonDeterminismError(
                    f"workflow {ctx.workflow_id!r} recorded {entry.name!r} at function ID"
                    f" {function_id} without a workflow ID, but now calls debounce() there;"
                    " the workflow's code changed since it started"
                )
            return engine.executor.handle(entry.child_workflow_id, self._wdef.name)
        if call.start():
            await call.prove()
        # A burst this call opens gets an ID of the workflow's own: a repeat after a crash
        # before the checkpoint finds it rather than opening another.
        handle = await self._join(engine, key, inputs, f"{ctx.workflow_id}-{function_id}")
        now = engine.clock.now()
        row = StepRow(function_id, DEBOUNCE, "json", None, None, handle.workflow_id, now, now)
        recorded = await engine.checkpoint(ctx, row)
        if recorded is not None and recorded.child_workflow_id is not None:
            return engine.executor.handle(recorded.child_workflow_id, self._wdef.name)
        return handle


class DebounceKeeper:
    """The debounce keeper of one engine: it closes the bursts that are due, then sleeps on the
    runtime's clock until the next one is, woken early when a burst opens anywhere (a
    ``(DEBOUNCE,)`` notification, see :meth:`wake`); a slow real-time re-read every
    ``notify_fallback`` seconds covers a missed notification."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._wanted = asyncio.Event()

    def wake(self) -> None:
        """Re-read the open bursts now (one opened)."""
        self._wanted.set()

    async def loop(self) -> None:
        """Close what is due; sleep until the next burst is due or a burst opens."""
        engine = self._engine
        while True:
            self._wanted.clear()
            await engine.store.close_due_bursts(engine.clock.now())
            due = await engine.store.next_burst_due()
            await wait_woken(engine.clock, self._wanted, due, engine.options.notify_fallback)
