"""Benchmark: scaling out. 1, 2 and 4 runtime processes against one PostgreSQL run W2 together.

    python bench/scaleout.py [--database-url URL] [--per-process 1000] [--processes 1,2,4]
    python bench/scaleout.py --smoke

Each process is a runtime of its own (its own executor, its own pool) in one shared schema,
running W2's workload: ``--per-process`` workflows of 3 no-op steps, 64 in flight. All processes
of a round open and warm up first, then start together (a "go" line on their stdin); the figure
is the total of workflows they finished divided by the wall time from "go" to the last one
done. On a machine of few cores the processes share the CPU with PostgreSQL, so the table shows
where the database, not the library, becomes the limit: the total stops growing (or falls) once
the server's commits are the bottleneck, while each process's own rate falls.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid

from aiodurable import Runtime, step, workflow

IN_FLIGHT = 64
STEPS = 3


@step(name="bench_scaleout.noop")
async def noop(i: int) -> int:
    return i


@workflow(name="bench_scaleout.steps")
async def steps_workflow(steps: int) -> int:
    for i in range(steps):
        await noop(i)
    return steps


async def _run_many(count: int) -> None:
    """``count`` workflows, ``IN_FLIGHT`` at a time."""
    remaining = iter(range(count))

    async def worker() -> None:
        for _ in remaining:
            await steps_workflow(STEPS)

    await asyncio.gather(*(worker() for _ in range(min(IN_FLIGHT, count))))


async def worker_main(url: str, schema: str, index: int, count: int) -> None:
    """One process of a round: open, warm up, say READY, wait for "go", run, say DONE."""
    async with Runtime(url, schema=schema, executor_id=f"scaleout-{index}", app_version="bench"):
        await _run_many(IN_FLIGHT)  # warm: connections opened, statements prepared
        print("READY", flush=True)
        stdin = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
        await stdin.readline()
        started = time.perf_counter()
        await _run_many(count)
        print(f"DONE {count} {time.perf_counter() - started:.6f}", flush=True)


async def _round(url: str, schema: str, processes: int, per_process: int) -> tuple[float, float]:
    """Run one round; return (total workflows/s, the slowest process's own workflows/s)."""
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--worker",
            url,
            schema,
            str(i),
            str(per_process),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for i in range(processes)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            line = await asyncio.wait_for(child.stdout.readline(), 120)
            if not line.startswith(b"READY"):
                raise RuntimeError(f"a worker failed to start: {line!r}")
        started = time.perf_counter()
        for child in children:
            assert child.stdin is not None
            child.stdin.write(b"go\n")
            await child.stdin.drain()
        rates = []
        for child in children:
            assert child.stdout is not None
            done = (await asyncio.wait_for(child.stdout.readline(), 600)).split()
            if not done or done[0] != b"DONE":
                raise RuntimeError(f"a worker failed: {done!r}")
            rates.append(int(done[1]) / float(done[2]))
        elapsed = time.perf_counter() - started
        for child in children:
            await child.wait()
    finally:
        for child in children:
            if child.returncode is None:
                child.kill()
                await child.wait()
    return processes * per_process / elapsed, min(rates)


async def main(url: str | None, counts: list[int], per_process: int) -> None:
    """Every round in one invocation, each in a fresh schema of the same server."""
    async with Runtime(url, recover=False) as rt:  # starts the embedded server if no URL
        url = rt.database_url
        rows = []
        for processes in counts:
            schema = f"bench_scale_{uuid.uuid4().hex[:8]}"
            total, slowest = await _round(url, schema, processes, per_process)
            rows.append((processes, total, slowest))
            print(f"  {processes} process(es): {total:,.0f} workflows/s", flush=True)
    base = rows[0][1]
    print("\n| processes | workflows/s, all together | vs 1 process | slowest process's own |")
    print("|----------:|--------------------------:|-------------:|----------------------:|")
    for processes, total, slowest in rows:
        print(f"| {processes} | {total:,.0f} | {total / base:.2f}x | {slowest:,.0f}/s |")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _, _, url_arg, schema_arg, index_arg, count_arg = sys.argv
        asyncio.run(worker_main(url_arg, schema_arg, int(index_arg), int(count_arg)))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--per-process", type=int, default=1000)
    parser.add_argument("--processes", default="1,2,4", help="process counts, e.g. 1,2,4")
    parser.add_argument("--smoke", action="store_true", help="1 and 2 processes, 100 each")
    args = parser.parse_args()
    counts = [int(n) for n in args.processes.split(",")]
    per_process = args.per_process
    if args.smoke:
        counts, per_process = [1, 2], 100
    asyncio.run(main(args.database_url, counts, per_process))
