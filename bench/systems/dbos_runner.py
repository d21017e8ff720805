"""The workloads on DBOS Transact's async API; see ``harness`` for how a runner is called.

``dbos`` is installed only in the benchmark environment (``nox -s bench``), so it is imported
through ``importlib`` and used as ``Any``: mypy checks this file in the development venv too.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import harness
from harness import Metrics, Scale

APP_VERSION = "bench"
EXECUTOR = "bench"
# Set in the process that prepares W5: its workflows then stop before their third step.
PREPARE_ENV = "BENCH_DBOS_W5_PREPARE"


def define(dbos: Any) -> SimpleNamespace:
    """Register the benchmark's workflows and steps with DBOS; return them.

    Each function is decorated by a call rather than with ``@``: DBOS is ``Any`` here, and an
    untyped decorator would leave the function untyped for mypy.
    """
    DBOS = dbos.DBOS  # noqa: N806  (DBOS's own name for its class)
    blocking = os.environ.get(PREPARE_ENV) == "1"
    counters = {"waiting": 0}

    async def noop(i: int) -> int:
        return i

    async def gate(i: int) -> int:
        if blocking:
            await asyncio.Event().wait()
        return i

    async def steps(n: int) -> int:
        for i in range(n):
            await noop_step(i)
        return n

    async def recover(n: int, done: int) -> int:
        for i in range(n):
            await (gate_step(i) if i == done else noop_step(i))
        return n

    async def echo(rounds: int) -> int:
        for i in range(rounds):
            request = await DBOS.recv_async("request", timeout_seconds=600)
            await DBOS.set_event_async(f"reply-{i}", request)
        return rounds

    async def sleep(seconds: float) -> float:
        started = time.time()
        await DBOS.sleep_async(seconds)
        return time.time() - started

    async def wait() -> int:
        counters["waiting"] += 1
        message: int = await DBOS.recv_async("wake", timeout_seconds=600)
        return message

    noop_step = DBOS.step(name="bench.noop")(noop)
    gate_step = DBOS.step(name="bench.gate")(gate)
    return SimpleNamespace(
        DBOS=DBOS,
        steps=DBOS.workflow(name="bench.steps")(steps),
        recover=DBOS.workflow(name="bench.recover")(recover),
        echo=DBOS.workflow(name="bench.echo")(echo),
        sleep=DBOS.workflow(name="bench.sleep")(sleep),
        wait=DBOS.workflow(name="bench.wait")(wait),
        counters=counters,
    )


def system_database_url(url: str) -> str:
    """The asyncpg URL as SQLAlchemy names the same database through psycopg 3."""
    parts = urlsplit(url)
    scheme = "postgresql+psycopg" if parts.scheme in ("postgres", "postgresql") else parts.scheme
    return urlunsplit(parts._replace(scheme=scheme))


@asynccontextmanager
async def launched(url: str) -> AsyncIterator[SimpleNamespace]:
    """DBOS configured on ``url``, launched, and destroyed on exit."""
    dbos = importlib.import_module("dbos")
    app = define(dbos)
    config = {
        "name": "bench",
        "system_database_url": system_database_url(url),
        "application_version": APP_VERSION,
        "executor_id": EXECUTOR,
        "log_level": "WARNING",
    }
    app.DBOS(config=config)
    app.DBOS.launch()
    try:
        yield app
    finally:
        await asyncio.to_thread(app.DBOS.destroy)


async def w1(url: str, scale: Scale) -> Metrics:
    async with launched(url) as app:
        zero = await harness.sequential(lambda: app.steps(0), scale.w1_runs, scale.w1_warmup)
        ten = await harness.sequential(
            lambda: app.steps(scale.w1_steps), scale.w1_runs, scale.w1_warmup
        )
    metrics = harness.latency_metrics(ten)
    metrics.update(harness.latency_metrics(zero, "0step_"))
    metrics["step_ms"] = (metrics["median_ms"] - metrics["0step_median_ms"]) / scale.w1_steps
    return metrics


async def w2(url: str, scale: Scale) -> Metrics:
    async with launched(url) as app:
        return await harness.throughput(lambda: app.steps(scale.w2_steps), scale)


async def w3(url: str, scale: Scale) -> Metrics:
    async with launched(url) as app:
        DBOS = app.DBOS  # noqa: N806
        handles = [
            await DBOS.start_workflow_async(app.echo, scale.w3_rounds)
            for _ in range(scale.w3_pairs)
        ]

        async def trip(pair: int, i: int) -> None:
            workflow_id = handles[pair].get_workflow_id()
            await DBOS.send_async(workflow_id, i, "request")
            await DBOS.get_event_async(workflow_id, f"reply-{i}", timeout_seconds=600)

        metrics = await harness.round_trips(trip, scale)
        for handle in handles:
            await handle.get_result()
    return metrics


async def w4(url: str, scale: Scale) -> Metrics:
    async with launched(url) as app:
        samples = []
        for _ in range(scale.w4_sleeps):
            slept = await app.sleep(scale.w4_seconds)
            samples.append((slept - scale.w4_seconds) * 1000)
    return {"overshoot_median_ms": statistics.median(samples)}


async def prepare_w5(url: str, scale: Scale) -> None:
    """In a process of its own: start the workflows, wait until each has journaled its first
    steps and is blocked in the next, then die by SIGKILL, leaving them PENDING."""
    n = scale.w5_workflows
    async with launched(url) as app:

        async def start(_: int) -> None:
            await app.DBOS.start_workflow_async(app.recover, scale.w5_steps, scale.w5_done)

        await harness.concurrently(start, n, scale.start_in_flight)
        conn = await asyncpg.connect(url)

        async def journaled() -> bool:
            done = await conn.fetchval("SELECT count(*) FROM dbos.operation_outputs")
            return bool(done >= n * scale.w5_done)

        await harness.poll_until(journaled, 0.05)
        os.kill(os.getpid(), signal.SIGKILL)


async def w5(url: str, scale: Scale) -> Metrics:
    """Leave the workflows PENDING by killing the process that ran them (DBOS's tables are its
    own), then time a new DBOS launch until every one of them is SUCCESS."""
    if os.environ.get(PREPARE_ENV) == "1":
        await prepare_w5(url, scale)
    scale_name = next(name for name, s in harness.SCALES.items() if s == scale)
    prepare = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "W5",
        "--database-url",
        url,
        "--scale",
        scale_name,
        env={**os.environ, PREPARE_ENV: "1"},
        stdout=subprocess.DEVNULL,
    )
    code = await prepare.wait()
    if code != -signal.SIGKILL:
        raise RuntimeError(f"the W5 preparation process exited with {code}, not by SIGKILL")
    n = scale.w5_workflows
    conn = await asyncpg.connect(url)
    try:
        pending = await conn.fetchval(
            "SELECT count(*) FROM dbos.workflow_status WHERE status = 'PENDING'"
        )
        if pending != n:
            raise RuntimeError(f"{pending} workflows PENDING after the kill, not {n}")

        async def all_done() -> bool:
            return not await conn.fetchval(
                "SELECT EXISTS (SELECT FROM dbos.workflow_status WHERE status <> 'SUCCESS')"
            )

        started = time.perf_counter()
        async with launched(url):
            opened = time.perf_counter() - started
            await harness.poll_until(all_done)
            elapsed = time.perf_counter() - started
        success = await conn.fetchval(
            "SELECT count(*) FROM dbos.workflow_status WHERE status = 'SUCCESS'"
        )
    finally:
        await conn.close()
    if success != n:
        raise RuntimeError(f"{success} of {n} workflows SUCCESS after recovery")
    return {"recovered_per_s": n / elapsed, "seconds": elapsed, "open_s": opened}


async def w6(url: str, scale: Scale) -> Metrics:
    n = scale.w6_waiting
    async with launched(url) as app:
        DBOS = app.DBOS  # noqa: N806
        for _ in range(20):  # warm every code path once
            handle = await DBOS.start_workflow_async(app.wait)
            await DBOS.send_async(handle.get_workflow_id(), 1, "wake")
            await handle.get_result()
        app.counters["waiting"] = 0
        handles: list[Any] = []

        async def start(_: int) -> None:
            handles.append(await DBOS.start_workflow_async(app.wait))

        async def start_all() -> None:
            await harness.concurrently(start, n, scale.start_in_flight)

        per_workflow = await harness.waiting_memory(
            start_all, lambda: int(app.counters["waiting"]), n
        )
        started = time.perf_counter()

        async def wake(i: int) -> None:
            await DBOS.send_async(handles[i].get_workflow_id(), i, "wake")

        await harness.concurrently(wake, n, scale.start_in_flight)
        results = await asyncio.gather(*(h.get_result() for h in handles))
        elapsed = time.perf_counter() - started
    if sorted(results) != list(range(n)):
        raise RuntimeError("a waiting workflow returned the wrong message")
    return {"bytes_per_waiting": per_workflow, "wake_all_s": elapsed}


if __name__ == "__main__":
    raise SystemExit(
        harness.main("DBOS", {"W1": w1, "W2": w2, "W3": w3, "W4": w4, "W5": w5, "W6": w6})
    )
