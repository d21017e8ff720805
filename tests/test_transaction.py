"""``@transaction()`` on a real PostgreSQL: the body's writes and its journal entry commit together,
replays never run the body, failures roll back and are recorded, serialization failures are
retried, and a separate application database keeps the same exactly-once guarantee."""

from __future__ import annotations

import asyncio
import urllib.parse
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

import aiodurable
from aiodurable import WorkflowStatus, step, transaction, workflow
from aiodurable.testing import hooks

from .conftest import RuntimeFactory
from .gates import Gates
from .proc import Child

pytestmark = pytest.mark.anyio

# How many times each transaction body ran, by key: the side-effect counter the tests read.
runs: Counter[str] = Counter()
gates = Gates()
parked = gates.arrived
release = gates.release


class LedgerError(Exception):
    """A domain error a transaction body raises after writing."""


@step()
async def wait_for_gate() -> None:
    await gates.park()


@transaction()
async def insert_row(conn: asyncpg.Connection, table: str, key: str, amount: int) -> int:
    runs[key] += 1
    await conn.execute(f"INSERT INTO {table} VALUES ($1, $2)", key, amount)
    return amount * 2


@transaction()
async def insert_then_fail(conn: asyncpg.Connection, table: str, key: str) -> None:
    runs[key] += 1
    await conn.execute(f"INSERT INTO {table} VALUES ($1, 0)", key)
    raise LedgerError(f"refused {key}")


@workflow()
async def book(table: str, key: str, amount: int) -> int:
    doubled = await insert_row(table, key, amount)
    await wait_for_gate()
    return doubled


@workflow()
async def book_failing(table: str, key: str) -> str:
    try:
        await insert_then_fail(table, key)
    except LedgerError as exc:
        outcome = f"rolled back: {exc}"
    await wait_for_gate()
    return outcome


async def _create_ledger(url: str, schema: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        await conn.execute(
            f"CREATE TABLE {schema}.ledger (id text PRIMARY KEY, amount integer NOT NULL)"
        )
    finally:
        await conn.close()
    return f"{schema}.ledger"


async def _fetch(url: str, query: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


async def test_body_writes_and_journal_entry_commit_in_one_transaction(
    runtime: RuntimeFactory, database_url: str, schema: str
) -> None:
    """The row the body wrote and the journal entry holding its output carry the same
    transaction ID: they committed together."""
    table = await _create_ledger(database_url, schema)
    async with runtime() as rt:
        release("tx-together")
        with aiodurable.set_workflow_id("tx-together"):
            assert await book(table, "k-together", 10) == 20
        journal = await hooks(rt).store.load_journal("tx-together")
    assert journal[1].name == "insert_row"
    assert journal[1].output == b"20"
    assert journal[1].error is None
    [row] = await _fetch(database_url, f"SELECT xmin::text AS x FROM {table}")
    [entry] = await _fetch(
        database_url,
        f"SELECT xmin::text AS x FROM {schema}.steps"
        " WHERE workflow_id = 'tx-together' AND function_id = 1",
    )
    assert row["x"] == entry["x"]
    assert runs["k-together"] == 1


async def test_replay_returns_recorded_output_without_running_the_body(
    runtime: RuntimeFactory, database_url: str, schema: str
) -> None:
    """A workflow resumed after its transaction committed gets the recorded output back; the body
    does not run again and its row exists once."""
    table = await _create_ledger(database_url, schema)
    async with runtime():
        with aiodurable.set_workflow_id("tx-replay"):
            await aiodurable.start_workflow(book, table, "k-replay", 21)
        await parked("tx-replay")
    release("tx-replay")
    async with runtime() as rt:
        assert "tx-replay" in rt.recovered_workflow_ids
        assert await (await rt.retrieve_workflow("tx-replay")).get_result() == 42
    assert runs["k-replay"] == 1
    assert len(await _fetch(database_url, f"SELECT * FROM {table}")) == 1


async def test_exception_rolls_back_the_body_and_replay_reraises_it(
    runtime: RuntimeFactory, database_url: str, schema: str
) -> None:
    """A body that raises after writing leaves no row; its exception is the journaled outcome,
    which a replay raises again, as its own type, without running the body."""
    table = await _create_ledger(database_url, schema)
    async with runtime() as rt:
        with aiodurable.set_workflow_id("tx-fail"):
            await rt.start_workflow(book_failing, table, "k-fail")
        await parked("tx-fail")
        journal = await hooks(rt).store.load_journal("tx-fail")
    assert journal[1].output is None
    assert journal[1].error is not None and b"refused k-fail" in journal[1].error
    assert await _fetch(database_url, f"SELECT * FROM {table}") == []
    release("tx-fail")
    async with runtime() as rt:
        result = await (await rt.retrieve_workflow("tx-fail")).get_result()
    assert result == "rolled back: refused k-fail"
    assert runs["k-fail"] == 1
    assert await _fetch(database_url, f"SELECT * FROM {table}") == []


# -- serialization failures ------------------------------------------------------------------

attempts: Counter[str] = Counter()
have_read: dict[str, asyncio.Event] = {}


@transaction(isolation="serializable")
async def increment(conn: asyncpg.Connection, table: str, me: str, other: str) -> int:
    attempts[me] += 1
    value: int = await conn.fetchval(f"SELECT amount FROM {table} WHERE id = 'counter'")
    if attempts[me] == 1:
        # Both transactions read before either writes: one of them cannot serialize.
        have_read.setdefault(me, asyncio.Event()).set()
        await have_read.setdefault(other, asyncio.Event()).wait()
    await conn.execute(f"UPDATE {table} SET amount = $1 WHERE id = 'counter'", value + 1)
    return value + 1


@workflow()
async def bump(table: str, me: str, other: str) -> int:
    return await increment(table, me, other)


async def test_serialization_failure_is_retried_until_both_commit(
    runtime: RuntimeFactory, database_url: str, schema: str
) -> None:
    """Two serializable transactions that read and update the same row collide for real; the one
    PostgreSQL aborts runs again, and both workflows succeed with the counter at 2."""
    table = await _create_ledger(database_url, schema)
    await _fetch(database_url, f"INSERT INTO {table} VALUES ('counter', 0)")
    async with runtime() as rt:
        a = await rt.start_workflow(bump, table, "a", "b")
        b = await rt.start_workflow(bump, table, "b", "a")
        results = sorted([await a.get_result(), await b.get_result()])
        assert (await a.get_status()).status is WorkflowStatus.SUCCESS
        assert (await b.get_status()).status is WorkflowStatus.SUCCESS
    assert results == [1, 2]
    assert sorted(attempts.values()) == [1, 2]  # exactly one serialization failure, retried
    [row] = await _fetch(database_url, f"SELECT amount FROM {table} WHERE id = 'counter'")
    assert row["amount"] == 2


# -- outside a workflow, isolation, bad input ----------------------------------------------


async def test_outside_a_workflow_it_is_a_plain_transaction(
    runtime: RuntimeFactory, database_url: str, schema: str
) -> None:
    """Called outside a workflow, a transaction commits its writes (or rolls them back when it
    raises) and journals nothing."""
    table = await _create_ledger(database_url, schema)
    async with runtime():
        assert await insert_row(table, "k-plain", 4) == 8
        with pytest.raises(LedgerError, match="refused k-plain-fail"):
            await insert_then_fail(table, "k-plain-fail")
    rows = await _fetch(database_url, f"SELECT id, amount FROM {table}")
    assert [(r["id"], r["amount"]) for r in rows] == [("k-plain", 4)]
    assert await _fetch(database_url, f"SELECT * FROM {schema}.steps") == []


@transaction(isolation="serializable")
async def level_serializable(conn: asyncpg.Connection) -> str:
    return str(await conn.fetchval("SHOW transaction_isolation"))


@transaction(isolation="repeatable_read")
async def level_repeatable_read(conn: asyncpg.Connection) -> str:
    return str(await conn.fetchval("SHOW transaction_isolation"))


@transaction(isolation="read_committed")
async def level_read_committed(conn: asyncpg.Connection) -> str:
    return str(await conn.fetchval("SHOW transaction_isolation"))


@workflow()
async def levels() -> list[str]:
    return [
        await level_serializable(),
        await level_repeatable_read(),
        await level_read_committed(),
    ]


async def test_isolation_level_is_the_one_asked_for(runtime: RuntimeFactory) -> None:
    """Each isolation level reaches PostgreSQL, in a workflow and outside one."""
    expected = ["serializable", "repeatable read", "read committed"]
    async with runtime():
        assert await levels() == expected
        assert await level_read_committed() == "read committed"


def test_bad_definitions_are_refused_at_decoration_time() -> None:
    """A function that cannot take the connection, a sync function and an unknown isolation
    level are refused when decorated, with the fix in the message."""

    async def no_params() -> int:
        return 1

    async def no_connection(order_id: str) -> int:
        return len(order_id)

    async def keyword_only(*, conn: asyncpg.Connection) -> int:
        return 1

    def blocking(conn: asyncpg.Connection) -> int:
        return 1

    fix = r"async def f\(conn: asyncpg\.Connection"
    with pytest.raises(TypeError, match=fix):
        transaction()(no_params)  # type: ignore[arg-type]  # what the check is for
    with pytest.raises(TypeError, match=rf"'order_id' is annotated.*{fix}"):
        transaction()(no_connection)  # type: ignore[arg-type]  # what the check is for
    with pytest.raises(TypeError, match=fix):
        transaction()(keyword_only)  # type: ignore[arg-type]  # what the check is for
    with pytest.raises(TypeError, match="async def"):
        transaction()(blocking)  # type: ignore[arg-type]  # what the check is for
    for bad in ("snapshot", "SERIALIZABLE", "read_uncommitted", None):
        with pytest.raises(ValueError, match="must be one of"):
            transaction(isolation=bad)  # type: ignore[arg-type]  # what the check is for


def test_unannotated_or_proxy_connection_parameters_are_accepted() -> None:
    """A first parameter without annotation, or annotated as a pooled connection, is accepted."""
    from asyncpg.pool import PoolConnectionProxy

    async def bare(conn, n: int) -> int:  # type: ignore[no-untyped-def]  # unannotated on purpose
        return n

    async def proxy(conn: PoolConnectionProxy, n: int) -> int:
        return n

    transaction()(bare)
    transaction()(proxy)  # type: ignore[arg-type]  # runtime accepts it; the static type is Connection


# -- a separate application database ---------------------------------------------------------


@pytest.fixture
async def app_database_url(database_url: str) -> AsyncIterator[str]:
    """A second database on the session's server, dropped afterwards."""
    name = f"app_{uuid.uuid4().hex[:12]}"
    await _fetch(database_url, f"CREATE DATABASE {name}")
    parts = urllib.parse.urlsplit(database_url)
    yield urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))
    await _fetch(database_url, f"DROP DATABASE {name} WITH (FORCE)")


async def test_app_database_url_runs_the_transaction_there_exactly_once(
    runtime: RuntimeFactory, database_url: str, app_database_url: str, schema: str
) -> None:
    """With app_database_url, the body writes to the application database and journals its output
    in that database's own steps table; when the system journal lost the entry (a crash between
    the two commits), the replay adopts it instead of running the body again."""
    table = await _create_ledger(app_database_url, schema)
    options: dict[str, Any] = {"app_database_url": app_database_url}
    async with runtime(**options):
        with aiodurable.set_workflow_id("tx-app"):
            await aiodurable.start_workflow(book, table, "k-app", 5)
        await parked("tx-app")
    assert len(await _fetch(app_database_url, f"SELECT * FROM {table}")) == 1
    system_has_ledger = await _fetch(
        database_url,
        "SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = 'ledger'",
        schema,
    )
    assert system_has_ledger == []
    journal_query = (
        f"SELECT function_id, name, output FROM {schema}.steps WHERE workflow_id = 'tx-app'"
    )
    [app_entry] = await _fetch(app_database_url, journal_query)
    assert (app_entry["function_id"], app_entry["name"], app_entry["output"]) == (
        1,
        "insert_row",
        b"10",
    )
    # The crash this simulates: committed in the application database, never journaled here.
    await _fetch(database_url, f"DELETE FROM {schema}.steps WHERE workflow_id = 'tx-app'")
    release("tx-app")
    async with runtime(**options) as rt:
        assert await (await rt.retrieve_workflow("tx-app")).get_result() == 10
        journal = await hooks(rt).store.load_journal("tx-app")
    assert journal[1].name == "insert_row" and journal[1].output == b"10"  # adopted
    assert runs["k-app"] == 1
    assert len(await _fetch(app_database_url, f"SELECT * FROM {table}")) == 1


# -- a real crash ----------------------------------------------------------------------------


async def test_sigkill_right_after_commit_never_runs_the_body_again(
    database_url: str, schema: str, tmp_path: Path
) -> None:
    """Killed right after its transaction committed and before the next step, the restarted
    program finishes the workflow: the row exists once and the body ran once."""
    log = tmp_path / "log"
    env = {
        "AIODURABLE_DATABASE_URL": database_url,
        "AIODURABLE_EXECUTOR_ID": "tx-app",
        "TEST_SCHEMA": schema,
        "CRASH_LOG": str(log),
    }
    first = Child("tx_app.py", "tx-crash", env={**env, "CRASH_BLOCK": "1"})
    await first.expect("TX_COMMITTED")
    await first.kill()
    assert log.read_text().splitlines() == ["tx order-1"]

    second = Child("tx_app.py", "tx-crash", env=env)
    assert "confirmed order-1 (1 row)" in await second.expect("RESULT")
    assert await second.wait() == 0

    assert log.read_text().splitlines() == ["tx order-1", "confirm order-1"]
    assert len(await _fetch(database_url, f"SELECT * FROM {schema}.orders")) == 1
    [wf] = await _fetch(
        database_url,
        f"SELECT status, recovery_attempts FROM {schema}.workflows WHERE workflow_id = 'tx-crash'",
    )
    assert (wf["status"], wf["recovery_attempts"]) == ("SUCCESS", 1)


@transaction()
async def insert_after_losing_connection(conn: asyncpg.Connection, table: str, key: str) -> int:
    runs[key] += 1
    if runs[key] == 1:
        await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
    await conn.execute(f"INSERT INTO {table} VALUES ($1, 1)", key)
    return runs[key]


@workflow()
async def book_through_outage(table: str, key: str) -> int:
    return await insert_after_losing_connection(table, key)


async def test_lost_connection_runs_the_transaction_again_instead_of_recording_it(
    runtime: RuntimeFactory, database_url: str, schema: str
) -> None:
    """A backend terminated mid-transaction is not the body's outcome: the transaction runs again
    on a fresh connection, commits once, and the journal holds its output."""
    table = await _create_ledger(database_url, schema)
    async with runtime() as rt:
        handle = await rt.start_workflow(book_through_outage, table, "k-outage")
        assert await handle.get_result() == 2
        journal = await hooks(rt).store.load_journal(handle.workflow_id)
    assert journal[1].error is None and journal[1].output == b"2"
    assert len(await _fetch(database_url, f"SELECT * FROM {table}")) == 1
