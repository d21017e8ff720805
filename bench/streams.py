"""Benchmark: a workflow streams COUNT values to one reader in the same process.

    python bench/streams.py [--database-url URL] [--count 10000] [--smoke]

Each value carries the moment its write was called; the reader notes when it sees the value.
Printed per system: throughput (values/s, from the first write to the reader seeing the last)
and the write-to-reader latency (median, p99).

- aiodurable, sequential: the workflow awaits each ``write_stream`` (one commit each); the reader
  is woken by NOTIFY and reads up to 256 values per query.
- aiodurable, bursts of 64: the workflow writes 64 values at once (``asyncio.gather``); writes
  arriving together share one statement (group commit).
- aiodurable, paced: 300 values, one every 10 ms, so the reader is always waiting for the next:
  the latency of a wake-up.
- DBOS Transact, sequential and paced, when ``dbos`` is importable (``nox -s bench`` installs
  it): ``DBOS.write_stream_async`` in the workflow, ``DBOS.read_stream_async`` reading: one query
  per value in a thread, and a 1 s poll when the next value is not there yet.

With no URL the embedded PostgreSQL is used (fsync on). ``--smoke`` streams 500 values (50
paced).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AsyncExitStack
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

import aiodurable
from aiodurable import Runtime, workflow
from aiodurable.testing import hooks

KEY = "bench"
BURST = 64
PACE = 0.01  # seconds between two values of a paced producer (a model emitting tokens, say)


@workflow(name="bench_streams.sequential")
async def sequential(count: int, pace: float = 0.0) -> int:
    await aiodurable.recv("go", timeout=600)
    for _ in range(count):
        if pace:
            await asyncio.sleep(pace)  # (not durable: a producer's own rhythm)
        await aiodurable.write_stream(KEY, time.perf_counter())
    await aiodurable.close_stream(KEY)
    return count


@workflow(name="bench_streams.bursts")
async def bursts(count: int, pace: float = 0.0) -> int:
    await aiodurable.recv("go", timeout=600)
    for start in range(0, count, BURST):
        size = min(BURST, count - start)
        await asyncio.gather(
            *(aiodurable.write_stream(KEY, time.perf_counter()) for _ in range(size))
        )
    await aiodurable.close_stream(KEY)
    return count


def summary(label: str, count: int, stamps: list[tuple[float, float]]) -> str:
    """One line: throughput and latency from (written at, seen at) pairs."""
    if len(stamps) != count:
        raise RuntimeError(f"{label}: the reader saw {len(stamps)} values, not {count}")
    latencies = sorted((seen - written) * 1000 for written, seen in stamps)
    elapsed = stamps[-1][1] - stamps[0][0]
    p99 = latencies[min(len(latencies) - 1, round(0.99 * len(latencies)) - 1)]
    return (
        f"{label:<34} {count / elapsed:>10,.0f} {statistics.median(latencies):>10.2f} {p99:>10.2f}"
    )


async def read_all(values: AsyncIterator[Any]) -> list[tuple[float, float]]:
    return [(float(written), time.perf_counter()) async for written in values]


async def aiodurable_run(
    rt: Runtime, fn: Callable[[int, float], Coroutine[Any, Any, int]], count: int, pace: float = 0.0
) -> list[tuple[float, float]]:
    """Start the writer, register the reader, let the writer go; the (written, seen) pairs."""
    handle = await rt.start_workflow(fn, count, pace)
    notifier = hooks(rt).notifier
    waiting = notifier.waiting
    reader = asyncio.create_task(read_all(rt.read_stream(handle.workflow_id, KEY)))
    await notifier.until_waiting(waiting + 1)
    await rt.send(handle.workflow_id, "go", "go")
    stamps = await reader
    await handle.get_result()
    return stamps


def database_url(url: str, database: str) -> str:
    """``url`` naming ``database`` instead of its own."""
    return urlunsplit(urlsplit(url)._replace(path="/" + database))


async def dbos_run(url: str, count: int, paced: int) -> list[list[tuple[float, float]]]:
    """DBOS Transact on a database of its own (created here, dropped after)."""
    dbos = importlib.import_module("dbos")
    DBOS = dbos.DBOS  # noqa: N806  (DBOS's own name for its class)

    async def writer(n: int, pace: float) -> int:
        await DBOS.recv_async("go", timeout_seconds=600)
        for _ in range(n):
            if pace:
                await asyncio.sleep(pace)
            await DBOS.write_stream_async(KEY, time.perf_counter())
        await DBOS.close_stream_async(KEY)
        return n

    streamer = DBOS.workflow(name="bench_streams.dbos")(writer)
    database = f"bench_streams_dbos_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(url)
    await admin.execute(f"CREATE DATABASE {database}")
    try:
        parts = urlsplit(database_url(url, database))
        scheme = "postgresql+psycopg" if parts.scheme in ("postgres", "postgresql") else ""
        config = {
            "name": "bench-streams",
            "system_database_url": urlunsplit(parts._replace(scheme=scheme or parts.scheme)),
            "log_level": "WARNING",
        }
        DBOS(config=config)
        DBOS.launch()
        runs = []
        try:
            for n, pace in ((count, 0.0), (paced, PACE)):
                handle = await DBOS.start_workflow_async(streamer, n, pace)
                wid = handle.get_workflow_id()
                reader = asyncio.create_task(read_all(DBOS.read_stream_async(wid, KEY)))
                await DBOS.send_async(wid, "go", "go")
                runs.append(await reader)
                await handle.get_result()
        finally:
            await asyncio.to_thread(DBOS.destroy)
    finally:
        await admin.execute(f"DROP DATABASE {database} WITH (FORCE)")
        await admin.close()
    return runs


async def main(url: str | None, count: int, paced: int) -> None:
    """Run each system in turn on one server."""
    schema = f"bench_streams_{uuid.uuid4().hex[:8]}"
    lines = []
    async with AsyncExitStack() as stack:
        if url is None:
            from aiodurable._embedded import embedded_server

            url = await stack.enter_async_context(embedded_server())
        async with Runtime(url, schema=schema, executor_id="bench") as rt:
            await aiodurable_run(rt, sequential, 100)  # warm up
            stamps = await aiodurable_run(rt, sequential, count)
            lines.append(summary("aiodurable, sequential writes", count, stamps))
            stamps = await aiodurable_run(rt, bursts, count)
            lines.append(summary(f"aiodurable, bursts of {BURST}", count, stamps))
            stamps = await aiodurable_run(rt, sequential, paced, PACE)
            lines.append(summary(f"aiodurable, one every {PACE * 1000:g} ms", paced, stamps))
            async with hooks(rt).store.pool.acquire() as conn:
                await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        if importlib.util.find_spec("dbos") is None:
            note = "DBOS skipped: the package 'dbos' is not installed (`nox -s bench` installs it)"
        else:
            flat, slow = await dbos_run(url, count, paced)
            lines.append(summary("DBOS, sequential writes", count, flat))
            lines.append(summary(f"DBOS, one every {PACE * 1000:g} ms", paced, slow))
            note = ""
    print(f"{count:,} values streamed by one workflow to one reader ({paced:,} when paced)")
    print(f"{'system':<34} {'values/s':>10} {'median ms':>10} {'p99 ms':>10}")
    print("\n".join(lines))
    if note:
        print(f"note: {note}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="stream benchmark")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--smoke", action="store_true", help="500 values: checks that it works")
    args = parser.parse_args()
    count = 500 if args.smoke else args.count
    asyncio.run(main(args.database_url, count, min(count, 50 if args.smoke else 300)))
