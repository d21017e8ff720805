"""``WorkflowHandle``: a typed reference to a started workflow."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar, cast

from ._context import EndOfJournal, current_workflow, in_step
from ._exceptions import WorkflowCancelled
from ._models import WorkflowInfo, WorkflowStatus

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["Outcome", "WorkflowHandle"]

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a workflow that ran in this process ended: a value, or an exception to re-raise."""

    value: object = None
    error: BaseException | None = None

    @property
    def final(self) -> bool:
        """Whether this outcome stands for good: a value or the workflow's own exception. A
        cancellation is not final, since ``resume_workflow`` runs the workflow on."""
        return not isinstance(self.error, WorkflowCancelled)

    def unwrap(self) -> object:
        """The value, or raise the exception."""
        if self.error is not None:
            raise self.error
        return self.value


class WorkflowHandle(Generic[R]):
    """A reference to a workflow that is durably recorded: it will run to completion.

    A handle is a view of its workflow ID, never a cache of a first outcome: after a cancel
    and a ``resume_workflow``, ``get_result()`` on any handle of that ID, old or new, waits for
    the resumed run.

    ``await handle.get_result()`` waits for the result (woken by a notification, from any
    process), re-raising the workflow's exception if it failed; ``await handle.get_status()``
    returns a :class:`WorkflowInfo` snapshot.
    """

    __slots__ = ("_engine", "_future", "_hint", "_workflow_id")

    def __init__(
        self,
        engine: Engine,
        workflow_id: str,
        *,
        hint: object = None,
        future: asyncio.Future[Outcome] | None = None,
    ) -> None:
        self._engine = engine
        self._workflow_id = workflow_id
        self._hint = hint
        self._future = future

    @property
    def workflow_id(self) -> str:
        """The workflow's ID."""
        return self._workflow_id

    def __repr__(self) -> str:
        return f"<WorkflowHandle {self._workflow_id!r}>"

    async def get_result(self) -> R:
        """Wait for the workflow to finish; return its result or raise its exception.

        A cancelled workflow raises :class:`WorkflowCancelled`; an exception that cannot be
        rebuilt as its own type raises :class:`WorkflowFailed`.
        """
        ctx = current_workflow()
        if ctx is not None and ctx.replay_only and not in_step():
            return cast(R, await self._replayed())
        if self._future is not None:
            # Shielded: a caller giving up does not stop the workflow.
            outcome = await asyncio.shield(self._future)
            if outcome.final:
                return cast(R, outcome.unwrap())
        # Not final (a cancel, which a resume can undo): what the database holds decides.
        return cast(R, await self._engine.await_result(self._workflow_id, self._hint))

    async def _replayed(self) -> object:
        """In a replay (which never waits), the outcome of a workflow that has ended; one still
        running stops the replay here, where the recorded run stands."""
        row = await self._engine.store.require_workflow(self._workflow_id)
        if not WorkflowStatus(row.status).is_terminal:
            raise EndOfJournal(self._workflow_id)
        return await self._engine.await_result(self._workflow_id, self._hint)

    async def get_status(self) -> WorkflowInfo:
        """A snapshot of the workflow as recorded now."""
        return await self._engine.get_workflow_status(self._workflow_id)
