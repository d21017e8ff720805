"""Benchmarks: aiodurable beside DBOS Transact and a "direct" baseline on plain asyncpg.

    python bench/run.py                  # the embedded PostgreSQL (default settings: fsync on)
    python bench/run.py --database-url postgresql://...
    python bench/run.py --smoke          # every workload at a tiny scale: checks that it works
    python bench/run.py --only W1,W3 --json out.json --png out.png
    python bench/run.py --only W1,W2 --systems direct,aiodurable --baseline HEAD~3
                                         # before and after a change, in one invocation
    nox -s bench -- --smoke              # the same, in a venv that also has dbos and matplotlib

One invocation, one PostgreSQL server. Each (workload, system) runs in a child process of its own
(``bench/systems/<system>_runner.py``) on a database of its own, created for it and dropped after.
The direct baseline does the least a journal can do: one INSERT commit per journal write,
LISTEN/NOTIFY wake-ups, no recovery. DBOS runs only where ``dbos`` can be imported; otherwise its
column is skipped with a note. Workloads:

- W1: a workflow of 10 no-op steps, 200 times in sequence: median and p99; the marginal cost of a
  step, (t10 - t0) / 10, from the medians of 10-step and 0-step runs.
- W2: 1,000 workflows of 3 no-op steps, 64 in flight: workflows/s, steps/s, client CPU/workflow.
- W3: 64 pairs at once, each a caller and an echo workflow of its own: the caller sends to its
  workflow waiting in recv, which set_events a reply that the caller awaits with get_event; 200
  round trips per pair, one after another: median and p99 round trip, and round trips/s in all.
- W4: a 0.2 s durable sleep, 50 times: median overshoot.
- W5: 10,000 PENDING workflows of 5 steps, 2 of them completed; a new runtime: time until all
  are SUCCESS.
- W6: 10,000 workflows waiting in recv in one process: memory per waiting workflow, and the time
  to wake them all with 10,000 sends.
- W7 (aiodurable only): W5's 10,000 workflows, recorded by another application version whose
  executor is gone; ``upgrade_workflows()`` on a runtime of the current version: workflows
  adopted per second (each journal replayed against the code first), shown beside W5's rate.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import importlib.util
import io
import json
import os
import platform
import secrets
import subprocess
import sys
import tarfile
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import report

HERE = Path(__file__).resolve().parent
RUNNERS = {
    "direct": HERE / "systems" / "direct_runner.py",
    "aiodurable": HERE / "systems" / "aiodurable_runner.py",
    "DBOS": HERE / "systems" / "dbos_runner.py",
}
# Extra environment per system: the baseline imports aiodurable from a tree of its own.
RUNNER_ENV: dict[str, dict[str, str]] = {}
WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6", "W7")
RESULT_PREFIX = "BENCH_RESULT "  # as printed by bench/systems/harness.py
SETTINGS = ("server_version", "fsync", "synchronous_commit", "shared_buffers", "max_connections")


def database_url(url: str, database: str) -> str:
    """``url`` naming ``database`` instead of its own."""
    return urlunsplit(urlsplit(url)._replace(path="/" + database))


def version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


async def run_child(
    system: str, workload: str, url: str, scale: str, loop: str, timeout: float
) -> dict[str, Any]:
    """Run one workload of one system in its own process; return its result line, or a failure
    with the tail of its output."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(RUNNERS[system]),
        workload,
        "--database-url",
        url,
        "--scale",
        scale,
        "--loop",
        loop,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **RUNNER_ENV.get(system, {})},
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return {"system": system, "workload": workload, "error": f"timed out after {timeout} s"}
    text = out.decode(errors="replace")
    for line in reversed(text.splitlines()):
        if line.startswith(RESULT_PREFIX) and proc.returncode == 0:
            result: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
            result["system"] = system  # (the baseline's runner names itself aiodurable)
            return result
    tail = "\n".join(text.splitlines()[-15:])
    return {
        "system": system,
        "workload": workload,
        "error": f"exited with {proc.returncode}:\n{tail}",
    }


async def bench(
    args: argparse.Namespace, systems: list[str], workloads: list[str]
) -> dict[str, Any]:
    """Run the selected workloads for the selected systems on one server."""
    scale = "smoke" if args.smoke else "full"
    timeout = 300.0 if args.smoke else 1800.0
    results: list[dict[str, Any]] = []
    async with AsyncExitStack() as stack:
        url: str | None = args.database_url
        if url is None:
            from aiodurable._embedded import embedded_server

            url = await stack.enter_async_context(embedded_server())
        admin = await asyncpg.connect(url)
        stack.push_async_callback(admin.close)
        settings = {name: await admin.fetchval(f"SHOW {name}") for name in SETTINGS}
        runs = [(r, w, s) for r in range(args.repeat) for w in workloads for s in systems]
        for round_, workload, system in runs:
            database = f"bench_{system}_{workload}_{secrets.token_hex(4)}".lower()
            await admin.execute(f"CREATE DATABASE {database}")
            started = time.perf_counter()
            try:
                result = await run_child(
                    system, workload, database_url(url, database), scale, args.loop, timeout
                )
            finally:
                await admin.execute(f"DROP DATABASE {database} WITH (FORCE)")
            result["wall_s"] = time.perf_counter() - started
            result["round"] = round_
            results.append(result)
            status = result.get("error") or result.get("skipped") or "ok"
            print(
                f"  {workload} {system:<10} {result['wall_s']:6.1f} s  {status}",
                file=sys.stderr,
                flush=True,
            )
    return {"settings": settings, "results": results, "scale": scale}


def add_baseline(ref: str) -> str:
    """Add the system ``before``: the same aiodurable runner on the package as of git ``ref``
    (extracted to a temporary folder that the runner imports it from). Returns that folder."""
    root = HERE.parent
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", "--format=tar", ref, "aiodurable"],
        capture_output=True,
        check=True,
    ).stdout
    folder = tempfile.mkdtemp(prefix="aiodurable-baseline-")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    RUNNERS[report.BEFORE] = RUNNERS["aiodurable"]
    RUNNER_ENV[report.BEFORE] = {"PYTHONPATH": folder}
    return folder


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, print the table (and write JSON and a chart if asked)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--database-url", default=None, help="default: the embedded PostgreSQL")
    parser.add_argument("--smoke", action="store_true", help="every workload at a tiny scale")
    parser.add_argument("--only", default=None, help="workloads to run, e.g. W1,W3")
    parser.add_argument("--systems", default=None, help="e.g. direct,aiodurable (default: all)")
    has_uvloop = importlib.util.find_spec("uvloop") is not None
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="uvloop" if has_uvloop else "asyncio",
        help="the event loop of every runner (default: uvloop when installed)",
    )
    parser.add_argument(
        "--baseline",
        default=None,
        metavar="REF",
        help="also run aiodurable as of this git commit, as the system 'before', and print"
        " the two side by side (ratios to the direct baseline of the same run)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="run everything N times, interleaved; the before/after comparison takes medians",
    )
    parser.add_argument("--json", default=None, metavar="PATH", help="write the results here")
    parser.add_argument("--png", default=None, metavar="PATH", help="write a chart here")
    args = parser.parse_args(argv)
    workloads = [w.strip().upper() for w in args.only.split(",")] if args.only else list(WORKLOADS)
    if unknown := set(workloads) - set(WORKLOADS):
        parser.error(f"unknown workloads {sorted(unknown)}; choose from {', '.join(WORKLOADS)}")
    if args.baseline:
        add_baseline(args.baseline)
    systems = list(RUNNERS)
    if args.systems:
        by_lower = {s.lower(): s for s in RUNNERS}
        systems = [by_lower[s.strip().lower()] for s in args.systems.split(",")]
        if args.baseline:
            systems.append(report.BEFORE)
    notes = []
    if "DBOS" in systems and importlib.util.find_spec("dbos") is None:
        systems.remove("DBOS")
        notes.append(
            "DBOS skipped: the package 'dbos' is not installed in this environment"
            " (`nox -s bench` installs it)"
        )
    started = time.perf_counter()
    run = asyncio.run(bench(args, systems, workloads))
    results = run["results"]
    meta = {
        "scale": run["scale"],
        "loop": args.loop,
        "wall_s": time.perf_counter() - started,
        "postgresql": run["settings"],
        "database": "embedded" if args.database_url is None else "--database-url",
        "python": sys.version.split()[0],
        "machine": f"{platform.machine()}, {platform.system()}",
        "versions": {p: version(p) for p in ("aiodurable", "asyncpg", "dbos", "psycopg", "uvloop")},
        "notes": notes,
    }
    versions = ", ".join(f"{p} {v}" for p, v in meta["versions"].items() if v)
    pg = run["settings"]
    print(f"{versions}, Python {meta['python']} ({args.loop} loop), {meta['machine']}")
    print(
        f"PostgreSQL {pg['server_version']} ({meta['database']}): fsync={pg['fsync']},"
        f" synchronous_commit={pg['synchronous_commit']},"
        f" shared_buffers={pg['shared_buffers']}, max_connections={pg['max_connections']}"
    )
    print(f"scale: {run['scale']}; a = aiodurable, d = direct, D = DBOS")
    print(report.table(results))
    if args.baseline:
        print(f"\nbefore = aiodurable as of {args.baseline}; after = this tree")
        print(report.comparison(results))
    notes.extend(
        f"{r['workload']} {r['system']}: {r['skipped']}" for r in results if "skipped" in r
    )
    failed = [r for r in results if "error" in r]
    notes.extend(f"{r['workload']} {r['system']} FAILED: {r['error']}" for r in failed)
    for note in notes:
        print(f"note: {note}")
    print(f"total {meta['wall_s']:.1f} s")
    if args.json:
        report.write_json(args.json, meta, results)
    if args.png:
        title = f"{versions}; PostgreSQL {pg['server_version']}, fsync={pg['fsync']}"
        if (problem := report.write_png(args.png, results, title)) is not None:
            print(f"note: {problem}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
