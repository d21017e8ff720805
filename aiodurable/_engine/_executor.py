"""``Executor``: running recorded workflows in this process, and waiting for their outcomes.

Each workflow runs in a task of its own with its journal (:class:`Running` holds the task's
context and the future its waiters here attach to); its outcome is checkpointed as its final
status, and a deadline, when it has one, cancels it durably once it passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._context import WorkflowContext, enter_workflow
from .._exceptions import (
    DatabaseUnavailable,
    NoRuntimeError,
    OwnershipLost,
    SerializationError,
    WorkflowCancelled,
    WorkflowNotFound,
)
from .._handle import Outcome, WorkflowHandle
from .._logging import LOGGER_NAME
from .._models import WorkflowStatus
from .._records import StepRow, WorkflowRow
from .._serde import encode_exception, return_hint
from .._signals import Signal
from .._tracing import workflow_span
from .._workflow import WorkflowDef, lookup

if TYPE_CHECKING:
    from . import Engine

__all__ = ["CheckpointObserver", "Executor", "Running", "closed_error"]

logger = logging.getLogger(LOGGER_NAME)

CheckpointObserver = Callable[[str, StepRow], Awaitable[None]]
"""Called with the workflow ID and the entry after each journal write of :meth:`checkpoint`."""


@dataclass(eq=False, slots=True)
class Running:
    """A workflow executing in this process: its context and the future its waiters await."""

    ctx: WorkflowContext
    future: asyncio.Future[Outcome]
    deadline_task: asyncio.Task[Any] | None = None


def closed_error(workflow_id: str) -> NoRuntimeError:
    """What the waiters of a workflow get when the runtime closes (or crashes) under it."""
    return NoRuntimeError(
        f"the runtime closed before workflow {workflow_id!r} finished; it resumes from its"
        " last completed step when a runtime opens again"
    )


class Executor:
    """The workflows this engine executes: ``running`` by ID, and those being ``launching``
    (their journals loading), which nothing else may launch or orphan meanwhile."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.running: dict[str, Running] = {}
        self.launching: set[str] = set()
        self._observers: list[CheckpointObserver] = []

    # -- launching and running ---------------------------------------------------------------

    def launch(
        self,
        wdef: WorkflowDef,
        workflow_id: str,
        args: tuple[object, ...],
        kwargs: dict[str, object],
        journal: dict[int, StepRow],
        deadline_at: float | None,
    ) -> None:
        """Run a recorded workflow in a task of its own, with its journal; its waiters here
        attach to its future (see :meth:`handle`)."""
        engine = self._engine
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        ctx = WorkflowContext(engine, workflow_id, wdef, journal, deadline_at)
        running = self.running[workflow_id] = Running(ctx, future)
        ctx.task = engine.tasks.spawn(
            self._execute(ctx, args, kwargs, future), name=f"aiodurable workflow {workflow_id}"
        )
        if deadline_at is not None:
            running.deadline_task = engine.tasks.spawn(
                self._enforce_deadline(ctx), name=f"aiodurable deadline {workflow_id}"
            )

    async def _execute(
        self,
        ctx: WorkflowContext,
        args: tuple[object, ...],
        kwargs: dict[str, object],
        future: asyncio.Future[Outcome],
    ) -> None:
        enter_workflow(ctx)
        wid = ctx.workflow_id
        try:
            with workflow_span(ctx.definition.name, wid) as span:
                outcome = await self._run_body(ctx, args, kwargs)
                if outcome is not None and outcome.error is not None:
                    span.set_error(outcome.error)
            if outcome is not None and not future.done():
                future.set_result(outcome)
        finally:
            if not future.done():  # stopped by close() or crash(): its waiters must not hang
                future.set_result(Outcome(error=closed_error(wid)))
            running = self.running.get(wid)
            if running is not None and running.ctx is ctx:
                del self.running[wid]
                if running.deadline_task is not None:
                    running.deadline_task.cancel()

    async def _run_body(
        self, ctx: WorkflowContext, args: tuple[object, ...], kwargs: dict[str, object]
    ) -> Outcome | None:
        engine = self._engine
        wid = ctx.workflow_id
        fmt = engine.serializer.name
        try:
            result = await ctx.definition.fn(*args, **kwargs)
        except asyncio.CancelledError:
            if not ctx.cancelled:
                raise  # the runtime is closing: the workflow stays PENDING
            return Outcome(error=WorkflowCancelled(wid))
        except OwnershipLost:
            return Outcome(error=WorkflowCancelled(wid))  # not final: its waiters follow it
        except DatabaseUnavailable as exc:
            logger.error("workflow %s stopped: %s; it resumes at the next start", wid, exc)
            return Outcome(error=exc)
        except Exception as exc:
            error = encode_exception(exc)
            if await engine.store.finish_workflow(
                wid, "ERROR", fmt, None, error, engine.clock.now()
            ):
                return Outcome(error=exc)
            return await self._recorded_outcome(wid, ctx.definition)
        try:
            data = engine.encode(result, what=f"the result of workflow {wid!r}")
        except SerializationError as exc:
            error = encode_exception(exc)
            await engine.store.finish_workflow(wid, "ERROR", fmt, None, error, engine.clock.now())
            return Outcome(error=exc)
        if await engine.store.finish_workflow(wid, "SUCCESS", fmt, data, None, engine.clock.now()):
            return Outcome(value=result)
        return await self._recorded_outcome(wid, ctx.definition)

    async def _recorded_outcome(self, workflow_id: str, wdef: WorkflowDef) -> Outcome:
        engine = self._engine
        row = await engine.store.require_workflow(workflow_id)
        if not WorkflowStatus(row.status).is_terminal:
            # The final status was refused: another executor owns the workflow now.
            engine.ownership.stop_lost(workflow_id, f"executor {row.executor_id!r}")
            return Outcome(error=WorkflowCancelled(workflow_id))
        try:
            return Outcome(value=engine.codec.result_of(row, return_hint(wdef.fn)))
        except Exception as exc:
            return Outcome(error=exc)

    # -- the journal -------------------------------------------------------------------------

    async def checkpoint(self, ctx: WorkflowContext, row: StepRow) -> StepRow | None:
        """Write a journal entry for ``ctx``; return the entry already there, if any."""
        existing = await self._engine.store.record_step(ctx.workflow_id, row)
        for observer in tuple(self._observers):
            await observer(ctx.workflow_id, row)
        if existing is not None:
            ctx.journal[existing.function_id] = existing
        return existing

    @contextlib.contextmanager
    def observing(self, observer: CheckpointObserver) -> Iterator[None]:
        """Within the block, await ``observer`` after each journal write of :meth:`checkpoint`,
        in the workflow's own task (so that it may hold the workflow there)."""
        self._observers.append(observer)
        try:
            yield
        finally:
            self._observers.remove(observer)

    # -- waiting and handles -----------------------------------------------------------------

    async def await_result(self, workflow_id: str, hint: object = None) -> object:
        """Wait until the workflow ends (woken by its NOTIFY) and return or raise its outcome."""
        engine = self._engine
        with engine.notifier.watch(Signal.WORKFLOW, workflow_id) as waiter:
            while True:
                waiter.clear()
                running = self.running.get(workflow_id)
                if running is not None:
                    outcome = await asyncio.shield(running.future)
                    if outcome.final:
                        return outcome.unwrap()
                    # Cancelled here: the row says whether it stays so or was resumed since.
                row = await engine.store.get_workflow(workflow_id)
                if row is None:
                    raise WorkflowNotFound(workflow_id)
                if WorkflowStatus(row.status).is_terminal:
                    if hint is None:
                        wdef = lookup(row.name)
                        hint = None if wdef is None else return_hint(wdef.fn)
                    return engine.codec.result_of(row, hint)
                await waiter.wait()

    def handle(self, workflow_id: str, name: str) -> WorkflowHandle[Any]:
        """A handle to a recorded workflow of the given name."""
        running = self.running.get(workflow_id)
        wdef = lookup(name)
        hint = None if wdef is None else return_hint(wdef.fn)
        return WorkflowHandle(
            self._engine,
            workflow_id,
            hint=hint,
            future=None if running is None else running.future,
        )

    async def retrieve(self, workflow_id: str) -> WorkflowHandle[Any]:
        """A handle to a recorded workflow; :class:`WorkflowNotFound` if the ID is unknown."""
        running = self.running.get(workflow_id)
        if running is not None:
            return self.handle(workflow_id, running.ctx.definition.name)
        row = await self._engine.store.require_workflow(workflow_id)
        return self.handle(workflow_id, row.name)

    # -- stopping ----------------------------------------------------------------------------

    def cancel_local(self, workflow_id: str) -> None:
        """Stop the local execution of a workflow that was just cancelled; its waiters learn of
        it now, even while a step in progress runs to its end."""
        running = self.running.get(workflow_id)
        if running is not None:
            running.ctx.cancel()
            if not running.future.done():
                running.future.set_result(Outcome(error=WorkflowCancelled(workflow_id)))

    async def wait_stopped(self, workflow_id: str) -> None:
        """Return once this runtime no longer executes ``workflow_id``: after a cancel, the step
        in progress has ended and nothing more of the workflow runs here."""
        running = self.running.get(workflow_id)
        if running is not None and running.ctx.task is not None:
            await asyncio.gather(running.ctx.task, return_exceptions=True)

    async def _enforce_deadline(self, ctx: WorkflowContext) -> None:
        assert ctx.deadline_at is not None
        await self._engine.clock.sleep_until(ctx.deadline_at)
        await self.cancel_for_deadline(ctx.workflow_id)

    async def cancel_for_deadline(self, workflow_id: str) -> None:
        """Cancel a workflow whose deadline has passed, durably and here."""
        engine = self._engine
        logger.info("workflow %s passed its deadline; cancelling it", workflow_id)
        await engine.store.set_status(
            workflow_id, "CANCELLED", only_from=["PENDING", "ENQUEUED"], now=engine.clock.now()
        )
        self.cancel_local(workflow_id)

    async def relaunch(self, row: WorkflowRow) -> None:
        """Run a workflow that was made PENDING on this executor again (resume, fork), once
        any earlier execution of it in this process has stopped."""
        engine = self._engine
        running = self.running.get(row.workflow_id)
        if running is None:
            await engine.recovery.launch_rows([row])
            return
        self.launching.add(row.workflow_id)  # not orphaned while the old execution winds down

        async def after_previous() -> None:
            try:
                if running.ctx.task is not None:
                    await asyncio.gather(running.ctx.task, return_exceptions=True)
                await engine.recovery.launch_rows([row])
            finally:
                self.launching.discard(row.workflow_id)

        engine.tasks.spawn(after_previous(), name=f"aiodurable relaunch {row.workflow_id}")

    async def crash(self) -> None:
        """Abandon every workflow running here as a killed process would: each stops where it
        stands and keeps only what its checkpoints wrote."""
        running = list(self.running.values())
        for entry in running:
            if entry.ctx.task is not None:
                entry.ctx.task.cancel()
            if entry.deadline_task is not None:
                entry.deadline_task.cancel()
        await asyncio.gather(
            *(e.ctx.task for e in running if e.ctx.task is not None), return_exceptions=True
        )
        self.release(running)

    def release(self, running: list[Running] | None = None) -> None:
        """Tell the waiters of ``running`` (default: every workflow here), which no longer run,
        that the runtime closed under them, and forget them all."""
        for entry in self.running.values() if running is None else running:
            if not entry.future.done():
                entry.future.set_result(Outcome(error=closed_error(entry.ctx.workflow_id)))
        self.running.clear()
