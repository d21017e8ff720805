"""Group commit: writes that arrive together go to PostgreSQL in one round trip.

A :class:`Batcher` sends a lone write at once, from the caller's own task. While
``max_in_flight`` batches are on their way, later writes wait in a queue and leave together in
the next batch, as one statement (one transaction, one commit). Each caller resumes only when
the statement carrying its row has committed, so a checkpoint is as durable as if it had been
written alone; concurrent workflows simply share commits, which is where the cost of a write
lies.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["Batcher"]

I = TypeVar("I")  # noqa: E741 (item)
O = TypeVar("O")  # noqa: E741 (outcome)


class Batcher(Generic[I, O]):
    """Collects items and hands them to ``flush`` in batches; ``flush`` returns one outcome per
    item, in order, or raises (then every caller of that batch gets the exception)."""

    def __init__(
        self,
        flush: Callable[[Sequence[I]], Awaitable[Sequence[O]]],
        *,
        max_batch: int = 256,
        max_in_flight: int = 2,
    ) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._queue: list[tuple[I, asyncio.Future[O]]] = []
        self._flights: set[asyncio.Task[None]] = set()
        self._inline = 0

    def _busy(self) -> int:
        """Batches on their way: written by their callers, or flying in tasks."""
        return self._inline + len(self._flights)

    async def submit(self, item: I) -> O:
        """Write ``item`` with the next batch; return its outcome once that batch committed."""
        if not self._queue and self._busy() < self._max_in_flight:
            # Alone: the caller writes its own row, with no task in between (sequential latency).
            self._inline += 1
            try:
                return (await self._flush([item]))[0]
            finally:
                self._inline -= 1
                if self._queue and self._busy() < self._max_in_flight:
                    self._take_off()
        future: asyncio.Future[O] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._busy() < self._max_in_flight:
            self._take_off()
        # A caller that is cancelled cancels only its own future: the batch flies on, as a
        # write already sent would.
        return await future

    def _take_off(self) -> None:
        batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
        flight = asyncio.get_running_loop().create_task(self._fly(batch))
        self._flights.add(flight)
        flight.add_done_callback(self._landed)

    def _landed(self, flight: asyncio.Task[None]) -> None:
        self._flights.discard(flight)
        if self._queue and self._busy() < self._max_in_flight:
            self._take_off()

    async def _fly(self, batch: list[tuple[I, asyncio.Future[O]]]) -> None:
        try:
            outcomes = await self._flush([item for item, _ in batch])
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if not future.done():
                future.set_result(outcome)

    async def close(self) -> None:
        """Cancel the batches in flight and fail the writes still queued."""
        queued, self._queue = self._queue, []
        for _, future in queued:
            if not future.done():
                future.set_exception(asyncio.CancelledError("the store closed"))
        flights = list(self._flights)
        for flight in flights:
            flight.cancel()
        await asyncio.gather(*flights, return_exceptions=True)
