"""Module-level functions: each acts on the running workflow's runtime, else on the open one."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar, Unpack

from ._current import current_runtime
from ._handle import WorkflowHandle
from ._manage import WorkflowFilter
from ._models import StepInfo, WorkflowInfo
from ._upgrade import UpgradeReport

__all__ = [
    "cancel_workflow",
    "fork_workflow",
    "get_workflow_status",
    "list_steps",
    "list_workflows",
    "restart_workflow",
    "resume_workflow",
    "retrieve_workflow",
    "start_workflow",
    "upgrade_workflows",
]

P = ParamSpec("P")
R = TypeVar("R")


def start_workflow(
    fn: Callable[P, Coroutine[Any, Any, R]], /, *args: P.args, **kwargs: P.kwargs
) -> Coroutine[Any, Any, WorkflowHandle[R]]:
    """Durably start ``fn(*args, **kwargs)`` in the background and return its handle once it is
    recorded (from then on it runs to completion, even across a crash). Inside a workflow it
    starts a child workflow. See :meth:`Runtime.start_workflow` for ``timeout=``."""
    return current_runtime().start_workflow(fn, *args, **kwargs)


async def retrieve_workflow(workflow_id: str) -> WorkflowHandle[Any]:
    """A handle to a recorded workflow; :class:`WorkflowNotFound` if the ID is unknown."""
    return await current_runtime().retrieve_workflow(workflow_id)


async def get_workflow_status(workflow_id: str) -> WorkflowInfo:
    """A :class:`WorkflowInfo` snapshot; :class:`WorkflowNotFound` if the ID is unknown."""
    return await current_runtime().get_workflow_status(workflow_id)


async def list_workflows(**filters: Unpack[WorkflowFilter]) -> list[WorkflowInfo]:
    """Workflows matching every filter given, oldest first (``sort_desc=True``: newest first).

    The filters, each optional (see :class:`~aiodurable._manage.WorkflowFilter`): ``status``
    (one status or several), ``name``, ``workflow_id_prefix``, ``app_version``,
    ``executor_id``, ``queue_name``, ``start_time``/``end_time`` (bounds of the creation time,
    as aware datetimes or POSIX timestamps), ``limit``, ``offset``, ``sort_desc`` (default
    False); ``load_input=False``/``load_output=False`` leave inputs and outputs out (``None``)
    of a long listing (both default True).
    """
    return await current_runtime().list_workflows(**filters)


async def list_steps(workflow_id: str) -> list[StepInfo]:
    """A workflow's journal entries in function-ID order; :class:`WorkflowNotFound` if unknown."""
    return await current_runtime().list_steps(workflow_id)


async def cancel_workflow(workflow_id: str) -> None:
    """Cancel a PENDING or ENQUEUED workflow: it stops at its next checkpoint (at once while it
    waits in recv, sleep or get_event), is never recovered, and ``get_result()`` raises
    :class:`WorkflowCancelled`. A finished workflow is left as it is."""
    await current_runtime().cancel_workflow(workflow_id)


async def resume_workflow(workflow_id: str) -> WorkflowHandle[Any]:
    """Continue a CANCELLED or MAX_RECOVERY_ATTEMPTS_EXCEEDED workflow from its last completed
    step on the current application version (an ENQUEUED one starts at once, bypassing its
    queue); a SUCCESS or ERROR workflow is left as it is."""
    return await current_runtime().resume_workflow(workflow_id)


async def restart_workflow(workflow_id: str) -> WorkflowHandle[Any]:
    """Run a workflow again from the start, under a new ID, with the same inputs."""
    return await current_runtime().restart_workflow(workflow_id)


async def fork_workflow(
    workflow_id: str,
    start_step: int,
    *,
    new_workflow_id: str | None = None,
    app_version: str | None = None,
) -> WorkflowHandle[Any]:
    """Start a new workflow with the same inputs that reuses the journal entries whose function
    ID is below ``start_step`` (at most one past the last recorded one) and runs the rest."""
    return await current_runtime().fork_workflow(
        workflow_id, start_step, new_workflow_id=new_workflow_id, app_version=app_version
    )


async def upgrade_workflows(
    from_version: str | None = None, *, dry_run: bool = False
) -> UpgradeReport:
    """Move every PENDING or ENQUEUED workflow of another application version (of
    ``from_version`` only, when given) whose journal replays cleanly against the current code to
    the current version, where it resumes from its last completed step; the others stay,
    reported with the reason. ``dry_run=True`` changes nothing. See
    :meth:`Runtime.upgrade_workflows`."""
    return await current_runtime().upgrade_workflows(from_version, dry_run=dry_run)
