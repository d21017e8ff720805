"""The snapshots aiodurable hands out: workflow status, workflow info, step info."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["StepInfo", "WorkflowInfo", "WorkflowStatus", "from_timestamp"]


class WorkflowStatus(enum.StrEnum):
    """Where a workflow stands. A ``str``, so it compares equal to its name."""

    PENDING = "PENDING"
    """Running, or waiting to be recovered."""
    ENQUEUED = "ENQUEUED"
    """Waiting in a queue."""
    SUCCESS = "SUCCESS"
    """Returned; the output is recorded."""
    ERROR = "ERROR"
    """Raised; the exception is recorded. Never recovered."""
    CANCELLED = "CANCELLED"
    """Cancelled; never recovered unless resumed."""
    MAX_RECOVERY_ATTEMPTS_EXCEEDED = "MAX_RECOVERY_ATTEMPTS_EXCEEDED"
    """Recovered more times than its ``max_recovery_attempts``; no longer recovered."""

    @property
    def is_terminal(self) -> bool:
        """Whether the workflow will not run again unless resumed or restarted."""
        return self not in (WorkflowStatus.PENDING, WorkflowStatus.ENQUEUED)


def from_timestamp(seconds: float | None) -> datetime | None:
    """A POSIX time as an aware UTC datetime."""
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


@dataclass(frozen=True, slots=True)
class WorkflowInfo:
    """A snapshot of one workflow, as ``get_status()`` and ``list_workflows()`` return it.

    ``inputs`` is ``{"args": [...], "kwargs": {...}}`` decoded per the workflow's annotations;
    ``output`` the decoded return value; ``error`` the recorded exception, rebuilt when possible.
    A recorded value that cannot be decoded (a format this runtime does not read, bytes that are
    not valid JSON, an annotation that changed since) leaves ``inputs`` or ``output`` None and
    says why in ``decode_error``, so that one such row never fails a whole listing;
    ``get_result()`` raises :class:`SerializationError` for it.
    """

    workflow_id: str
    status: WorkflowStatus
    name: str
    inputs: object
    output: object
    error: BaseException | None
    created_at: datetime
    updated_at: datetime
    app_version: str
    executor_id: str
    recovery_attempts: int
    queue_name: str | None
    parent_workflow_id: str | None = None
    decode_error: str | None = None
    """Why a recorded value could not be decoded (it is left None), or None if all were."""
    partition_key: str | None = None
    """The partition it was enqueued in, on a partitioned queue; else None."""


@dataclass(frozen=True, slots=True)
class StepInfo:
    """One journal entry, as ``list_steps()`` returns it.

    ``name`` is the step's name (or ``aiodurable.sleep``, ``aiodurable.recv``... for the
    runtime's own checkpoints, or the child workflow's name for a child). An output that cannot
    be decoded is left None, with the reason in ``decode_error``.
    """

    function_id: int
    name: str
    output: object
    error: BaseException | None
    child_workflow_id: str | None
    started_at: datetime
    completed_at: datetime
    decode_error: str | None = None
    """Why the recorded output could not be decoded (it is left None), or None."""
