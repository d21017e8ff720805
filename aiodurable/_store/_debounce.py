"""Debouncing: the open burst of calls per key, and the arguments of its last call."""

from __future__ import annotations

from .._ids import new_workflow_id
from ._base import Conn, StoreBase
from ._rows import ms

__all__ = ["DebouncePart"]


class DebouncePart(StoreBase):
    """Join or open a burst, and close the bursts that are due."""

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
        """Join the open burst of calls of workflow ``name`` with ``key``, giving its workflow
        these inputs, or open a burst whose workflow (ENQUEUED until the burst closes) is
        ``workflow_id``; return the burst's workflow ID. A burst whose workflow was cancelled
        meanwhile is discarded and a new one opened (under a new ID if ``workflow_id`` is
        taken)."""
        sql = self.sql
        wait_ms = None if max_wait is None else ms(max_wait)

        async def op(c: Conn) -> str:
            candidate = workflow_id
            while True:
                args = (name, key, candidate, ms(now), ms(period), wait_ms, fmt, inputs)
                row = await c.fetchrow(sql.debounce_join, *args)
                assert row is not None  # (the burst's row, opened or joined)
                if row["joined"]:
                    return str(row["workflow_id"])
                # Its workflow is not waiting (cancelled, or the ID was taken): start afresh.
                await c.execute(sql.debounce_discard, name, key, row["workflow_id"])
                candidate = new_workflow_id()

        return await self._run(op)

    async def close_due_bursts(self, now: float) -> list[str]:
        """Close every burst due by ``now``: its workflow becomes PENDING for any runtime that
        has its code (and is announced as claimable). Returns those workflows' IDs."""
        rows = await self._run(lambda c: c.fetch(self.sql.debounce_close, ms(now)))
        return [r["workflow_id"] for r in rows]

    async def next_burst_due(self) -> float | None:
        """When the next open burst is due to close (epoch seconds), or None without any."""
        due = await self._run(lambda c: c.fetchval(self.sql.debounce_next))
        return None if due is None else float(due) / 1000
