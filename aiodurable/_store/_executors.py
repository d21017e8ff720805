"""Executors: heartbeats, the session lock that proves one is alive, and failover.

A live runtime holds its executor ID's session lock (an advisory lock keyed by schema and
executor ID) on its LISTEN connection. Whoever can take that lock knows the executor is gone.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from .._records import WorkflowRow
from ._base import Conn, StoreBase
from ._rows import ms, workflow_row

__all__ = ["ExecutorsPart"]


class ExecutorsPart(StoreBase):
    """Who is alive, and who takes over the workflows of whoever is not."""

    async def try_hold_executor(self, session: asyncpg.Connection, executor_id: str) -> bool:
        """Take ``executor_id``'s session lock on ``session`` (the runtime's LISTEN connection),
        where it stays until that connection closes; False when another live runtime holds it.
        Not retried: a lost session loses the lock, and the runtime takes it again on the next."""
        sql = self.sql.try_lock_executor
        return bool(await session.fetchval(sql, self.schema, executor_id))

    async def _try_xact_lock(self, conn: Conn, executor_id: str) -> bool:
        """Take ``executor_id``'s lock until the end of the current transaction (the statement's
        own, outside one): a pooled connection never keeps it."""
        sql = self.sql.try_xact_lock_executor
        return bool(await conn.fetchval(sql, self.schema, executor_id))

    async def executor_alive(self, executor_id: str) -> bool:
        """Whether a live runtime holds ``executor_id``'s session lock."""
        return not await self._run(lambda c: self._try_xact_lock(c, executor_id))

    async def heartbeat(self, executor_id: str, host: str, pid: int, app_version: str) -> bool:
        """Record that ``executor_id`` is alive now (the database server's clock); return
        whether its row was there already (a takeover deletes it)."""
        sql = self.sql.heartbeat
        return bool(await self._run(lambda c: c.fetchval(sql, executor_id, host, pid, app_version)))

    async def not_owned(self, workflow_ids: Sequence[str], executor_id: str) -> dict[str, str]:
        """Of ``workflow_ids``, those no longer PENDING on ``executor_id``: ID -> where they are
        now, in words (``executor 'x'``, or their status)."""
        sql = self.sql.not_owned
        rows = await self._run(lambda c: c.fetch(sql, list(workflow_ids), executor_id))
        return {
            r["workflow_id"]: (
                f"executor {r['executor_id']!r}"
                if r["status"] == "PENDING"
                else f"{r['status']} (by executor {r['executor_id']!r})"
            )
            for r in rows
        }

    async def silent_executors(self, app_version: str, lease: float, me: str) -> list[str]:
        """Executors of ``app_version`` silent for longer than ``lease`` seconds: no heartbeat
        for that long, counted from the server's own start at the earliest, since a restart of
        PostgreSQL silences everybody at once and is no sign that anyone died."""
        sql = self.sql.silent_executors
        rows = await self._run(lambda c: c.fetch(sql, app_version, me, round(lease * 1000)))
        return [r["executor_id"] for r in rows]

    async def take_over(
        self, dead: str, executor_id: str, app_version: str, names: Sequence[str], now: float
    ) -> list[WorkflowRow] | None:
        """Move a gone executor's PENDING workflows (of these names and this version) to
        ``executor_id``, in one transaction holding the gone executor's lock so one survivor
        takes each; None when that lock is held (the executor is alive after all)."""
        sql = self.sql

        async def op(c: Conn) -> list[WorkflowRow] | None:
            async with c.transaction():
                if not await self._try_xact_lock(c, dead):
                    return None
                rows = await c.fetch(
                    sql.take_over, dead, executor_id, app_version, list(names), ms(now)
                )
                await c.execute(sql.delete_executor, dead)
            return [workflow_row(r) for r in rows]

        return await self._run(op)

    async def release_executor(self, executor_id: str, now: float) -> list[str]:
        """Hand the PENDING workflows of a gone executor to any live runtime of their version."""
        sql = self.sql.release_executor
        rows = await self._run(lambda c: c.fetch(sql, executor_id, ms(now)))
        return [r["workflow_id"] for r in rows]
