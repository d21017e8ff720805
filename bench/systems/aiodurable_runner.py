"""The workloads on aiodurable; see ``harness`` for how a runner is called."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid

import asyncpg
import harness
from harness import Metrics, Scale

import aiodurable
from aiodurable import Runtime, WorkflowHandle, step, workflow

# Recovery (W5) only resumes workflows of the runtime's application version and executor.
APP_VERSION = "bench"
EXECUTOR = "bench"
# W7's workflows were recorded by an older version, on an executor that no longer runs.
OLD_APP_VERSION = "bench-previous"
OLD_EXECUTOR = "bench-previous"


@step(name="bench.noop")
async def noop_step(i: int) -> int:
    return i


@workflow(name="bench.steps")
async def steps_workflow(steps: int) -> int:
    for i in range(steps):
        await noop_step(i)
    return steps


@workflow(name="bench.echo")
async def echo_workflow(rounds: int) -> int:
    for i in range(rounds):
        request = await aiodurable.recv("request", timeout=600)
        await aiodurable.set_event(f"reply-{i}", request)
    return rounds


@workflow(name="bench.sleep")
async def sleep_workflow(seconds: float) -> float:
    started = time.time()
    await aiodurable.sleep(seconds)
    return time.time() - started


waiting = 0


@workflow(name="bench.wait")
async def wait_workflow() -> int:
    global waiting
    waiting += 1
    message: int = await aiodurable.recv("wake", timeout=600)
    return message


def runtime(url: str) -> Runtime:
    return Runtime(url, app_version=APP_VERSION, executor_id=EXECUTOR)


async def w1(url: str, scale: Scale) -> Metrics:
    async with runtime(url):
        zero = await harness.sequential(lambda: steps_workflow(0), scale.w1_runs, scale.w1_warmup)
        ten = await harness.sequential(
            lambda: steps_workflow(scale.w1_steps), scale.w1_runs, scale.w1_warmup
        )
    metrics = harness.latency_metrics(ten)
    metrics.update(harness.latency_metrics(zero, "0step_"))
    metrics["step_ms"] = (metrics["median_ms"] - metrics["0step_median_ms"]) / scale.w1_steps
    return metrics


async def w2(url: str, scale: Scale) -> Metrics:
    async with runtime(url):
        return await harness.throughput(lambda: steps_workflow(scale.w2_steps), scale)


async def w3(url: str, scale: Scale) -> Metrics:
    async with runtime(url):
        handles = [
            await aiodurable.start_workflow(echo_workflow, scale.w3_rounds)
            for _ in range(scale.w3_pairs)
        ]

        async def trip(pair: int, i: int) -> None:
            workflow_id = handles[pair].workflow_id
            await aiodurable.send(workflow_id, i, "request")
            await aiodurable.get_event(workflow_id, f"reply-{i}", timeout=600)

        metrics = await harness.round_trips(trip, scale)
        for handle in handles:
            await handle.get_result()
    return metrics


async def w4(url: str, scale: Scale) -> Metrics:
    async with runtime(url):
        samples = []
        for _ in range(scale.w4_sleeps):
            slept = await sleep_workflow(scale.w4_seconds)
            samples.append((slept - scale.w4_seconds) * 1000)
    return {"overshoot_median_ms": statistics.median(samples)}


async def schema_of(url: str) -> str:
    """Create aiodurable's tables (a runtime that recovers nothing); return their schema."""
    async with Runtime(url, app_version=APP_VERSION, executor_id=EXECUTOR, recover=False) as rt:
        return rt.schema


async def write_pending(
    conn: asyncpg.Connection, schema: str, scale: Scale, app_version: str, executor: str
) -> list[str]:
    """Write W5's workflows straight into aiodurable's tables: ``w5_workflows`` PENDING
    workflows of ``w5_steps`` steps, ``w5_done`` of them journaled, recorded by ``app_version``
    on ``executor``. Returns their IDs."""
    now = int(time.time() * 1000)
    ids = [str(uuid.uuid4()) for _ in range(scale.w5_workflows)]
    inputs = f'{{"args":[{scale.w5_steps}],"kwargs":{{}}}}'.encode()
    await conn.copy_records_to_table(
        "workflows",
        schema_name=schema,
        columns=[
            "workflow_id",
            "status",
            "name",
            "format",
            "inputs",
            "created_at",
            "updated_at",
            "app_version",
            "executor_id",
        ],
        records=[
            (wid, "PENDING", "bench.steps", "json", inputs, now, now, app_version, executor)
            for wid in ids
        ],
    )
    await conn.copy_records_to_table(
        "steps",
        schema_name=schema,
        columns=[
            "workflow_id",
            "function_id",
            "name",
            "format",
            "output",
            "started_at",
            "completed_at",
        ],
        records=[
            (wid, i + 1, "bench.noop", "json", str(i).encode(), now, now)
            for wid in ids
            for i in range(scale.w5_done)
        ],
    )
    await conn.execute("VACUUM ANALYZE")
    return ids


async def all_success(conn: asyncpg.Connection, schema: str) -> bool:
    """Whether every workflow in ``schema`` is SUCCESS."""
    query = f"SELECT NOT EXISTS (SELECT FROM {schema}.workflows WHERE status <> 'SUCCESS')"
    return bool(await conn.fetchval(query))


async def check_journals(
    conn: asyncpg.Connection, schema: str, ids: list[str], scale: Scale
) -> None:
    """Fail unless every one of ``ids`` journaled all its steps, each once."""
    steps = await conn.fetchval(
        f"SELECT count(*) FROM {schema}.steps WHERE workflow_id = ANY($1)", ids
    )
    if steps != len(ids) * scale.w5_steps:
        raise RuntimeError(f"{steps} steps journaled for {len(ids)} workflows")


async def w5(url: str, scale: Scale) -> Metrics:
    """Write the PENDING workflows and their first steps in aiodurable's tables, then time a new
    runtime from its start until every one of them is SUCCESS."""
    schema = await schema_of(url)
    conn = await asyncpg.connect(url)
    try:
        ids = await write_pending(conn, schema, scale, APP_VERSION, EXECUTOR)
        started = time.perf_counter()
        async with runtime(url) as rt:
            opened = time.perf_counter() - started
            await harness.poll_until(lambda: all_success(conn, schema))
            elapsed = time.perf_counter() - started
            recovered = len(rt.recovered_workflow_ids)
        await check_journals(conn, schema, ids, scale)
    finally:
        await conn.close()
    if recovered != len(ids):
        raise RuntimeError(f"recovered {recovered} of {len(ids)} workflows")
    return {"recovered_per_s": len(ids) / elapsed, "seconds": elapsed, "open_s": opened}


async def w7(url: str, scale: Scale) -> Metrics:
    """W5's workflows, recorded by another application version on an executor that no longer
    runs: time ``upgrade_workflows()`` on an open runtime of the current version (each journal
    replayed against the code, then the workflow moved to this version and resumed here) until
    it returns with every one adopted, and on until every one is SUCCESS."""
    upgrade_workflows = getattr(aiodurable, "upgrade_workflows", None)
    if upgrade_workflows is None:
        return {"skipped": "this aiodurable has no upgrade_workflows (it predates adoption)"}
    schema = await schema_of(url)
    conn = await asyncpg.connect(url)
    try:
        ids = await write_pending(conn, schema, scale, OLD_APP_VERSION, OLD_EXECUTOR)
        async with runtime(url):
            started = time.perf_counter()
            report = await upgrade_workflows()
            adopted = time.perf_counter() - started
            await harness.poll_until(lambda: all_success(conn, schema))
            elapsed = time.perf_counter() - started
        await check_journals(conn, schema, ids, scale)
    finally:
        await conn.close()
    if sorted(report.adopted) != sorted(ids) or report.incompatible:
        incompatible = dict(list(report.incompatible.items())[:3])
        raise RuntimeError(
            f"adopted {len(report.adopted)} of {len(ids)} workflows; incompatible: {incompatible}"
        )
    return {"adopted_per_s": len(ids) / adopted, "adopt_s": adopted, "seconds": elapsed}


async def w6(url: str, scale: Scale) -> Metrics:
    n = scale.w6_waiting
    async with runtime(url):
        for _ in range(20):  # warm every code path once
            handle = await aiodurable.start_workflow(wait_workflow)
            await aiodurable.send(handle.workflow_id, 1, "wake")
            await handle.get_result()
        global waiting
        waiting = 0
        handles: list[WorkflowHandle[int]] = []

        async def start(_: int) -> None:
            handles.append(await aiodurable.start_workflow(wait_workflow))

        async def start_all() -> None:
            await harness.concurrently(start, n, scale.start_in_flight)

        per_workflow = await harness.waiting_memory(start_all, lambda: waiting, n)
        started = time.perf_counter()

        async def wake(i: int) -> None:
            await aiodurable.send(handles[i].workflow_id, i, "wake")

        await harness.concurrently(wake, n, scale.start_in_flight)
        results = await asyncio.gather(*(h.get_result() for h in handles))
        elapsed = time.perf_counter() - started
    if sorted(results) != list(range(n)):
        raise RuntimeError("a waiting workflow returned the wrong message")
    return {"bytes_per_waiting": per_workflow, "wake_all_s": elapsed}


if __name__ == "__main__":
    raise SystemExit(
        harness.main(
            "aiodurable",
            {"W1": w1, "W2": w2, "W3": w3, "W4": w4, "W5": w5, "W6": w6, "W7": w7},
        )
    )
