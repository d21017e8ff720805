"""Queues: enqueue, deduplicate, and start queued workflows within a queue's limits (of each
partition, for a partitioned queue: :mod:`aiodurable._partitions`)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from .._exceptions import DuplicateWorkflowError
from .._partitions import PartitionLoad, most_per_partition, share
from .._records import Dequeued, DequeueRequest, NewWorkflow, check_new_workflow
from ._base import Conn, StoreBase
from ._rows import enqueue_args, first_claims, ms, workflow_row

__all__ = ["QueuesPart"]


def _window_opens(q: DequeueRequest, recent: list[int]) -> float | None:
    """When the rate limit next admits a start, given the starts within its period (epoch
    milliseconds, newest first); None when it has room now."""
    if q.rate_limit is None:
        return None
    limit, period = q.rate_limit
    if len(recent) < limit:
        return None
    # A slot frees when the oldest of the latest ``limit`` starts leaves the window.
    return recent[limit - 1] / 1000 + period


class QueuesPart(StoreBase):
    """ENQUEUED workflows, and the dispatch that starts them."""

    def __init__(self, pool: asyncpg.Pool, schema: str, *, retry_for: float = 30.0) -> None:
        super().__init__(pool, schema, retry_for=retry_for)
        self._enqueue_batch = self._batcher(self._enqueue_many)

    async def enqueue(self, w: NewWorkflow) -> bool:
        """Record an ENQUEUED workflow and wake the queue's dispatchers; False if its workflow ID
        is taken. :class:`DuplicateWorkflowError` if its deduplication ID is queued or running.
        Enqueues that arrive together share one statement (group commit)."""
        check_new_workflow(w)
        return await self._enqueue_batch.submit(w)

    async def _enqueue_many(self, batch: Sequence[NewWorkflow]) -> list[bool]:
        # A batch that fails (a deduplication ID taken, say) is written again one row at a time
        # by the Batcher, so that only the rows at fault fail.
        if len(batch) == 1:
            return [await self._enqueue_one(batch[0])]
        columns = [list(column) for column in zip(*map(enqueue_args, batch), strict=True)]
        rows = await self._run(lambda c: c.fetch(self.sql.enqueue_many, *columns))
        return first_claims([w.workflow_id for w in batch], {r["workflow_id"] for r in rows})

    async def _enqueue_one(self, w: NewWorkflow) -> bool:
        args = enqueue_args(w)
        try:
            return bool(await self._run(lambda c: c.fetch(self.sql.enqueue, *args)))
        except asyncpg.UniqueViolationError:
            raise DuplicateWorkflowError(
                f"deduplication ID {w.deduplication_id!r} is already queued or running on queue"
                f" {w.queue_name!r}; wait for that workflow, or pass on_duplicate='return' to get"
                " its handle"
            ) from None

    async def deduplicated(self, queue_name: str, deduplication_id: str) -> str | None:
        """The ID of the queued or running workflow holding a deduplication ID."""
        sql = self.sql.deduplicated
        value = await self._run(lambda c: c.fetchval(sql, queue_name, deduplication_id))
        return None if value is None else str(value)

    async def dequeue(self, request: DequeueRequest) -> Dequeued:
        """Start as many ENQUEUED workflows of a queue as its limits allow, for ``executor_id``.

        One transaction under a per-queue advisory lock, so the global concurrency and the rate
        limit hold across every process sharing the database."""
        if request.partitioned:
            return await self._dequeue_partitions(request)
        q, sql = request, self.sql

        async def op(c: Conn) -> Dequeued:
            async with c.transaction():
                await c.execute(sql.queue_lock, self.schema, "queue:" + q.queue_name)
                free = q.batch
                running = await c.fetchrow(sql.queue_running, q.queue_name, q.executor_id)
                assert running is not None
                if q.concurrency is not None:
                    free = min(free, q.concurrency - running["everywhere"])
                if q.worker_concurrency is not None:
                    free = min(free, q.worker_concurrency - running["here"])
                # The rate limit's window: the latest starts within the period, newest first.
                recent: list[int] = []
                if q.rate_limit is not None:
                    limit, period = q.rate_limit
                    window = await c.fetch(
                        sql.queue_window, q.queue_name, ms(q.now - period), limit
                    )
                    recent = [r["started_at"] for r in window]
                    free = min(free, limit - len(recent))
                if free <= 0:
                    return Dequeued([], _window_opens(q, recent))
                rows = await c.fetch(
                    sql.dequeue_by_priority if q.priority_enabled else sql.dequeue_by_age,
                    q.queue_name,
                    q.executor_id,
                    q.app_version,
                    ms(q.now),
                    list(q.names),
                    free,
                )
                # Count the starts just made, so that a window they fill wakes the dispatcher
                # when it opens again (no other event would: nothing is enqueued or finishes).
                recent = [ms(q.now)] * len(rows) + recent
                return Dequeued([workflow_row(r) for r in rows], _window_opens(q, recent))

        return await self._run(op)

    async def _dequeue_partitions(self, q: DequeueRequest) -> Dequeued:
        """:meth:`dequeue` for a partitioned queue: the limits hold for each partition key, and
        the pass is shared fairly between the partitions (:func:`aiodurable._partitions.share`).
        Under the same per-queue lock, so the per-partition limits hold across processes too."""
        sql = self.sql
        limit = 0 if q.rate_limit is None else q.rate_limit[0]
        since = ms(q.now - (0 if q.rate_limit is None else q.rate_limit[1]))

        async def op(c: Conn) -> Dequeued:
            async with c.transaction():
                await c.execute(sql.queue_lock, self.schema, "queue:" + q.queue_name)
                found = await c.fetch(
                    sql.partition_loads,
                    q.queue_name,
                    q.executor_id,
                    q.app_version,
                    list(q.names),
                    most_per_partition(q),
                    since,
                    limit,
                )
                loads = [
                    PartitionLoad(
                        key=r["partition_key"],
                        head=(r["priority"], r["created_at"]),
                        running=r["everywhere"],
                        here=r["here"],
                        recent=tuple(r["recent"]),
                        waiting=r["waiting"],
                    )
                    for r in found
                ]
                plan = share(q, loads, ms(q.now))
                if not plan.takes:
                    return Dequeued([], plan.retry_at)
                rows = await c.fetch(
                    sql.dequeue_partitions,
                    q.queue_name,
                    q.executor_id,
                    q.app_version,
                    ms(q.now),
                    list(q.names),
                    list(plan.takes),
                    list(plan.takes.values()),
                )
                return Dequeued([workflow_row(r) for r in rows], plan.retry_at)

        return await self._run(op)

    async def queue_positions(self, queue_name: str) -> dict[str, int]:
        """The position (1 = next) of each ENQUEUED workflow of a queue, in dispatch order."""
        rows = await self._run(lambda c: c.fetch(self.sql.queue_positions, queue_name))
        return {r["workflow_id"]: i for i, r in enumerate(rows, 1)}
