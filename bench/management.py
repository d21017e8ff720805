"""Benchmark: list_workflows over 100,000 workflows with a status filter and limit=50.

    python bench/management.py [--database-url URL] [--rows 100000]

Rows are written straight into a fresh schema (90% SUCCESS, 5% ERROR, 5% PENDING), then each
query runs 50 times; the median and p99 are printed beside a plain ``SELECT 1`` round trip on the
same pool, the floor any query pays.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack

from aiodurable import Runtime
from aiodurable.testing import hooks


async def timed(run: Callable[[], Awaitable[object]], count: int = 50) -> list[float]:
    """Latencies in ms."""
    await run()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await run()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def main(url: str | None, rows: int) -> None:
    """Fill a schema, then time the listings."""
    schema = f"bench_list_{uuid.uuid4().hex[:8]}"
    async with AsyncExitStack() as stack:
        rt = await stack.enter_async_context(Runtime(url, schema=schema, recover=False))
        async with hooks(rt).store.pool.acquire() as conn:
            await conn.execute(
                f"INSERT INTO {schema}.workflows (workflow_id, status, name, format, inputs,"
                " output, created_at, updated_at, app_version, executor_id)"
                " SELECT 'wf-' || i, CASE WHEN i % 20 = 0 THEN 'ERROR' WHEN i % 20 = 1"
                " THEN 'PENDING' ELSE 'SUCCESS' END, 'bench:workflow_' || (i % 7), 'json',"
                " '{\"args\":[1],\"kwargs\":{}}', '1', 1700000000000 + i, 1700000000000 + i,"
                " 'v1', 'e1' FROM generate_series(1, $1) AS i",
                rows,
            )
            await conn.execute(f"ANALYZE {schema}.workflows")
        cases: dict[str, Callable[[], Awaitable[object]]] = {
            "SELECT 1 (floor)": lambda: hooks(rt).store.pool.fetchval("SELECT 1"),
            "status=ERROR, limit=50": lambda: rt.list_workflows(status="ERROR", limit=50),
            "status=ERROR, limit=50, newest first": lambda: rt.list_workflows(
                status="ERROR", limit=50, sort_desc=True
            ),
            "status=PENDING, name, limit=50": lambda: rt.list_workflows(
                status="PENDING", name="bench:workflow_3", limit=50
            ),
            "prefix 'wf-999', limit=50": lambda: rt.list_workflows(
                workflow_id_prefix="wf-999", limit=50
            ),
            "all, limit=50, offset=50000": lambda: rt.list_workflows(limit=50, offset=50000),
        }
        print(f"list_workflows over {rows:,} workflows (ms, 50 runs each)")
        print(f"{'query':<40} {'median':>8} {'p99':>8}")
        for label, run in cases.items():
            samples = sorted(await timed(run))
            p99 = samples[min(len(samples) - 1, round(0.99 * len(samples)) - 1)]
            print(f"{label:<40} {statistics.median(samples):>8.2f} {p99:>8.2f}")
        async with hooks(rt).store.pool.acquire() as conn:
            await conn.execute(f"DROP SCHEMA {schema} CASCADE")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="list_workflows benchmark")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    asyncio.run(main(args.database_url, args.rows))
