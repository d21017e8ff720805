"""A bounded soak: two minutes of steady load with a fault every few seconds (every backend
terminated, alternating with every connection reset by a proxy). Memory and connections stay
flat, and nothing is lost. ``AIODURABLE_SOAK_SECONDS`` changes the length."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from pathlib import Path

import pytest

from aiodurable import Runtime

from .faults import (
    LOG_ENV,
    aiodurable_connections,
    check_run,
    expected_messages,
    private_postgres,
    proxy_to,
    rss_kib,
    start_pairs,
    terminate_backends,
)

pytestmark = pytest.mark.anyio

DURATION = float(os.environ.get("AIODURABLE_SOAK_SECONDS", "120"))
FAULT_EVERY = 3.0
PAIRS, ROUNDS, POOL = 4, 5, 16


@pytest.mark.slow
@pytest.mark.timeout(DURATION + 120)
async def test_minutes_of_load_with_a_fault_every_few_seconds_stay_flat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """At steady load, with backends terminated and connections reset in turn every three
    seconds for minutes: every workflow completes exactly as without faults, the runtime's
    memory grows by little and its connections never exceed its pool plus the LISTEN one
    (the figures, first against last, are printed)."""
    # pytest keeps every captured log record of a test in memory; the runtime's warnings about
    # the faults would otherwise count as its own growth.
    caplog.set_level(logging.ERROR, logger="aiodurable")
    log = tmp_path / "executions"
    monkeypatch.setenv(LOG_ENV, str(log))
    samples: list[tuple[float, int, int]] = []
    batches = 0
    async with private_postgres() as pg, proxy_to(pg.socket) as proxy:
        admin = await pg.connect()
        try:
            async with Runtime(
                proxy.url,
                schema="soak",
                executor_id="soak",
                app_version="soak",
                pool_size=POOL,
                notify_fallback=3600,
            ) as rt:
                stop = asyncio.Event()

                async def load() -> None:
                    nonlocal batches
                    for n in itertools.count():
                        if stop.is_set():
                            return
                        handles = await start_pairs(rt, f"s{n}", PAIRS, ROUNDS, 0.01)
                        async with asyncio.timeout(30):
                            for wid, handle in handles.items():
                                peer = wid[:-1] + ("b" if wid.endswith("a") else "a")
                                assert await handle.get_result() == expected_messages(peer, ROUNDS)
                        batches += 1

                async def faults() -> None:
                    started = time.monotonic()
                    for n in itertools.count():
                        await asyncio.sleep(FAULT_EVERY)
                        samples.append(
                            (
                                time.monotonic() - started,
                                rss_kib(),
                                await aiodurable_connections(admin),
                            )
                        )
                        if time.monotonic() - started > DURATION:
                            return
                        if n % 2:
                            proxy.reset()
                        else:
                            await terminate_backends(admin)

                async with asyncio.TaskGroup() as tg:
                    tg.create_task(load())
                    await faults()
                    stop.set()  # the batch under way finishes
            verdict = await check_run(admin, "soak", log, rounds=None)
        finally:
            await admin.close()
    first, last = samples[1], samples[-1]  # the first sample after warm-up
    print(f"\n{batches} batches of {PAIRS * 2} workflows; {verdict.steps} steps")
    print(f"RSS first {first[1]} KiB at {first[0]:.0f} s, last {last[1]} KiB at {last[0]:.0f} s")
    print(f"connections: first {first[2]}, last {last[2]}, max {max(s[2] for s in samples)}")
    assert batches >= 10
    assert verdict.problems == []
    assert max(s[2] for s in samples) <= POOL + 1
    assert last[1] - first[1] < 50 * 1024, "RSS grew by more than 50 MiB in a minute"
