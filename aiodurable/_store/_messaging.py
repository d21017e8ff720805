"""Messages, events and durable waits: what workflows tell each other, journaled as they do."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence

import asyncpg

from .._exceptions import OwnershipLost, WorkflowNotFound
from .._records import AUTO_KEY_PREFIX, StepRow
from ._base import Conn, StoreBase
from ._rows import ms, step_args, step_row

__all__ = ["MessagingPart"]

Args = tuple[object, ...]
"""One item of a batch: the arguments its statement takes alone."""


class MessagingPart(StoreBase):
    """Send and receive messages, set and read events, record wait deadlines.

    Sends, consumes and events that arrive together share one statement (group commit, see
    :mod:`aiodurable._batch`), with each item's outcome what it would have been alone."""

    def __init__(self, pool: asyncpg.Pool, schema: str, *, retry_for: float = 30.0) -> None:
        super().__init__(pool, schema, retry_for=retry_for)
        self._sends_batch = self._batcher(self._send_from_workflows)
        self._keyed_sends_batch = self._batcher(self._send_many)
        self._events_batch = self._batcher(self._set_events)
        self._consumes_batch = self._batcher(self._consume_many)

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
        if checkpoint is not None:
            sender, step = checkpoint
            sent = await self._sends_batch.submit(
                (*step_args(sender, step), destination_id, topic, fmt, value)
            )
        else:
            # Without a key of the caller's, a key of our own still makes a repeat after a
            # lost answer harmless; such keys are forgotten after a day.
            key = idempotency_key or f"{AUTO_KEY_PREFIX}{uuid.uuid4()}"
            sent = await self._keyed_sends_batch.submit(
                (destination_id, topic, fmt, value, ms(now), key)
            )
        if isinstance(sent, OwnershipLost):
            raise sent
        return sent

    async def _send_from_workflows(self, batch: Sequence[Args]) -> list[bool | OwnershipLost]:
        """Messages sent from workflows, each with its journal entry (``step_args``, then
        destination, topic, format and value)."""
        if len(batch) == 1:
            sender = str(batch[0][0])

            async def op(c: Conn) -> bool:
                if await c.fetch(self.sql.send_from_workflow, *batch[0]):
                    return True
                if not await c.fetchval(self.sql.owned, sender):
                    raise self._lost(sender)  # the fence refused the sender's entry
                return False

            return [await self._alone(op, destination_id=str(batch[0][9]))]
        return await self._run(
            lambda c: self._journaled_batch(c, self.sql.send_from_workflows, batch)
        )

    async def _send_many(self, batch: Sequence[Args]) -> list[bool | OwnershipLost]:
        """Messages sent from outside a workflow, each under its idempotency key (destination,
        topic, format, value, time, key)."""
        if len(batch) == 1:

            async def op(c: Conn) -> bool:
                return bool(await c.fetch(self.sql.send_once, *batch[0]))

            return [await self._alone(op, destination_id=str(batch[0][0]))]
        columns = _columns(batch)
        rows = await self._run(lambda c: c.fetch(self.sql.send_many, *columns))
        sent = {r["ord"] for r in rows}
        return [place in sent for place in range(1, len(batch) + 1)]

    async def _alone(self, op: Callable[[Conn], Awaitable[bool]], destination_id: str) -> bool:
        """Run a send of one message; a function ID taken means it was sent already."""
        try:
            return await self._run(op)
        except asyncpg.UniqueViolationError:
            return False  # the sender's function ID is taken: sent already
        except asyncpg.ForeignKeyViolationError:
            raise WorkflowNotFound(destination_id) from None

    async def _journaled_batch(
        self, c: Conn, sql: str, batch: Sequence[Args]
    ) -> list[bool | OwnershipLost]:
        """Run a batch statement over journal entries (``step_args`` first); per item, True when
        its entry was written with its effect, else OwnershipLost when the fence refused it, else
        False (journaled already)."""
        done = {r["ord"] for r in await c.fetch(sql, *_columns(batch))}
        missed = list({str(args[0]) for place, args in enumerate(batch, 1) if place not in done})
        lost: set[str] = set()
        if missed and self.owner is not None:  # (without an owner, nothing is fenced)
            owned = {r["workflow_id"] for r in await c.fetch(self.sql.owned_many, missed)}
            lost = set(missed) - owned
        outcomes: list[bool | OwnershipLost] = []
        for place, args in enumerate(batch, 1):
            sender = str(args[0])
            outcomes.append(self._lost(sender) if sender in lost else place in done)
        return outcomes

    async def consume_message(
        self, workflow_id: str, topic: str, function_id: int, name: str, now: float
    ) -> StepRow | None:
        """Take the oldest message for ``topic`` and journal it at ``function_id``, atomically.

        Returns the journal entry, or None when no message is queued. When the function ID is
        already journaled, nothing is consumed and the existing entry is returned. Consumes that
        arrive together share one statement."""
        taken = await self._consumes_batch.submit((workflow_id, topic, function_id, name, now))
        if isinstance(taken, OwnershipLost):
            raise taken
        return taken

    async def _consume_many(
        self, batch: Sequence[tuple[str, str, int, str, float]]
    ) -> list[StepRow | OwnershipLost | None]:
        """Consumes of several workflows (workflow, topic, function ID, name, time); the k
        consumers of one (workflow, topic) take its k oldest messages, in the batch's order."""
        if len(batch) == 1:
            return [await self._consume_one(*batch[0])]
        columns = _columns([(w, t, f, n, ms(now)) for w, t, f, n, now in batch])
        attempts = 0

        async def op(c: Conn) -> list[StepRow | OwnershipLost | None]:
            nonlocal attempts
            attempts += 1
            rows = sorted(await c.fetch(self.sql.consume_many, *columns), key=lambda r: r["ord"])
            taken: list[StepRow | OwnershipLost | None] = []
            for (wid, _, fid, name, now), row in zip(batch, rows, strict=True):
                message = None
                if row["format"] is not None:
                    message = StepRow(fid, name, row["format"], row["value"], None, None, now, now)
                taken.append(message if row["owned"] else self._lost(wid))
            if attempts > 1:
                # An earlier attempt whose answer was lost may have consumed and journaled.
                empty = [i for i, t in enumerate(taken) if t is None]
                if empty:
                    found = await c.fetch(
                        self.sql.get_steps,
                        [batch[i][0] for i in empty],
                        [batch[i][2] for i in empty],
                    )
                    entries = {(r["workflow_id"], r["function_id"]): step_row(r) for r in found}
                    for i in empty:
                        taken[i] = entries.get((batch[i][0], batch[i][2]))
            return taken

        return await self._run(op)

    async def _consume_one(
        self, workflow_id: str, topic: str, function_id: int, name: str, now: float
    ) -> StepRow | None:
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
        """Publish an event value with its journal entry and notify; False if already journaled.
        Events set together share one statement."""
        done = await self._events_batch.submit((*step_args(workflow_id, step), key, value))
        if isinstance(done, OwnershipLost):
            raise done
        return done

    async def _set_events(self, batch: Sequence[Args]) -> list[bool | OwnershipLost]:
        """Events set by workflows, each with its journal entry (``step_args``, key, value)."""
        if len(batch) == 1:
            workflow_id = str(batch[0][0])

            async def op(c: Conn) -> bool:
                if await c.fetch(self.sql.set_event, *batch[0]):
                    return True
                if not await c.fetchval(self.sql.owned, workflow_id):
                    raise self._lost(workflow_id)  # the fence refused the entry
                return False

            try:
                return [await self._run(op)]
            except asyncpg.UniqueViolationError:
                return [False]
        return await self._run(lambda c: self._journaled_batch(c, self.sql.set_events, batch))

    async def get_event(self, workflow_id: str, key: str) -> tuple[str, bytes] | None:
        """The latest value of an event as ``(format, bytes)``, or None if never set."""
        row = await self._run(lambda c: c.fetchrow(self.sql.get_event, workflow_id, key))
        return None if row is None else (row["format"], row["value"])

    async def forget_auto_keys(self, older_than: float) -> int:
        """Drop the store's own idempotency keys recorded before ``older_than``."""
        done = await self._run(lambda c: c.execute(self.sql.forget_auto_keys, ms(older_than)))
        return int(done.split()[-1])


def _columns(batch: Sequence[Sequence[object]]) -> list[list[object]]:
    """A batch's items (rows of arguments) as the column arrays an ``unnest`` statement takes."""
    return [list(column) for column in zip(*batch, strict=True)]
