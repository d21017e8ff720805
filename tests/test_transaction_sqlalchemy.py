"""``@transaction()`` with a SQLAlchemy ``AsyncConnection`` on a real PostgreSQL: Core and ORM
writes commit together with the journal entry, replays never run the body, failures roll back,
serialization failures are retried, and a SIGKILL before or after the commit leaves the row once.

The module uses ``from __future__ import annotations``: the decorator finds the connection type
from annotations that are strings.
"""

from __future__ import annotations

import asyncio
import sys
import urllib.parse
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import pytest
from sqlalchemy import Column, Integer, MetaData, Table, Text, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import aiodurable
from aiodurable import WorkflowStatus, step, transaction, workflow
from aiodurable.testing import hooks

from .conftest import RuntimeFactory
from .gates import Gates
from .proc import Child

if TYPE_CHECKING:
    import sqlalchemy.ext.asyncio as sa_asyncio

pytestmark = pytest.mark.anyio

# How many times each transaction body ran, by key: the side-effect counter the tests read.
runs: Counter[str] = Counter()
gates = Gates()

# The tables live in each test's own schema: statements name the schema "app", which each body
# maps to the test's one.
ledger = Table(
    "ledger",
    MetaData(),
    Column("id", Text, primary_key=True),
    Column("amount", Integer, nullable=False),
    schema="app",
)


class Base(DeclarativeBase):
    pass


class Entry(Base):
    __tablename__ = "ledger"
    __table_args__ = {"schema": "app"}  # noqa: RUF012  # SQLAlchemy's class attribute
    id: Mapped[str] = mapped_column(primary_key=True)
    amount: Mapped[int]


class LedgerError(Exception):
    """A domain error a transaction body raises after writing."""


async def _in_schema(conn: AsyncConnection, schema: str) -> None:
    await conn.execution_options(schema_translate_map={"app": schema})


@transaction()
async def insert_core(conn: AsyncConnection, schema: str, key: str, amount: int) -> int:
    runs[key] += 1
    await _in_schema(conn, schema)
    await conn.execute(ledger.insert().values(id=key, amount=amount))
    return amount * 2


@transaction()
async def insert_orm(conn: AsyncConnection, schema: str, key: str, amount: int) -> int:
    runs[key] += 1
    await _in_schema(conn, schema)
    async with AsyncSession(bind=conn) as session:
        session.add(Entry(id=key, amount=amount))
        await session.commit()  # joins the runtime's transaction: this commits nothing yet
    return amount * 3


@transaction()
async def insert_then_fail(conn: AsyncConnection, schema: str, key: str) -> None:
    runs[key] += 1
    await _in_schema(conn, schema)
    await conn.execute(ledger.insert().values(id=key, amount=0))
    raise LedgerError(f"refused {key}")


@step()
async def wait_for_gate() -> None:
    await gates.park()


@workflow()
async def book(schema: str, key: str, amount: int) -> list[int]:
    results = [await insert_core(schema, key, amount), await insert_orm(schema, f"{key}-orm", 1)]
    await wait_for_gate()
    return results


@workflow()
async def book_failing(schema: str, key: str) -> str:
    try:
        await insert_then_fail(schema, key)
    except LedgerError as exc:
        outcome = f"rolled back: {exc}"
    await wait_for_gate()
    return outcome


async def _sql(url: str, query: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


async def _create_ledger(url: str, schema: str) -> None:
    await _sql(url, f"CREATE SCHEMA IF NOT EXISTS {schema}")
    await _sql(url, f"CREATE TABLE {schema}.ledger (id text PRIMARY KEY, amount integer NOT NULL)")


async def test_core_and_orm_writes_commit_with_the_journal_entry(
    runtime: RuntimeFactory, database_url: str, schema: str
) -> None:
    """A Core insert and an ORM insert each carry the transaction ID of the journal entry that
    holds their transaction's output: each committed together with its entry."""
    await _create_ledger(database_url, schema)
    async with runtime() as rt:
        gates.release("sa-together")
        with aiodurable.set_workflow_id("sa-together"):
            assert await book(schema, "k-together", 10) == [20, 3]
        journal = await hooks(rt).store.load_journal("sa-together")
    assert (journal[1].name, journal[1].output) == ("insert_core", b"20")
    assert (journal[2].name, journal[2].output) == ("insert_orm", b"3")
    rows = await _sql(database_url, f"SELECT id, xmin::text AS x FROM {schema}.ledger")
    entries = await _sql(
        database_url,
        f"SELECT function_id, xmin::text AS x FROM {schema}.steps"
        " WHERE workflow_id = 'sa-together' AND function_id IN (1, 2)",
    )
    by_row = {r["id"]: r["x"] for r in rows}
    by_entry = {e["function_id"]: e["x"] for e in entries}
    assert by_row == {"k-together": by_entry[1], "k-together-orm": by_entry[2]}
    assert by_entry[1] != by_entry[2]
    assert runs["k-together"] == runs["k-together-orm"] == 1


async def test_replay_returns_recorded_output_without_running_the_body(
    runtime: RuntimeFactory, database_url: str, schema: str
) -> None:
    """A workflow resumed after its transactions committed gets their recorded outputs back; the
    bodies do not run again and each row exists once."""
    await _create_ledger(database_url, schema)
    async with runtime():
        with aiodurable.set_workflow_id("sa-replay"):
            await aiodurable.start_workflow(book, schema, "k-replay", 21)
        await gates.arrived("sa-replay")
    gates.release("sa-replay")
    async with runtime() as rt:
        assert "sa-replay" in rt.recovered_workflow_ids
        assert await (await rt.retrieve_workflow("sa-replay")).get_result() == [42, 3]
    assert runs["k-replay"] == runs["k-replay-orm"] == 1
    rows = await _sql(database_url, f"SELECT id FROM {schema}.ledger ORDER BY id")
    assert [r["id"] for r in rows] == ["k-replay", "k-replay-orm"]


async def test_failing_body_rolls_back_and_only_its_failure_is_journaled(
    runtime: RuntimeFactory, database_url: str, schema: str
) -> None:
    """A body that raises after writing leaves no row: in a workflow its exception is the
    journaled outcome (no output), which a replay raises again without running the body; outside
    a workflow nothing is journaled at all."""
    await _create_ledger(database_url, schema)
    async with runtime() as rt:
        with aiodurable.set_workflow_id("sa-fail"):
            await rt.start_workflow(book_failing, schema, "k-fail")
        await gates.arrived("sa-fail")
        journal = await hooks(rt).store.load_journal("sa-fail")
        with pytest.raises(LedgerError, match="refused k-plain"):
            await insert_then_fail(schema, "k-plain")
    assert journal[1].output is None
    assert journal[1].error is not None and b"refused k-fail" in journal[1].error
    gates.release("sa-fail")
    async with runtime() as rt:
        result = await (await rt.retrieve_workflow("sa-fail")).get_result()
    assert result == "rolled back: refused k-fail"
    assert runs["k-fail"] == 1 and runs["k-plain"] == 1
    assert await _sql(database_url, f"SELECT * FROM {schema}.ledger") == []
    steps = await _sql(database_url, f"SELECT workflow_id, function_id, name FROM {schema}.steps")
    assert sorted(tuple(s) for s in steps) == [
        ("sa-fail", 1, "insert_then_fail"),
        ("sa-fail", 2, "wait_for_gate"),
    ]


async def test_outside_a_workflow_it_commits_and_journals_nothing(
    runtime: RuntimeFactory, database_url: str, schema: str
) -> None:
    """Called outside a workflow, the transaction commits its writes and journals nothing; a
    body that commits the transaction itself is refused, with the fix in the message."""

    @transaction(isolation="read_committed")
    async def level(conn: AsyncConnection) -> str:
        return str((await conn.exec_driver_sql("SHOW transaction_isolation")).scalar_one())

    @transaction()
    async def commits_itself(conn: AsyncConnection) -> None:
        await conn.exec_driver_sql("SELECT 1")
        await conn.commit()

    await _create_ledger(database_url, schema)
    async with runtime():
        assert await insert_core(schema, "k-plain-ok", 4) == 8
        assert await level() == "read committed"
        with pytest.raises(RuntimeError, match=r"leave conn\.commit\(\).*out of the body"):
            await commits_itself()
    rows = await _sql(database_url, f"SELECT id, amount FROM {schema}.ledger")
    assert [(r["id"], r["amount"]) for r in rows] == [("k-plain-ok", 4)]
    assert await _sql(database_url, f"SELECT * FROM {schema}.steps") == []


@pytest.fixture
async def app_database_url(database_url: str) -> AsyncIterator[str]:
    """A second database on the session's server, dropped afterwards."""
    name = f"app_{uuid.uuid4().hex[:12]}"
    await _sql(database_url, f"CREATE DATABASE {name}")
    parts = urllib.parse.urlsplit(database_url)
    yield urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))
    await _sql(database_url, f"DROP DATABASE {name} WITH (FORCE)")


async def test_app_database_url_is_where_sqlalchemy_writes_and_journals(
    runtime: RuntimeFactory, database_url: str, app_database_url: str, schema: str
) -> None:
    """With app_database_url, SQLAlchemy connects to the application database (the embedded
    server's socket-folder URL and all): the row and its journal entry are there, committed
    together, and the system journal has the entry too."""
    await _create_ledger(app_database_url, schema)
    async with runtime(app_database_url=app_database_url) as rt:
        gates.release("sa-app")
        with aiodurable.set_workflow_id("sa-app"):
            assert await book(schema, "k-app", 5) == [10, 3]
        journal = await hooks(rt).store.load_journal("sa-app")
    assert (journal[1].output, journal[2].output) == (b"10", b"3")
    [row] = await _sql(
        app_database_url, f"SELECT xmin::text AS x FROM {schema}.ledger WHERE id = 'k-app'"
    )
    [entry] = await _sql(
        app_database_url,
        f"SELECT xmin::text AS x FROM {schema}.steps"
        " WHERE workflow_id = 'sa-app' AND function_id = 1",
    )
    assert row["x"] == entry["x"]
    in_system_database = await _sql(
        database_url,
        "SELECT 1 FROM pg_tables WHERE tablename = 'ledger' AND schemaname = $1",
        schema,
    )
    assert in_system_database == []


# -- serialization failures ------------------------------------------------------------------

attempts: Counter[str] = Counter()
have_read: dict[str, asyncio.Event] = {}


@transaction(isolation="serializable")
async def increment(conn: AsyncConnection, schema: str, me: str, other: str) -> int:
    attempts[me] += 1
    await _in_schema(conn, schema)
    value = (await conn.execute(select(ledger.c.amount).where(ledger.c.id == "c"))).scalar_one()
    if attempts[me] == 1:
        # Both transactions read before either writes: one of them cannot serialize.
        have_read.setdefault(me, asyncio.Event()).set()
        await have_read.setdefault(other, asyncio.Event()).wait()
    await conn.execute(update(ledger).where(ledger.c.id == "c").values(amount=value + 1))
    return int(value) + 1


@workflow()
async def bump(schema: str, me: str, other: str) -> int:
    return await increment(schema, me, other)


async def test_serialization_failure_is_retried_until_both_commit(
    runtime: RuntimeFactory, database_url: str, schema: str
) -> None:
    """Two serializable transactions that read and update the same row collide for real;
    SQLAlchemy wraps PostgreSQL's error, and the one aborted still runs again: both workflows
    succeed with the counter at 2."""
    await _create_ledger(database_url, schema)
    await _sql(database_url, f"INSERT INTO {schema}.ledger VALUES ('c', 0)")
    async with runtime() as rt:
        a = await rt.start_workflow(bump, schema, "a", "b")
        b = await rt.start_workflow(bump, schema, "b", "a")
        results = sorted([await a.get_result(), await b.get_result()])
        assert (await a.get_status()).status is WorkflowStatus.SUCCESS
    assert results == [1, 2]
    assert sorted(attempts.values()) == [1, 2]  # exactly one serialization failure, retried
    [row] = await _sql(database_url, f"SELECT amount FROM {schema}.ledger WHERE id = 'c'")
    assert row["amount"] == 2


# -- lost connections, fencing, closing -------------------------------------------------------

drivers: dict[str, asyncpg.Connection] = {}
ended: dict[str, asyncio.Event] = {}


@transaction()
async def insert_after_losing_connection(conn: AsyncConnection, schema: str, key: str) -> int:
    runs[key] += 1
    await _in_schema(conn, schema)
    if runs[key] == 1:
        await conn.exec_driver_sql("SELECT pg_terminate_backend(pg_backend_pid())")
    await conn.execute(ledger.insert().values(id=key, amount=1))
    return runs[key]


@transaction()
async def insert_and_park(conn: AsyncConnection, schema: str, key: str, park_first: bool) -> int:
    runs[key] += 1
    await _in_schema(conn, schema)
    driver = (await conn.get_raw_connection()).driver_connection
    assert isinstance(driver, asyncpg.Connection)
    drivers[key] = driver
    if park_first:  # before the first statement takes the transaction's snapshot
        await gates.park(key)
    await conn.execute(ledger.insert().values(id=key, amount=1))
    if not park_first:
        await gates.park(key)
    return 1


@workflow()
async def book_through_outage(schema: str, key: str) -> int:
    return await insert_after_losing_connection(schema, key)


@workflow()
async def book_parked(schema: str, key: str, park_first: bool) -> int:
    try:
        return await insert_and_park(schema, key, park_first)
    finally:
        ended.setdefault(key, asyncio.Event()).set()  # the transaction is over, one way or another


async def test_lost_connection_runs_the_transaction_again_instead_of_recording_it(
    runtime: RuntimeFactory, database_url: str, schema: str
) -> None:
    """A backend terminated mid-transaction (SQLAlchemy reports it wrapped) is not the body's
    outcome: the transaction runs again on a fresh connection and commits once."""
    await _create_ledger(database_url, schema)
    async with runtime() as rt:
        handle = await rt.start_workflow(book_through_outage, schema, "k-outage")
        assert await handle.get_result() == 2
        journal = await hooks(rt).store.load_journal(handle.workflow_id)
    assert journal[1].error is None and journal[1].output == b"2"
    assert len(await _sql(database_url, f"SELECT * FROM {schema}.ledger")) == 1


async def test_a_workflow_taken_over_mid_transaction_commits_nothing(
    runtime: RuntimeFactory, database_url: str, schema: str
) -> None:
    """The journal write on SQLAlchemy's connection is fenced: when another executor took the
    workflow over after the transaction began (before its snapshot), the entry is refused and
    the body's write rolls back."""
    await _create_ledger(database_url, schema)
    async with runtime():
        with aiodurable.set_workflow_id("sa-fenced"):
            await aiodurable.start_workflow(book_parked, schema, "k-fenced", True)
        await gates.arrived("k-fenced")
        await _sql(
            database_url,
            f"UPDATE {schema}.workflows SET executor_id = 'usurper'"
            " WHERE workflow_id = 'sa-fenced'",
        )
        gates.release("k-fenced")
        await ended.setdefault("k-fenced", asyncio.Event()).wait()
        assert not drivers["k-fenced"].is_in_transaction()
    assert await _sql(database_url, f"SELECT * FROM {schema}.ledger") == []
    assert await _sql(database_url, f"SELECT * FROM {schema}.steps") == []


async def test_closing_the_runtime_rolls_back_a_body_in_flight_and_closes_its_connections(
    runtime: RuntimeFactory, database_url: str, schema: str
) -> None:
    """A runtime closed while a body is parked inside its transaction rolls the write back and
    closes SQLAlchemy's connections: nothing committed, nothing left open."""
    await _create_ledger(database_url, schema)
    async with runtime():
        with aiodurable.set_workflow_id("sa-closing"):
            await aiodurable.start_workflow(book_parked, schema, "k-closing", False)
        await gates.arrived("k-closing")
        assert not drivers["k-closing"].is_closed()
    assert drivers["k-closing"].is_closed()
    assert await _sql(database_url, f"SELECT * FROM {schema}.ledger") == []
    assert await _sql(database_url, f"SELECT * FROM {schema}.steps") == []


# -- recognising the connection type ---------------------------------------------------------


def test_the_connection_type_is_recognised_when_decorated(monkeypatch: pytest.MonkeyPatch) -> None:
    """A string annotation resolves to SQLAlchemy's connection, or, when it cannot resolve (an
    import only the type checker makes), is known by its name; without SQLAlchemy that name
    gets an ImportError naming the extra to install."""

    async def resolved(conn: AsyncConnection) -> None: ...

    async def hidden(conn: sa_asyncio.AsyncConnection) -> None: ...

    transaction()(resolved)
    transaction()(hidden)

    # Without SQLAlchemy: only the SQLAlchemy path imports it, so both fail, naming the extra.
    monkeypatch.delitem(sys.modules, "aiodurable._transaction_sqlalchemy")
    monkeypatch.delattr(aiodurable, "_transaction_sqlalchemy")
    monkeypatch.setitem(sys.modules, "sqlalchemy.ext.asyncio", None)
    for fn in (resolved, hidden):
        with pytest.raises(ImportError, match=r"pip install 'aiodurable\[sqlalchemy\]'"):
            transaction()(fn)


# -- a real crash ----------------------------------------------------------------------------


@pytest.mark.slow
async def test_sigkill_before_and_after_commit_leaves_the_row_once(
    database_url: str, schema: str, tmp_path: Path
) -> None:
    """Killed inside the body after its ORM write (uncommitted), the program restarts and runs
    the body again; killed right after that commit, it restarts and does not: the row exists
    exactly once and the workflow finishes."""
    log = tmp_path / "log"
    env = {
        "AIODURABLE_DATABASE_URL": database_url,
        "AIODURABLE_EXECUTOR_ID": "sa-tx-app",
        "TEST_SCHEMA": schema,
        "CRASH_LOG": str(log),
    }
    orders = f"SELECT * FROM {schema}.orders"
    before = Child("sa_tx_app.py", "sa-crash", env={**env, "CRASH_AT": "before"})
    await before.expect("TX_WRITTEN")
    await before.kill()
    assert log.read_text().splitlines() == ["tx order-1"]
    assert await _sql(database_url, orders) == []  # the write died with its transaction

    after = Child("sa_tx_app.py", "sa-crash", env={**env, "CRASH_AT": "after"})
    await after.expect("TX_COMMITTED")
    await after.kill()
    assert log.read_text().splitlines() == ["tx order-1", "tx order-1"]
    assert len(await _sql(database_url, orders)) == 1

    last = Child("sa_tx_app.py", "sa-crash", env=env)
    assert "confirmed order-1 (1 row)" in await last.expect("RESULT")
    assert await last.wait() == 0
    assert log.read_text().splitlines() == ["tx order-1", "tx order-1", "confirm order-1"]
    assert len(await _sql(database_url, orders)) == 1
    [wf] = await _sql(
        database_url,
        f"SELECT status, recovery_attempts FROM {schema}.workflows WHERE workflow_id = 'sa-crash'",
    )
    assert (wf["status"], wf["recovery_attempts"]) == ("SUCCESS", 2)
