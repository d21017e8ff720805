"""What a :class:`~aiodurable.testing.MemoryBackend` keeps of one schema: the tables, as dicts.

The state outlives the runtimes opened on it, as a database outlives its clients: a test closes
one runtime and opens another on the same backend to simulate a restart. Times are epoch
milliseconds, as the tables hold them, so that a value read back is rounded exactly as
PostgreSQL would round it.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from .._records import NewWorkflow, StepRow, WorkflowQuery, WorkflowRow
from .._schedule import ScheduleRow

__all__ = ["Event", "Executor", "Key", "MemoryState", "Message", "StoredWorkflow", "ms", "stored"]

Key = tuple[str, ...]


def ms(seconds: float) -> int:
    """A POSIX time in seconds as epoch milliseconds (what the tables hold)."""
    return round(seconds * 1000)


def stored(step: StepRow) -> StepRow:
    """``step`` as read back from the journal: its times to the millisecond."""
    return StepRow(
        step.function_id,
        step.name,
        step.format,
        step.output,
        step.error,
        step.child_workflow_id,
        ms(step.started_at) / 1000,
        ms(step.completed_at) / 1000,
    )


@dataclass(slots=True)
class StoredWorkflow:
    """One row of the workflows table, mutable as a row is."""

    workflow_id: str
    status: str
    name: str
    format: str
    inputs: bytes | None
    created_at: int
    updated_at: int
    app_version: str
    executor_id: str
    parent_workflow_id: str | None = None
    deadline_at: int | None = None
    queue_name: str | None = None
    priority: int = 0
    deduplication_id: str | None = None
    output: bytes | None = None
    error: bytes | None = None
    recovery_attempts: int = 0
    started_at: int | None = None
    partition_key: str | None = None

    @classmethod
    def new(cls, w: NewWorkflow, *, status: str, executor_id: str, queued: bool) -> StoredWorkflow:
        """The row ``w`` makes; ``queued`` keeps its priority, deduplication ID and partition
        key (only an enqueue writes them)."""
        return cls(
            workflow_id=w.workflow_id,
            status=status,
            name=w.name,
            format=w.format,
            inputs=w.inputs,
            created_at=ms(w.created_at),
            updated_at=ms(w.created_at),
            app_version=w.app_version,
            executor_id=executor_id,
            parent_workflow_id=w.parent_workflow_id,
            deadline_at=None if w.deadline_at is None else ms(w.deadline_at),
            queue_name=w.queue_name,
            priority=w.priority if queued else 0,
            deduplication_id=w.deduplication_id if queued else None,
            partition_key=w.partition_key if queued else None,
        )

    def row(self, *, inputs: bool = True, output: bool = True) -> WorkflowRow:
        """The row as the store hands it out (without inputs or output when not asked)."""
        return WorkflowRow(
            workflow_id=self.workflow_id,
            status=self.status,
            name=self.name,
            format=self.format,
            inputs=self.inputs if inputs else None,
            output=self.output if output else None,
            error=self.error,
            created_at=self.created_at / 1000,
            updated_at=self.updated_at / 1000,
            app_version=self.app_version,
            executor_id=self.executor_id,
            recovery_attempts=self.recovery_attempts,
            queue_name=self.queue_name,
            parent_workflow_id=self.parent_workflow_id,
            deadline_at=None if self.deadline_at is None else self.deadline_at / 1000,
            priority=self.priority,
            deduplication_id=self.deduplication_id,
            partition_key=self.partition_key,
        )

    def matches(self, q: WorkflowQuery) -> bool:
        """Whether this row passes every filter of ``q`` (as the listing's WHERE clause)."""
        checks = (
            not q.statuses or self.status in q.statuses,
            q.name is None or self.name == q.name,
            q.workflow_id_prefix is None or self.workflow_id.startswith(q.workflow_id_prefix),
            q.app_version is None or self.app_version == q.app_version,
            q.executor_id is None or self.executor_id == q.executor_id,
            q.queue_name is None or self.queue_name == q.queue_name,
            q.start_time is None or self.created_at >= ms(q.start_time),
            q.end_time is None or self.created_at <= ms(q.end_time),
        )
        return all(checks)


@dataclass(frozen=True, slots=True)
class Message:
    """One row of the messages table: sent, not yet received."""

    message_id: int
    format: str
    value: bytes
    created_at: int


@dataclass(frozen=True, slots=True)
class Event:
    """One row of the events table: the latest value of a key."""

    format: str
    value: bytes
    updated_at: int


@dataclass(slots=True)
class Burst:
    """One row of the debounces table: an open burst of calls (times in epoch ms)."""

    workflow_id: str
    first_at: int
    last_at: int
    period_ms: int
    max_wait_ms: int | None

    @property
    def due_at(self) -> int:
        """When the burst closes: ``period`` after its last call, ``max_wait`` after its first."""
        due = self.last_at + self.period_ms
        return due if self.max_wait_ms is None else min(due, self.first_at + self.max_wait_ms)


@dataclass(slots=True)
class Executor:
    """One row of the executors table."""

    host: str
    pid: int
    app_version: str
    last_seen: int


@dataclass(eq=False)
class MemoryState:
    """The tables of one schema, the executor locks held, and who listens for notifications."""

    workflows: dict[str, StoredWorkflow] = field(default_factory=dict)
    steps: dict[str, dict[int, StepRow]] = field(default_factory=dict)
    # Messages per (destination, topic), oldest first; the consumed ones are gone.
    messages: dict[tuple[str, str], deque[Message]] = field(default_factory=dict)
    message_ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    # (destination, idempotency key) -> when first used (epoch ms).
    message_keys: dict[tuple[str, str], int] = field(default_factory=dict)
    events: dict[tuple[str, str], Event] = field(default_factory=dict)
    # workflow -> function ID -> (key, format, value): every set_event, for forks.
    event_history: dict[str, dict[int, tuple[str, str, bytes]]] = field(default_factory=dict)
    waits: dict[tuple[str, int], int] = field(default_factory=dict)
    # (workflow name, key) -> the open burst of debounced calls.
    debounces: dict[tuple[str, str], Burst] = field(default_factory=dict)
    # (workflow, key) -> offset -> (function ID, format, value, created_at): a stream's rows;
    # format and value None on the close marker.
    streams: dict[tuple[str, str], dict[int, tuple[int, str | None, bytes | None, int]]] = field(
        default_factory=dict
    )
    # name -> the schedule's row, its times rounded to the millisecond as the table keeps them.
    schedules: dict[str, ScheduleRow] = field(default_factory=dict)
    executors: dict[str, Executor] = field(default_factory=dict)
    # executor ID -> the LISTEN session holding its lock (PostgreSQL: a session advisory lock).
    holds: dict[str, object] = field(default_factory=dict)
    listeners: set[Callable[[Key], None]] = field(default_factory=set)
    started_at: int = field(default_factory=lambda: ms(time.time()))

    def notify(self, *key: str) -> None:
        """Deliver ``key`` to every notifier listening on this schema."""
        for listener in list(self.listeners):
            listener(key)

    def try_hold(self, session: object, executor_id: str) -> bool:
        """Take ``executor_id``'s lock for ``session``; False when another session holds it."""
        holder = self.holds.setdefault(executor_id, session)
        return holder is session

    def release(self, session: object) -> None:
        """Drop every lock ``session`` holds (its connection closed)."""
        for executor_id in [e for e, s in self.holds.items() if s is session]:
            del self.holds[executor_id]

    def journal(self, workflow_id: str) -> dict[int, StepRow]:
        """The journal of ``workflow_id`` (made empty on first use)."""
        return self.steps.setdefault(workflow_id, {})

    def select(self, **where: object) -> Iterator[StoredWorkflow]:
        """The rows whose attributes equal ``where``'s values, in insertion order."""
        for wf in list(self.workflows.values()):
            if all(getattr(wf, column) == value for column, value in where.items()):
                yield wf
