"""Streams over a :class:`MemoryState`: a base of ``MemoryStore``.

Each method does what the ``StreamsPart`` method of the same name of
:class:`aiodurable._store.Store` does: a write and its journal entry happen together or not at
all, fenced by the workflow's owner, and notify ``(STREAM, workflow_id, key)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._exceptions import OwnershipLost, WorkflowNotFound
from .._records import StepRow
from .._signals import Signal
from .._stream_records import StreamItem, StreamPage, StreamSummary
from ._memory_state import MemoryState, ms, stored

__all__ = ["MemoryStreams"]


class MemoryStreams:
    """The store's stream members, in memory."""

    state: MemoryState

    if TYPE_CHECKING:  # (MemoryStore's own)

        def _owned(self, workflow_id: str) -> bool: ...

        def _lost(self, workflow_id: str) -> OwnershipLost: ...

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
        journal entry and notify; the entry already at the function ID when there is one
        (nothing written), None when written."""
        if not self._owned(workflow_id):
            raise self._lost(workflow_id)
        state = self.state
        journal = state.journal(workflow_id)
        existing = journal.get(step.function_id)
        if existing is not None:
            return existing
        if workflow_id not in state.workflows:
            raise WorkflowNotFound(workflow_id)
        rows = state.streams.setdefault((workflow_id, key), {})
        if offset in rows:
            raise ValueError(f"stream {key!r} of workflow {workflow_id!r} has offset {offset}")
        journal[step.function_id] = stored(step)
        rows[offset] = (step.function_id, fmt, value, ms(step.started_at))
        state.notify(Signal.STREAM, workflow_id, key)
        return None

    async def read_stream(
        self, workflow_id: str, key: str, start: int, limit: int
    ) -> StreamPage | None:
        """The workflow's status and up to ``limit`` rows of stream ``key`` from offset
        ``start``; None for an unknown workflow."""
        wf = self.state.workflows.get(workflow_id)
        if wf is None:
            return None
        rows = self.state.streams.get((workflow_id, key), {})
        offsets = sorted(o for o in rows if o >= start)[:limit]
        items = tuple(StreamItem(o, rows[o][1], rows[o][2]) for o in offsets)
        return StreamPage(wf.status, items)

    async def workflow_streams(
        self, workflow_id: str, *, last: int, clip: int, limit: int = 100
    ) -> list[StreamSummary]:
        """The streams of a workflow by key (the first ``limit``): count, closed, and the last
        ``last`` values cut to ``clip`` bytes."""
        keys = sorted(k for wid, k in self.state.streams if wid == workflow_id)[:limit]
        found = []
        for key in keys:
            rows = self.state.streams[(workflow_id, key)]
            values = sorted(o for o, row in rows.items() if row[2] is not None)
            closed = any(row[2] is None for row in rows.values())
            tail = tuple(_clipped(o, rows[o], clip) for o in values[max(0, len(values) - last) :])
            found.append(StreamSummary(key, len(values), closed, tail))
        return found


def _clipped(offset: int, row: tuple[int, str | None, bytes | None, int], clip: int) -> StreamItem:
    _, fmt, value, created_at = row
    data = value or b""
    return StreamItem(offset, fmt, data[:clip], created_at / 1000, len(data) > clip)
