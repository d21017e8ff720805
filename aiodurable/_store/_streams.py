"""Streams: the values a workflow writes under a key, read in order by anyone."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from .._exceptions import OwnershipLost, WorkflowNotFound
from .._records import StepRow
from .._stream_records import StreamItem, StreamPage, StreamSummary
from ._base import Conn, StoreBase
from ._rows import ms

__all__ = ["StreamsPart"]

# A write: (workflow ID, its journal entry, key, offset, format, value); no value closes.
_Write = tuple[str, StepRow, str, int, str | None, bytes | None]
_Outcome = StepRow | OwnershipLost | None


class StreamsPart(StoreBase):
    """Write, close and read workflow streams."""

    def __init__(self, pool: asyncpg.Pool, schema: str, *, retry_for: float = 30.0) -> None:
        super().__init__(pool, schema, retry_for=retry_for)
        self._streams_batch = self._batcher(self._write_streams)

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
        journal entry ``step``, in one statement shared with the writes arriving at the same
        moment (group commit), and notify its readers. None when written; the entry already
        at the function ID when there is one (nothing is written then);
        :class:`OwnershipLost` when another executor owns the workflow now."""
        try:
            outcome = await self._streams_batch.submit((workflow_id, step, key, offset, fmt, value))
        except asyncpg.ForeignKeyViolationError:
            raise WorkflowNotFound(workflow_id) from None
        if isinstance(outcome, OwnershipLost):
            raise outcome
        return outcome

    async def _write_streams(self, batch: Sequence[_Write]) -> list[_Outcome]:
        columns: tuple[list[object], ...] = ([], [], [], [], [], [], [], [])
        for wid, step, key, offset, fmt, value in batch:
            row = (wid, step.function_id, step.name, ms(step.started_at), key, offset, fmt, value)
            for column, item in zip(columns, row, strict=True):
                column.append(item)
        sql = self.sql

        async def op(c: Conn) -> list[_Outcome]:
            if len(batch) == 1:
                found = await c.fetch(sql.write_stream, *(column[0] for column in columns))
            else:
                found = await c.fetch(sql.write_streams, *columns)
            written = {(r["workflow_id"], r["function_id"]) for r in found}
            return await self._entry_outcomes(
                c, [(w, s.function_id) for w, s, *_ in batch], written
            )

        return await self._run(op)

    async def read_stream(
        self, workflow_id: str, key: str, start: int, limit: int
    ) -> StreamPage | None:
        """The workflow's status and up to ``limit`` rows of its stream ``key`` from offset
        ``start``, in one snapshot; None when the workflow is unknown."""
        rows = await self._run(
            lambda c: c.fetch(self.sql.read_stream, workflow_id, key, start, limit)
        )
        if not rows:
            return None
        items = tuple(
            StreamItem(r["offset"], r["format"], r["value"])
            for r in rows
            if r["offset"] is not None
        )
        return StreamPage(rows[0]["status"], items)

    async def workflow_streams(
        self, workflow_id: str, *, last: int, clip: int, limit: int = 100
    ) -> list[StreamSummary]:
        """The streams of a workflow (the first ``limit`` keys): each one's count of values,
        whether it was closed, and its last ``last`` values, over ``clip`` bytes cut to it."""
        rows = await self._run(
            lambda c: c.fetch(self.sql.workflow_streams, workflow_id, last, clip, limit)
        )
        found: dict[str, tuple[int, bool, list[StreamItem]]] = {}
        for r in rows:
            _, _, items = found.setdefault(r["key"], (r["count"], r["closed"], []))
            if r["offset"] is not None:
                at = r["created_at"] / 1000
                items.append(StreamItem(r["offset"], r["format"], r["value"], at, r["clipped"]))
        return [
            StreamSummary(key, count, closed, tuple(items))
            for key, (count, closed, items) in found.items()
        ]
