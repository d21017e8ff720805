"""Group commit: writes that arrive together go to PostgreSQL in one round trip.

A :class:`Batcher` sends a lone write at once, from the caller's own task. While
``max_in_flight`` batches are on their way, later writes wait in a queue and leave together in
the next batch, as one statement (one transaction, one commit). Each caller resumes only when
the statement carrying its row has committed, so a checkpoint is as durable as if it had been
written alone; concurrent workflows simply share commits, which is where the cost of a write
lies.

A batch is one statement, so one row PostgreSQL refuses fails it whole. Values are validated
before they join a batch (``_validate``), and a batch that fails all the same is written again
one item at a time, so that only the callers whose own item fails get an error, and an error
about their own item: never one raised by a statement that carried other callers' rows. A batch
that failed because the database could not be reached (an ``OSError``, as ``ConnectionError`` and
``DatabaseUnavailable`` are) fails whole: its items would fail alone too.
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
    item, in order, or raises. When a flush of several items raises, each item is flushed again
    alone and its caller gets that flush's outcome or exception; when it raises one of
    ``fail_whole`` (by default ``OSError``: the database is out of reach), or a flush of one
    item raises, every caller of that batch gets the exception. ``flush`` must therefore be safe
    to repeat for the items of a failed batch (a failed statement wrote nothing)."""

    def __init__(
        self,
        flush: Callable[[Sequence[I]], Awaitable[Sequence[O]]],
        *,
        max_batch: int = 256,
        max_in_flight: int = 2,
        fail_whole: tuple[type[BaseException], ...] = (OSError,),
    ) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._fail_whole = fail_whole
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
        outcomes: Sequence[O] | None = None
        try:
            outcomes = await self._flush([item for item, _ in batch])
        except Exception as exc:
            if len(batch) == 1 or isinstance(exc, self._fail_whole):
                _fail(batch, exc)
                return
        except BaseException as exc:  # cancelled (the store closes), or the program stops
            _fail(batch, exc)
            raise
        if outcomes is None:
            # Out of the handler: the callers' own errors must not carry the batch's, which
            # names other callers' values, as their context.
            await self._one_by_one(batch)
            return
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if not future.done():
                future.set_result(outcome)

    async def _one_by_one(self, batch: list[tuple[I, asyncio.Future[O]]]) -> None:
        """Flush each item of a failed batch alone, giving each caller its own outcome.

        Items whose callers were cancelled are written too, as they would have been with the
        batch. One at a time, in order: a retry is the rare path, and it must not take every
        pooled connection at once."""
        for index, (item, future) in enumerate(batch):
            try:
                outcome = (await self._flush([item]))[0]
            except Exception as exc:
                if not future.done():
                    future.set_exception(exc)
                if isinstance(exc, self._fail_whole):
                    _fail(batch[index + 1 :], exc)  # out of reach: the rest would fail alike
                    return
            except BaseException as exc:
                _fail(batch[index:], exc)
                raise
            else:
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


def _fail(batch: Sequence[tuple[object, asyncio.Future[O]]], exc: BaseException) -> None:
    """Give ``exc`` to every caller of ``batch`` still waiting."""
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)
