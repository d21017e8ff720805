"""The journal: the recorded outcome of each durable call of a workflow, by function ID."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from .._exceptions import OwnershipLost
from .._records import StepRow
from ._base import Conn, StoreBase
from ._rows import step_args, step_row

__all__ = ["JournalPart"]


class JournalPart(StoreBase):
    """Journal reads, and journal writes fenced by the workflow's owner."""

    def __init__(self, pool: asyncpg.Pool, schema: str, *, retry_for: float = 30.0) -> None:
        super().__init__(pool, schema, retry_for=retry_for)
        self._steps_batch = self._batcher(self._record_steps)

    async def load_journal(self, workflow_id: str) -> dict[int, StepRow]:
        """Every journal entry of a workflow, by function ID: one query."""
        rows = await self._run(lambda c: c.fetch(self.sql.journal, workflow_id))
        return {r["function_id"]: step_row(r) for r in rows}

    async def load_journals(self, workflow_ids: Sequence[str]) -> dict[str, dict[int, StepRow]]:
        """The journals of several workflows in one query."""
        ids = list(workflow_ids)
        rows = await self._run(lambda c: c.fetch(self.sql.journals, ids))
        journals: dict[str, dict[int, StepRow]] = {wid: {} for wid in ids}
        for r in rows:
            journals[r["workflow_id"]][r["function_id"]] = step_row(r)
        return journals

    async def record_step_on(self, conn: Conn, workflow_id: str, step: StepRow) -> StepRow | None:
        """:meth:`record_step` on a given connection, inside the caller's transaction;
        :class:`OwnershipLost` when another executor owns the workflow now."""
        sql = self.sql.record_step_unfenced if self.owner is None else self.sql.record_step_fenced
        written = await conn.fetchval(sql, *step_args(workflow_id, step))
        if written:
            return None
        # Not written: the entry exists already, or the fence refused it.
        if not await conn.fetchval(self.sql.owned, workflow_id):
            raise self._lost(workflow_id)
        existing = await conn.fetchrow(self.sql.get_step, workflow_id, step.function_id)
        return None if existing is None else step_row(existing)

    async def get_step(self, workflow_id: str, function_id: int) -> StepRow | None:
        """One journal entry, or None."""
        row = await self._run(lambda c: c.fetchrow(self.sql.get_step, workflow_id, function_id))
        return None if row is None else step_row(row)

    async def record_step(self, workflow_id: str, step: StepRow) -> StepRow | None:
        """Write a journal entry: one round trip, shared with the entries written at the same
        moment (group commit). If the function ID already has one (another executor got there
        first), return that entry instead; None when ours was written; :class:`OwnershipLost`
        when another executor owns the workflow now."""
        outcome = await self._steps_batch.submit((workflow_id, step))
        if isinstance(outcome, OwnershipLost):
            raise outcome
        return outcome

    async def _record_steps(
        self, batch: Sequence[tuple[str, StepRow]]
    ) -> list[StepRow | OwnershipLost | None]:
        if len(batch) == 1:
            wid, step = batch[0]
            return [await self._run(lambda c: self.record_step_on(c, wid, step))]
        columns = [
            list(column) for column in zip(*(step_args(w, s) for w, s in batch), strict=True)
        ]
        sql = self.sql

        async def op(c: Conn) -> list[StepRow | OwnershipLost | None]:
            written = {
                (r["workflow_id"], r["function_id"])
                for r in await c.fetch(sql.record_steps, *columns)
            }
            return await self._entry_outcomes(c, [(w, s.function_id) for w, s in batch], written)

        return await self._run(op)
