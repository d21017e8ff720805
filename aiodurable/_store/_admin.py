"""Management and the console: list, resume and fork workflows; read-only views for pages."""

from __future__ import annotations

from collections.abc import Iterable

import asyncpg

from .._exceptions import DuplicateWorkflowError
from .._records import EventRow, MessageRow, NewWorkflow, WorkflowBrief, WorkflowQuery, WorkflowRow
from ._base import Conn, StoreBase
from ._rows import ms, workflow_row

__all__ = ["AdminPart"]


class AdminPart(StoreBase):
    """What operators do to workflows, and what the console reads (none of the reads write)."""

    async def list_workflows(self, query: WorkflowQuery) -> list[WorkflowRow]:
        """Workflows matching ``query``, newest or oldest first, without or with their data."""
        sql, args = self.sql.list_workflows(query)
        rows = await self._run(lambda c: c.fetch(sql, *args))
        return [workflow_row(r) for r in rows]

    async def last_function_id(self, workflow_id: str) -> int:
        """The highest journaled function ID of a workflow (0 when none)."""
        return int(await self._run(lambda c: c.fetchval(self.sql.last_function_id, workflow_id)))

    async def other_version_counts(self, app_version: str) -> list[tuple[str, str, int]]:
        """``(application version, status, count)`` of the PENDING and ENQUEUED workflows
        recorded on versions other than ``app_version`` (and not waiting for any version)."""
        rows = await self._run(lambda c: c.fetch(self.sql.other_version_counts, app_version))
        return [(r["app_version"], r["status"], r["n"]) for r in rows]

    async def resume(
        self, workflow_id: str, executor_id: str, app_version: str, now: float
    ) -> WorkflowRow | None:
        """Make a CANCELLED, MAX_RECOVERY_ATTEMPTS_EXCEEDED or ENQUEUED workflow PENDING again on
        ``executor_id`` ('' = any live runtime) and ``app_version``; None if it was in no such
        state."""
        sql = self.sql.resume
        row = await self._run(
            lambda c: c.fetchrow(sql, workflow_id, executor_id, app_version, ms(now))
        )
        return None if row is None else workflow_row(row)

    async def fork(self, source_id: str, new: NewWorkflow, below: int) -> None:
        """Record ``new`` with the source's journal entries (and the events and stream values
        they wrote) whose function ID is below ``below``, in one transaction."""
        sql = self.sql

        async def op(c: Conn) -> None:
            # The copied entries belong to the fork, which may run elsewhere: none of these
            # statements is fenced.
            async with c.transaction():
                await c.execute(
                    sql.fork_insert,
                    new.workflow_id,
                    new.name,
                    new.format,
                    new.inputs,
                    ms(new.created_at),
                    new.app_version,
                    new.executor_id,
                )
                await c.execute(sql.fork_copy_steps, new.workflow_id, source_id, below)
                await c.execute(sql.fork_copy_history, new.workflow_id, source_id, below)
                await c.execute(sql.fork_copy_streams, new.workflow_id, source_id, below)
                await c.execute(
                    sql.fork_copy_events, new.workflow_id, source_id, below, ms(new.created_at)
                )
                await c.execute(sql.fork_notify, new.workflow_id)

        try:
            await self._run(op)
        except asyncpg.UniqueViolationError:
            raise DuplicateWorkflowError(
                f"workflow ID {new.workflow_id!r} is already taken; choose another for the fork"
            ) from None

    # -- the console's reads -----------------------------------------------------------------

    async def workflow_events(self, workflow_id: str, *, clip: int) -> list[EventRow]:
        """The events a workflow has set, by key; values over ``clip`` bytes cut to it."""
        rows = await self._run(lambda c: c.fetch(self.sql.events, workflow_id, clip))
        return [
            EventRow(r["key"], r["format"], r["value"], r["updated_at"] / 1000, r["clipped"])
            for r in rows
        ]

    async def workflow_messages(
        self, workflow_id: str, limit: int, *, clip: int
    ) -> list[MessageRow]:
        """The first ``limit`` messages sent to a workflow and not yet received, oldest first;
        values over ``clip`` bytes cut to it."""
        rows = await self._run(lambda c: c.fetch(self.sql.messages, workflow_id, limit, clip))
        return [
            MessageRow(
                r["message_id"],
                r["topic"],
                r["format"],
                r["value"],
                r["created_at"] / 1000,
                r["clipped"],
            )
            for r in rows
        ]

    async def workflow_briefs(self, workflow_ids: Iterable[str]) -> dict[str, WorkflowBrief]:
        """Name and status of the given workflows (the unknown ones are missing)."""
        ids = list(workflow_ids)
        if not ids:
            return {}
        rows = await self._run(lambda c: c.fetch(self.sql.workflow_briefs, ids))
        return {
            r["workflow_id"]: WorkflowBrief(r["workflow_id"], r["name"], r["status"]) for r in rows
        }

    async def list_watermark(self) -> tuple[object, ...] | None:
        """Something that changes when a workflow is created (the newest creation time and how
        many workflows share it): one backward step of the ``created_at`` index."""
        row = await self._run(lambda c: c.fetchrow(self.sql.list_watermark))
        return None if row is None else tuple(row.values())

    async def workflow_watermark(self, workflow_id: str) -> tuple[object, ...] | None:
        """Something that changes when a workflow's status changes or its journal grows."""
        row = await self._run(lambda c: c.fetchrow(self.sql.workflow_watermark, workflow_id))
        return None if row is None else tuple(row.values())

    async def enqueued_positions(
        self, queue_name: str, workflow_ids: Iterable[str]
    ) -> dict[str, int]:
        """The position (1 = next, in dispatch order) of each of ``workflow_ids`` that waits
        ENQUEUED in ``queue_name``. The database ranks the queue and sends back only the rows
        asked for, so a queue of 100,000 costs a page of 50 rows 50 rows."""
        ids = list(workflow_ids)
        if not ids:
            return {}
        rows = await self._run(lambda c: c.fetch(self.sql.ranked_positions, queue_name, ids))
        return {r["workflow_id"]: r["position"] for r in rows}
