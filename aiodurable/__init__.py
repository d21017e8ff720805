"""aiodurable: asyncio-native durable execution on PostgreSQL.

Workflows are ``async def`` functions made of steps. If the process, or PostgreSQL, dies at any
moment, restarting the program resumes every unfinished workflow from its last completed step.
"""

from __future__ import annotations

from ._api import (
    cancel_workflow,
    fork_workflow,
    get_workflow_status,
    list_steps,
    list_workflows,
    restart_workflow,
    resume_workflow,
    retrieve_workflow,
    start_workflow,
    upgrade_workflows,
)
from ._client import Client
from ._client_handle import ClientHandle
from ._clock import Clock, SystemClock
from ._comm import get_event, recv, send, set_event, sleep
from ._context import current_workflow_id, set_workflow_id, set_workflow_timeout
from ._debounce import Debouncer
from ._exceptions import (
    DatabaseUnavailable,
    DuplicateWorkflowError,
    DurableError,
    EmbeddedPostgresError,
    MaxRetriesExceeded,
    NonDeterminismError,
    NoRuntimeError,
    OwnershipLost,
    ScheduleNotFound,
    SchemaError,
    SerializationError,
    WorkflowCancelled,
    WorkflowFailed,
    WorkflowNotFound,
    WorkflowNotResumable,
)
from ._handle import WorkflowHandle
from ._health import LoopHealth, RuntimeHealth
from ._logging import WorkflowContextFilter
from ._models import StepInfo, WorkflowInfo, WorkflowStatus
from ._patch import deprecate_patch, patch
from ._queue import EnqueueOptions, Queue, RateLimit
from ._retention import garbage_collect
from ._retry import NonRetryable, Retry
from ._runtime import Runtime, StartOptions
from ._schedule import (
    ScheduleInfo,
    create_schedule,
    delete_schedule,
    list_schedules,
    pause_schedule,
    resume_schedule,
    scheduled,
)
from ._serde import JsonSerializer, PickleSerializer, Serializer
from ._step import step
from ._stream import close_stream, read_stream, write_stream
from ._transaction import transaction
from ._upgrade import UpgradeReport
from ._wait import as_completed, wait_first
from ._workflow import workflow

__version__ = "0.1.0"

__all__ = [
    "Client",
    "ClientHandle",
    "Clock",
    "DatabaseUnavailable",
    "Debouncer",
    "DuplicateWorkflowError",
    "DurableError",
    "EmbeddedPostgresError",
    "EnqueueOptions",
    "JsonSerializer",
    "LoopHealth",
    "MaxRetriesExceeded",
    "NoRuntimeError",
    "NonDeterminismError",
    "NonRetryable",
    "OwnershipLost",
    "PickleSerializer",
    "Queue",
    "RateLimit",
    "Retry",
    "Runtime",
    "RuntimeHealth",
    "ScheduleInfo",
    "ScheduleNotFound",
    "SchemaError",
    "SerializationError",
    "Serializer",
    "StartOptions",
    "StepInfo",
    "SystemClock",
    "UpgradeReport",
    "WorkflowCancelled",
    "WorkflowContextFilter",
    "WorkflowFailed",
    "WorkflowHandle",
    "WorkflowInfo",
    "WorkflowNotFound",
    "WorkflowNotResumable",
    "WorkflowStatus",
    "as_completed",
    "cancel_workflow",
    "close_stream",
    "create_schedule",
    "current_workflow_id",
    "delete_schedule",
    "deprecate_patch",
    "fork_workflow",
    "garbage_collect",
    "get_event",
    "get_workflow_status",
    "list_schedules",
    "list_steps",
    "list_workflows",
    "patch",
    "pause_schedule",
    "read_stream",
    "recv",
    "restart_workflow",
    "resume_schedule",
    "resume_workflow",
    "retrieve_workflow",
    "scheduled",
    "send",
    "set_event",
    "set_workflow_id",
    "set_workflow_timeout",
    "sleep",
    "start_workflow",
    "step",
    "transaction",
    "upgrade_workflows",
    "wait_first",
    "workflow",
    "write_stream",
]

# Public objects report the package as their home, so reprs and docs show `aiodurable.X`.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("aiodurable._"):
        try:
            _obj.__module__ = __name__
        except (AttributeError, TypeError):  # pragma: no cover - builtin-like objects
            pass
del _name, _obj
