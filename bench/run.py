"""Benchmarks: aiodurable beside a "direct" baseline written on plain asyncpg.

    python bench/run.py                 # the embedded PostgreSQL (default settings: fsync on)
    python bench/run.py --database-url postgresql://...
    python bench/run.py --smoke         # a tiny run that checks everything works
    python bench/run.py --json out.json

Each system runs in one invocation on one server, in a fresh schema, so the ratios compare like
with like on a noisy machine. The direct baseline does the least a journal can do: one INSERT
commit per journal write, no recovery. Workloads:

- W1: a workflow of 10 no-op steps, run in sequence: median and p99 latency.
- W2: 10-step no-op workflows with 64 in flight: workflows/s.
- W3: a round trip: send to a workflow waiting in recv, which set_events a reply that the caller
  awaits with get_event: median and p99 ms.
- W4: a 0.2 s durable sleep: median overshoot in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass

import asyncpg

import aiodurable
from aiodurable import Runtime, step, workflow

STEPS = 10


@step()
async def noop_step(i: int) -> int:
    return i


@workflow()
async def noop_workflow(steps: int) -> int:
    for i in range(steps):
        await noop_step(i)
    return steps


@workflow()
async def echo_workflow(rounds: int) -> int:
    for i in range(rounds):
        request = await aiodurable.recv("request", timeout=60)
        await aiodurable.set_event(f"reply-{i}", request)
    return rounds


@workflow()
async def sleep_workflow(seconds: float) -> float:
    started = time.time()
    await aiodurable.sleep(seconds)
    return time.time() - started


@dataclass
class Result:
    """One measured figure."""

    workload: str
    system: str
    metric: str
    value: float


def percentile(samples: list[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank."""
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index]


class Direct:
    """The baseline: the same journal writes issued by hand, one INSERT commit each."""

    def __init__(self, pool: asyncpg.Pool, schema: str) -> None:
        self.pool = pool
        self.schema = schema

    async def setup(self) -> None:
        s = self.schema
        async with self.pool.acquire() as conn:
            await conn.execute(f"CREATE SCHEMA {s}")
            await conn.execute(
                f"CREATE TABLE {s}.workflows (workflow_id text PRIMARY KEY, status text,"
                " inputs bytea, output bytea, created_at bigint)"
            )
            await conn.execute(
                f"CREATE TABLE {s}.steps (workflow_id text, function_id int, output bytea,"
                " PRIMARY KEY (workflow_id, function_id))"
            )

    async def workflow(self, steps: int) -> None:
        s = self.schema
        wid = str(uuid.uuid4())
        pool = self.pool
        await pool.execute(
            f"INSERT INTO {s}.workflows VALUES ($1, 'PENDING', $2, NULL, $3)",
            wid,
            b'{"args":[10],"kwargs":{}}',
            int(time.time() * 1000),
        )
        for i in range(steps):
            await pool.execute(f"INSERT INTO {s}.steps VALUES ($1, $2, $3)", wid, i + 1, b"1")
        await pool.execute(
            f"UPDATE {s}.workflows SET status = 'SUCCESS', output = $2 WHERE workflow_id = $1",
            wid,
            b"10",
        )


class DirectRoundTrip:
    """The W3 pattern on plain asyncpg: a message row and NOTIFY wake a waiting task, which
    consumes it with its journal row in one statement and publishes a reply row with NOTIFY."""

    def __init__(self, pool: asyncpg.Pool, url: str, schema: str) -> None:
        self.pool = pool
        self.url = url
        self.schema = schema

    async def run(self, rounds: int) -> list[float]:
        s = self.schema
        async with self.pool.acquire() as conn:
            await conn.execute(
                f"CREATE TABLE {s}.messages (id bigserial PRIMARY KEY, dest text, value bytea)"
            )
            await conn.execute(
                f"CREATE TABLE {s}.events (wid text, key text, value bytea, PRIMARY KEY (wid, key))"
            )
        listener = await asyncpg.connect(self.url)
        inbox = asyncio.Event()
        replies: dict[str, asyncio.Event] = {}

        def on_notify(conn: object, pid: int, channel: str, payload: object) -> None:
            if channel == f"{s}_m":
                inbox.set()
            elif str(payload) in replies:
                replies[str(payload)].set()

        await listener.add_listener(f"{s}_m", on_notify)
        await listener.add_listener(f"{s}_e", on_notify)
        consume = (
            f"WITH m AS (DELETE FROM {s}.messages WHERE id = (SELECT id FROM {s}.messages"
            " WHERE dest = 'w' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING value),"
            f" j AS (INSERT INTO {s}.steps SELECT 'w', $1, value FROM m) SELECT value FROM m"
        )

        async def waiter() -> None:
            for i in range(rounds):
                while True:
                    inbox.clear()
                    value = await self.pool.fetchval(consume, 2 * i + 1)
                    if value is not None:
                        break
                    await inbox.wait()
                await self.pool.execute(
                    f"WITH e AS (INSERT INTO {s}.events VALUES ('w', $1, $2) RETURNING key),"
                    f" j AS (INSERT INTO {s}.steps VALUES ('w', $3, $2))"
                    f" SELECT pg_notify('{s}_e', key) FROM e",
                    f"reply-{i}",
                    value,
                    2 * i + 2,
                )

        task = asyncio.ensure_future(waiter())
        samples: list[float] = []
        for i in range(rounds):
            key = f"reply-{i}"
            replies[key] = asyncio.Event()
            started = time.perf_counter()
            await self.pool.execute(
                f"WITH m AS (INSERT INTO {s}.messages (dest, value) VALUES ('w', $1)"
                f" RETURNING dest) SELECT pg_notify('{s}_m', dest) FROM m",
                b"1",
            )
            while not await self.pool.fetchval(
                f"SELECT value FROM {s}.events WHERE wid = 'w' AND key = $1", key
            ):
                await replies[key].wait()
            samples.append((time.perf_counter() - started) * 1000)
        await task
        await listener.close()
        return samples


async def durable_round_trip(rounds: int) -> list[float]:
    """W3 on aiodurable."""
    handle = await aiodurable.start_workflow(echo_workflow, rounds)
    samples: list[float] = []
    for i in range(rounds):
        started = time.perf_counter()
        await aiodurable.send(handle.workflow_id, i, "request")
        await aiodurable.get_event(handle.workflow_id, f"reply-{i}")
        samples.append((time.perf_counter() - started) * 1000)
    await handle.get_result()
    return samples


async def sleep_overshoot(
    count: int, durable: bool, pool: asyncpg.Pool, schema: str
) -> list[float]:
    """W4: how late a 0.2 s sleep wakes, in ms; the direct one records its wake-up time too."""
    samples: list[float] = []
    for _ in range(count):
        if durable:
            slept = await sleep_workflow(0.2)
        else:
            started = time.time()
            await pool.execute(
                f"INSERT INTO {schema}.steps VALUES ($1, 1, $2)",
                str(uuid.uuid4()),
                str(started + 0.2).encode(),
            )
            await asyncio.sleep(started + 0.2 - time.time())
            slept = time.time() - started
        samples.append((slept - 0.2) * 1000)
    return samples


async def sequential(run: Callable[[], Awaitable[object]], count: int) -> list[float]:
    """Latencies in ms of ``count`` runs one after another (after a short warm-up)."""
    for _ in range(min(20, count)):
        await run()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await run()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def throughput(run: Callable[[], Awaitable[object]], total: int, in_flight: int) -> float:
    """Runs per second with ``in_flight`` concurrent callers."""
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await run()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return total / (time.perf_counter() - started)


async def bench(url: str | None, smoke: bool) -> list[Result]:
    """Run every workload for both systems on one server."""
    w1_count = 20 if smoke else 200
    w2_total = 64 if smoke else 1000
    results: list[Result] = []
    async with AsyncExitStack() as stack:
        if url is None:
            from aiodurable._embedded import embedded_server

            url = await stack.enter_async_context(embedded_server())
        pool = await asyncpg.create_pool(url, min_size=16, max_size=16)
        stack.push_async_callback(pool.close)
        direct = Direct(pool, f"bench_direct_{uuid.uuid4().hex[:8]}")
        await direct.setup()
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        rt = await stack.enter_async_context(
            Runtime(url, schema=schema, executor_id="bench", pool_size=16)
        )

        async def durable() -> None:
            await noop_workflow(STEPS)

        async def by_hand() -> None:
            await direct.workflow(STEPS)

        for system, run in (("direct", by_hand), ("aiodurable", durable)):
            samples = await sequential(run, w1_count)
            results.append(Result("W1", system, "median_ms", statistics.median(samples)))
            results.append(Result("W1", system, "p99_ms", percentile(samples, 99)))
        for system, run in (("direct", by_hand), ("aiodurable", durable)):
            rate = await throughput(run, w2_total, 64)
            results.append(Result("W2", system, "workflows_per_s", rate))
        rounds = 20 if smoke else 200
        for system, samples in (
            ("direct", await DirectRoundTrip(pool, url, direct.schema).run(rounds)),
            ("aiodurable", await durable_round_trip(rounds)),
        ):
            results.append(Result("W3", system, "median_ms", statistics.median(samples)))
            results.append(Result("W3", system, "p99_ms", percentile(samples, 99)))
        sleeps = 5 if smoke else 50
        for system, durable_sleep in (("direct", False), ("aiodurable", True)):
            samples = await sleep_overshoot(sleeps, durable_sleep, pool, direct.schema)
            results.append(Result("W4", system, "overshoot_median_ms", statistics.median(samples)))
        async with pool.acquire() as conn:
            for s in (direct.schema, schema):
                await conn.execute(f"DROP SCHEMA {s} CASCADE")
        assert rt.is_open
    return results


def table(results: list[Result]) -> str:
    """The figures side by side, with the aiodurable/direct ratio."""
    rows = ["workload  metric            direct    aiodurable  aiodurable/direct"]
    keys = sorted({(r.workload, r.metric) for r in results})
    for workload, metric in keys:
        by = {r.system: r.value for r in results if (r.workload, r.metric) == (workload, metric)}
        ratio = by["aiodurable"] / by["direct"]
        rows.append(
            f"{workload:<9} {metric:<16} {by['direct']:>9.2f} {by['aiodurable']:>11.2f}"
            f" {ratio:>17.2f}"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, print the table (and write JSON if asked)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--smoke", action="store_true", help="a tiny run that checks it works")
    parser.add_argument("--json", default=None, help="write the results to this file")
    args = parser.parse_args(argv)
    results = asyncio.run(bench(args.database_url, args.smoke))
    print(
        f"aiodurable {aiodurable.__version__}, asyncpg {asyncpg.__version__}, Python"
        f" {sys.version.split()[0]}"
    )
    print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(r) for r in results], f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
