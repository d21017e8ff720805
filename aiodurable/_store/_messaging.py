"""Messages, events and durable waits: what workflows tell each other, journaled as they do."""

from __future__ import annotations

import uuid

import asyncpg

from .._exceptions import WorkflowNotFound
from .._records import AUTO_KEY_PREFIX, StepRow
from ._base import Conn, StoreBase
from ._rows import ms, step_args, step_row

__all__ = ["MessagingPart"]


class MessagingPart(StoreBase):
    """Send and receive messages, set and read events, record wait deadlines."""

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
        """Queue a message and notify its receiver; False when it was already sent (its
        idempotency key or its sender's journal entry says so). ``checkpoint`` is the sending
        workflow's journal entry, written in the same statement.
        :class:`WorkflowNotFound` for an unknown destination."""

        async def op(c: Conn) -> bool:
            if checkpoint is not None:
                sender, step = checkpoint
                sql = self.sql.send_from_workflow
                args: tuple[object, ...] = (
                    *step_args(sender, step),
                    destination_id,
                    topic,
                    fmt,
                    value,
                )
            else:
                # Without a key of the caller's, a key of our own still makes a repeat after a
                # lost answer harmless; such keys are forgotten after a day.
                key = idempotency_key or f"{AUTO_KEY_PREFIX}{uuid.uuid4()}"
                sql = self.sql.send_once
                args = (destination_id, topic, fmt, value, ms(now), key)
            if await c.fetch(sql, *args):
                return True
            if checkpoint is not None and not await c.fetchval(self.sql.owned, checkpoint[0]):
                raise self._lost(checkpoint[0])  # the fence refused the sender's entry
            return False

        try:
            return await self._run(op)
        except asyncpg.UniqueViolationError:
            return False  # the sender's function ID is taken: sent already
        except asyncpg.ForeignKeyViolationError:
            raise WorkflowNotFound(destination_id) from None

    async def consume_message(
        self, workflow_id: str, topic: str, function_id: int, name: str, now: float
    ) -> StepRow | None:
        """Take the oldest message for ``topic`` and journal it at ``function_id``, atomically.

        Returns the journal entry, or None when no message is queued. When the function ID is
        already journaled, nothing is consumed and the existing entry is returned."""

        attempts = 0

        async def op(c: Conn) -> StepRow | None:
            nonlocal attempts
            attempts += 1
            try:
                row = await c.fetchrow(
                    self.sql.consume, workflow_id, topic, function_id, name, ms(now)
                )
            except asyncpg.UniqueViolationError:
                pass
            else:
                assert row is not None  # (one row always: whether owned, and the message)
                if not row["owned"]:
                    raise self._lost(workflow_id)
                if row["format"] is not None:
                    return StepRow(
                        function_id, name, row["format"], row["value"], None, None, now, now
                    )
                if attempts == 1:
                    return None
            # Journaled already: by another execution, or by our own first attempt whose answer
            # was lost with its connection (the message it consumed is in the entry).
            existing = await c.fetchrow(self.sql.get_step, workflow_id, function_id)
            return None if existing is None else step_row(existing)

        return await self._run(op)

    async def wait_deadline(self, workflow_id: str, function_id: int, deadline: float) -> float:
        """Record the deadline of a wait at ``function_id``, or return the one recorded first."""
        recorded = await self._run(
            lambda c: c.fetchval(self.sql.wait_deadline, workflow_id, function_id, ms(deadline))
        )
        return float(recorded) / 1000

    async def set_event(
        self, workflow_id: str, step: StepRow, key: str, fmt: str, value: bytes
    ) -> bool:
        """Publish an event value with its journal entry and notify; False if already journaled."""
        args = (*step_args(workflow_id, step), key, value)

        async def op(c: Conn) -> bool:
            if await c.fetch(self.sql.set_event, *args):
                return True
            if not await c.fetchval(self.sql.owned, workflow_id):
                raise self._lost(workflow_id)  # the fence refused the entry
            return False

        try:
            return await self._run(op)
        except asyncpg.UniqueViolationError:
            return False

    async def get_event(self, workflow_id: str, key: str) -> tuple[str, bytes] | None:
        """The latest value of an event as ``(format, bytes)``, or None if never set."""
        row = await self._run(lambda c: c.fetchrow(self.sql.get_event, workflow_id, key))
        return None if row is None else (row["format"], row["value"])

    async def forget_auto_keys(self, older_than: float) -> int:
        """Drop the store's own idempotency keys recorded before ``older_than``."""
        done = await self._run(lambda c: c.execute(self.sql.forget_auto_keys, ms(older_than)))
        return int(done.split()[-1])
