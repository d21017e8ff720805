"""Group commit: the batcher's policy, driven without a database."""

from __future__ import annotations

import asyncio
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


async def test_a_failed_flush_fails_every_write_in_it() -> None:
    """Every caller of a batch whose flush raised gets that exception."""
    recorder = Recorder()
    recorder.fail = ConnectionError("gone")
    recorder.release.set()
    batcher: Batcher[int, int] = Batcher(recorder.flush, max_in_flight=1)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)


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
