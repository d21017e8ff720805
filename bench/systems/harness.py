"""What every system runner shares: arguments, scales, timing helpers and the result line.

A runner is a script, ``python bench/systems/<system>_runner.py W1 --database-url URL --scale
full``, that runs one workload against a database of its own and prints one line,
``BENCH_RESULT {json}``, with the figures it measured. It runs in a process of its own so that
the client CPU, the memory and the event loop of one system never touch another's.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

RESULT_PREFIX = "BENCH_RESULT "
WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6", "W7")
SKIP_NOTES = {
    "W7": "adopting another version's workflows after replaying their journals is aiodurable's own",
}
"""Why a system that lacks a workload lacks it, where there is more to say than that it does."""


@dataclass(frozen=True)
class Scale:
    """The sizes of every workload at one scale."""

    w1_runs: int = 200  # sequential runs of the 10-step (and of the 0-step) workflow
    w1_warmup: int = 20
    w1_steps: int = 10
    w2_total: int = 1000  # workflows of w2_steps steps, w2_in_flight at a time
    w2_steps: int = 3
    w2_in_flight: int = 64
    w3_pairs: int = 64  # echo workflows, each driven by a caller of its own, all at once
    w3_rounds: int = 200  # round trips per pair, one after another
    w4_sleeps: int = 50
    w4_seconds: float = 0.2
    w5_workflows: int = 10_000  # PENDING workflows of w5_steps steps, w5_done of them completed
    w5_steps: int = 5
    w5_done: int = 2
    w6_waiting: int = 10_000
    start_in_flight: int = 64  # how many starts (or sends) W5/W6 set up concurrently


SCALES: dict[str, Scale] = {
    "full": Scale(),
    "smoke": Scale(
        w1_runs=10,
        w1_warmup=2,
        w2_total=48,
        w2_in_flight=16,
        w3_pairs=4,
        w3_rounds=10,
        w4_sleeps=3,
        w5_workflows=200,
        w6_waiting=200,
    ),
}

Metrics = dict[str, Any]
Workload = Callable[[str, Scale], Coroutine[Any, Any, Metrics]]


def percentile(samples: list[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank."""
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index]


def latency_metrics(samples: list[float], prefix: str = "") -> Metrics:
    """Median and p99 of samples in ms."""
    return {
        f"{prefix}median_ms": statistics.median(samples),
        f"{prefix}p99_ms": percentile(samples, 99),
    }


async def sequential(run: Callable[[], Awaitable[object]], count: int, warmup: int) -> list[float]:
    """Latencies in ms of ``count`` runs one after another, after ``warmup`` untimed runs."""
    for _ in range(warmup):
        await run()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await run()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def concurrently(run: Callable[[int], Awaitable[object]], total: int, in_flight: int) -> None:
    """Call ``run(0) .. run(total - 1)`` with at most ``in_flight`` calls at a time."""
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < total:
            index = next_index
            next_index += 1
            await run(index)

    await asyncio.gather(*(worker() for _ in range(min(in_flight, total))))


async def throughput(run: Callable[[], Awaitable[object]], scale: Scale) -> Metrics:
    """W2's figures: workflows/s, steps/s and client CPU per workflow (this process's)."""

    async def one(_: int) -> None:
        await run()

    await concurrently(one, min(scale.w2_in_flight, scale.w2_total), scale.w2_in_flight)  # warm
    cpu = time.process_time()
    started = time.perf_counter()
    await concurrently(one, scale.w2_total, scale.w2_in_flight)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    return {
        "workflows_per_s": scale.w2_total / elapsed,
        "steps_per_s": scale.w2_total * scale.w2_steps / elapsed,
        "cpu_ms_per_workflow": cpu / scale.w2_total * 1000,
    }


async def round_trips(trip: Callable[[int, int], Awaitable[object]], scale: Scale) -> Metrics:
    """W3's figures: ``scale.w3_pairs`` callers at once, each making ``scale.w3_rounds`` round
    trips ``trip(pair, round)`` one after another: the median and p99 latency of every round
    trip, and round trips per second over them all."""
    samples: list[float] = []

    async def caller(pair: int) -> None:
        for i in range(scale.w3_rounds):
            started = time.perf_counter()
            await trip(pair, i)
            samples.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(caller(pair) for pair in range(scale.w3_pairs)))
    elapsed = time.perf_counter() - started
    metrics = latency_metrics(samples)
    metrics["round_trips_per_s"] = len(samples) / elapsed
    return metrics


def rss_bytes() -> int:
    """This process's resident memory now (Linux), else its peak."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


async def settle(quiet_cpu: float = 0.01, window: float = 0.2, limit: float = 30.0) -> None:
    """Wait until this process is idle: less than ``quiet_cpu`` s of CPU over ``window`` s."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        cpu = time.process_time()
        await asyncio.sleep(window)
        if time.process_time() - cpu < quiet_cpu:
            return


async def waiting_memory(
    start_all: Callable[[], Awaitable[None]], waiting: Callable[[], int], count: int
) -> float:
    """Bytes of RSS per workflow left waiting by ``start_all`` (``waiting()`` counts them)."""
    gc.collect()
    await settle()
    before = rss_bytes()
    await start_all()
    while waiting() < count:  # noqa: ASYNC110  (a plain counter, shared by every runner)
        await asyncio.sleep(0.01)
    await settle()
    gc.collect()
    return (rss_bytes() - before) / count


async def poll_until(check: Callable[[], Awaitable[bool]], interval: float = 0.01) -> None:
    """Await ``check()`` every ``interval`` s until it is true."""
    while not await check():  # noqa: ASYNC110  (polls the database, which sends no signal)
        await asyncio.sleep(interval)


def main(system: str, workloads: Mapping[str, Workload], argv: list[str] | None = None) -> int:
    """Run one workload of ``system`` as this process's only job and print its result line."""
    parser = argparse.ArgumentParser(description=f"one benchmark workload on {system}")
    parser.add_argument("workload", choices=WORKLOADS)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--scale", choices=sorted(SCALES), default="full")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args(argv)
    result: Metrics = {"system": system, "workload": args.workload, "loop": args.loop}
    fn = workloads.get(args.workload)
    if fn is None:
        why = SKIP_NOTES.get(args.workload)
        result["skipped"] = f"{system} has no {args.workload}" + (f": {why}" if why else "")
    else:
        coro = fn(args.database_url, SCALES[args.scale])
        metrics: Metrics
        if args.loop == "uvloop":
            import uvloop

            metrics = uvloop.run(coro)
        else:
            metrics = asyncio.run(coro)
        result.update(metrics)
    sys.stdout.flush()
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0
