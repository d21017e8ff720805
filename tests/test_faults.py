"""Faults while workflows run on a real PostgreSQL: the server stopped and started again, every
backend terminated, the network cut (reset and blackholed) by a proxy, the application killed.

After each, every workflow completes (none is left PENDING), every message sent is received
exactly once, and no step whose checkpoint was written ran again.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest

import aiodurable
from aiodurable import Runtime, workflow
from aiodurable.testing import hooks

from .faults import (
    LOG_ENV,
    PrivatePostgres,
    check_run,
    expected_messages,
    poll,
    private_postgres,
    proxy_to,
    send_go,
    start_pairs,
    terminate_backends,
)
from .proc import Child

pytestmark = pytest.mark.anyio

SCHEMA = "faults"
PAIRS, ROUNDS, PAUSE = 8, 10, 0.04


@pytest.fixture
def fault_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The file the workload's steps log their executions to."""
    log = tmp_path / "executions"
    monkeypatch.setenv(LOG_ENV, str(log))
    return log


@asynccontextmanager
async def fault_runtime(url: str) -> AsyncIterator[Runtime]:
    """A runtime whose waiters never fall back to re-reading: a lost wake-up shows as a hang."""
    async with Runtime(
        url, schema=SCHEMA, executor_id="faults", app_version="faults", notify_fallback=3600
    ) as rt:
        yield rt


async def _progress(admin: asyncpg.Connection, prefix: str, steps: int) -> None:
    await poll(
        admin,
        f"SELECT count(*) >= {steps} FROM {SCHEMA}.steps"
        f" WHERE name = 'work' AND workflow_id LIKE '{prefix}-%'",
    )


async def _finish(
    pg: PrivatePostgres, workflow_ids: Iterable[str], rt: Runtime, timeout: float = 25.0
) -> float:
    """Wait for every workflow of a round; check what each received; the seconds it took."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            for wid in workflow_ids:
                peer = wid[:-1] + ("b" if wid.endswith("a") else "a")
                result = await (await rt.retrieve_workflow(wid)).get_result()
                assert result == expected_messages(peer, ROUNDS), wid
    except TimeoutError:
        raise AssertionError(await _stuck(pg)) from None
    return time.monotonic() - started


async def _stuck(pg: PrivatePostgres) -> str:
    """What the unfinished workflows last journaled, and the messages still queued."""
    admin = await pg.connect()
    try:
        unfinished = await admin.fetch(
            "SELECT w.workflow_id, w.status, w.executor_id,"
            f" (SELECT max(function_id) FROM {SCHEMA}.steps s WHERE s.workflow_id = w.workflow_id)"
            " AS last_function_id, (SELECT convert_from(output, 'UTF8') FROM"
            f" {SCHEMA}.steps s WHERE s.workflow_id = w.workflow_id ORDER BY function_id DESC"
            f" LIMIT 1) AS last_output FROM {SCHEMA}.workflows w WHERE status <> 'SUCCESS'"
            " ORDER BY 1"
        )
        queued = await admin.fetch(
            "SELECT destination_id, topic, convert_from(value, 'UTF8') AS value"
            f" FROM {SCHEMA}.messages ORDER BY message_id"
        )
        lines = ["workflows unfinished after the fault:"]
        lines += [f"  {dict(r)}" for r in unfinished]
        lines += [f"  queued: {dict(r)}" for r in queued]
        return "\n".join(lines)
    finally:
        await admin.close()


async def _verify(pg: PrivatePostgres, log: Path, rounds_run: int) -> None:
    admin = await pg.connect()
    try:
        verdict = await check_run(admin, SCHEMA, log, rounds=ROUNDS)
    finally:
        await admin.close()
    assert verdict.problems == []
    assert verdict.workflows == rounds_run * PAIRS * 2
    assert verdict.steps == rounds_run * PAIRS * 2 * ROUNDS
    print(f"\n{verdict.workflows} workflows, {verdict.steps} steps, {verdict.reruns} re-runs")


async def _rounds(
    pg: PrivatePostgres,
    url: str,
    log: Path,
    fault: Callable[[], Awaitable[None]],
    rounds: int = 3,
) -> None:
    """Run the pairs ``rounds`` times, striking with ``fault`` once each round is under way."""
    async with fault_runtime(url) as rt:
        for n in range(rounds):
            prefix = f"r{n}"
            admin = await pg.connect()
            try:
                # Odd rounds strike while every workflow waits for its "go" in recv.
                handles = await start_pairs(rt, prefix, PAIRS, ROUNDS, PAUSE, go=n % 2 == 0)
                if n % 2 == 0:
                    await _progress(admin, prefix, PAIRS * 2 * 2)
            finally:
                await admin.close()
            struck = time.monotonic()
            await fault()
            if n % 2 == 1:
                await send_go(rt, handles)
            took = await _finish(pg, handles, rt)
            print(f"round {n}: all done {took:.2f} s after the fault ended,", end=" ")
            print(f"{time.monotonic() - struck:.2f} s after it began")
    await _verify(pg, log, rounds)


async def test_server_stopped_and_started_again(fault_log: Path) -> None:
    """PostgreSQL stopped (a fast shutdown) and started again while workflows are in steps, in
    recv and in durable sleep: every workflow completes, messages arrive exactly once, no
    completed step runs again."""
    async with private_postgres() as pg:

        async def restart() -> None:
            await pg.stop()
            await asyncio.sleep(1.0)  # the outage itself
            await pg.start()

        await _rounds(pg, pg.url, fault_log, restart)


async def test_backends_terminated_repeatedly(fault_log: Path) -> None:
    """Every aiodurable backend terminated five times in a row, mid-run: every workflow
    completes, messages arrive exactly once, no completed step runs again."""
    async with private_postgres() as pg:

        async def terminate() -> None:
            admin = await pg.connect()
            try:
                for _ in range(5):
                    assert await terminate_backends(admin) >= 1
                    await asyncio.sleep(0.15)  # let the runtime reconnect, then strike again
            finally:
                await admin.close()

        await _rounds(pg, pg.url, fault_log, terminate)


async def test_network_reset_and_blackholed_through_a_proxy(fault_log: Path) -> None:
    """The runtime reaches PostgreSQL through a TCP proxy that the test resets (every connection
    closed) and blackholes (bytes held for three seconds): every workflow completes, messages
    arrive exactly once, no completed step runs again."""
    async with private_postgres() as pg, proxy_to(pg.socket) as proxy:

        async def cut() -> None:
            assert proxy.reset() >= 1
            await asyncio.sleep(0.3)
            proxy.blackhole()
            await asyncio.sleep(3.0)  # the outage itself
            proxy.restore()

        await _rounds(pg, proxy.url, fault_log, cut)


@workflow()
async def receive_one() -> object:
    return await aiodurable.recv("lost-answer", timeout=15)


async def test_recv_whose_consume_answer_is_lost_still_returns_the_message(
    fault_log: Path,
) -> None:
    """When the connection fails after recv's consume committed but before its answer arrived,
    the workflow still returns the message at once (not only when its recv times out)."""
    async with private_postgres() as pg, proxy_to(pg.socket) as proxy:
        async with fault_runtime(proxy.url) as rt, await_admin(pg) as admin:
            with aiodurable.set_workflow_id("lost-answer-victim"):
                handle = await rt.start_workflow(receive_one)
            # Once its wait's deadline is recorded, the next request naming the workflow is the
            # consume that the message wakes.
            await poll(
                admin, f"SELECT 1 FROM {SCHEMA}.waits WHERE workflow_id = 'lost-answer-victim'"
            )
            proxy.lose_answer_to(b"lost-answer-victim")
            await admin.execute(
                f"INSERT INTO {SCHEMA}.messages (destination_id, topic, format, value,"
                " created_at) VALUES ('lost-answer-victim', 'lost-answer', 'json', $1, 0)",
                b'"the message"',
            )
            await admin.execute(
                "SELECT pg_notify($1, json_build_array('m', 'lost-answer-victim',"
                " 'lost-answer')::text)",
                hooks(rt).store.channel,
            )
            await proxy.answer_lost.wait()
            cut = time.monotonic()
            async with asyncio.timeout(25):
                assert await handle.get_result() == "the message"
            took = time.monotonic() - cut
            journal = await admin.fetchval(
                f"SELECT convert_from(output, 'UTF8') FROM {SCHEMA}.steps"
                " WHERE workflow_id = 'lost-answer-victim'"
            )
    print(f"\nrecv returned {took:.2f} s after its answer was lost")
    assert journal == '"the message"'
    assert took < 5, f"recv stalled {took:.1f} s after its consume's answer was lost"


@asynccontextmanager
async def await_admin(pg: PrivatePostgres) -> AsyncIterator[asyncpg.Connection]:
    """An admin connection to the private server, closed afterwards."""
    admin = await pg.connect()
    try:
        yield admin
    finally:
        await admin.close()


@pytest.mark.slow
async def test_application_killed_at_random_moments_with_messages_in_flight(
    database_url: str, schema: str, tmp_path: Path
) -> None:
    """The application SIGKILLed again and again at random moments while pairs of workflows
    message each other: every workflow completes, every message is received exactly once, and
    no step whose checkpoint was written ran again."""
    pairs, rounds = 10, 16
    log = tmp_path / "executions"
    env = {
        "AIODURABLE_DATABASE_URL": database_url,
        "AIODURABLE_EXECUTOR_ID": "fault-app",
        "AIODURABLE_APP_VERSION": "fault-app",
        "TEST_SCHEMA": schema,
        LOG_ENV: str(log),
    }
    args = ("k", str(pairs), str(rounds), "0.04")
    rng = random.Random(4321)
    interrupted = 0
    for _ in range(20):
        child = Child("fault_app.py", *args, env=env)
        try:
            await child.expect("READY")
            await asyncio.sleep(rng.uniform(0.1, 0.5))  # the random moment of the crash
        finally:
            await child.kill()
        if any("ALL_DONE" in line for line in child.lines):
            break
        interrupted += 1
    final = Child("fault_app.py", *args, env=env)
    try:
        await final.expect("ALL_DONE", timeout=60)
    finally:
        assert await final.wait() == 0
    assert interrupted >= 3, f"only {interrupted} kills landed while work was in progress"

    conn = await asyncpg.connect(database_url)
    try:
        verdict = await check_run(conn, schema, log, rounds=rounds)
    finally:
        await conn.close()
    assert verdict.problems == []
    assert verdict.workflows == pairs * 2
    assert verdict.steps == pairs * 2 * rounds
    # Only steps in flight at a kill may have run more than once.
    assert verdict.reruns <= interrupted * pairs * 2
    print(f"\n{interrupted} kills; {verdict.steps} steps, {verdict.reruns} re-runs")
