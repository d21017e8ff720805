"""Benchmark: a database holding many finished workflows, then garbage collection of them all.

    python bench/retention.py [--database-url URL] [--workflows 1000000] [--smoke]

Two fresh schemas in one server: one left empty, one given WORKFLOWS finished workflows of 5 steps
each (written by SQL, ``INSERT ... SELECT`` over ``generate_series``, last updated 30 to 90 days
ago; not run). On each, alternately, twice, the best round of:

- W1: a 10-step workflow run in sequence, median and p99 latency (ms);
- W2: 1,000 workflows of 3 steps, 64 in flight, workflows/s;
- ``list_workflows(limit=50)``: median latency (ms) over 200 calls;

printed side by side with the full database's figure as a share of the empty one's (the goal:
within 10%). Then ``garbage_collect(older_than=1 day)`` deletes every generated workflow (the
young ones the runs made stay; it pauses after each batch as long as the batch took) while W1
runs on beside it: rows deleted per second (workflows and their steps), and W1's p99 during the
deletion beside its p99 just before.

With no URL the embedded PostgreSQL is used. ``--smoke``: 2,000 workflows and short runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

import asyncpg

from aiodurable import Runtime, step, workflow
from aiodurable.testing import hooks

DAY_MS = 86_400_000
CHUNK = 100_000  # workflows written per statement


@step(name="bench_retention.noop")
async def noop(i: int) -> int:
    return i


@workflow(name="bench_retention.steps")
async def steps_workflow(steps: int) -> int:
    for i in range(steps):
        await noop(i)
    return steps


@dataclass(frozen=True)
class Scale:
    """How long each measurement runs."""

    w1_runs: int = 200
    w1_warmup: int = 20
    w2_total: int = 1000
    w2_in_flight: int = 64
    list_runs: int = 200


SMOKE = Scale(w1_runs=20, w1_warmup=3, w2_total=128, w2_in_flight=64, list_runs=20)


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.99 * len(ordered)) - 1)]


async def timed(run: Callable[[], Awaitable[object]], count: int, warmup: int) -> list[float]:
    """Latencies of ``count`` runs one after another, in ms, after ``warmup`` untimed runs."""
    for _ in range(warmup):
        await run()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await run()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def throughput(total: int, in_flight: int) -> float:
    """Workflows/s of ``total`` 3-step workflows, ``in_flight`` at a time."""
    queue = iter(range(total))

    async def worker() -> None:
        for _ in queue:
            await steps_workflow(3)

    await asyncio.gather(*(worker() for _ in range(in_flight)))  # warm up once
    queue = iter(range(total))
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return total / (time.perf_counter() - started)


def runtime(url: str | None, schema: str) -> Runtime:
    return Runtime(url, schema=schema, executor_id="bench", app_version="bench")


async def measure(url: str | None, schema: str, scale: Scale) -> dict[str, float]:
    """W1, W2 and the listing on one schema."""
    async with runtime(url, schema) as rt:
        w1 = await timed(lambda: steps_workflow(10), scale.w1_runs, scale.w1_warmup)
        listed = await timed(lambda: rt.list_workflows(limit=50), scale.list_runs, 10)
        w2 = await throughput(scale.w2_total, scale.w2_in_flight)
    return {
        "w1_median_ms": statistics.median(w1),
        "w1_p99_ms": p99(w1),
        "w2_workflows_per_s": w2,
        "list_median_ms": statistics.median(listed),
    }


async def fill(conn: asyncpg.Connection, schema: str, count: int) -> float:
    """Write ``count`` finished workflows of 5 steps each; return the seconds it took."""
    started = time.perf_counter()
    now = int(time.time() * 1000)
    first, spread = now - 90 * DAY_MS, 60 * DAY_MS  # last updated 30 to 90 days ago
    wid = "md5('bench-' || i)::uuid::text"
    at = f"({first} + i::bigint * {spread} / $2)"
    for low in range(1, count + 1, CHUNK):
        high = min(low + CHUNK - 1, count)
        await conn.execute(
            f"INSERT INTO {schema}.workflows (workflow_id, status, name, format, inputs, output,"
            " created_at, updated_at, app_version, executor_id)"
            f" SELECT {wid}, CASE WHEN i % 50 = 0 THEN 'ERROR' WHEN i % 97 = 0 THEN 'CANCELLED'"
            " ELSE 'SUCCESS' END, 'bench_retention.steps', 'json',"
            f" '{{\"args\":[5],\"kwargs\":{{}}}}', '5', {at}, {at} + 40, 'bench', 'bench'"
            " FROM generate_series($1::bigint, $3::bigint) AS i",
            low,
            count,
            high,
        )
        await conn.execute(
            f"INSERT INTO {schema}.steps (workflow_id, function_id, name, format, output,"
            f" started_at, completed_at) SELECT {wid}, f, 'bench_retention.noop', 'json',"
            f" (f - 1)::text::bytea, {at} + f * 5, {at} + f * 5 + 1"
            " FROM generate_series($1::bigint, $3::bigint) AS i, generate_series(1, 5) AS f",
            low,
            count,
            high,
        )
        print(f"  wrote {high:,} of {count:,} workflows", flush=True)
    await conn.execute(f"VACUUM ANALYZE {schema}.workflows")
    await conn.execute(f"VACUUM ANALYZE {schema}.steps")
    elapsed = time.perf_counter() - started
    with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
        await conn.execute("CHECKPOINT")  # (so that no measurement pays for writing these out)
    return elapsed


async def plan_uses_index(conn: asyncpg.Connection, schema: str) -> bool:
    """Whether the batch's selection of workflows goes through ``workflows_finished``."""
    from aiodurable._store import Statements

    sql = Statements.for_schema(schema).collect_finished
    for n, value in enumerate(("0", "''", str(2**62), "''", "1000"), start=1):
        sql = sql.replace(f"${n}", value, 1)
    async with conn.transaction():
        plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql))
    return "workflows_finished" in plan


async def collect_beside_w1(url: str | None, schema: str, scale: Scale) -> dict[str, float]:
    """W1 alone, then W1 while ``garbage_collect`` deletes every generated workflow."""
    async with runtime(url, schema) as rt:
        before = await timed(lambda: steps_workflow(10), scale.w1_runs, scale.w1_warmup)
        during: list[float] = []
        collecting = asyncio.get_running_loop().create_future()

        async def beside() -> None:
            while not collecting.done():
                started = time.perf_counter()
                await steps_workflow(10)
                during.append((time.perf_counter() - started) * 1000)

        runner = asyncio.create_task(beside())
        started = time.perf_counter()
        deleted = await rt.garbage_collect(older_than=timedelta(days=1))
        elapsed = time.perf_counter() - started
        collecting.set_result(None)
        await runner
        async with hooks(rt).store.pool.acquire() as conn:
            left = await conn.fetchval(
                f"SELECT count(*) FROM {schema}.workflows WHERE updated_at < $1",
                int(time.time() * 1000) - DAY_MS,
            )
    return {
        "deleted": deleted,
        "left": left,
        "seconds": elapsed,
        "w1_p99_before_ms": p99(before),
        "w1_median_before_ms": statistics.median(before),
        "w1_p99_during_ms": p99(during) if during else float("nan"),
        "w1_median_during_ms": statistics.median(during) if during else float("nan"),
        "w1_runs_during": len(during),
    }


async def main(url: str | None, count: int, scale: Scale) -> None:
    tag = uuid.uuid4().hex[:8]
    empty, full = f"bench_ret_empty_{tag}", f"bench_ret_full_{tag}"
    # A runtime that runs nothing stays open throughout: it keeps the embedded server up.
    async with Runtime(url, schema=empty, executor_id="bench-holder", recover=False) as holder:
        url = holder.database_url
        async with Runtime(url, schema=full, executor_id="bench-holder", recover=False):
            pass  # (creates the tables)
        conn = await asyncpg.connect(url)
        try:
            await run(conn, url, empty, full, count, scale)
        finally:
            for schema in (empty, full):
                await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            await conn.close()


async def run(
    conn: asyncpg.Connection, url: str, empty: str, full: str, count: int, scale: Scale
) -> None:
    """Fill, measure both schemas, then collect."""
    print(f"writing {count:,} finished workflows of 5 steps into {full}", flush=True)
    wrote = await fill(conn, full, count)
    print(f"  {count * 6 / wrote:,.0f} rows/s ({wrote:.1f} s)")
    rounds: dict[str, list[dict[str, float]]] = {empty: [], full: []}
    for _ in range(2):
        for schema in (empty, full):
            rounds[schema].append(await measure(url, schema, scale))
    best = {
        schema: {
            key: (max if key.endswith("per_s") else min)(r[key] for r in results)
            for key in results[0]
        }
        for schema, results in rounds.items()
    }
    print(f"\n{'best of 2 rounds':<28} {'empty':>10} {f'{count:,} finished':>16} {'ratio':>7}")
    for key in best[empty]:
        a, b = best[empty][key], best[full][key]
        print(f"{key:<28} {a:>10.2f} {b:>16.2f} {b / a:>7.2f}")
    print(f"\nthe batch's plan uses workflows_finished: {await plan_uses_index(conn, full)}")
    gc = await collect_beside_w1(url, full, scale)
    print(
        f"\ngarbage_collect: {gc['deleted']:,.0f} workflows ({gc['deleted'] * 6:,.0f} rows with"
        f" their steps) in {gc['seconds']:.1f} s: {gc['deleted'] / gc['seconds']:,.0f}"
        f" workflows/s, {gc['deleted'] * 6 / gc['seconds']:,.0f} rows/s; {gc['left']:,.0f} left"
    )
    print(
        f"W1 beside it ({gc['w1_runs_during']:,.0f} runs): median"
        f" {gc['w1_median_during_ms']:.2f} ms, p99 {gc['w1_p99_during_ms']:.2f} ms;"
        f" just before: median {gc['w1_median_before_ms']:.2f} ms,"
        f" p99 {gc['w1_p99_before_ms']:.2f} ms"
    )
    if gc["deleted"] != count or gc["left"]:
        raise RuntimeError(f"deleted {gc['deleted']:,.0f} of {count:,}; {gc['left']} left")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="retention benchmark")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--workflows", type=int, default=1_000_000)
    parser.add_argument("--smoke", action="store_true", help="2,000 workflows, short runs")
    args = parser.parse_args()
    workflows = 2_000 if args.smoke and args.workflows == 1_000_000 else args.workflows
    asyncio.run(main(args.database_url, workflows, SMOKE if args.smoke else Scale()))
