"""Retention: deleting finished workflows with everything they recorded, in batches."""

from __future__ import annotations

from ._base import Conn, StoreBase
from ._rows import ms

__all__ = ["RetentionKey", "RetentionPart"]

RetentionKey = tuple[int, str]
"""Where a finished workflow stands in the order of collection: its last update (epoch
milliseconds, as the table holds it), then its ID."""


class RetentionPart(StoreBase):
    """Garbage collection of finished workflows."""

    async def retention_bound(self, before: float | None, keep: int | None) -> RetentionKey | None:
        """The key (see :data:`RetentionKey`) below which finished workflows are collected:
        those last updated before ``before`` (epoch seconds) that are not among the ``keep``
        newest finished ones; either may be None (no limit of that kind). None when no
        finished workflow can be collected, as when there are no more than ``keep`` of them."""
        bound: RetentionKey = (2**63 - 1, "") if before is None else (ms(before), "")
        if keep:
            row = await self._run(lambda c: c.fetchrow(self.sql.retention_nth, keep - 1))
            if row is None:
                return None
            bound = min(bound, (row["updated_at"], row["workflow_id"]))
        return bound

    async def collect_finished(
        self, after: RetentionKey, bound: RetentionKey, limit: int
    ) -> tuple[int, RetentionKey | None]:
        """Delete, in one short transaction, up to ``limit`` finished workflows whose key lies
        strictly between ``after`` and ``bound``, oldest first, with every row keyed by their
        IDs; rows another transaction has locked are passed over, and so is a child whose
        parent is PENDING or ENQUEUED. Returns how many were deleted and the key of the last,
        from which the next batch goes on (None when none was)."""

        async def op(c: Conn) -> tuple[int, RetentionKey | None]:
            row = await c.fetchrow(self.sql.collect_finished, *after, *bound, limit)
            assert row is not None  # (one row, whatever was deleted)
            last = None if row["workflow_id"] is None else (row["updated_at"], row["workflow_id"])
            return int(row["deleted"]), last

        return await self._run(op)
