"""``Dispatcher``: start queued workflows as each queue's limits allow.

Every open runtime that begins dispatches every queue declared in its process: it claims queued
workflows in one transaction per queue (the store holds the queue's advisory lock, so the global
concurrency and rate limit hold across processes) and launches them here. A partitioned queue's
limits hold for each partition key, and each pass is shared fairly between the partitions.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from .._clock import wait_woken
from .._queue import registered_queues
from .._records import DequeueRequest
from .._workflow import registered_names

if TYPE_CHECKING:
    from . import Engine

__all__ = ["DISPATCH_BATCH", "Dispatcher"]

DISPATCH_BATCH = 100
"""The most workflows taken from one queue at a time."""


class Dispatcher:
    """The queue dispatch loop of one engine, and what wakes it."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._wanted = asyncio.Event()

    def wake(self) -> None:
        """Look at the queues now (a workflow was enqueued, or one finished)."""
        self._wanted.set()

    async def loop(self) -> None:
        """Start queued workflows as the queues' limits allow; woken by notifications, by rate
        limit windows reopening, and now and then as a safety net."""
        engine = self._engine
        retry_at: dict[str, float] = {}
        self.wake()  # at each (re)start: a wake-up may have been missed meanwhile
        while True:
            # Rate-limit windows are durable time (the clock); the safety re-read is real time.
            window = min(retry_at.values(), default=None)
            await wait_woken(engine.clock, self._wanted, window, engine.options.notify_fallback)
            self._wanted.clear()
            retry_at.clear()
            names = tuple(registered_names())
            for queue in registered_queues():
                limiter = queue.limiter
                result = await engine.store.dequeue(
                    DequeueRequest(
                        queue_name=queue.name,
                        executor_id=engine.executor_id,
                        app_version=engine.app_version,
                        names=names,
                        now=engine.clock.now(),
                        batch=DISPATCH_BATCH,
                        concurrency=queue.concurrency,
                        worker_concurrency=queue.worker_concurrency,
                        rate_limit=None if limiter is None else (limiter.limit, limiter.period),
                        priority_enabled=queue.priority_enabled,
                        partitioned=queue.partitioned,
                    )
                )
                if result.rows:
                    await engine.recovery.launch_rows(result.rows)
                    if len(result.rows) == DISPATCH_BATCH:
                        self.wake()  # there may be more
                if result.retry_at is not None:
                    retry_at[queue.name] = result.retry_at
