"""The rows the store reads and writes, as plain frozen dataclasses.

Times are POSIX seconds here; the tables hold epoch milliseconds, and only the store converts.
Nothing in this module does I/O or knows PostgreSQL's driver, so the engine, the console and an
in-memory store can all use these types without importing the real store.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._validate import check_epoch, check_id, check_priority, check_text

__all__ = [
    "AUTO_KEY_PREFIX",
    "DEBOUNCE_QUEUE",
    "DequeueRequest",
    "Dequeued",
    "EventRow",
    "MessageRow",
    "NewWorkflow",
    "StepRow",
    "WorkflowBrief",
    "WorkflowQuery",
    "WorkflowRow",
    "check_new_workflow",
    "storable",
]

AUTO_KEY_PREFIX = "aiodurable:"
"""Idempotency keys the store makes itself start so; callers' keys may not."""

DEBOUNCE_QUEUE = "aiodurable:debounce"
"""The queue name a debounced workflow waits ENQUEUED on until its burst of calls closes (no
dispatcher takes from it; a queue of the user's cannot have this name)."""


def storable(text: str) -> bool:
    """Whether PostgreSQL text can hold ``text``: no NUL, no lone surrogate. No row holds text
    that fails this, so a read looking for it finds nothing (the driver would raise instead)."""
    if "\x00" in text:
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class NewWorkflow:
    """A workflow row about to be written."""

    workflow_id: str
    name: str
    format: str
    inputs: bytes
    created_at: float
    app_version: str
    executor_id: str
    parent_workflow_id: str | None = None
    deadline_at: float | None = None
    status: str = "PENDING"
    queue_name: str | None = None
    priority: int = 0
    deduplication_id: str | None = None
    partition_key: str | None = None


def check_new_workflow(w: NewWorkflow) -> None:
    """Refuse a row PostgreSQL would refuse, before it joins a batch: one bad value would fail
    the statement, and with it every other caller's row in that batch. The public calls check
    their arguments first, with errors in their own words; this guards every path to a batch."""
    check_id("workflow ID", w.workflow_id)
    check_id("workflow name", w.name)
    check_text("application version", w.app_version, empty=True)
    check_text("executor ID", w.executor_id, empty=True)
    if w.parent_workflow_id is not None:
        check_id("parent workflow ID", w.parent_workflow_id)
    if w.queue_name is not None:
        check_id("queue name", w.queue_name)
    if w.deduplication_id is not None:
        check_id("deduplication ID", w.deduplication_id)
    if w.partition_key is not None:
        check_id("partition key", w.partition_key)
    check_epoch("creation time", w.created_at)
    if w.deadline_at is not None:
        check_epoch("workflow deadline", w.deadline_at)
    check_priority(w.priority)


@dataclass(frozen=True, slots=True)
class WorkflowRow:
    """A workflow as recorded."""

    workflow_id: str
    status: str
    name: str
    format: str
    inputs: bytes | None
    output: bytes | None
    error: bytes | None
    created_at: float
    updated_at: float
    app_version: str
    executor_id: str
    recovery_attempts: int
    queue_name: str | None
    parent_workflow_id: str | None
    deadline_at: float | None
    priority: int = 0
    deduplication_id: str | None = None
    partition_key: str | None = None


@dataclass(frozen=True, slots=True)
class WorkflowQuery:
    """Filters for :meth:`Store.list_workflows`; times are POSIX seconds."""

    statuses: tuple[str, ...] = ()
    name: str | None = None
    workflow_id_prefix: str | None = None
    app_version: str | None = None
    executor_id: str | None = None
    queue_name: str | None = None
    start_time: float | None = None
    end_time: float | None = None
    limit: int | None = None
    offset: int | None = None
    sort_desc: bool = False
    load_input: bool = False
    load_output: bool = False


@dataclass(frozen=True, slots=True)
class DequeueRequest:
    """What a dispatcher asks of :meth:`Store.dequeue`."""

    queue_name: str
    executor_id: str
    app_version: str
    names: tuple[str, ...]
    now: float
    batch: int
    concurrency: int | None
    worker_concurrency: int | None
    rate_limit: tuple[int, float] | None
    priority_enabled: bool
    partitioned: bool = False
    """Whether the limits apply to each partition key on its own (see :mod:`._partitions`)."""


@dataclass(frozen=True, slots=True)
class Dequeued:
    """The workflows a dispatcher started, and when a rate limit lets it try again."""

    rows: list[WorkflowRow]
    retry_at: float | None


@dataclass(frozen=True, slots=True)
class StepRow:
    """One journal entry: the recorded outcome of the call at ``function_id``."""

    function_id: int
    name: str
    format: str
    output: bytes | None
    error: bytes | None
    child_workflow_id: str | None
    started_at: float
    completed_at: float


@dataclass(frozen=True, slots=True)
class EventRow:
    """The latest value of one event of a workflow (for the console)."""

    key: str
    format: str
    value: bytes
    updated_at: float
    clipped: bool


@dataclass(frozen=True, slots=True)
class MessageRow:
    """A message waiting for its workflow to ``recv`` it (for the console)."""

    message_id: int
    topic: str
    format: str
    value: bytes
    created_at: float
    clipped: bool


@dataclass(frozen=True, slots=True)
class WorkflowBrief:
    """A workflow's ID, name and status (for the console's links to children and parents)."""

    workflow_id: str
    name: str
    status: str
