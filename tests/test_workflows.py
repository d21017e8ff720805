"""Workflows and steps on a real PostgreSQL: results, errors, idempotency, replay, recovery."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import pytest

import aiodurable
from aiodurable import (
    DatabaseUnavailable,
    NonDeterminismError,
    Runtime,
    SchemaError,
    SerializationError,
    WorkflowFailed,
    WorkflowNotFound,
    WorkflowStatus,
    step,
    workflow,
)
from aiodurable._ids import new_workflow_id
from aiodurable.testing import hooks

from .conftest import RuntimeFactory
from .gates import Gates

pytestmark = pytest.mark.anyio

# What each step body did, per workflow ID: the side-effect counter the assertions read.
runs: Counter[tuple[str, str]] = Counter()
# Workflows park on a gate until a test releases them, and say when they arrive there.
gates = Gates()
parked = gates.arrived


@dataclass(frozen=True)
class Receipt:
    """A step result that must come back as itself on replay."""

    order: str
    amount: int
    at: datetime


class PaymentDeclined(Exception):
    """A domain error that steps raise and replays must re-raise as itself."""


class Unrebuildable(Exception):
    """An exception whose constructor cannot be called again from its recorded arguments."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a}/{b}")


def _note(name: str) -> None:
    try:
        wid = aiodurable.current_workflow_id()
    except aiodurable.NoRuntimeError:
        wid = "(outside)"
    runs[(wid, name)] += 1


@step()
async def charge(order: str, amount: int) -> Receipt:
    _note("charge")
    return Receipt(order, amount, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))


@step()
async def decline() -> None:
    _note("decline")
    raise PaymentDeclined("card declined")


@step()
async def numbered(i: int) -> int:
    _note(f"numbered-{i}")
    await asyncio.sleep(0.001 * (5 - i))  # finish in reverse order of the calls
    return i * 10


@step()
async def inner() -> str:
    _note("inner")
    return "inner"


@step()
async def outer() -> str:
    _note("outer")
    return await inner()  # a step inside a step is a plain call


async def _gate() -> None:
    await gates.park()


@step()
async def wait_for_gate() -> None:
    await _gate()


@workflow()
async def checkout(order: str, amount: int) -> Receipt:
    receipt = await charge(order, amount)
    assert isinstance(receipt, Receipt)
    return receipt


@workflow()
async def replayed(order: str) -> list[object]:
    """Steps, an exception, a gather; then parks so a second runtime replays it all."""
    seen: list[object] = []
    receipt = await charge(order, 5)
    seen.append(receipt)
    try:
        await decline()
    except PaymentDeclined as exc:
        seen.append(type(exc).__name__)
    seen.append(list(await asyncio.gather(numbered(1), numbered(2), numbered(3))))
    await wait_for_gate()
    seen.append(await outer())
    return seen


@workflow()
async def failing() -> None:
    await charge("x", 1)
    raise PaymentDeclined("no funds")


@workflow()
async def failing_oddly() -> None:
    raise Unrebuildable(1, 2)


@workflow()
async def counted(tag: str) -> str:
    _note("counted")
    await asyncio.sleep(0.05)  # long enough for concurrent starts to overlap
    return tag


@workflow()
async def version_one() -> str:
    await charge("v", 1)
    await wait_for_gate()
    return "one"


async def test_workflow_returns_result_and_records_success(runtime: RuntimeFactory) -> None:
    """A workflow's result comes back typed, and its status, inputs and output are recorded."""
    async with runtime() as rt:
        handle = await rt.start_workflow(checkout, "o-1", 42)
        result = await handle.get_result()
        assert result == Receipt("o-1", 42, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
        info = await handle.get_status()
        assert info.status is WorkflowStatus.SUCCESS
        assert info.inputs == {"args": ["o-1", 42], "kwargs": {}}
        assert info.output == result
        assert info.app_version == "test-version"
        assert info.executor_id == "test-executor"
        steps = await hooks(rt).store.load_journal(handle.workflow_id)
        assert [s.name for s in steps.values()] == ["charge"]


async def test_direct_call_runs_durably_under_a_new_uuid(runtime: RuntimeFactory) -> None:
    """Awaiting a workflow function runs it durably under a fresh UUID workflow ID."""
    async with runtime() as rt:
        assert await checkout("o-2", 7) == Receipt(
            "o-2", 7, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        )
        async with hooks(rt).store.pool.acquire() as conn:
            ids = [
                r["workflow_id"]
                for r in await conn.fetch(f"SELECT workflow_id FROM {rt.schema}.workflows")
            ]
        assert len(ids) == 1
        assert uuid.UUID(ids[0]).version == 7  # time-ordered: new rows land together


async def test_new_workflow_ids_are_ordered_by_the_millisecond_they_were_made() -> None:
    made = []
    for _ in range(3):
        made.append(new_workflow_id())
        started = time.time()
        while time.time() - started < 0.002:  # the next millisecond (a busy wait of 2 ms)
            pass
    assert made == sorted(made) and len(set(made)) == 3
    assert all(uuid.UUID(i).version == 7 and uuid.UUID(i).variant == uuid.RFC_4122 for i in made)


async def test_workflow_id_is_an_idempotency_key(runtime: RuntimeFactory) -> None:
    """A workflow ID runs once: calling it again returns the recorded result, body not rerun."""
    async with runtime():
        with aiodurable.set_workflow_id("order-77"):
            first = await checkout("o-77", 1)
        with aiodurable.set_workflow_id("order-77"):
            second = await checkout("o-77", 999)  # other inputs: still the recorded outcome
        assert first == second
        assert runs[("order-77", "charge")] == 1


async def test_set_workflow_id_applies_to_the_next_workflow_only(runtime: RuntimeFactory) -> None:
    """Only the first workflow started inside set_workflow_id takes the ID."""
    async with runtime() as rt:
        with aiodurable.set_workflow_id("first-only"):
            h1 = await rt.start_workflow(counted, "a")
            h2 = await rt.start_workflow(counted, "b")
        assert h1.workflow_id == "first-only"
        assert h2.workflow_id != "first-only"
        assert (await h1.get_result(), await h2.get_result()) == ("a", "b")


async def test_same_id_started_20_times_from_two_runtimes_runs_once(
    runtime: RuntimeFactory,
) -> None:
    """Twenty concurrent starts of one ID across two runtimes run the body once, same outcome."""
    async with runtime(executor_id="a") as a, runtime(executor_id="b") as b:

        async def start(rt: Runtime) -> str:
            with aiodurable.set_workflow_id("shared-id"):
                handle = await rt.start_workflow(counted, "tag")
            return await handle.get_result()

        results = await asyncio.gather(*(start(a if i % 2 else b) for i in range(20)))
        assert results == ["tag"] * 20
        assert runs[("shared-id", "counted")] == 1


async def test_uncaught_exception_ends_as_error_and_reraises_its_type(
    runtime: RuntimeFactory,
) -> None:
    """An uncaught exception ends the workflow as ERROR; get_result re-raises the same type."""
    async with runtime() as rt:
        handle = await rt.start_workflow(failing)
        with pytest.raises(PaymentDeclined, match="no funds"):
            await handle.get_result()
        info = await handle.get_status()
        assert info.status is WorkflowStatus.ERROR
        assert isinstance(info.error, PaymentDeclined)
        # A second handle reads the recorded error from the database.
        again = await rt.retrieve_workflow(handle.workflow_id)
        with pytest.raises(PaymentDeclined):
            await again.get_result()


async def test_error_that_cannot_be_rebuilt_is_workflow_failed(runtime: RuntimeFactory) -> None:
    """An exception that cannot be rebuilt comes back as WorkflowFailed with type and message."""
    async with runtime() as rt:
        handle = await rt.start_workflow(failing_oddly)
        with pytest.raises(Unrebuildable):
            await handle.get_result()  # in-process: the original object
        again = await rt.retrieve_workflow(handle.workflow_id)
        with pytest.raises(WorkflowFailed) as caught:
            await again.get_result()
        assert "Unrebuildable" in caught.value.error_type
        assert caught.value.error_message == "1/2"
        assert "failing_oddly" in caught.value.traceback_text


async def test_retrieve_unknown_workflow_raises_workflow_not_found(
    runtime: RuntimeFactory,
) -> None:
    """Retrieving an unknown ID raises WorkflowNotFound, which is also a LookupError."""
    async with runtime():
        with pytest.raises(WorkflowNotFound) as caught:
            await aiodurable.retrieve_workflow("no-such-id")
        assert isinstance(caught.value, LookupError)


async def test_replay_returns_recorded_values_types_and_gather_order(
    runtime: RuntimeFactory,
) -> None:
    """After a stop mid-workflow, a new runtime replays dataclasses, exceptions and a gather
    from the journal without running those steps again, then finishes the rest."""
    async with runtime() as rt:
        handle = await rt.start_workflow(replayed, "r-1")
        wid = handle.workflow_id
        await parked(wid)
        journal_before = await hooks(rt).store.load_journal(wid)
    # The first runtime closed with the workflow parked in its fourth step: it stays PENDING.
    gates.release(wid)
    async with runtime() as rt:
        result = await (await rt.retrieve_workflow(wid)).get_result()
    receipt = Receipt("r-1", 5, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert result == [receipt, "PaymentDeclined", [10, 20, 30], "inner"]
    for name in ("charge", "decline", "numbered-1", "numbered-2", "numbered-3", "outer"):
        assert runs[(wid, name)] == 1, name
    assert runs[(wid, "inner")] == 1
    names = [e.name for e in journal_before.values()]
    assert names[:2] == ["charge", "decline"]
    assert sorted(names[2:5]) == ["numbered", "numbered", "numbered"]
    ids = sorted(journal_before)
    assert ids == [1, 2, 3, 4, 5]


async def test_step_outside_workflow_is_a_plain_call() -> None:
    """A step called outside any workflow just runs, needing no runtime."""
    assert await charge("plain", 3) == Receipt(
        "plain", 3, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    )
    assert runs[("(outside)", "charge")] >= 1


async def test_changed_code_raises_non_determinism_error_naming_both(
    runtime: RuntimeFactory,
) -> None:
    """A journal entry whose name differs from the call at its function ID is reported."""
    async with runtime() as rt:
        handle = await rt.start_workflow(version_one)
        wid = handle.workflow_id
        await parked(wid)
        async with hooks(rt).store.pool.acquire() as conn:
            await conn.execute(
                f"UPDATE {rt.schema}.steps SET name = 'renamed_step' WHERE workflow_id = $1", wid
            )
    gates.release(wid)
    async with runtime() as rt:
        with pytest.raises(NonDeterminismError, match=r"renamed_step.*charge"):
            await (await rt.retrieve_workflow(wid)).get_result()


async def test_runtime_starts_no_thread(runtime: RuntimeFactory) -> None:
    """Opening a runtime, running workflows and closing it starts no thread."""
    before = threading.active_count()
    async with runtime():
        assert await checkout("t", 1) is not None
        await asyncio.gather(*(checkout(f"t{i}", i) for i in range(10)))
        assert threading.active_count() == before
    assert threading.active_count() == before


async def test_non_serializable_argument_is_refused_and_nothing_written(
    runtime: RuntimeFactory,
) -> None:
    """An argument JSON cannot encode raises SerializationError naming it; no row is written."""
    async with runtime() as rt:
        with pytest.raises(SerializationError, match="amount"):
            await rt.start_workflow(checkout, "o", object())  # type: ignore[arg-type]
        async with hooks(rt).store.pool.acquire() as conn:
            assert await conn.fetchval(f"SELECT count(*) FROM {rt.schema}.workflows") == 0


async def test_unreachable_database_is_a_clear_error_within_seconds() -> None:
    """A URL nobody answers at fails with DatabaseUnavailable naming the URL, quickly."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(DatabaseUnavailable, match=r"127\.0\.0\.1:1.*embedded"):
        async with Runtime("postgresql://u:secret@127.0.0.1:1/db", connect_timeout=3):
            pass
    assert loop.time() - started < 10


async def test_password_is_not_shown_in_connection_errors() -> None:
    """The error for an unreachable database redacts the password in the URL."""
    with pytest.raises(DatabaseUnavailable) as caught:
        async with Runtime("postgresql://u:hunter2@127.0.0.1:1/db", connect_timeout=3):
            pass
    assert "hunter2" not in str(caught.value)


async def test_schema_newer_than_the_code_is_a_clear_error(
    runtime: RuntimeFactory, database_url: str, schema: str
) -> None:
    """A schema migrated by a newer aiodurable is refused with an upgrade hint."""
    async with runtime():
        pass
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"INSERT INTO {schema}.schema_version VALUES (999)")
    finally:
        await conn.close()
    with pytest.raises(SchemaError, match=r"999.*upgrade aiodurable"):
        async with runtime():
            pass


async def test_unknown_workflow_name_is_left_pending_and_others_recover(
    runtime: RuntimeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Recovery logs a workflow whose function is not registered, leaves it PENDING, and still
    recovers the others."""
    async with runtime() as rt:
        handle = await rt.start_workflow(version_one)
        wid = handle.workflow_id
        await parked(wid)
        async with hooks(rt).store.pool.acquire() as conn:
            await conn.execute(
                f"INSERT INTO {rt.schema}.workflows (workflow_id, status, name, format, inputs,"
                " created_at, updated_at, app_version, executor_id)"
                " VALUES ('ghost', 'PENDING', 'gone.module:vanished', 'json',"
                " '{\"args\":[],\"kwargs\":{}}', 0, 0, 'test-version', 'test-executor')"
            )
    gates.release(wid)
    async with runtime() as rt:
        assert await (await rt.retrieve_workflow(wid)).get_result() == "one"
        ghost = await rt.get_workflow_status("ghost")
        assert ghost.status is WorkflowStatus.PENDING
    assert "gone.module:vanished" in caplog.text


async def test_get_result_is_woken_by_notify_from_another_runtime(
    runtime: RuntimeFactory,
) -> None:
    """A waiter in one runtime learns of a completion in another through NOTIFY, not polling:
    its fallback re-read is an hour away, yet it returns at once."""
    async with runtime(executor_id="runner") as runner:
        handle = await runner.start_workflow(version_one)
        wid = handle.workflow_id
        async with runtime(executor_id="watcher", notify_fallback=3600) as watcher:
            waiting = asyncio.ensure_future((await watcher.retrieve_workflow(wid)).get_result())
            await asyncio.sleep(0.05)
            assert not waiting.done()
            gates.release(wid)
            async with asyncio.timeout(5):
                assert await waiting == "one"


async def test_module_functions_without_runtime_name_the_fix() -> None:
    """Using the module-level API with no open runtime says how to open one."""
    with pytest.raises(aiodurable.NoRuntimeError, match=r"async with aiodurable\.Runtime"):
        await aiodurable.retrieve_workflow("x")


async def test_runtime_cannot_be_reopened(runtime: RuntimeFactory) -> None:
    """A closed runtime refuses to open again, naming the fix."""
    async with runtime() as rt:
        pass
    with pytest.raises(aiodurable.NoRuntimeError, match="create a new one"):
        await rt.open()


async def test_second_live_runtime_with_one_executor_id_takes_the_next_free_one(
    runtime: RuntimeFactory,
) -> None:
    """Two live runtimes given one executor ID do not share it: the second runs as `ID-2`, and
    the first's periodic self-check never runs the second's workflows again."""
    async with runtime(executor_id="same", notify_fallback=0.05) as first:
        async with runtime(executor_id="same", notify_fallback=0.05) as second:
            assert (first.executor_id, second.executor_id) == ("same", "same-2")
            handle = await second.start_workflow(version_one)
            wid = handle.workflow_id
            await parked(wid)
            await asyncio.sleep(0.3)  # several self-checks of both runtimes pass meanwhile
            gates.release(wid)
            assert await handle.get_result() == "one"
            assert runs[(wid, "charge")] == 1
            info = await handle.get_status()
            assert (info.executor_id, info.recovery_attempts) == ("same-2", 0)
