"""Benchmark: queue latency and throughput.

    python bench/queues.py [--database-url URL] [--count 10000]

- enqueue-to-start latency of an idle queue (the workflow's first step reads the clock), median
  and p99 over 200 enqueues one at a time;
- throughput of COUNT no-op queued workflows on a queue with concurrency 64.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

from aiodurable import Queue, Runtime, WorkflowHandle, step, workflow
from aiodurable.testing import hooks

idle = Queue("bench-idle")
wide = Queue("bench-wide", concurrency=64)


@step()
async def clock() -> float:
    return time.time()


@workflow()
async def stamped() -> float:
    return await clock()


@workflow()
async def noop() -> None:
    return None


async def main(url: str | None, count: int) -> None:
    """Run both measurements in a fresh schema."""
    schema = f"bench_queue_{uuid.uuid4().hex[:8]}"
    async with Runtime(url, schema=schema, executor_id="bench", pool_size=16) as rt:
        latencies = []
        for _ in range(200):
            enqueued = time.time()
            handle = await idle.enqueue(stamped)
            started = await handle.get_result()
            latencies.append((started - enqueued) * 1000)
        latencies.sort()
        print(
            f"idle queue, enqueue to start: median {statistics.median(latencies):.2f} ms,"
            f" p99 {latencies[round(0.99 * len(latencies)) - 1]:.2f} ms"
        )
        began = time.perf_counter()
        batch: list[WorkflowHandle[None]] = []
        for start in range(0, count, 64):  # 64 callers enqueueing at once
            size = min(64, count - start)
            batch += await asyncio.gather(*(wide.enqueue(noop) for _ in range(size)))
        enqueued_in = time.perf_counter() - began
        for queued in batch:
            await queued.get_result()
        elapsed = time.perf_counter() - began
        print(
            f"{count:,} no-op queued workflows, concurrency 64: {count / elapsed:,.0f}"
            f" workflows/s end to end (enqueued by 64 callers in {enqueued_in:.1f} s, while"
            " the dispatcher was already running them)"
        )
        async with hooks(rt).store.pool.acquire() as conn:
            await conn.execute(f"DROP SCHEMA {schema} CASCADE")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="queue benchmark")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--count", type=int, default=10_000)
    args = parser.parse_args()
    asyncio.run(main(args.database_url, args.count))
