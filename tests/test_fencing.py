"""Fencing and self-healing: an executor whose workflows were taken over while it was paused
runs none of their steps when it wakes; a restart of PostgreSQL is not mistaken for silence;
the runtime's background loops outlive any outage."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import asyncpg
import pytest

import aiodurable
from aiodurable import Queue, Runtime, WorkflowStatus
from aiodurable.testing import hooks

from .apps import fence_app
from .faults import poll, private_postgres, terminate_backends
from .proc import Child

pytestmark = pytest.mark.anyio


def _runtime(url: str, schema: str, executor_id: str, **options: float) -> Runtime:
    return Runtime(
        url,
        schema=schema,
        executor_id=executor_id,
        app_version="fence",
        heartbeat_interval=fence_app.HEARTBEAT,
        executor_lease=fence_app.LEASE,
        **options,  # type: ignore[arg-type]
    )


async def test_a_paused_executor_whose_workflow_was_taken_over_runs_no_step_when_it_wakes(
    schema: str,
) -> None:
    """A runs step one and enters an 8 s durable sleep; A is paused (SIGSTOP) and its
    connections terminated; B takes the workflow over and finishes it; A is continued
    (SIGCONT): A runs no step, writes no journal entry, and logs that it lost the workflow."""
    async with private_postgres() as pg:
        env = {
            "AIODURABLE_DATABASE_URL": pg.url,
            "AIODURABLE_EXECUTOR_ID": "fence-a",
            "TEST_SCHEMA": schema,
            "FENCE_SLEEP": "8",
        }
        a = Child("fence_app.py", "fenced-1", env=env)
        admin = await pg.connect()
        try:
            await a.expect("journaled one fenced-1")
            os.kill(a.proc.pid, signal.SIGSTOP)
            assert await terminate_backends(admin) > 0
            fence_app.executions.clear()
            async with _runtime(pg.url, schema, "fence-b") as b:
                handle = await b.retrieve_workflow("fenced-1")
                async with asyncio.timeout(40):
                    assert await handle.get_result() == "onetwo"
                assert fence_app.executions == [f"two {fence_app.who}"]
                journal = await admin.fetch(
                    f"SELECT function_id, name, completed_at FROM {schema}.steps"
                    " WHERE workflow_id = 'fenced-1' ORDER BY function_id"
                )
                assert [r["name"] for r in journal] == ["one", "aiodurable.sleep", "two"]
                os.kill(a.proc.pid, signal.SIGCONT)
                lost = await a.expect("was taken over while")
                assert "fenced-1" in lost
                # A's own handle follows the workflow to where it finished.
                await a.expect("result onetwo")
                again = await admin.fetch(
                    f"SELECT function_id, name, completed_at FROM {schema}.steps"
                    " WHERE workflow_id = 'fenced-1' ORDER BY function_id"
                )
                assert again == journal
                row = await b.get_workflow_status("fenced-1")
                assert (row.status, row.executor_id) == (WorkflowStatus.SUCCESS, "fence-b")
            assert not [line for line in a.lines if line.startswith("effect two")], a.lines
        finally:
            os.kill(a.proc.pid, signal.SIGCONT)
            await a.kill()
            await admin.close()


@pytest.mark.parametrize("downtime", [2.0, 4.5])
async def test_a_restart_of_postgresql_is_not_silence(
    schema: str, caplog: pytest.LogCaptureFixture, downtime: float
) -> None:
    """Heartbeat 1 s, lease 3 s, and PostgreSQL stopped in immediate mode for about 2 s (and
    for longer than the lease) while two live executors run workflows: neither takes the
    other's workflows over."""
    caplog.set_level(logging.INFO, logger="aiodurable")
    async with private_postgres() as pg:
        async with (
            _runtime(pg.url, schema, "live-1") as one,
            _runtime(pg.url, schema, "live-2") as two,
        ):
            for rt, wid in ((one, "on-1"), (two, "on-2")):
                with aiodurable.set_workflow_id(wid):
                    await rt.start_workflow(fence_app.flow, 60.0)
            admin = await pg.connect()
            await _until(admin, f"SELECT count(*) = 2 FROM {schema}.steps WHERE name = 'one'")
            await admin.close()
            await pg.crash()
            await asyncio.sleep(downtime)  # the outage itself: what the test is about
            await pg.start()
            admin = await pg.connect()
            try:
                # Long enough for a takeover to have happened: two leases after the restart.
                await _until(
                    admin,
                    "SELECT clock_timestamp() > pg_postmaster_start_time() + interval '6 s'",
                    timeout=30,
                )
                owners = await admin.fetch(
                    f"SELECT workflow_id, executor_id, status FROM {schema}.workflows"
                    " ORDER BY workflow_id"
                )
            finally:
                await admin.close()
            assert [tuple(r) for r in owners] == [
                ("on-1", "live-1", "PENDING"),
                ("on-2", "live-2", "PENDING"),
            ]
            assert "took over" not in caplog.text
            assert one.health().ok and two.health().ok, (one.health(), two.health())


@pytest.mark.slow
async def test_a_runtime_with_a_queue_outlives_a_40_s_outage(schema: str) -> None:
    """With the default settings (a 30 s retry budget), PostgreSQL stopped for 40 s: the
    runtime's loops fail and come back, and once the server is back a workflow enqueued then
    starts within a second, and an unassigned one is claimed within a second."""
    queue = Queue("fence-outage-40")
    async with private_postgres() as pg:
        async with Runtime(pg.url, schema=schema, app_version="fence") as rt:
            with aiodurable.set_workflow_id("unassigned-1"):
                await rt.start_workflow(fence_app.flow, 3600.0)
            admin = await pg.connect()
            try:
                await _until(
                    admin,
                    f"SELECT count(*) > 0 FROM {schema}.steps"
                    " WHERE workflow_id = 'unassigned-1' AND name = 'aiodurable.sleep'",
                )
            finally:
                await admin.close()
            await rt.cancel_workflow("unassigned-1")
            await hooks(rt).wait_stopped("unassigned-1")
            loop = asyncio.get_running_loop()
            with LogWatch("aiodurable dispatcher paused", "aiodurable claimer paused") as watch:
                await pg.stop()
                stopped = loop.time()
                async with asyncio.timeout(60):
                    await watch.all_seen()  # each failed after its 30 s of retries
            # The outage lasts 40 s in all: its length is the point of the test.
            await asyncio.sleep(max(0.0, stopped + 40.0 - loop.time()))
            await pg.start()
            after = await queue.enqueue(fence_app.flow, 0.0)
            async with asyncio.timeout(1.5):
                assert await after.get_result() == "onetwo"
            admin = await pg.connect()
            try:
                # As `aiodurable workflow resume` leaves one: PENDING with no executor.
                await admin.execute(
                    f"UPDATE {schema}.workflows SET status = 'PENDING', executor_id = '',"
                    " app_version = '' WHERE workflow_id = 'unassigned-1'"
                )
                await admin.execute(
                    "SELECT pg_notify($1, json_build_array('x', 'unassigned-1')::text)",
                    hooks(rt).store.channel,
                )
                await _until(
                    admin,
                    f"SELECT executor_id = '{rt.executor_id}' FROM {schema}.workflows"
                    " WHERE workflow_id = 'unassigned-1'",
                    timeout=1.0,
                )
            finally:
                await admin.close()
            await rt.cancel_workflow("unassigned-1")
            await hooks(rt).confirm_ownership()
            assert rt.health().ok, rt.health().problems


async def test_dispatch_and_claiming_outlive_an_outage_longer_than_the_retry_budget(
    schema: str,
) -> None:
    """A runtime with a queue survives an outage longer than its retry budget: its loops fail
    and are restarted, its health says so, and once the server is back a queued workflow starts
    and an unassigned one is claimed at once."""
    queue = Queue("fence-outage")
    async with private_postgres() as pg:
        rt = Runtime(
            pg.url,
            schema=schema,
            app_version="fence",
            notify_fallback=0.5,
            unreachable_timeout=1.0,
        )
        async with rt:
            before = await queue.enqueue(fence_app.flow, 0.0)
            assert await before.get_result() == "onetwo"
            with LogWatch("aiodurable dispatcher paused", "aiodurable claimer paused") as watch:
                await pg.stop()
                async with asyncio.timeout(30):
                    await watch.all_seen()
            assert {"dispatcher", "claimer"} <= _restarted(rt)
            assert not rt.health().ok
            await pg.start()
            after = await queue.enqueue(fence_app.flow, 0.0)
            async with asyncio.timeout(3):
                assert await after.get_result() == "onetwo"
            # An unassigned workflow, as `aiodurable workflow resume` leaves one: claimed at once.
            with aiodurable.set_workflow_id("claimed-1"):
                await rt.start_workflow(fence_app.flow, 3600.0)
            admin = await pg.connect()
            try:
                await _until(
                    admin,
                    f"SELECT count(*) > 0 FROM {schema}.steps"
                    " WHERE workflow_id = 'claimed-1' AND name = 'aiodurable.sleep'",
                )
                await rt.cancel_workflow("claimed-1")
                await hooks(rt).wait_stopped("claimed-1")
                assert await hooks(rt).store.resume("claimed-1", "", "", rt.clock.now()) is not None
                await _until(
                    admin,
                    f"SELECT executor_id = '{rt.executor_id}' FROM {schema}.workflows"
                    " WHERE workflow_id = 'claimed-1' AND status = 'PENDING'",
                    timeout=3,
                )
            finally:
                await admin.close()
            await rt.cancel_workflow("claimed-1")
            assert rt.health().ok, rt.health().problems


class LogWatch(logging.Handler):
    """Events for log records of the runtime: wait until each of some texts has been logged."""

    def __init__(self, *texts: str) -> None:
        super().__init__(logging.DEBUG)
        self._events = {text: asyncio.Event() for text in texts}

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        for text, event in self._events.items():
            if text in message:
                event.set()

    async def all_seen(self) -> None:
        for event in self._events.values():
            await event.wait()

    def __enter__(self) -> LogWatch:
        logging.getLogger("aiodurable").addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("aiodurable").removeHandler(self)


def _restarted(rt: Runtime) -> set[str]:
    return {loop.name for loop in rt.health().loops if loop.restarts}


async def _until(conn: asyncpg.Connection, sql: str, timeout: float = 30.0) -> None:
    await poll(conn, sql, timeout=timeout)
