"""Retention on PostgreSQL: ``garbage_collect`` deletes old finished workflows with every row
keyed by them and nothing else, in batches that several collections share, while running
workflows checkpoint undisturbed; and ``aiodurable workflow gc``. (Which workflows each argument
keeps, children, the periodic collection and bad arguments: test_retention_memory.py.)"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

import asyncpg
import pytest

import aiodurable
from aiodurable import WorkflowNotFound
from aiodurable._retention import collect
from aiodurable._runtime import engine_of
from aiodurable._store import Statements
from aiodurable._store._retention import RetentionKey
from aiodurable.testing import hooks

from .conftest import RuntimeFactory
from .test_cli import Cli

pytestmark = pytest.mark.anyio

DAY_MS = 86_400_000
# Each table keyed by a workflow, and its column naming the workflow.
TABLES = {
    "workflows": "workflow_id",
    "steps": "workflow_id",
    "events": "workflow_id",
    "event_history": "workflow_id",
    "streams": "workflow_id",
    "messages": "destination_id",
    "message_keys": "destination_id",
    "waits": "workflow_id",
}
Collector = Callable[[RetentionKey, RetentionKey, int], Awaitable[tuple[int, RetentionKey | None]]]
FIRST: RetentionKey = (-(2**63), "")
LAST: RetentionKey = (2**63 - 1, "")


@aiodurable.step(name="gc-pg-note")
async def note(tag: str) -> str:
    return tag.upper()


@aiodurable.workflow(name="gc-pg-rich")
async def rich(tag: str) -> str:
    """Leaves a row in every table keyed by its ID."""
    loud = await note(tag)
    await aiodurable.set_event("state", loud)
    await aiodurable.write_stream("out", loud)
    await aiodurable.close_stream("out")
    await aiodurable.recv("nothing", timeout=0.01)  # (a wait deadline, then a timeout)
    got = await aiodurable.recv("in", timeout=600)
    return f"{loud}:{got}"


@aiodurable.workflow(name="gc-pg-steps")
async def steps(n: int) -> int:
    for i in range(n):
        await note(str(i))
    return n


@aiodurable.workflow(name="gc-pg-parked")
async def parked() -> object:
    # No deadline, so no row of its own appears while the test compares the kept rows.
    return await aiodurable.recv("go", timeout=math.inf)


@aiodurable.workflow(name="gc-pg-parent")
async def parent() -> str:
    child = await aiodurable.start_workflow(steps, 1)
    await aiodurable.set_event("child", child.workflow_id)
    await aiodurable.recv("go", timeout=math.inf)  # (no wait row: see parked)
    return f"child made {await child.get_result()}"


gc_queue = aiodurable.Queue("gc-pg-queue", concurrency=1)


@pytest.fixture
def cli(database_url: str, schema: str) -> Cli:
    """The command line on this test's schema."""
    return Cli(database_url, schema)


async def rows_of(pool: asyncpg.Pool, schema: str, wid: str) -> dict[str, int]:
    """How many rows each table keyed by a workflow holds for ``wid``."""
    return {
        table: await pool.fetchval(f"SELECT count(*) FROM {schema}.{table} WHERE {c} = $1", wid)
        for table, c in TABLES.items()
    }


async def age(pool: asyncpg.Pool, schema: str, ids: list[str], days: float) -> None:
    """Make the workflows ``ids`` look last updated ``days`` days earlier."""
    await pool.execute(
        f"UPDATE {schema}.workflows SET updated_at = updated_at - $2 WHERE workflow_id = ANY($1)",
        ids,
        round(days * DAY_MS),
    )


async def fill(pool: asyncpg.Pool, schema: str, n: int, *, prefix: str = "filled-") -> None:
    """Write ``n`` SUCCESS workflows of two steps each straight into the tables, finished two
    days ago, a millisecond apart."""
    at = int(time.time() * 1000) - 2 * DAY_MS
    ids = "$1::text || lpad(i::text, 6, '0')"
    await pool.execute(
        f"INSERT INTO {schema}.workflows (workflow_id, status, name, format, created_at,"
        f" updated_at, app_version, executor_id) SELECT {ids}, 'SUCCESS', 'gc-filled', 'json',"
        " $2::bigint, $2::bigint + i, 'v', 'e' FROM generate_series(1, $3) i",
        prefix,
        at,
        n,
    )
    await pool.execute(
        f"INSERT INTO {schema}.steps (workflow_id, function_id, name, format, output,"
        f" started_at, completed_at) SELECT {ids}, f, 'gc-step', 'json', '1', $2, $2"
        " FROM generate_series(1, $3) i, generate_series(1, 2) f",
        prefix,
        at,
        n,
    )


async def test_deletes_old_finished_workflows_with_every_row_and_nothing_else(
    runtime: RuntimeFactory, schema: str
) -> None:
    """Old SUCCESS, CANCELLED and MAX_RECOVERY_ATTEMPTS_EXCEEDED workflows go with
    their journal, events, history, streams, messages (one sent after they finished included),
    idempotency keys and wait deadlines; young finished ones, old PENDING and ENQUEUED ones,
    and an old finished child of a PENDING parent stay with all their rows."""
    async with runtime() as rt:
        pool = hooks(rt).store.pool
        handles = {tag: await rt.start_workflow(rich, tag) for tag in ("old", "young", "dead")}
        for tag, handle in handles.items():
            topic = "other" if tag == "dead" else "in"
            await rt.send(handle.workflow_id, "hi", topic, idempotency_key=f"key-{tag}")
        for tag in ("old", "young"):
            assert await handles[tag].get_result() == f"{tag.upper()}:hi"
            await rt.send(handles[tag].workflow_id, "too late", "after")
        dead = handles["dead"].workflow_id
        await rt.cancel_workflow(dead)
        capped = await rt.start_workflow(steps, 2)
        await capped.get_result()
        await pool.execute(
            f"UPDATE {schema}.workflows SET status = 'MAX_RECOVERY_ATTEMPTS_EXCEEDED'"
            " WHERE workflow_id = $1",
            capped.workflow_id,
        )
        running = await gc_queue.enqueue(parked)
        queued = await gc_queue.enqueue(steps, 1)
        waiting = await rt.start_workflow(parent)
        child = await rt.get_event(waiting.workflow_id, "child", timeout=10)
        assert await (await rt.retrieve_workflow(child)).get_result() == 1
        old = [handles["old"].workflow_id, dead, capped.workflow_id]
        kept = [running.workflow_id, queued.workflow_id, waiting.workflow_id, child]
        await age(pool, schema, old + kept, days=2)
        kept.append(handles["young"].workflow_id)
        before = {wid: await rows_of(pool, schema, wid) for wid in kept}
        assert min((await rows_of(pool, schema, handles["old"].workflow_id)).values()) > 0

        assert await aiodurable.garbage_collect(older_than=timedelta(days=1)) == 3
        for wid in old:
            assert set((await rows_of(pool, schema, wid)).values()) == {0}, wid
        assert {wid: await rows_of(pool, schema, wid) for wid in kept} == before
        with pytest.raises(WorkflowNotFound):
            await rt.send(handles["old"].workflow_id, "to nobody")
        # The parent reads its child's outcome after the collection; then both can go.
        await rt.send(waiting.workflow_id, None, "go")
        assert await waiting.get_result() == "child made 1"
        await rt.send(running.workflow_id, "done", "go")
        assert await queued.get_result() == 1
        assert await rt.garbage_collect(keep_latest=0) == 5
        index = await pool.fetchval(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = $1"
            " AND indexname = 'workflows_finished'",
            schema,
        )
        assert "(updated_at, workflow_id) WHERE" in index


async def test_batches_shared_by_concurrent_collections_while_workflows_run(
    runtime: RuntimeFactory, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runtimes collect 1,200 finished workflows at once in batches of 100 while a
    workflow checkpoints step after step: every batch is at most 100, the two counts add up
    to all of them, and no row of theirs is left; ``keep_latest`` counts ties exactly."""
    async with runtime(executor_id="a") as a, runtime(executor_id="b") as b:
        pool = hooks(a).store.pool
        await fill(pool, schema, 1200)
        batches: list[int] = []

        def counting(real: Collector) -> Collector:
            async def counted(
                after: RetentionKey, bound: RetentionKey, limit: int
            ) -> tuple[int, RetentionKey | None]:
                found = await real(after, bound, limit)
                batches.append(found[0])
                return found

            return counted

        for rt in (a, b):
            store = hooks(rt).store
            monkeypatch.setattr(store, "collect_finished", counting(store.collect_finished))
        day = timedelta(days=1)
        counts = await asyncio.gather(
            collect(engine_of(a), day, None, batch=100),
            collect(engine_of(b), day, None, batch=100),
            steps(30),
        )
        assert counts[2] == 30
        assert counts[0] + counts[1] == 1200 and max(batches) <= 100, (counts, batches)
        left = await pool.fetchval(
            f"SELECT (SELECT count(*) FROM {schema}.workflows WHERE name = 'gc-filled')"
            f" + (SELECT count(*) FROM {schema}.steps WHERE name = 'gc-step')"
        )
        assert left == 0
        # Ties: five finished in the same millisecond; keep_latest=2 keeps the last two IDs.
        await fill(pool, schema, 5, prefix="tie-")
        await pool.execute(f"UPDATE {schema}.workflows SET updated_at = 1 WHERE name = 'gc-filled'")
        assert await a.garbage_collect(older_than=day, keep_latest=3) == 3  # (and steps(30))
        remaining = await a.list_workflows(name="gc-filled")
        assert sorted(w.workflow_id for w in remaining) == ["tie-000004", "tie-000005"]


async def test_a_batch_in_progress_blocks_no_workflow_and_no_other_collection(
    runtime: RuntimeFactory, schema: str
) -> None:
    """While one collection's batch holds its rows (its transaction open), a workflow runs its
    steps to the end, a message reaches a PENDING workflow, and another collection deletes the
    other finished workflows without waiting; the held batch then commits its own."""
    async with runtime() as rt:
        pool = hooks(rt).store.pool
        await fill(pool, schema, 300)
        waiting = await rt.start_workflow(parked)
        async with pool.acquire() as held, held.transaction():
            row = await held.fetchrow(
                Statements.for_schema(schema).collect_finished, *FIRST, *LAST, 100
            )
            assert row is not None and row["deleted"] == 100
            async with asyncio.timeout(10):
                assert await steps(5) == 5
                await rt.send(waiting.workflow_id, "through", "go")
                assert await waiting.get_result() == "through"
                assert await rt.garbage_collect(keep_latest=0) == 202
        assert await pool.fetchval(f"SELECT count(*) FROM {schema}.workflows") == 0
        assert await pool.fetchval(f"SELECT count(*) FROM {schema}.steps") == 0


async def test_command_line_gc(runtime: RuntimeFactory, schema: str, cli: Cli) -> None:
    """``workflow gc --older-than 1d --json`` deletes the old finished workflows and says how
    many; ``--keep-latest`` keeps the newest. (Usage errors: test_retention_memory.py.)"""
    async with runtime() as rt:
        pool = hooks(rt).store.pool
        await fill(pool, schema, 4)
        young = await rt.start_workflow(steps, 1)
        await young.get_result()
        assert await cli.json("gc", "--older-than", "1d", "--keep-latest", "2") == {"deleted": 3}
        code, out = await cli("gc", "--keep-latest", "0")
        assert code == 0 and "deleted 2 finished workflow(s)" in out
        assert await rt.list_workflows() == []
