"""What the rest of aiodurable needs of a store: :class:`StoreProtocol`.

The engine, the management calls, the console and the testing toolkit use a store only through
these members; :class:`~aiodurable._store.Store` (PostgreSQL) implements them, and an in-memory
store can too. Each signature is the PostgreSQL store's own, and so is each contract (see its
docstrings there): what a call returns on a conflict, which calls notify, which raise
:class:`~aiodurable.OwnershipLost` when the fence refuses a write.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import asyncpg

from .._records import (
    Dequeued,
    DequeueRequest,
    EventRow,
    MessageRow,
    NewWorkflow,
    StepRow,
    WorkflowBrief,
    WorkflowQuery,
    WorkflowRow,
)
from .._schedule import ScheduleRow
from .._stream_records import StreamPage, StreamSummary
from ._base import Conn
from ._retention import RetentionKey

__all__ = ["StoreProtocol"]


class StoreProtocol(Protocol):
    """Every member of the store that code outside it uses."""

    retry_for: float
    """Seconds a statement is retried while PostgreSQL cannot be reached."""
    max_backoff: float
    """The longest pause between two of those retries, in seconds."""
    on_fenced: Callable[[str], None] | None
    """Told the workflow ID whenever the fence refuses a write for it."""

    @property
    def pool(self) -> asyncpg.Pool:
        """The connection pool (the application store's runs ``@transaction`` bodies)."""
        ...

    @property
    def channel(self) -> str:
        """The notification channel the store's statements notify on."""
        ...

    @property
    def reachable(self) -> bool:
        """False from a failed attempt to reach the database until the next success."""
        ...

    # -- lifecycle and notifications
    async def close(self) -> None:
        """Stop the batches in flight and close the pool."""

    async def migrate(self) -> int:
        """Bring the schema up to date under an advisory lock; return its version."""

    async def set_owner(self, executor_id: str) -> None:
        """Write journal entries and final statuses as ``executor_id`` from now on, fenced: a
        workflow another executor has taken over refuses them."""

    async def notify(self, *key: str) -> None:
        """Send one notification with ``key`` on the store's channel, as the statements that
        change a row do (see :mod:`aiodurable._signals`): a JSON array of the key's items.
        """

    # -- workflows
    async def insert_workflow(self, w: NewWorkflow) -> bool:
        """Record a new workflow; return False if its ID is already taken. Starts that arrive
        together share one statement (group commit).
        """

    async def get_workflow(self, workflow_id: str) -> WorkflowRow | None:
        """The workflow's row, or None (also for an ID no row can have, such as one with NUL)."""

    async def require_workflow(self, workflow_id: str) -> WorkflowRow:
        """The workflow's row; :class:`WorkflowNotFound` if there is none."""

    async def finish_workflow(
        self,
        workflow_id: str,
        status: str,
        fmt: str,
        output: bytes | None,
        error: bytes | None,
        now: float,
    ) -> bool:
        """Write a PENDING workflow's final status and notify waiters; False if not PENDING."""

    async def set_status(
        self, workflow_id: str, status: str, *, only_from: Sequence[str], now: float
    ) -> bool:
        """Move a workflow to ``status`` if it is in one of ``only_from``; notify waiters."""

    async def pending_workflows(self, executor_id: str, app_version: str) -> list[tuple[str, str]]:
        """``(workflow ID, name)`` of the PENDING workflows of an executor on an application
        version, oldest first.
        """

    async def claim_for_recovery(
        self, workflow_ids: Sequence[str], now: float
    ) -> list[WorkflowRow]:
        """Count one more recovery attempt on each still-PENDING workflow; return their rows."""

    async def claim_unassigned(
        self, names: Sequence[str], executor_id: str, app_version: str, now: float
    ) -> list[WorkflowRow]:
        """Take the PENDING workflows no executor runs, of these names and of this application
        version (or of none), for ``executor_id``.
        """

    async def upgrade_candidates(
        self,
        app_version: str,
        from_version: str | None,
        workflow_ids: Sequence[str] | None,
        after: tuple[float, str] | None,
        limit: int,
    ) -> list[WorkflowRow]:
        """Up to ``limit`` PENDING or ENQUEUED workflows recorded on an application version
        other than ``app_version`` (and not on none), of ``from_version`` only when given, of
        ``workflow_ids`` only when given; in creation order, after ``after`` (the creation time
        and ID of the last one of the previous page).
        """

    async def adopt(
        self,
        workflow_id: str,
        old_version: str,
        old_status: str,
        old_executor: str,
        new_version: str,
        new_executor: str,
        now: float,
    ) -> bool:
        """Move a workflow to ``new_version`` and ``new_executor`` ('' = any live runtime of
        that version), in one statement, only while its status, version and executor are still
        those read (``old_*``); False when it changed meanwhile. A PENDING workflow left to no
        executor is announced as claimable, an ENQUEUED one wakes its queue. Adoptions that
        arrive together share one statement (group commit), in which each row is adopted whole
        or not at all.
        """

    # -- the journal
    async def load_journal(self, workflow_id: str) -> dict[int, StepRow]:
        """Every journal entry of a workflow, by function ID: one query."""

    async def load_journals(self, workflow_ids: Sequence[str]) -> dict[str, dict[int, StepRow]]:
        """The journals of several workflows in one query."""

    async def record_step_on(self, conn: Conn, workflow_id: str, step: StepRow) -> StepRow | None:
        """:meth:`record_step` on a given connection, inside the caller's transaction;
        :class:`OwnershipLost` when another executor owns the workflow now.
        """

    async def get_step(self, workflow_id: str, function_id: int) -> StepRow | None:
        """One journal entry, or None."""

    async def record_step(self, workflow_id: str, step: StepRow) -> StepRow | None:
        """Write a journal entry: one round trip, shared with the entries written at the same
        moment (group commit). If the function ID already has one (another executor got there
        first), return that entry instead; None when ours was written; :class:`OwnershipLost`
        when another executor owns the workflow now.
        """

    # -- messages and events
    async def send(
        self,
        destination_id: str,
        topic: str,
        fmt: str,
        value: bytes,
        now: float,
        *,
        idempotency_key: str | None = None,
        checkpoint: tuple[str, StepRow] | None = None,
    ) -> bool:
        """Queue a message and notify its receiver; False when it was already sent (its
        idempotency key or its sender's journal entry says so). ``checkpoint`` is the sending
        workflow's journal entry, written in the same statement.
        :class:`WorkflowNotFound` for an unknown destination.
        """

    async def consume_message(
        self, workflow_id: str, topic: str, function_id: int, name: str, now: float
    ) -> StepRow | None:
        """Take the oldest message for ``topic`` and journal it at ``function_id``, atomically.

        Returns the journal entry, or None when no message is queued. When the function ID is
        already journaled, nothing is consumed and the existing entry is returned.
        """

    async def wait_deadline(self, workflow_id: str, function_id: int, deadline: float) -> float:
        """Record the deadline of a wait at ``function_id``, or return the one recorded first."""

    async def set_event(
        self, workflow_id: str, step: StepRow, key: str, fmt: str, value: bytes
    ) -> bool:
        """Publish an event value with its journal entry and notify; False if already journaled."""

    async def get_event(self, workflow_id: str, key: str) -> tuple[str, bytes] | None:
        """The latest value of an event as ``(format, bytes)``, or None if never set."""

    async def forget_auto_keys(self, older_than: float) -> int:
        """Drop the store's own idempotency keys recorded before ``older_than``."""

    # -- queues
    async def enqueue(self, w: NewWorkflow) -> bool:
        """Record an ENQUEUED workflow and wake the queue's dispatchers; False if its workflow ID
        is taken. :class:`DuplicateWorkflowError` if its deduplication ID is queued or running.
        Enqueues that arrive together share one statement (group commit).
        """

    async def deduplicated(self, queue_name: str, deduplication_id: str) -> str | None:
        """The ID of the queued or running workflow holding a deduplication ID."""

    async def dequeue(self, request: DequeueRequest) -> Dequeued:
        """Start as many ENQUEUED workflows of a queue as its limits allow, for ``executor_id``.

        One transaction under a per-queue advisory lock, so the global concurrency and the rate
        limit hold across every process sharing the database.
        """

    async def queue_positions(self, queue_name: str) -> dict[str, int]:
        """The position (1 = next) of each ENQUEUED workflow of a queue, in dispatch order."""

    # -- executors
    async def try_hold_executor(self, session: asyncpg.Connection, executor_id: str) -> bool:
        """Take ``executor_id``'s session lock on ``session`` (the runtime's LISTEN connection),
        where it stays until that connection closes; False when another live runtime holds it.
        Not retried: a lost session loses the lock, and the runtime takes it again on the next.
        """

    async def executor_alive(self, executor_id: str) -> bool:
        """Whether a live runtime holds ``executor_id``'s session lock."""

    async def heartbeat(self, executor_id: str, host: str, pid: int, app_version: str) -> bool:
        """Record that ``executor_id`` is alive now (the database server's clock); return
        whether its row was there already (a takeover deletes it).
        """

    async def not_owned(self, workflow_ids: Sequence[str], executor_id: str) -> dict[str, str]:
        """Of ``workflow_ids``, those no longer PENDING on ``executor_id``: ID -> where they are
        now, in words (``executor 'x'``, or their status).
        """

    async def silent_executors(self, app_version: str, lease: float, me: str) -> list[str]:
        """Executors of ``app_version`` silent for longer than ``lease`` seconds: no heartbeat
        for that long, counted from the server's own start at the earliest, since a restart of
        PostgreSQL silences everybody at once and is no sign that anyone died.
        """

    async def take_over(
        self, dead: str, executor_id: str, app_version: str, names: Sequence[str], now: float
    ) -> list[WorkflowRow] | None:
        """Move a gone executor's PENDING workflows (of these names and this version) to
        ``executor_id``, holding the gone executor's session lock meanwhile so one survivor takes
        each; None when that lock is held (the executor is alive after all).
        """

    async def release_executor(self, executor_id: str, now: float) -> list[str]:
        """Hand the PENDING workflows of a gone executor to any live runtime of their version."""

    # -- management
    async def list_workflows(self, query: WorkflowQuery) -> list[WorkflowRow]:
        """Workflows matching ``query``, newest or oldest first, without or with their data."""

    async def last_function_id(self, workflow_id: str) -> int:
        """The highest journaled function ID of a workflow (0 when none)."""

    async def other_version_counts(self, app_version: str) -> list[tuple[str, str, int]]:
        """``(application version, status, count)`` of the PENDING and ENQUEUED workflows
        recorded on versions other than ``app_version`` (and not waiting for any version).
        """

    async def resume(
        self, workflow_id: str, executor_id: str, app_version: str, now: float
    ) -> WorkflowRow | None:
        """Make a CANCELLED, MAX_RECOVERY_ATTEMPTS_EXCEEDED or ENQUEUED workflow PENDING again on
        ``executor_id`` ('' = any live runtime) and ``app_version``; None if it was in no such
        state.
        """

    async def fork(self, source_id: str, new: NewWorkflow, below: int) -> None:
        """Record ``new`` with the source's journal entries (and events) whose function ID is
        below ``below``, in one transaction.
        """

    # -- the console's reads
    async def workflow_events(self, workflow_id: str, *, clip: int) -> list[EventRow]:
        """The events a workflow has set, by key; values over ``clip`` bytes cut to it."""

    async def workflow_messages(
        self, workflow_id: str, limit: int, *, clip: int
    ) -> list[MessageRow]:
        """The first ``limit`` messages sent to a workflow and not yet received, oldest first;
        values over ``clip`` bytes cut to it.
        """

    async def workflow_briefs(self, workflow_ids: Iterable[str]) -> dict[str, WorkflowBrief]:
        """Name and status of the given workflows (the unknown ones are missing)."""

    async def list_watermark(self) -> tuple[object, ...] | None:
        """Something that changes when a workflow is created (the newest creation time and how
        many workflows share it): one backward step of the ``created_at`` index.
        """

    async def workflow_watermark(self, workflow_id: str) -> tuple[object, ...] | None:
        """Something that changes when a workflow's status changes or its journal grows."""

    async def enqueued_positions(
        self, queue_name: str, workflow_ids: Iterable[str]
    ) -> dict[str, int]:
        """The position (1 = next, in dispatch order) of each of ``workflow_ids`` that waits
        ENQUEUED in ``queue_name``. The database ranks the queue and sends back only the rows
        asked for, so a queue of 100,000 costs a page of 50 rows 50 rows.
        """

    # -- streams
    async def write_stream(
        self,
        workflow_id: str,
        step: StepRow,
        key: str,
        offset: int,
        fmt: str | None,
        value: bytes | None,
    ) -> StepRow | None:
        """Write a stream's value at ``offset`` (``value`` None: the close marker) with its
        journal entry, group-committed, and notify ``(STREAM, workflow_id, key)``; None when
        written, the entry already at the function ID when there is one (nothing written);
        :class:`OwnershipLost` when another executor owns the workflow.
        """

    async def read_stream(
        self, workflow_id: str, key: str, start: int, limit: int
    ) -> StreamPage | None:
        """The workflow's status and up to ``limit`` rows of stream ``key`` from offset
        ``start``, read together; None for an unknown workflow.
        """

    async def workflow_streams(
        self, workflow_id: str, *, last: int, clip: int, limit: int = 100
    ) -> list[StreamSummary]:
        """The streams of a workflow by key (the first ``limit``): count, closed, and the last
        ``last`` values cut to ``clip`` bytes (for the console).
        """

    # -- schedules
    async def create_schedule(
        self, name: str, workflow_name: str, cron: str, tz: str, catch_up: bool, now: float
    ) -> ScheduleRow | None:
        """Store a new schedule (not declared, never ticked) and notify it; None if the name
        is taken.
        """

    async def declare_schedules(
        self, schedules: Sequence[tuple[str, str, str, str, bool]], now: float
    ) -> None:
        """Upsert the declared schedules ``(name, workflow_name, cron, tz, catch_up)``: a new
        one is stored, an existing one takes these values and keeps its paused state and last
        tick; each one that changed is notified.
        """

    async def list_schedules(self) -> list[ScheduleRow]:
        """Every schedule, by name."""

    async def get_schedule(self, name: str) -> ScheduleRow | None:
        """The schedule called ``name``, or None."""

    async def pause_schedule(self, name: str, now: float) -> bool:
        """Pause a schedule and notify it; False if there is none of that name."""

    async def resume_schedule(self, name: str, now: float, passed: float | None) -> bool:
        """Resume a schedule and notify it; a paused one passes over the ticks up to ``passed``
        (the latest tick at or before ``now``). False if there is none of that name.
        """

    async def advance_schedule(self, name: str, tick: float) -> bool:
        """Record ``tick`` as the schedule's last tick if it is later than the one recorded;
        whether it was.
        """

    async def delete_schedule(self, name: str) -> bool:
        """Delete a schedule and notify it; False if there is none of that name."""

    # -- debouncing
    async def join_burst(
        self,
        name: str,
        key: str,
        workflow_id: str,
        fmt: str,
        inputs: bytes,
        now: float,
        period: float,
        max_wait: float | None,
    ) -> str:
        """Join the open burst of calls of workflow ``name`` with ``key`` (its workflow, ENQUEUED,
        takes these inputs), or open one whose workflow is ``workflow_id``; the burst's workflow
        ID. Opening notifies ``(DEBOUNCE,)``."""

    async def close_due_bursts(self, now: float) -> list[str]:
        """Close the bursts due by ``now``: their workflows become PENDING and claimable."""

    async def next_burst_due(self) -> float | None:
        """When the next open burst is due to close, or None."""

    # -- retention (garbage collection's members go here)
    async def retention_bound(self, before: float | None, keep: int | None) -> RetentionKey | None:
        """The key below which finished workflows are collected; None: nothing is."""

    async def collect_finished(
        self, after: RetentionKey, bound: RetentionKey, limit: int
    ) -> tuple[int, RetentionKey | None]:
        """Delete a batch of finished workflows keyed between the two; count and last key."""

    # -- queue partitions (the partitioned queues' members go here)
