"""Behind PgBouncer in transaction pooling mode (Debian's package, started here): the suite's
core workflows, messages and recovery pass through it, with LISTEN on the direct URL; journal
writes stay fenced by their owner while clients share server connections; executor locks are
never left behind on a pooled connection; a listen URL that is not the direct one is refused."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import fields
from pathlib import Path

import asyncpg
import pytest

from aiodurable import OwnershipLost, Runtime
from aiodurable._records import NewWorkflow, StepRow
from aiodurable._store import Statements, Store
from aiodurable._store._texts import OWNER

from .pgbouncer import Bouncer, pgbouncer

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
# The suite's core workflows, messages and recovery (SIGKILL and restart; failover between
# executor processes), run again through PgBouncer. (test_crash's loop of random kills runs
# until its workflows are done, five times as many rounds here: too long for the budget.)
THROUGH_PGBOUNCER = (
    "tests/test_workflows.py",
    "tests/test_comm.py",
    "tests/test_crash.py::test_sigkill_after_step_one_resumes_at_step_two",
    "tests/test_failover.py",
)


@pytest.fixture(scope="module")
async def bouncer() -> AsyncIterator[Bouncer]:
    """A PgBouncer in transaction mode (5 server connections) in front of a private server."""
    async with pgbouncer(pool_size=5) as running:
        yield running


async def _store(bouncer: Bouncer, schema: str, owner: str | None = None) -> Store:
    store = await Store.open(bouncer.pooled_url, schema, pool_size=12, statement_cache=False)
    await store.migrate()
    if owner is not None:
        await store.set_owner(owner)
    return store


async def _server_connections(bouncer: Bouncer) -> int:
    """How many connections PgBouncer holds open to the server now."""
    admin = await asyncpg.connect(bouncer.direct_url)
    try:
        return int(
            await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
                " AND pid <> pg_backend_pid() AND client_addr IS NOT NULL"
            )
        )
    finally:
        await admin.close()


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_the_suites_core_workflows_messages_and_recovery_pass_through_pgbouncer(
    bouncer: Bouncer,
) -> None:
    """The tests of THROUGH_PGBOUNCER, run by a pytest of their own whose database is the
    pooled URL and whose runtimes (in-process and in the crash tests' child processes) LISTEN
    on the direct one (AIODURABLE_LISTEN_DATABASE_URL): every test passes, none skipped."""
    env = {
        **os.environ,
        "AIODURABLE_TEST_DATABASE_URL": bouncer.pooled_url,
        "AIODURABLE_LISTEN_DATABASE_URL": bouncer.direct_url,
    }
    env.pop("AIODURABLE_DATABASE_URL", None)
    logins = bouncer.logins()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "tests.pgbouncer",
        *THROUGH_PGBOUNCER,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await proc.communicate()
    text = output.decode(errors="replace")
    summary = text.strip().splitlines()[-1] if text.strip() else ""
    assert proc.returncode == 0, text[-6000:]
    # Every test collected passed: none failed, skipped or deselected.
    assert re.fullmatch(r"\d+ passed in .*", summary), summary
    # They went through PgBouncer: their runtimes, their child processes, their own queries.
    assert bouncer.logins() - logins >= 100


def test_statements_carry_their_owner_as_a_literal_and_need_no_session_setting() -> None:
    """A store's statements hold its executor ID itself, quoted whatever it contains, where
    they once read a session setting that a pooled connection cannot keep; without an owner
    they hold '' (unfenced), and the fork's copies hold no owner either way."""
    fenced = Statements.for_schema("demo", owner="o'x\\")
    unfenced = Statements.for_schema("demo")
    texts = {f.name: (getattr(fenced, f.name), getattr(unfenced, f.name)) for f in fields(fenced)}
    for name, (mine, plain) in texts.items():
        for text in (mine, plain):
            assert OWNER not in text and "current_setting" not in text, name
            assert not text.startswith("SET ") and "set_config" not in text, name
        assert mine.replace("E'o''x\\\\'", "''") == plain, name
    assert "f.executor_id = E'o''x\\\\'" in fenced.record_step_fenced
    assert sum(mine != plain for mine, plain in texts.values()) >= 10
    assert all(mine == plain for n, (mine, plain) in texts.items() if n.startswith("fork_"))


async def test_journal_writes_stay_fenced_by_their_owner_through_shared_connections(
    bouncer: Bouncer,
) -> None:
    """Two stores (executors "a'\\" and "b") hold 8 client connections each, more than
    PgBouncer's 5 server connections, and write journal entries on all of them at once: each
    writes those of its own workflows, and each write for the other's workflow is refused
    (OwnershipLost) and leaves no row."""
    owners = ("a'\\", "b")
    stores = [await _store(bouncer, "fencing", owner) for owner in owners]
    try:
        for owner, store in zip(owners, stores, strict=True):
            for i in range(20):
                new = NewWorkflow(f"{owner}-{i}", "wf", "json", b"[]", 1.0, "v", owner)
                assert await store.insert_workflow(new)
        async with contextlib.AsyncExitStack() as held:
            conns = [
                [await held.enter_async_context(store.pool.acquire()) for _ in range(8)]
                for store in stores
            ]

            async def write(writer: int, k: int) -> list[tuple[bool, object]]:
                """Connection ``k`` of ``writer``: its share of both owners' workflows."""
                outcomes: list[tuple[bool, object]] = []
                for i, owner, n in itertools.product(range(k, 20, 8), (0, 1), range(1, 6)):
                    row = StepRow(n, "s", "json", b"1", None, None, 2.0, 2.0)
                    wid = f"{owners[owner]}-{i}"
                    out: object
                    try:
                        out = await stores[writer].record_step_on(conns[writer][k], wid, row)
                    except OwnershipLost as lost:
                        out = lost
                    outcomes.append((owner == writer, out))
                return outcomes

            done = await asyncio.gather(*(write(w, k) for w in (0, 1) for k in range(8)))
            assert await _server_connections(bouncer) <= bouncer.pool_size
        outcomes = [outcome for outcomes in done for outcome in outcomes]
        assert [out for own, out in outcomes if own] == [None] * 200
        theirs = [out for own, out in outcomes if not own]
        assert len(theirs) == 200 and all(isinstance(out, OwnershipLost) for out in theirs)
        every = [f"{owner}-{i}" for owner in owners for i in range(20)]
        journals = await stores[0].load_journals(every)
        assert all(sorted(journal) == [1, 2, 3, 4, 5] for journal in journals.values())
    finally:
        for store in stores:
            await store.close()


async def test_probing_and_taking_over_executors_leaves_no_lock_on_a_pooled_connection(
    bouncer: Bouncer,
) -> None:
    """Executor liveness probes and takeovers, 40 at once through PgBouncer, hold each
    executor's lock only within a transaction: afterwards a direct session takes every one."""
    store = await _store(bouncer, "takeover", owner="survivor")
    direct = await asyncpg.connect(bouncer.direct_url)
    try:
        gone = [f"gone-{i}" for i in range(20)]
        for executor in gone:
            new = NewWorkflow(f"w-{executor}", "wf", "json", b"[]", 1.0, "v", executor)
            assert await store.insert_workflow(new)
        probes = await asyncio.gather(*(store.executor_alive(e) for e in gone))
        taken = await asyncio.gather(
            *(store.take_over(e, "survivor", "v", ["wf"], 3.0) for e in gone)
        )
        assert probes == [False] * 20
        assert [[w.workflow_id for w in rows or []] for rows in taken] == [[f"w-{e}"] for e in gone]
        held = [await store.try_hold_executor(direct, e) for e in gone]
        assert held == [True] * 20
        assert await store.executor_alive("gone-0")  # held by the direct session now
    finally:
        await direct.close()
        await store.close()


async def test_a_listen_url_that_is_not_the_direct_one_is_refused(
    bouncer: Bouncer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listen_database_url that reaches another database than database_url, that is
    database_url itself, or that comes without one (the embedded server) fails the open with a
    ValueError naming the problem (passwords hidden) and the fix."""
    monkeypatch.delenv("AIODURABLE_DATABASE_URL", raising=False)
    other = bouncer.direct_url.rsplit("/", 1)[0] + "/template1"
    cases = [
        ((bouncer.pooled_url, other), r"listen_database_url .*\*\*\*.*template1.*direct URL"),
        ((bouncer.pooled_url, bouncer.pooled_url), r"is database_url itself.*the direct URL"),
        ((None, bouncer.direct_url), r"the embedded server needs none: give database_url"),
    ]
    for (url, listen), message in cases:
        runtime = Runtime(url, schema="elsewhere", listen_database_url=listen)
        with pytest.raises(ValueError, match=message):
            async with runtime:
                pass
        assert not runtime.is_open
