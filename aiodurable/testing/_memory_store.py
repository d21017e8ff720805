"""``MemoryStore``: the store's methods over :class:`MemoryState`, for tests without PostgreSQL.

Each method does what the statement of :class:`aiodurable._store.Store` of the same name does:
the same return values, the same fencing (a runtime's journal writes and final statuses are
refused, with :class:`OwnershipLost`, for a workflow another executor owns), the same
notifications (``w``, ``m``, ``e``, ``x``, ``q``) to the notifiers of the schema. Executors and
queues, management and the console's reads are its base classes' (``MemoryDispatch``,
``MemoryAdmin``). Everything runs on the event loop's thread between two awaits, so each method
is atomic, as each statement is. ``@transaction`` needs SQL, so ``pool`` and ``record_step_on``
raise :class:`NoRuntimeError`.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Callable, Sequence
from typing import NoReturn

from .._exceptions import NoRuntimeError, OwnershipLost, WorkflowNotFound
from .._records import (
    AUTO_KEY_PREFIX,
    NewWorkflow,
    StepRow,
    WorkflowRow,
    check_new_workflow,
    storable,
)
from .._signals import Signal
from .._sql import migrations
from ._memory_admin import MemoryAdmin
from ._memory_debounce import MemoryDebounce
from ._memory_retention import MemoryRetention
from ._memory_schedules import MemorySchedules
from ._memory_state import Event, MemoryState, Message, StoredWorkflow, ms, stored
from ._memory_streams import MemoryStreams

__all__ = ["MemoryStore"]

_NO_SQL = (
    "@transaction needs PostgreSQL: the in-memory backend (aiodurable.testing.MemoryBackend)"
    " runs no SQL. Test transactional steps on a Runtime with the default backend"
    " (Runtime(database_url) or the embedded PostgreSQL)."
)


class MemoryStore(MemoryStreams, MemorySchedules, MemoryDebounce, MemoryRetention, MemoryAdmin):
    """The store of one runtime over a :class:`MemoryState` that outlives it."""

    def __init__(self, state: MemoryState, schema: str) -> None:
        super().__init__(state)
        self.schema = schema
        self.channel: str = f"{schema}_signal"
        self.retry_for: float = 30.0
        self.max_backoff: float = 2.0
        self.owner: str | None = None
        self.on_fenced: Callable[[str], None] | None = None
        self.reachable: bool = True

    # -- lifecycle and the parts SQL alone can do --------------------------------------------

    @property
    def pool(self) -> NoReturn:
        """No pool: the state is in memory. Raises :class:`NoRuntimeError`."""
        raise NoRuntimeError(_NO_SQL)

    async def record_step_on(self, conn: object, workflow_id: str, step: StepRow) -> NoReturn:
        """A journal write inside an SQL transaction: :class:`NoRuntimeError`."""
        raise NoRuntimeError(_NO_SQL)

    async def migrate(self) -> int:
        """Nothing to create; the schema version the tables stand for."""
        return migrations()[-1][0]

    async def close(self) -> None:
        """Nothing to close: the state stays with the backend, for the next runtime."""

    async def set_owner(self, executor_id: str) -> None:
        """Fence this store's journal writes and final statuses as ``executor_id``'s."""
        self.owner = executor_id

    async def try_hold_executor(self, session: object, executor_id: str) -> bool:
        """Hold ``executor_id``'s lock for the LISTEN ``session``; False if another holds it."""
        return self.state.try_hold(session, executor_id)

    async def notify(self, *key: str) -> None:
        """Send ``key`` to every notifier of this schema, as ``pg_notify`` does."""
        self.state.notify(*key)

    def _owned(self, workflow_id: str) -> bool:
        if not self.owner:
            return True
        wf = self.state.workflows.get(workflow_id)
        return wf is not None and wf.executor_id == self.owner

    def _lost(self, workflow_id: str) -> OwnershipLost:
        if self.on_fenced is not None:
            self.on_fenced(workflow_id)
        return OwnershipLost(workflow_id, f"its journal refused a write by executor {self.owner!r}")

    # -- workflows ---------------------------------------------------------------------------

    async def insert_workflow(self, w: NewWorkflow) -> bool:
        """Record a new workflow; False if its ID is already taken."""
        check_new_workflow(w)
        if w.workflow_id in self.state.workflows:
            return False
        wf = StoredWorkflow.new(w, status=w.status, executor_id=w.executor_id, queued=False)
        self.state.workflows[w.workflow_id] = wf
        self.state.notify(Signal.WORKFLOW, wf.workflow_id, wf.status)
        if wf.executor_id == "":  # a Client's start: any runtime with the code may claim it
            self.state.notify(Signal.CLAIMABLE, wf.workflow_id)
        return True

    async def get_workflow(self, workflow_id: str) -> WorkflowRow | None:
        """The workflow's row, or None."""
        if not isinstance(workflow_id, str):
            raise ValueError(f"a workflow ID must be a string, not {workflow_id!r:.80}")
        wf = self.state.workflows.get(workflow_id) if storable(workflow_id) else None
        return None if wf is None else wf.row()

    async def require_workflow(self, workflow_id: str) -> WorkflowRow:
        """The workflow's row; :class:`WorkflowNotFound` if there is none."""
        row = await self.get_workflow(workflow_id)
        if row is None:
            raise WorkflowNotFound(workflow_id)
        return row

    async def finish_workflow(
        self,
        workflow_id: str,
        status: str,
        fmt: str,
        output: bytes | None,
        error: bytes | None,
        now: float,
    ) -> bool:
        """Write a PENDING workflow's final status, fenced; False if not PENDING (or not ours)."""
        wf = self.state.workflows.get(workflow_id)
        if wf is None or wf.status != "PENDING" or not self._owned(workflow_id):
            return False
        wf.status, wf.format, wf.output, wf.error, wf.updated_at = (
            status,
            fmt,
            output,
            error,
            ms(now),
        )
        self.state.notify(Signal.WORKFLOW, workflow_id, status)
        if wf.queue_name is not None:
            self.state.notify(Signal.QUEUE, wf.queue_name)
        return True

    async def set_status(
        self, workflow_id: str, status: str, *, only_from: Sequence[str], now: float
    ) -> bool:
        """Move a workflow to ``status`` if it is in one of ``only_from``; notify."""
        wf = self.state.workflows.get(workflow_id)
        if wf is None or wf.status not in only_from:
            return False
        wf.status, wf.updated_at = status, ms(now)
        self.state.notify(Signal.WORKFLOW, workflow_id, status)
        return True

    async def pending_workflows(self, executor_id: str, app_version: str) -> list[tuple[str, str]]:
        """``(workflow ID, name)`` of an executor's PENDING workflows on a version, oldest
        first."""
        found = self.state.select(
            status="PENDING", executor_id=executor_id, app_version=app_version
        )
        return [(wf.workflow_id, wf.name) for wf in sorted(found, key=lambda wf: wf.created_at)]

    async def claim_for_recovery(
        self, workflow_ids: Sequence[str], now: float
    ) -> list[WorkflowRow]:
        """Count one more recovery attempt on each still-PENDING workflow; return their rows."""
        rows = []
        for wid in dict.fromkeys(workflow_ids):
            wf = self.state.workflows.get(wid)
            if wf is not None and wf.status == "PENDING":
                wf.recovery_attempts += 1
                wf.updated_at = ms(now)
                rows.append(wf.row())
        return rows

    # -- the journal -------------------------------------------------------------------------

    async def load_journal(self, workflow_id: str) -> dict[int, StepRow]:
        """Every journal entry of a workflow, by function ID."""
        return dict(sorted(self.state.steps.get(workflow_id, {}).items()))

    async def load_journals(self, workflow_ids: Sequence[str]) -> dict[str, dict[int, StepRow]]:
        """The journals of several workflows."""
        return {wid: await self.load_journal(wid) for wid in workflow_ids}

    async def get_step(self, workflow_id: str, function_id: int) -> StepRow | None:
        """One journal entry, or None."""
        return self.state.steps.get(workflow_id, {}).get(function_id)

    async def record_step(self, workflow_id: str, step: StepRow) -> StepRow | None:
        """Write a journal entry, fenced; the entry already at its function ID if there is one
        (None when ours was written)."""
        if not self._owned(workflow_id):
            raise self._lost(workflow_id)
        journal = self.state.journal(workflow_id)
        existing = journal.get(step.function_id)
        if existing is None:
            journal[step.function_id] = stored(step)
        return existing

    # -- messages and events -----------------------------------------------------------------

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
        """Queue a message and notify its receiver; False when already sent (its idempotency
        key, or the sender's journal entry, says so). :class:`WorkflowNotFound` for an unknown
        destination."""
        state = self.state
        if checkpoint is not None:
            sender, step = checkpoint
            if not self._owned(sender):
                raise self._lost(sender)
            if step.function_id in state.journal(sender):
                return False
            if destination_id not in state.workflows:
                raise WorkflowNotFound(destination_id)
            state.journal(sender)[step.function_id] = stored(step)
        else:
            key = (destination_id, idempotency_key or f"{AUTO_KEY_PREFIX}{uuid.uuid4()}")
            if key in state.message_keys:
                return False
            if destination_id not in state.workflows:
                raise WorkflowNotFound(destination_id)
            state.message_keys[key] = ms(now)
        message = Message(next(state.message_ids), fmt, value, ms(now))
        state.messages.setdefault((destination_id, topic), deque()).append(message)
        state.notify(Signal.MESSAGE, destination_id, topic)
        return True

    async def consume_message(
        self, workflow_id: str, topic: str, function_id: int, name: str, now: float
    ) -> StepRow | None:
        """Take the oldest message for ``topic`` and journal it at ``function_id``, at once;
        None when none is queued; the existing entry (consuming nothing) when the function ID
        is journaled already."""
        if not self._owned(workflow_id):
            raise self._lost(workflow_id)
        queued = self.state.messages.get((workflow_id, topic))
        if not queued:
            return None
        journal = self.state.journal(workflow_id)
        existing = journal.get(function_id)
        if existing is not None:
            return existing
        message = queued.popleft()
        entry = StepRow(function_id, name, message.format, message.value, None, None, now, now)
        journal[function_id] = stored(entry)
        return entry

    async def wait_deadline(self, workflow_id: str, function_id: int, deadline: float) -> float:
        """Record the deadline of a wait at ``function_id``, or return the one recorded first."""
        return self.state.waits.setdefault((workflow_id, function_id), ms(deadline)) / 1000

    async def set_event(
        self, workflow_id: str, step: StepRow, key: str, fmt: str, value: bytes
    ) -> bool:
        """Publish an event value with its journal entry and notify; False if journaled
        already."""
        if not self._owned(workflow_id):
            raise self._lost(workflow_id)
        journal = self.state.journal(workflow_id)
        if step.function_id in journal:
            return False
        if workflow_id not in self.state.workflows:
            raise WorkflowNotFound(workflow_id)
        journal[step.function_id] = stored(step)
        self.state.events[(workflow_id, key)] = Event(step.format, value, ms(step.started_at))
        self.state.event_history.setdefault(workflow_id, {})[step.function_id] = (
            key,
            step.format,
            value,
        )
        self.state.notify(Signal.EVENT, workflow_id, key)
        return True

    async def get_event(self, workflow_id: str, key: str) -> tuple[str, bytes] | None:
        """The latest value of an event as ``(format, bytes)``, or None if never set."""
        event = self.state.events.get((workflow_id, key))
        return None if event is None else (event.format, event.value)

    async def forget_auto_keys(self, older_than: float) -> int:
        """Drop the store's own idempotency keys recorded before ``older_than``."""
        keys = self.state.message_keys
        old = [
            k for k, at in keys.items() if k[1].startswith(AUTO_KEY_PREFIX) and at < ms(older_than)
        ]
        for k in old:
            del keys[k]
        return len(old)
