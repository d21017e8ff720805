"""The exceptions aiodurable raises.

The tree::

    DurableError
    ├── WorkflowNotFound            (also a LookupError)
    ├── ScheduleNotFound            (also a LookupError)
    ├── SerializationError          (also a TypeError)
    ├── NonDeterminismError
    ├── WorkflowFailed
    ├── WorkflowCancelled
    ├── WorkflowNotResumable
    ├── OwnershipLost
    ├── MaxRetriesExceeded
    ├── DuplicateWorkflowError
    ├── SchemaError
    ├── NoRuntimeError              (also a RuntimeError)
    ├── DatabaseUnavailable         (also a ConnectionError)
    └── EmbeddedPostgresError

Inside a cancelled workflow the runtime raises ``asyncio.CancelledError`` (a ``BaseException``) at
the workflow's next checkpoint, so ``except Exception`` in workflow code cannot swallow the
cancellation; callers waiting on the workflow's result get ``WorkflowCancelled``.
"""

from __future__ import annotations

__all__ = [
    "DatabaseUnavailable",
    "DuplicateWorkflowError",
    "DurableError",
    "EmbeddedPostgresError",
    "MaxRetriesExceeded",
    "NoRuntimeError",
    "NonDeterminismError",
    "OwnershipLost",
    "ScheduleNotFound",
    "SchemaError",
    "SerializationError",
    "WorkflowCancelled",
    "WorkflowFailed",
    "WorkflowNotFound",
    "WorkflowNotResumable",
]


class DurableError(Exception):
    """The base class of every error aiodurable raises."""


class WorkflowNotFound(DurableError, LookupError):
    """Raised when a workflow ID names no recorded workflow."""

    def __init__(self, workflow_id: str) -> None:
        super().__init__(f"no workflow with ID {workflow_id!r} is recorded")
        self.workflow_id = workflow_id

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.workflow_id,))


class ScheduleNotFound(DurableError, LookupError):
    """Raised when a schedule name names no stored schedule (pause, resume or delete)."""

    def __init__(self, schedule_name: str) -> None:
        super().__init__(
            f"no schedule named {schedule_name!r}; list_schedules() (or `aiodurable schedule"
            " list`) shows the schedules there are"
        )
        self.schedule_name = schedule_name

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.schedule_name,))


class SerializationError(DurableError, TypeError):
    """Raised when a value cannot be encoded or decoded; nothing is written when encoding fails."""


class NonDeterminismError(DurableError):
    """Raised when a replayed workflow calls something other than what its journal recorded.

    The message names the entry recorded at that function ID and the call made there.
    """


class WorkflowFailed(DurableError):
    """A workflow ended with an exception that cannot be rebuilt as its own type.

    ``error_type``, ``error_message`` and ``traceback_text`` carry what was recorded.
    """

    def __init__(
        self, workflow_id: str, error_type: str, error_message: str, traceback_text: str = ""
    ) -> None:
        super().__init__(f"workflow {workflow_id!r} failed with {error_type}: {error_message}")
        self.workflow_id = workflow_id
        self.error_type = error_type
        self.error_message = error_message
        self.traceback_text = traceback_text

    def __reduce__(self) -> tuple[object, ...]:
        return (
            type(self),
            (self.workflow_id, self.error_type, self.error_message, self.traceback_text),
        )


class WorkflowCancelled(DurableError):
    """Raised by ``get_result()`` of a workflow that was cancelled."""

    def __init__(self, workflow_id: str) -> None:
        super().__init__(f"workflow {workflow_id!r} was cancelled")
        self.workflow_id = workflow_id

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.workflow_id,))


class WorkflowNotResumable(DurableError):
    """``resume_workflow`` could not resume the workflow as asked; the message says why and
    what to do instead (a PENDING workflow of another application version, say)."""

    def __init__(self, workflow_id: str, message: str) -> None:
        super().__init__(message)
        self.workflow_id = workflow_id


class OwnershipLost(DurableError):
    """Another executor took this workflow over (this one was paused, or cut off from PostgreSQL
    for longer than ``executor_lease``): the journal refused this runtime's write, which
    changed nothing. The workflow stops here and goes on where it is now owned; its handles
    follow it there."""

    def __init__(self, workflow_id: str, detail: str = "") -> None:
        super().__init__(
            f"workflow {workflow_id!r} was taken over by another executor; this runtime stops"
            f" running it{': ' + detail if detail else ''}"
        )
        self.workflow_id = workflow_id

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.workflow_id,))


class MaxRetriesExceeded(DurableError):
    """Raised when a step with a retry policy failed on every attempt; ``errors`` holds each one."""

    def __init__(
        self, step_name: str, errors: list[BaseException], message: str | None = None
    ) -> None:
        if message is None:
            detail = "; ".join(
                f"attempt {i}: {type(e).__name__}: {e}" for i, e in enumerate(errors, 1)
            )
            message = f"step {step_name!r} failed {len(errors)} times ({detail})"
        super().__init__(message)
        self.step_name = step_name
        self.errors = errors

    def __reduce__(self) -> tuple[object, ...]:
        # Rebuilt from the journal with its message, without the original exception objects.
        return (type(self), (self.step_name, [], str(self)))


class DuplicateWorkflowError(DurableError):
    """Raised when a workflow ID or deduplication ID is already taken by a different workflow."""


class SchemaError(DurableError):
    """Raised when the database schema is missing, newer than this code, or otherwise unusable."""


class NoRuntimeError(DurableError, RuntimeError):
    """Raised when an operation needs an open runtime, or is called where it cannot run."""


class DatabaseUnavailable(DurableError, ConnectionError):
    """Raised when the database cannot be reached within the connection timeout."""


class EmbeddedPostgresError(DurableError):
    """Raised when the embedded PostgreSQL server cannot be found, initialised or started."""
