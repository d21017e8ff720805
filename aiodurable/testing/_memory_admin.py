"""``MemoryAdmin``: management and the console's reads, in memory.

The part of :class:`~aiodurable.testing._memory_store.MemoryStore` that tools use rather than
running workflows: listings, resume and fork, the adoption of other versions' workflows, and the
views the console reads, each as the statement of :class:`aiodurable._store.Store` of the same
name (its ``AdminPart``, or ``WorkflowsPart`` for adoption).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

from .._exceptions import DuplicateWorkflowError
from .._records import (
    EventRow,
    MessageRow,
    NewWorkflow,
    WorkflowBrief,
    WorkflowQuery,
    WorkflowRow,
)
from .._signals import Signal
from ._memory_dispatch import MemoryDispatch
from ._memory_state import Event, StoredWorkflow, ms

__all__ = ["MemoryAdmin"]

_RESUMABLE = ("CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED", "ENQUEUED")


class MemoryAdmin(MemoryDispatch):
    """Listings, resume, fork and the console's views over a :class:`MemoryState`."""

    # -- management --------------------------------------------------------------------------

    async def other_version_counts(self, app_version: str) -> list[tuple[str, str, int]]:
        """``(version, status, count)`` of the PENDING and ENQUEUED workflows of other
        versions."""
        counts: dict[tuple[str, str], int] = {}
        for wf in self.state.workflows.values():
            if wf.status in ("PENDING", "ENQUEUED") and wf.app_version not in ("", app_version):
                key = (wf.app_version, wf.status)
                counts[key] = counts.get(key, 0) + 1
        return [(version, status, n) for (version, status), n in sorted(counts.items())]

    async def last_function_id(self, workflow_id: str) -> int:
        """The highest journaled function ID of a workflow (0 when none)."""
        return max(self.state.steps.get(workflow_id, {}), default=0)

    async def list_workflows(self, query: WorkflowQuery) -> list[WorkflowRow]:
        """Workflows matching ``query``, oldest or newest first, without or with their data."""
        found = [wf for wf in self.state.workflows.values() if wf.matches(query)]
        found.sort(key=lambda wf: (wf.created_at, wf.workflow_id), reverse=query.sort_desc)
        start = query.offset or 0
        end = None if query.limit is None else start + query.limit
        return [
            wf.row(inputs=query.load_input, output=query.load_output) for wf in found[start:end]
        ]

    async def resume(
        self, workflow_id: str, executor_id: str, app_version: str, now: float
    ) -> WorkflowRow | None:
        """Make a CANCELLED, MAX_RECOVERY_ATTEMPTS_EXCEEDED or ENQUEUED workflow PENDING again on
        ``executor_id`` ('' = any live runtime); None if it was in no such state."""
        wf = self.state.workflows.get(workflow_id)
        if wf is None or wf.status not in _RESUMABLE:
            return None
        wf.status, wf.recovery_attempts, wf.deadline_at = "PENDING", 0, None
        wf.executor_id, wf.app_version, wf.updated_at = executor_id, app_version, ms(now)
        self._status_changed(wf)
        return wf.row()

    async def fork(self, source_id: str, new: NewWorkflow, below: int) -> None:
        """Record ``new`` with the source's journal entries (and the events and stream values
        they wrote) below ``below``."""
        state = self.state
        if new.workflow_id in state.workflows:
            raise DuplicateWorkflowError(
                f"workflow ID {new.workflow_id!r} is already taken; choose another for the fork"
            )
        # A fork has no parent, deadline or queue of its own.
        plain = replace(new, parent_workflow_id=None, deadline_at=None, queue_name=None)
        wf = StoredWorkflow.new(plain, status="PENDING", executor_id=new.executor_id, queued=False)
        state.workflows[new.workflow_id] = wf
        source = state.steps.get(source_id, {})
        state.steps[new.workflow_id] = {f: e for f, e in source.items() if f < below}
        history = state.event_history.get(source_id, {})
        kept = {f: h for f, h in sorted(history.items()) if f < below}
        state.event_history[new.workflow_id] = kept
        for key, fmt, value in kept.values():  # in function-ID order: the latest value wins
            state.events[(new.workflow_id, key)] = Event(fmt, value, wf.created_at)
        for (workflow_id, key), rows in list(state.streams.items()):
            if workflow_id == source_id:
                copied = {offset: row for offset, row in rows.items() if row[0] < below}
                if copied:
                    state.streams[(new.workflow_id, key)] = copied
        self._status_changed(wf)

    # -- adoption by another version ---------------------------------------------------------

    async def upgrade_candidates(
        self,
        app_version: str,
        from_version: str | None,
        workflow_ids: Sequence[str] | None,
        after: tuple[float, str] | None,
        limit: int,
    ) -> list[WorkflowRow]:
        """Up to ``limit`` PENDING or ENQUEUED workflows of another application version (not
        of none), of ``from_version`` and among ``workflow_ids`` when given, in creation order
        after ``after`` (creation time, ID)."""
        wanted = None if workflow_ids is None else set(workflow_ids)
        start = (-1, "") if after is None else (ms(after[0]), after[1])
        found = [
            wf
            for wf in self.state.workflows.values()
            if wf.status in ("PENDING", "ENQUEUED")
            and wf.app_version not in ("", app_version)
            and from_version in (None, wf.app_version)
            and (wanted is None or wf.workflow_id in wanted)
            and (wf.created_at, wf.workflow_id) > start
        ]
        found.sort(key=lambda wf: (wf.created_at, wf.workflow_id))
        return [wf.row() for wf in found[:limit]]

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
        """Move a workflow to ``new_version`` and ``new_executor`` only while its status,
        version and executor are those read (or already those adopted); announce it to its
        queue (ENQUEUED) or as claimable (PENDING on no executor)."""
        wf = self.state.workflows.get(workflow_id)
        was = (old_version, old_executor)
        if wf is None or wf.status != old_status:
            return False
        if (wf.app_version, wf.executor_id) not in (was, (new_version, new_executor)):
            return False
        wf.app_version, wf.executor_id, wf.updated_at = new_version, new_executor, ms(now)
        if wf.status == "ENQUEUED":
            self.state.notify(Signal.QUEUE, wf.queue_name or "")
        elif wf.executor_id == "":
            self.state.notify(Signal.CLAIMABLE, wf.workflow_id)
        return True

    # -- the console's reads -----------------------------------------------------------------

    async def workflow_events(self, workflow_id: str, *, clip: int) -> list[EventRow]:
        """The events a workflow has set, by key; values over ``clip`` bytes cut to it."""
        found = [(k, e) for (wid, k), e in self.state.events.items() if wid == workflow_id]
        return [
            EventRow(k, e.format, e.value[:clip], e.updated_at / 1000, len(e.value) > clip)
            for k, e in sorted(found, key=lambda item: item[0])
        ]

    async def workflow_messages(
        self, workflow_id: str, limit: int, *, clip: int
    ) -> list[MessageRow]:
        """The first ``limit`` messages sent to a workflow and not yet received, oldest first;
        values over ``clip`` bytes cut to it."""
        found = [
            (m, topic)
            for (wid, topic), queued in self.state.messages.items()
            if wid == workflow_id
            for m in queued
        ]
        found.sort(key=lambda item: item[0].message_id)
        return [
            MessageRow(
                m.message_id,
                topic,
                m.format,
                m.value[:clip],
                m.created_at / 1000,
                len(m.value) > clip,
            )
            for m, topic in found[:limit]
        ]

    async def workflow_briefs(self, workflow_ids: Iterable[str]) -> dict[str, WorkflowBrief]:
        """Name and status of the given workflows (the unknown ones are missing)."""
        found = (self.state.workflows.get(wid) for wid in workflow_ids)
        return {
            wf.workflow_id: WorkflowBrief(wf.workflow_id, wf.name, wf.status)
            for wf in found
            if wf is not None
        }

    async def list_watermark(self) -> tuple[object, ...] | None:
        """The newest creation time and how many workflows share it: changes when a workflow
        is created."""
        times = [wf.created_at for wf in self.state.workflows.values()]
        if not times:
            return None
        newest = max(times)
        return (newest, times.count(newest))

    async def workflow_watermark(self, workflow_id: str) -> tuple[object, ...] | None:
        """Something that changes when a workflow's status changes or its journal grows."""
        wf = self.state.workflows.get(workflow_id)
        if wf is None:
            return None
        state = self.state
        messages = sum(len(q) for (wid, _), q in state.messages.items() if wid == workflow_id)
        event_times = [e.updated_at for (wid, _), e in state.events.items() if wid == workflow_id]
        steps = len(state.steps.get(workflow_id, {}))
        return (wf.status, wf.updated_at, steps, messages, max(event_times, default=None))

    async def enqueued_positions(
        self, queue_name: str, workflow_ids: Iterable[str]
    ) -> dict[str, int]:
        """The position (1 = next, in dispatch order) of each of ``workflow_ids`` that waits
        ENQUEUED in ``queue_name``."""
        wanted = set(workflow_ids)
        waiting = self.state.select(queue_name=queue_name, status="ENQUEUED")
        ordered = sorted(waiting, key=lambda wf: (wf.priority, wf.created_at, wf.workflow_id))
        ranked = {wf.workflow_id: i for i, wf in enumerate(ordered, 1)}
        return {wid: position for wid, position in ranked.items() if wid in wanted}
