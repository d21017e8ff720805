"""``ClientHandle``: a client's reference to a workflow, without the workflow's code."""

from __future__ import annotations

from typing import Generic, TypeVar, cast

from ._client_core import ClientCore
from ._models import WorkflowInfo

__all__ = ["ClientHandle"]

R = TypeVar("R")


class ClientHandle(Generic[R]):
    """A :class:`aiodurable.Client`'s reference to a recorded workflow.

    Like a :class:`WorkflowHandle`, it is a view of its workflow ID: ``await
    handle.get_result()`` waits for the workflow to end, woken by its status notification (from
    whichever process runs it), and a ``resume_workflow`` after a cancel makes it wait for the
    resumed run. Having no workflow code and so no annotations, it returns the result decoded
    as plain JSON (a ``dict`` where the workflow returned a dataclass, say); ``R`` is what the
    caller says it is: ``handle: ClientHandle[dict[str, int]] = await client.start(...)``.
    """

    __slots__ = ("_core", "_workflow_id")

    def __init__(self, core: ClientCore, workflow_id: str) -> None:
        self._core = core
        self._workflow_id = workflow_id

    @property
    def workflow_id(self) -> str:
        """The workflow's ID."""
        return self._workflow_id

    def __repr__(self) -> str:
        return f"<ClientHandle {self._workflow_id!r}>"

    async def get_result(self) -> R:
        """Wait for the workflow to finish; return its result as plain JSON, or raise its
        exception: rebuilt as its own type when its module is imported in this program (a
        builtin such as ``ValueError``, say), else :class:`WorkflowFailed`;
        :class:`WorkflowCancelled` for a cancelled workflow, :class:`SerializationError` for a
        result not recorded as JSON (pickled)."""
        return cast(R, await self._core.await_result(self._workflow_id))

    async def get_status(self) -> WorkflowInfo:
        """A :class:`WorkflowInfo` snapshot of the workflow as recorded now."""
        row = await self._core.store.require_workflow(self._workflow_id)
        return self._core.codec.info(row)
