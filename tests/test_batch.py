"""Group commit: the batcher's policy, driven without a database."""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Sequence

import pytest

from aiodurable._batch import Batcher

pytestmark = pytest.mark.anyio


class Recorder:
    """A flush that records each batch and holds it until released."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.arrived = asyncio.Event()
        self.fail: BaseException | None = None

    async def flush(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        self.arrived.set()
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return [i * 10 for i in items]


async def test_a_lone_write_goes_out_at_once() -> None:
    """With nothing in flight, a write is flushed immediately, alone."""
    recorder = Recorder()
    recorder.release.set()
    batcher: Batcher[int, int] = Batcher(recorder.flush)
    assert await batcher.submit(1) == 10
    assert recorder.batches == [[1]]


async def test_writes_arriving_together_share_one_flush() -> None:
    """While the allowed flushes are in flight, later writes wait and leave as one batch, and
    each caller gets its own outcome only after its batch committed."""
    recorder = Recorder()
    batcher: Batcher[int, int] = Batcher(recorder.flush, max_in_flight=1)
    first = asyncio.ensure_future(batcher.submit(1))
    await recorder.arrived.wait()
    rest = [asyncio.ensure_future(batcher.submit(i)) for i in range(2, 7)]
    await asyncio.sleep(0)
    assert not any(f.done() for f in rest)
    recorder.release.set()
    assert await first == 10
    assert [await f for f in rest] == [20, 30, 40, 50, 60]
    assert recorder.batches == [[1], [2, 3, 4, 5, 6]]


async def test_batches_are_capped() -> None:
    """A queue longer than max_batch leaves in several batches."""
    recorder = Recorder()
    batcher: Batcher[int, int] = Batcher(recorder.flush, max_batch=2, max_in_flight=1)
    first = asyncio.ensure_future(batcher.submit(0))
    await recorder.arrived.wait()
    rest = [asyncio.ensure_future(batcher.submit(i)) for i in range(1, 6)]
    recorder.release.set()
    await asyncio.gather(first, *rest)
    assert recorder.batches == [[0], [1, 2], [3, 4], [5]]


class Picky:
    """A flush that, like one SQL statement, refuses a whole batch holding a negative item,
    naming every item of the batch in its error (as asyncpg's errors name a whole array)."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.lost_at: int | None = None  # an item whose flush finds the database gone
        self.hold = asyncio.Event()
        self.held = asyncio.Event()

    async def flush(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        if len(self.batches) == 1:  # the first write stays in flight while the rest queue
            self.held.set()
            await self.hold.wait()
        if any(i < 0 for i in items):
            raise ValueError(f"cannot write {list(items)}")
        if self.lost_at in items:
            raise ConnectionError(f"the database went away while writing {list(items)}")
        return [i * 10 for i in items]


async def _submit_while_held(
    picky: Picky, batcher: Batcher[int, int], items: list[int]
) -> list[object]:
    """Submit ``items`` while the first write is in flight, so that they leave as one batch."""
    first = asyncio.ensure_future(batcher.submit(0))
    await picky.held.wait()
    rest = [asyncio.ensure_future(batcher.submit(i)) for i in items]
    picky.hold.set()
    assert await first == 0
    return list(await asyncio.gather(*rest, return_exceptions=True))


async def test_a_failed_batch_is_written_again_item_by_item() -> None:
    """When a batch fails for an item of its own, each item is flushed again alone: the other
    callers get their outcomes, and the caller at fault gets an error about its item only."""
    picky = Picky()
    batcher: Batcher[int, int] = Batcher(picky.flush, max_in_flight=1)
    results = await _submit_while_held(picky, batcher, [1, 2, -3, 4])
    assert results[:2] == [10, 20] and results[3] == 40
    assert isinstance(results[2], ValueError)
    assert str(results[2]) == "cannot write [-3]"
    # Not even chained to the batch's error, which named the other callers' items.
    assert "[1, 2" not in "".join(traceback.format_exception(results[2]))
    assert picky.batches == [[0], [1, 2, -3, 4], [1], [2], [-3], [4]]


async def test_a_batch_that_cannot_reach_the_database_fails_whole() -> None:
    """Every caller of a batch whose flush raised a connection error gets that exception, and
    the items are not flushed again one by one (alone they would fail alike)."""
    picky = Picky()
    picky.lost_at = 2
    batcher: Batcher[int, int] = Batcher(picky.flush, max_in_flight=1)
    results = await _submit_while_held(picky, batcher, [1, 2, 3])
    assert all(isinstance(r, ConnectionError) for r in results)
    assert picky.batches == [[0], [1, 2, 3]]


async def test_losing_the_database_during_the_retry_fails_the_rest_at_once() -> None:
    """If the database goes away while a failed batch is written item by item, the items not
    yet written fail with that error without being tried (each would wait for it alike)."""
    picky = Picky()
    picky.lost_at = 2
    batcher: Batcher[int, int] = Batcher(picky.flush, max_in_flight=1)
    results = await _submit_while_held(picky, batcher, [1, 2, -3, 4])
    assert results[0] == 10
    assert all(isinstance(r, ConnectionError) for r in results[1:])
    assert picky.batches == [[0], [1, 2, -3, 4], [1], [2]]


async def test_a_lone_failed_write_is_not_tried_again() -> None:
    """A write flushed alone that fails is not retried: its caller gets the error at once."""
    picky = Picky()
    picky.hold.set()
    batcher: Batcher[int, int] = Batcher(picky.flush)
    with pytest.raises(ValueError, match=r"cannot write \[-1\]"):
        await batcher.submit(-1)
    assert picky.batches == [[-1]]


async def test_a_cancelled_caller_leaves_its_write_in_flight() -> None:
    """Cancelling a caller does not cancel the write it started: the batch still commits."""
    recorder = Recorder()
    batcher: Batcher[int, int] = Batcher(recorder.flush)
    caller = asyncio.ensure_future(batcher.submit(7))
    await recorder.arrived.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    recorder.release.set()
    await batcher.close()
    assert recorder.batches == [[7]]
