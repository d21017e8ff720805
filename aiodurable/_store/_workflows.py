"""Workflow rows: start, read, finish, change status, find the ones to recover, and adopt
other versions' unfinished workflows into the current one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import asyncpg

from .._exceptions import WorkflowNotFound
from .._records import NewWorkflow, WorkflowRow, check_new_workflow, storable
from ._base import StoreBase
from ._rows import Finish, first_claims, insert_args, ms, workflow_row

__all__ = ["WorkflowsPart"]


class _Adoption(NamedTuple):
    """One row of ``Statements.adopt``: a workflow, as it was read, and its new version and
    owner."""

    workflow_id: str
    old_version: str
    status: str
    old_executor: str
    new_version: str
    new_executor: str
    at: int


class WorkflowsPart(StoreBase):
    """The life of a workflow row, from its start to its final status."""

    def __init__(self, pool: asyncpg.Pool, schema: str, *, retry_for: float = 30.0) -> None:
        super().__init__(pool, schema, retry_for=retry_for)
        self._insert_batch = self._batcher(self._insert_many)
        self._finish_batch = self._batcher(self._finish_many)
        self._adopt_batch = self._batcher(self._adopt_many)

    async def insert_workflow(self, w: NewWorkflow) -> bool:
        """Record a new workflow; return False if its ID is already taken. Starts that arrive
        together share one statement (group commit)."""
        check_new_workflow(w)
        return await self._insert_batch.submit(insert_args(w))

    async def _insert_many(self, batch: Sequence[tuple[object, ...]]) -> list[bool]:
        """Record several new workflows in one statement (group commit)."""
        if len(batch) == 1:
            inserted = await self._run(lambda c: c.fetchval(self.sql.insert_workflow, *batch[0]))
            return [bool(inserted)]
        columns = [list(column) for column in zip(*batch, strict=True)]
        rows = await self._run(lambda c: c.fetch(self.sql.insert_workflows, *columns))
        return first_claims([str(args[0]) for args in batch], {r["workflow_id"] for r in rows})

    async def get_workflow(self, workflow_id: str) -> WorkflowRow | None:
        """The workflow's row, or None (also for an ID no row can have, such as one with NUL)."""
        if not isinstance(workflow_id, str):
            raise ValueError(f"a workflow ID must be a string, not {workflow_id!r:.80}")
        if not storable(workflow_id):
            return None
        row = await self._run(lambda c: c.fetchrow(self.sql.get_workflow, workflow_id))
        return None if row is None else workflow_row(row)

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
        """Write a PENDING workflow's final status and notify waiters; False if not PENDING."""
        return await self._finish_batch.submit(
            Finish(workflow_id, status, fmt, output, error, ms(now))
        )

    async def _finish_many(self, batch: Sequence[Finish]) -> list[bool]:
        """Write several final statuses in one statement (group commit)."""
        if len(batch) == 1:
            rows = await self._run(lambda c: c.fetch(self.sql.finish, *batch[0]))
            return [bool(rows)]
        columns = [list(column) for column in zip(*batch, strict=True)]
        rows = await self._run(lambda c: c.fetch(self.sql.finish_many, *columns))
        done = {r["workflow_id"] for r in rows}
        return [f.workflow_id in done for f in batch]

    async def set_status(
        self, workflow_id: str, status: str, *, only_from: Sequence[str], now: float
    ) -> bool:
        """Move a workflow to ``status`` if it is in one of ``only_from``; notify waiters."""
        args = (workflow_id, status, ms(now), list(only_from))
        rows = await self._run(lambda c: c.fetch(self.sql.set_status, *args))
        return bool(rows)

    async def pending_workflows(self, executor_id: str, app_version: str) -> list[tuple[str, str]]:
        """``(workflow ID, name)`` of the PENDING workflows of an executor on an application
        version, oldest first."""
        rows = await self._run(lambda c: c.fetch(self.sql.pending, executor_id, app_version))
        return [(r["workflow_id"], r["name"]) for r in rows]

    async def claim_for_recovery(
        self, workflow_ids: Sequence[str], now: float
    ) -> list[WorkflowRow]:
        """Count one more recovery attempt on each still-PENDING workflow; return their rows."""
        ids = list(workflow_ids)
        rows = await self._run(lambda c: c.fetch(self.sql.claim, ids, ms(now)))
        return [workflow_row(r) for r in rows]

    async def claim_unassigned(
        self, names: Sequence[str], executor_id: str, app_version: str, now: float
    ) -> list[WorkflowRow]:
        """Take the PENDING workflows no executor runs, of these names and of this application
        version (or of none), for ``executor_id``."""
        sql = self.sql.claim_unassigned
        rows = await self._run(
            lambda c: c.fetch(sql, list(names), executor_id, app_version, ms(now))
        )
        return [workflow_row(r) for r in rows]

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
        and ID of the last one of the previous page)."""
        start, last_id = (-1, "") if after is None else (ms(after[0]), after[1])
        ids = None if workflow_ids is None else list(workflow_ids)
        args = (app_version, from_version, ids, start, last_id, limit)
        rows = await self._run(lambda c: c.fetch(self.sql.upgrade_candidates, *args))
        return [workflow_row(r) for r in rows]

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
        or not at all."""
        item = _Adoption(
            workflow_id, old_version, old_status, old_executor, new_version, new_executor, ms(now)
        )
        return await self._adopt_batch.submit(item)

    async def _adopt_many(self, batch: Sequence[_Adoption]) -> list[bool]:
        columns = [list(column) for column in zip(*batch, strict=True)]
        rows = await self._run(lambda c: c.fetch(self.sql.adopt, *columns))
        done = {r["workflow_id"] for r in rows}
        return [a.workflow_id in done for a in batch]
