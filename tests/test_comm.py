"""Messages, events and durable sleep on a real PostgreSQL, woken by LISTEN/NOTIFY."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import pytest

import aiodurable
from aiodurable import (
    Runtime,
    SerializationError,
    SystemClock,
    WorkflowNotFound,
    WorkflowStatus,
    workflow,
)
from aiodurable.testing import hooks

from .conftest import RuntimeFactory
from .proc import Child

pytestmark = pytest.mark.anyio

gates: dict[str, asyncio.Event] = {}
arrivals: dict[str, asyncio.Event] = {}


async def _gate() -> None:
    wid = aiodurable.current_workflow_id()
    arrivals.setdefault(wid, asyncio.Event()).set()
    await gates.setdefault(wid, asyncio.Event()).wait()


class SpyClock(SystemClock):
    """The wall clock, announcing each durable sleep as it starts."""

    def __init__(self) -> None:
        self.sleeping = asyncio.Event()

    async def sleep_until(self, deadline: float) -> None:
        self.sleeping.set()
        await super().sleep_until(deadline)


async def poll_database(conn: asyncpg.Connection, sql: str) -> object:
    """Read ``sql`` until it gives a value: how a test watches another process's progress,
    which it can only observe through the database."""
    for _ in range(3000):
        value = await conn.fetchval(sql)
        if value:
            return value
        await asyncio.sleep(0.01)
    raise AssertionError(f"{sql!r} gave nothing within 30 s")


@workflow()
async def collect(topic: str | None, count: int) -> list[object]:
    """Receive ``count`` messages on ``topic`` (timing out after 10 s each)."""
    return [await aiodurable.recv(topic, timeout=10) for _ in range(count)]


@workflow()
async def recv_once(topic: str | None, timeout: float) -> object:
    return await aiodurable.recv(topic, timeout=timeout)


@workflow()
async def publisher() -> str:
    await aiodurable.set_event("status", "started")
    got = await aiodurable.recv("go", timeout=30)
    await aiodurable.set_event("status", f"finished {got}")
    return "done"


@workflow()
async def reader(target: str) -> object:
    seen = await aiodurable.get_event(target, "status", timeout=10)
    await _gate_step()
    return seen


async def _gate_step() -> None:
    await _gate()


@workflow()
async def sleeper(seconds: float) -> float:
    started = time.time()
    await aiodurable.sleep(seconds)
    return time.time() - started


@workflow()
async def echo() -> str:
    """Wait for a request, answer it with an event."""
    request = await aiodurable.recv("request", timeout=30)
    await aiodurable.set_event("reply", f"re: {request}")
    return "ok"


@workflow()
async def parked() -> None:
    await _gate()


async def test_messages_arrive_in_order_per_topic(runtime: RuntimeFactory) -> None:
    """Messages on one topic are received in the order sent; other topics do not interleave."""
    async with runtime() as rt:
        handle = await rt.start_workflow(collect, "a", 3)
        for i in range(3):
            await aiodurable.send(handle.workflow_id, f"b{i}", "b")
            await aiodurable.send(handle.workflow_id, f"a{i}", "a")
        assert await handle.get_result() == ["a0", "a1", "a2"]


async def test_untopiced_recv_ignores_topiced_messages(runtime: RuntimeFactory) -> None:
    """recv() without a topic takes only messages sent without one."""
    async with runtime() as rt:
        handle = await rt.start_workflow(collect, None, 2)
        await aiodurable.send(handle.workflow_id, "topiced", "t")
        await aiodurable.send(handle.workflow_id, {"plain": 1})
        await aiodurable.send(handle.workflow_id, [2])
        assert await handle.get_result() == [{"plain": 1}, [2]]
        async with hooks(rt).store.pool.acquire() as conn:
            left = await conn.fetch(f"SELECT topic FROM {rt.schema}.messages")
        assert [r["topic"] for r in left] == ["t"]


async def test_idempotency_key_delivers_once(runtime: RuntimeFactory) -> None:
    """Repeated sends with one idempotency key deliver one message, even after it is consumed."""
    async with runtime() as rt:
        handle = await rt.start_workflow(collect, "pay", 2)
        for _ in range(3):
            await aiodurable.send(handle.workflow_id, "paid", "pay", idempotency_key="k1")
        await aiodurable.send(handle.workflow_id, "refund", "pay", idempotency_key="k2")
        assert await handle.get_result() == ["paid", "refund"]
        await aiodurable.send(handle.workflow_id, "paid", "pay", idempotency_key="k1")
        async with hooks(rt).store.pool.acquire() as conn:
            assert await conn.fetchval(f"SELECT count(*) FROM {rt.schema}.messages") == 0


async def test_recv_times_out_with_none(runtime: RuntimeFactory) -> None:
    """recv returns None once its timeout passes with no message."""
    async with runtime():
        assert await recv_once("nothing", 0.2) is None


async def test_send_to_unknown_workflow_raises_not_found(runtime: RuntimeFactory) -> None:
    """Sending to an ID no workflow has raises WorkflowNotFound and writes nothing."""
    async with runtime() as rt:
        with pytest.raises(WorkflowNotFound):
            await aiodurable.send("nobody-here", "hello")
        async with hooks(rt).store.pool.acquire() as conn:
            assert await conn.fetchval(f"SELECT count(*) FROM {rt.schema}.messages") == 0


async def test_events_publish_latest_value_and_wake_readers(runtime: RuntimeFactory) -> None:
    """get_event waits until a key is published and then sees its latest value."""
    async with runtime() as rt:
        handle = await rt.start_workflow(publisher)
        assert await aiodurable.get_event(handle.workflow_id, "status") == "started"
        await aiodurable.send(handle.workflow_id, 7, "go")
        assert await handle.get_result() == "done"
        assert await aiodurable.get_event(handle.workflow_id, "status") == "finished 7"
        assert await aiodurable.get_event(handle.workflow_id, "missing", timeout=0.1) is None
        async with hooks(rt).store.pool.acquire() as conn:
            history = await conn.fetch(
                f"SELECT function_id, key FROM {rt.schema}.event_history ORDER BY function_id"
            )
        assert [(r["function_id"], r["key"]) for r in history] == [(1, "status"), (3, "status")]


async def test_get_event_in_a_workflow_replays_the_value_first_read(
    runtime: RuntimeFactory,
) -> None:
    """A get_event inside a workflow is journaled: after a restart the replay sees the value
    read the first time, not the event's newer value."""
    async with runtime() as rt:
        target = await rt.start_workflow(publisher)
        assert await aiodurable.get_event(target.workflow_id, "status") == "started"
        handle = await rt.start_workflow(reader, target.workflow_id)
        wid = handle.workflow_id
        await arrivals.setdefault(wid, asyncio.Event()).wait()
        async with hooks(rt).store.pool.acquire() as conn:
            # The event moves on while the reader is down.
            await conn.execute(
                f"UPDATE {rt.schema}.events SET value = '\"changed\"' WHERE workflow_id = $1",
                target.workflow_id,
            )
    gates.setdefault(wid, asyncio.Event()).set()
    async with runtime() as rt:
        assert await (await rt.retrieve_workflow(wid)).get_result() == "started"


async def test_round_trip_send_recv_set_event_get_event(runtime: RuntimeFactory) -> None:
    """A request sent to a waiting workflow is answered through an event the caller awaits."""
    async with runtime() as rt:
        handle = await rt.start_workflow(echo)
        await aiodurable.send(handle.workflow_id, "ping", "request")
        assert await aiodurable.get_event(handle.workflow_id, "reply") == "re: ping"


async def test_notify_wakes_recv_without_the_fallback(runtime: RuntimeFactory) -> None:
    """With the fallback re-read an hour away, a send still wakes a waiting recv at once."""
    async with runtime(notify_fallback=3600) as rt:
        handle = await rt.start_workflow(recv_once, "x", 60.0)
        await hooks(rt).notifier.until_waiting(1)
        await aiodurable.send(handle.workflow_id, "now", "x")
        async with asyncio.timeout(5):
            assert await handle.get_result() == "now"


async def test_durable_sleep_records_wake_up_and_resumes_the_remainder(
    runtime: RuntimeFactory,
) -> None:
    """A sleep journals its wake-up time; after a restart the workflow sleeps only what remains."""
    clock = SpyClock()
    async with runtime(clock=clock) as rt:
        handle = await rt.start_workflow(sleeper, 1.5)
        wid = handle.workflow_id
        await clock.sleeping.wait()
        async with hooks(rt).store.pool.acquire() as conn:
            wake = await conn.fetchval(
                f"SELECT output FROM {rt.schema}.steps WHERE workflow_id = $1", wid
            )
    wake_at = float(bytes(wake))
    # Reopen once 1 s of the 1.5 s has passed (the time the program was down): the remainder is
    # then about 0.5 s, the whole sleep again would be 1.5 s, and recovery's own cost is far
    # from the margin between them.
    await asyncio.sleep(max(0.0, wake_at - 0.5 - time.time()))
    async with runtime() as rt:
        reopened = time.time()
        await (await rt.retrieve_workflow(wid)).get_result()
        finished = time.time()
    assert finished >= wake_at - 0.01
    assert finished - reopened < 1.0  # the remainder, not the whole sleep again


async def test_bad_values_and_timeouts_are_refused(runtime: RuntimeFactory) -> None:
    """Unserializable messages are refused before writing; bad timeouts are ValueErrors;
    recv and set_event outside a workflow say where they may be called."""
    async with runtime() as rt:
        handle = await rt.start_workflow(parked)
        with pytest.raises(SerializationError, match="message"):
            await aiodurable.send(handle.workflow_id, object())
        async with hooks(rt).store.pool.acquire() as conn:
            assert await conn.fetchval(f"SELECT count(*) FROM {rt.schema}.messages") == 0
        for bad in (-1, "soon", float("nan")):
            with pytest.raises(ValueError, match="timeout"):
                await aiodurable.get_event(handle.workflow_id, "k", timeout=bad)  # type: ignore[arg-type]
        with pytest.raises(aiodurable.NoRuntimeError, match="inside a workflow"):
            await aiodurable.recv()
        with pytest.raises(aiodurable.NoRuntimeError, match="inside a workflow"):
            await aiodurable.set_event("k", 1)
        with pytest.raises(ValueError, match="sleep"):
            await aiodurable.sleep(-1)
        gates.setdefault(handle.workflow_id, asyncio.Event()).set()


@workflow()
async def bad_event() -> None:
    await aiodurable.set_event("k", {1, object()})


async def test_unserializable_event_value_fails_before_writing(runtime: RuntimeFactory) -> None:
    """set_event with a value JSON cannot encode raises SerializationError; no event is written."""
    async with runtime() as rt:
        handle = await rt.start_workflow(bad_event)
        with pytest.raises(SerializationError, match="event 'k'"):
            await handle.get_result()
        async with hooks(rt).store.pool.acquire() as conn:
            assert await conn.fetchval(f"SELECT count(*) FROM {rt.schema}.events") == 0


async def test_terminated_backends_lose_no_wakeup_and_no_message(
    runtime: RuntimeFactory, database_url: str
) -> None:
    """Terminating every backend of the runtime while workflows wait loses nothing: the waiters
    complete after the sends."""
    async with runtime(notify_fallback=3600) as rt:
        handles = [await rt.start_workflow(recv_once, "t", 60.0) for _ in range(20)]
        await hooks(rt).notifier.until_waiting(20)
        admin = await asyncpg.connect(database_url)
        try:
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = 'aiodurable' AND pid <> pg_backend_pid()"
            )
        finally:
            await admin.close()
        assert killed >= 2  # the pool and the LISTEN connection
        for i, handle in enumerate(handles):
            await aiodurable.send(handle.workflow_id, i, "t")
        async with asyncio.timeout(20):
            results = [await h.get_result() for h in handles]
        assert results == list(range(20))


@pytest.mark.slow
async def test_five_thousand_waiting_workflows_all_wake(
    runtime: RuntimeFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """5,000 workflows waiting in recv are woken by 5,000 sends and all complete; the memory per
    waiting workflow stays in kilobytes (the figure is printed)."""
    count = 5000
    async with runtime(notify_fallback=600, pool_size=16) as rt:
        before = _rss_kib()
        handles = await asyncio.gather(
            *(rt.start_workflow(recv_once, "wake", 300.0) for _ in range(count))
        )
        await hooks(rt).notifier.until_waiting(count)
        per_workflow_kib = (_rss_kib() - before) / count
        await asyncio.gather(*(aiodurable.send(h.workflow_id, "up", "wake") for h in handles))
        results = await asyncio.gather(*(h.get_result() for h in handles))
        assert results == ["up"] * count
        statuses = {(await h.get_status()).status for h in handles[:50]}
        assert statuses == {WorkflowStatus.SUCCESS}
    with capsys.disabled():
        print(f"\nmemory per waiting workflow: {per_workflow_kib:.1f} KiB")
    assert per_workflow_kib < 64


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _env(database_url: str, schema: str, **extra: str) -> dict[str, str]:
    return {
        "AIODURABLE_DATABASE_URL": database_url,
        "AIODURABLE_EXECUTOR_ID": "comm-app",
        "TEST_SCHEMA": schema,
        **extra,
    }


async def test_send_from_a_workflow_is_exactly_once_across_a_crash(
    database_url: str, schema: str
) -> None:
    """A workflow killed between its send and its next step does not send again on recovery."""
    async with Runtime(database_url, schema=schema, executor_id="other") as rt:
        target = await rt.start_workflow(parked)
        env = _env(database_url, schema)
        first = Child("comm_app.py", "send", target.workflow_id, env={**env, "COMM_BLOCK": "1"})
        await first.expect("SENT")
        await first.kill()
        second = Child("comm_app.py", "send", target.workflow_id, env=env)
        assert "sent" in await second.expect("RESULT")
        assert await second.wait() == 0
        async with hooks(rt).store.pool.acquire() as conn:
            count = await conn.fetchval(
                f"SELECT count(*) FROM {schema}.messages WHERE destination_id = $1",
                target.workflow_id,
            )
        assert count == 1
        gates.setdefault(target.workflow_id, asyncio.Event()).set()


async def test_recv_deadline_is_kept_across_a_restart(database_url: str, schema: str) -> None:
    """A workflow killed while waiting in recv waits only the remainder of its recorded deadline
    after the restart, then returns None."""
    env = _env(database_url, schema)
    first = Child("comm_app.py", "recv", "3", env=env)
    await first.expect("WAITING")
    conn = await asyncpg.connect(database_url)
    try:
        deadline_ms = await poll_database(conn, f"SELECT deadline_at FROM {schema}.waits")
        assert isinstance(deadline_ms, int)
        await asyncio.sleep(1.5)  # time passes while the workflow waits: part of its timeout
        await first.kill()
        restarted = time.time()
        second = Child("comm_app.py", "recv", "3", env=env)
        assert (await second.expect("RESULT")).endswith("None")
        finished = time.time()
        assert await second.wait() == 0
    finally:
        await conn.close()
    deadline = deadline_ms / 1000
    assert finished >= deadline - 0.01
    # Waiting the full timeout again would end after restarted + 3.
    assert finished < restarted + 3
