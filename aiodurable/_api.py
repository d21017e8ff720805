"""Module-level functions: each acts on the running workflow's runtime, else on the open one."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from ._handle import WorkflowHandle
from ._models import WorkflowInfo
from ._runtime import current_runtime

__all__ = ["get_workflow_status", "retrieve_workflow", "start_workflow"]

P = ParamSpec("P")
R = TypeVar("R")


def start_workflow(
    fn: Callable[P, Coroutine[Any, Any, R]], /, *args: P.args, **kwargs: P.kwargs
) -> Coroutine[Any, Any, WorkflowHandle[R]]:
    """Durably start ``fn(*args, **kwargs)`` in the background and return its handle once it is
    recorded; see :meth:`Runtime.start_workflow`."""
    return current_runtime().start_workflow(fn, *args, **kwargs)


async def retrieve_workflow(workflow_id: str) -> WorkflowHandle[Any]:
    """A handle to a recorded workflow; :class:`WorkflowNotFound` if the ID is unknown."""
    return await current_runtime().retrieve_workflow(workflow_id)


async def get_workflow_status(workflow_id: str) -> WorkflowInfo:
    """A :class:`WorkflowInfo` snapshot; :class:`WorkflowNotFound` if the ID is unknown."""
    return await current_runtime().get_workflow_status(workflow_id)
