"""What tests use of an engine: :class:`TestingHooks`, and :func:`check_replay`.

The testing toolkit (the test clock, crash simulation, replay checks) and the project's own tests
reach a runtime's internals only through a :class:`TestingHooks`, never through private
attributes: what it offers is what they may rely on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Coroutine
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, TypeVar

from .._context import EndOfJournal, WorkflowContext, enter_workflow
from .._exceptions import NonDeterminismError, NoRuntimeError
from .._handle import WorkflowHandle
from .._models import WorkflowStatus
from .._notify import Notifier
from .._records import StepRow, WorkflowRow
from .._store import StoreProtocol
from .._workflow import lookup
from ._executor import CheckpointObserver

if TYPE_CHECKING:
    from . import Engine

__all__ = ["TestingHooks", "check_replay", "replay_mismatch"]

E = TypeVar("E", bound=BaseException)


class TestingHooks:
    """What tests may see and do of one runtime's engine (``aiodurable.testing.hooks(rt)``)."""

    __test__ = False  # a library class, not a pytest test class
    __slots__ = ("_engine",)

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @property
    def store(self) -> StoreProtocol:
        """The store, the runtime's one I/O seam (open runtimes only)."""
        return self._engine.store

    @property
    def notifier(self) -> Notifier:
        """The LISTEN connection's dispatcher (open runtimes only)."""
        return self._engine.notifier

    # -- what runs -------------------------------------------------------------------------

    def running(self) -> list[str]:
        """The IDs of the workflows this runtime executes now."""
        return list(self._engine.executor.running)

    def busy(self, woken: Collection[asyncio.Task[Any]] = ()) -> list[str]:
        """What keeps the runtime from being idle, in words: each workflow executing here that is
        not in a durable wait, and each of the runtime's own tasks among ``woken`` (tasks the
        caller saw leave a wait) that is not a workflow in a durable wait either."""
        running = self._engine.executor.running
        waiting_tasks = {r.ctx.task for r in running.values() if r.ctx.waits > 0}
        found: list[str] = []
        for wid, entry in running.items():
            task = entry.ctx.task
            if task is not None and not task.done() and entry.ctx.waits == 0:
                found.append(f"workflow {wid!r}")
        tasks = self._engine.tasks
        for task in woken:
            if not task.done() and task in tasks and task not in waiting_tasks:
                if not any(r.ctx.task is task for r in running.values()):
                    found.append(f"task {task.get_name()!r}")
        return found

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Run ``coro`` among the runtime's own tasks: cancelled and awaited when it closes."""
        return self._engine.tasks.spawn(coro, name=name)

    async def wait_stopped(self, workflow_id: str) -> None:
        """Return once this runtime no longer executes ``workflow_id``."""
        await self._engine.executor.wait_stopped(workflow_id)

    def on_checkpoint(self, observer: CheckpointObserver) -> AbstractContextManager[None]:
        """Within the ``with`` block, await ``observer(workflow_id, entry)`` right after each
        journal entry the runtime writes (in the workflow's task: it may hold it there)."""
        return self._engine.executor.observing(observer)

    # -- crash and replay --------------------------------------------------------------------

    async def crash(self) -> None:
        """Abandon every workflow running here as a killed process would."""
        await self._engine.crash()

    async def recover(self) -> list[str]:
        """Recover this executor's PENDING workflows, as a restarted process would."""
        return await self._engine.recover()

    async def check_replay(self, workflow_id: str) -> None:
        """Replay a recorded workflow's current code against its journal; see
        :func:`aiodurable.testing.check_replay`."""
        await self._engine.check_replay(workflow_id)

    # -- internals that tests assert on ------------------------------------------------------

    def handle(self, workflow_id: str, name: str) -> WorkflowHandle[Any]:
        """A handle to a recorded workflow of the given name (no lookup)."""
        return self._engine.handle(workflow_id, name)

    def replay(self, workflow_id: str, entry: StepRow, hint: object = None) -> Any:
        """The recorded outcome of a journal entry, decoded (or its exception raised)."""
        return self._engine.replay(workflow_id, entry, hint)

    async def confirm_ownership(self) -> None:
        """Prove now, if the last proof is stale, that the runtime still owns its workflows."""
        await self._engine.confirm_ownership()

    def ownership_fresh(self) -> bool:
        """Whether the runtime's last proof of ownership is recent enough."""
        return self._engine.ownership_fresh()


async def check_replay(engine: Engine, workflow_id: str) -> None:
    """Run a recorded workflow's current code against its journal, running no step and writing
    nothing; :class:`NonDeterminismError` names the first call that differs from the journal (a
    renamed, added, removed or reordered step). A replay never waits: the journal of a workflow
    that has not ended stops it where the recorded run stands (a sleep in progress, say)."""
    row = await engine.store.require_workflow(workflow_id)
    journal = await engine.store.load_journal(workflow_id)
    mismatch = await replay_mismatch(engine, row, journal)
    if mismatch is not None:
        raise mismatch from None


async def replay_mismatch(
    engine: Engine, row: WorkflowRow, journal: dict[int, StepRow]
) -> NonDeterminismError | None:
    """Replay the workflow of ``row`` with the current code against ``journal`` (both loaded by
    the caller), as :func:`check_replay` does; return the first mismatch, or None when every
    recorded call matches. :class:`NoRuntimeError` when no workflow of its name is registered,
    :class:`SerializationError` when its inputs cannot be decoded."""
    workflow_id = row.workflow_id
    wdef = lookup(row.name)
    if wdef is None:
        raise NoRuntimeError(
            f"workflow {workflow_id!r} runs {row.name!r}, which this program does not"
            " register; import the module that defines it"
        )
    args, kwargs = engine.codec.decode_inputs(row, wdef)
    ended = WorkflowStatus(row.status).is_terminal
    ctx = WorkflowContext(engine, workflow_id, wdef, journal, replay_only=True, ended=ended)

    async def replay() -> NonDeterminismError | None:
        enter_workflow(ctx)
        try:
            await wdef.fn(*args, **kwargs)
        except BaseException as exc:
            mismatch = _found(exc, NonDeterminismError)
            if mismatch is not None:
                return mismatch
            # The journal of an unfinished workflow ended here (everything recorded matched;
            # what comes next has not happened yet), or the recorded run failed the same way:
            # the calls matter, not the outcome.
            if not isinstance(exc, Exception) and _found(exc, EndOfJournal) is None:
                raise
        return None

    name = f"aiodurable replay of {workflow_id}"
    mismatch: NonDeterminismError | None = await engine.tasks.spawn(
        replay(), name=name, report=False
    )
    if mismatch is not None:
        return mismatch
    unused = sorted(fid for fid in journal if fid > ctx.last_function_id)
    if unused:
        entry = journal[unused[0]]
        return NonDeterminismError(
            f"workflow {workflow_id!r} recorded {entry.name!r} at function ID"
            f" {entry.function_id}, which the code no longer calls (a removed step)"
        )
    return None


def _found(exc: BaseException, kind: type[E]) -> E | None:
    """``exc`` if it is a ``kind``, else the first ``kind`` inside it when it is an exception
    group (raised by a task group of the workflow), else None."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _found(inner, kind)
            if found is not None:
                return found
    return None
