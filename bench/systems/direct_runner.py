"""The workloads on plain asyncpg: the least a journal can do.

Each journal write is one INSERT (or UPDATE) committed on its own; a waiter is woken by
LISTEN/NOTIFY and reads the table; nothing is ever recovered (so there is no W5). It sets the floor
that aiodurable's figures are compared with.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import harness
from harness import Metrics, Scale

POOL_SIZE = 16  # aiodurable's default pool size

SCHEMA = """
CREATE TABLE workflows (workflow_id text PRIMARY KEY, status text, inputs bytea, output bytea,
    created_at bigint);
CREATE TABLE steps (workflow_id text, function_id int, output bytea,
    PRIMARY KEY (workflow_id, function_id));
CREATE TABLE messages (id bigserial PRIMARY KEY, dest text, topic text, value bytea);
CREATE INDEX messages_dest ON messages (dest, topic, id);
CREATE TABLE events (workflow_id text, key text, value bytea, PRIMARY KEY (workflow_id, key));
"""

# Take the oldest message for a workflow and journal it, in one statement (one commit).
CONSUME = """
WITH m AS (DELETE FROM messages WHERE id = (SELECT id FROM messages WHERE dest = $1 AND topic = $2
    ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING value),
j AS (INSERT INTO steps SELECT $1, $3, value FROM m)
SELECT value FROM m
"""
SEND = """
WITH m AS (INSERT INTO messages (dest, topic, value) VALUES ($1, $2, $3) RETURNING dest)
SELECT pg_notify('bench_m', dest) FROM m
"""
SET_EVENT = """
WITH e AS (INSERT INTO events VALUES ($1, $2, $3) ON CONFLICT (workflow_id, key)
    DO UPDATE SET value = excluded.value RETURNING workflow_id, key),
j AS (INSERT INTO steps VALUES ($1, $4, $3))
SELECT pg_notify('bench_e', workflow_id || '/' || key) FROM e
"""


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Return a connection to the pool without asyncpg's reset query (a round trip)."""


@asynccontextmanager
async def database(url: str) -> AsyncIterator[asyncpg.Pool]:
    # No reset query on release: the least a journal can do is one round trip per write.
    pool = await asyncpg.create_pool(
        url, min_size=POOL_SIZE, max_size=POOL_SIZE, reset=_keep_session
    )
    try:
        await pool.execute(SCHEMA)
        yield pool
    finally:
        await pool.close()


class Wakeups:
    """One LISTEN connection that sets the asyncio.Event registered under a payload."""

    def __init__(self) -> None:
        self.events: dict[str, asyncio.Event] = {}
        self.conn: asyncpg.Connection | None = None

    async def start(self, url: str) -> None:
        self.conn = await asyncpg.connect(url)
        for channel in ("bench_m", "bench_e"):
            await self.conn.add_listener(channel, self._on_notify)

    def _on_notify(self, conn: object, pid: int, channel: str, payload: object) -> None:
        event = self.events.get(str(payload))
        if event is not None:
            event.set()

    def watch(self, key: str) -> asyncio.Event:
        return self.events.setdefault(key, asyncio.Event())

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()


async def start(pool: asyncpg.Pool, inputs: bytes) -> str:
    workflow_id = str(uuid.uuid4())
    await pool.execute(
        "INSERT INTO workflows VALUES ($1, 'PENDING', $2, NULL, $3)",
        workflow_id,
        inputs,
        int(time.time() * 1000),
    )
    return workflow_id


async def finish(pool: asyncpg.Pool, workflow_id: str, output: bytes) -> None:
    await pool.execute(
        "UPDATE workflows SET status = 'SUCCESS', output = $2 WHERE workflow_id = $1",
        workflow_id,
        output,
    )


async def steps_workflow(pool: asyncpg.Pool, steps: int) -> None:
    workflow_id = await start(pool, b'{"args":[%d],"kwargs":{}}' % steps)
    for i in range(steps):
        await pool.execute("INSERT INTO steps VALUES ($1, $2, $3)", workflow_id, i + 1, b"%d" % i)
    await finish(pool, workflow_id, b"%d" % steps)


async def recv(
    pool: asyncpg.Pool, wakeups: Wakeups, workflow_id: str, topic: str, function_id: int
) -> bytes:
    """Register, then read; wait for a NOTIFY only when nothing is there yet."""
    event = wakeups.watch(workflow_id)
    while True:
        event.clear()
        value: bytes | None = await pool.fetchval(CONSUME, workflow_id, topic, function_id)
        if value is not None:
            return value
        await event.wait()


async def w1(url: str, scale: Scale) -> Metrics:
    async with database(url) as pool:
        zero = await harness.sequential(
            lambda: steps_workflow(pool, 0), scale.w1_runs, scale.w1_warmup
        )
        ten = await harness.sequential(
            lambda: steps_workflow(pool, scale.w1_steps), scale.w1_runs, scale.w1_warmup
        )
    metrics = harness.latency_metrics(ten)
    metrics.update(harness.latency_metrics(zero, "0step_"))
    metrics["step_ms"] = (metrics["median_ms"] - metrics["0step_median_ms"]) / scale.w1_steps
    return metrics


async def w2(url: str, scale: Scale) -> Metrics:
    async with database(url) as pool:
        return await harness.throughput(lambda: steps_workflow(pool, scale.w2_steps), scale)


async def w3(url: str, scale: Scale) -> Metrics:
    wakeups = Wakeups()
    async with database(url) as pool:
        await wakeups.start(url)
        rounds = scale.w3_rounds

        async def echo(workflow_id: str) -> None:
            for i in range(rounds):
                request = await recv(pool, wakeups, workflow_id, "request", 2 * i + 1)
                await pool.execute(SET_EVENT, workflow_id, f"reply-{i}", request, 2 * i + 2)
            await finish(pool, workflow_id, b"%d" % rounds)

        workflow_ids = [
            await start(pool, b'{"args":[%d],"kwargs":{}}' % rounds) for _ in range(scale.w3_pairs)
        ]
        tasks = [asyncio.create_task(echo(workflow_id)) for workflow_id in workflow_ids]

        async def trip(pair: int, i: int) -> None:
            workflow_id = workflow_ids[pair]
            key = f"{workflow_id}/reply-{i}"
            reply = wakeups.watch(key)
            await pool.execute(SEND, workflow_id, "request", b"%d" % i)
            while (
                await pool.fetchval(
                    "SELECT value FROM events WHERE workflow_id = $1 AND key = $2",
                    workflow_id,
                    f"reply-{i}",
                )
                is None
            ):
                await reply.wait()
            del wakeups.events[key]

        metrics = await harness.round_trips(trip, scale)
        await asyncio.gather(*tasks)
        await wakeups.close()
    return metrics


async def w4(url: str, scale: Scale) -> Metrics:
    """A durable sleep by hand: record the wake-up time, then sleep until it."""
    async with database(url) as pool:
        samples = []
        for _ in range(scale.w4_sleeps):
            started = time.time()
            workflow_id = await start(pool, b'{"args":[0.2],"kwargs":{}}')
            wake_at = started + scale.w4_seconds
            await pool.execute(
                "INSERT INTO steps VALUES ($1, 1, $2)", workflow_id, str(wake_at).encode()
            )
            await asyncio.sleep(wake_at - time.time())
            slept = time.time() - started
            await finish(pool, workflow_id, str(slept).encode())
            samples.append((slept - scale.w4_seconds) * 1000)
    return {"overshoot_median_ms": statistics.median(samples)}


async def w5(url: str, scale: Scale) -> Metrics:
    return {"skipped": "the direct baseline has no recovery"}


async def w6(url: str, scale: Scale) -> Metrics:
    n = scale.w6_waiting
    wakeups = Wakeups()
    waiting = 0
    async with database(url) as pool:
        await wakeups.start(url)

        async def waiter(workflow_id: str) -> bytes:
            nonlocal waiting
            event = wakeups.watch(workflow_id)
            counted = False
            while True:
                event.clear()
                value: bytes | None = await pool.fetchval(CONSUME, workflow_id, "wake", 1)
                if value is not None:
                    break
                if not counted:
                    waiting += 1
                    counted = True
                await event.wait()
            await finish(pool, workflow_id, value)
            del wakeups.events[workflow_id]
            return value

        tasks: list[asyncio.Task[bytes]] = []
        ids: list[str] = []

        async def start_one(_: int) -> None:
            workflow_id = await start(pool, b'{"args":[],"kwargs":{}}')
            ids.append(workflow_id)
            tasks.append(asyncio.create_task(waiter(workflow_id)))

        for i in range(20):  # warm every code path once
            await start_one(i)
            await pool.execute(SEND, ids[-1], "wake", b"1")
            await tasks[-1]
        tasks.clear()
        ids.clear()
        waiting = 0

        async def start_all() -> None:
            await harness.concurrently(start_one, n, scale.start_in_flight)

        per_workflow = await harness.waiting_memory(start_all, lambda: waiting, n)
        started = time.perf_counter()

        async def wake(i: int) -> None:
            await pool.execute(SEND, ids[i], "wake", b"%d" % i)

        await harness.concurrently(wake, n, scale.start_in_flight)
        results = await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
        await wakeups.close()
    if sorted(int(r) for r in results) != list(range(n)):
        raise RuntimeError("a waiting workflow returned the wrong message")
    return {"bytes_per_waiting": per_workflow, "wake_all_s": elapsed}


if __name__ == "__main__":
    raise SystemExit(
        harness.main("direct", {"W1": w1, "W2": w2, "W3": w3, "W4": w4, "W5": w5, "W6": w6})
    )
