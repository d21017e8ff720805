"""Replay-verified adoption (``upgrade_workflows``): two real versions of one program, run as
separate processes on one database, and the command line; a SIGKILL in the middle of an upgrade;
and the same semantics in process, on PostgreSQL and in memory."""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest

import aiodurable
from aiodurable import Queue, Runtime, UpgradeReport, WorkflowStatus, step, workflow
from aiodurable._runtime import engine_of
from aiodurable._upgrade import upgrade
from aiodurable.testing import MemoryBackend, hooks

from .proc import Child

pytestmark = pytest.mark.anyio

V1, V2 = "upgrade-v1", "upgrade-v2"  # the executor IDs of the two versions' processes
Rows = dict[str, tuple[object, ...]]


def _env(
    database_url: str, schema: str, log: Path, version: str | None, executor: str
) -> dict[str, str]:
    env = {
        "AIODURABLE_DATABASE_URL": database_url,
        "AIODURABLE_EXECUTOR_ID": executor,
        "TEST_SCHEMA": schema,
        "UPGRADE_LOG": str(log),
    }
    if version is not None:
        env["AIODURABLE_APP_VERSION"] = version
    return env


class Shop:
    """The two versions of the shop program (``tests/apps/upgrade_v*.py``) on this test's
    schema, each with its own application version and executor ID."""

    def __init__(self, database_url: str, schema: str, log: Path) -> None:
        self.database_url, self.schema, self.log = database_url, schema, log
        self.v1 = _env(database_url, schema, log, "v1", V1)
        self.v2 = _env(database_url, schema, log, "v2", V2)

    async def record(self, orders: int = 1, nap: float = 2.0, *, stay: bool = False) -> Child:
        """Run version 1 until ``order-0``..., ``nap-1`` and ``legacy-1`` wait mid-way; it has
        exited when this returns, unless ``stay``."""
        extra = ["--stay"] if stay else []
        child = Child("upgrade_v1.py", "record", str(orders), str(nap), *extra, env=self.v1)
        await child.expect("READY", timeout=60)
        if not stay:
            assert await child.wait() == 0
        return child

    def adopt(self, *flags: str, env: dict[str, str] | None = None) -> Child:
        """Run version 2's ``adopt`` mode."""
        return Child("upgrade_v2.py", "adopt", *flags, env=env or self.v2)

    async def rows(self) -> Rows:
        """workflow ID -> (status, version, executor, updated_at, recovery attempts)."""
        conn = await asyncpg.connect(self.database_url)
        try:
            found = await conn.fetch(
                "SELECT workflow_id, status, app_version, executor_id, updated_at,"
                f" recovery_attempts FROM {self.schema}.workflows"
            )
        finally:
            await conn.close()
        return {r["workflow_id"]: tuple(r.values())[1:] for r in found}

    async def step_names(self, workflow_id: str) -> list[str]:
        conn = await asyncpg.connect(self.database_url)
        try:
            found = await conn.fetch(
                f"SELECT name FROM {self.schema}.steps WHERE workflow_id = $1 ORDER BY function_id",
                workflow_id,
            )
        finally:
            await conn.close()
        return [r["name"] for r in found]

    async def wait_released(self, executor_id: str) -> None:
        """Return once no session holds ``executor_id``'s lock (a killed process's session is
        gone): take it, blocking, and give it back."""
        conn = await asyncpg.connect(self.database_url)
        try:
            async with asyncio.timeout(30):
                await conn.execute(
                    "SELECT pg_advisory_lock(hashtext($1), hashtext($2))", self.schema, executor_id
                )
            await conn.execute(
                "SELECT pg_advisory_unlock(hashtext($1), hashtext($2))", self.schema, executor_id
            )
        finally:
            await conn.close()

    def effects(self) -> Counter[str]:
        """Each step execution logged (``VERSION STEP WORKFLOW_ID``), counted."""
        return Counter(self.log.read_text().splitlines() if self.log.exists() else [])


@pytest.fixture
def shop(database_url: str, schema: str, tmp_path: Path) -> Shop:
    return Shop(database_url, schema, tmp_path / "effects")


async def _report(child: Child) -> tuple[list[str], dict[str, str]]:
    line = await child.expect("REPORT ", timeout=60)
    adopted, incompatible = json.loads(line.removeprefix("REPORT "))
    return adopted, incompatible


async def _results(child: Child) -> dict[str, str]:
    await child.expect("DONE", timeout=60)
    assert await child.wait() == 0
    found = [line.split(" ", 2) for line in child.lines if line.startswith("RESULT ")]
    return {wid: value for _, wid, value in found}


def _assert_mismatch(reason: str) -> None:
    """The reason ``legacy-1`` stays: the step recorded and the step called now, named."""
    assert "legacy-1" in reason and "'reserve'" in reason and "'check_stock'" in reason, reason
    assert "function ID 1" in reason, reason


# -- two versions, two processes -------------------------------------------------------------


async def test_v2_adopts_and_finishes_what_replays_cleanly_and_leaves_a_changed_prefix_alone(
    shop: Shop,
) -> None:
    """A workflow waiting in recv and one in a durable sleep, recorded by version 1 (stopped),
    are adopted by version 2 and finish with version 2's later step, running none of version 1's
    steps again; the one whose recorded prefix version 2 changed is reported with the mismatch
    and its row is left exactly as it was. A dry run reports the same and changes no row."""
    await shop.record(orders=1, nap=2.0)
    before = await shop.rows()
    waiting = ("PENDING", "v1", V1)
    assert {wid: row[:3] for wid, row in before.items()} == dict.fromkeys(
        ("order-0", "nap-1", "legacy-1"), waiting
    )

    dry = shop.adopt("--dry-run")
    dry_adopted, dry_incompatible = await _report(dry)
    assert await dry.wait() == 0
    assert await shop.rows() == before
    assert dry_adopted == ["order-0", "nap-1"]
    assert list(dry_incompatible) == ["legacy-1"]
    _assert_mismatch(dry_incompatible["legacy-1"])

    real = shop.adopt("--finish")
    assert await _report(real) == (dry_adopted, dry_incompatible)
    assert await _results(real) == {
        "order-0": "v2: reserved order-0, go, shipped order-0",
        "nap-1": "v2: reserved nap-1, shipped nap-1",
    }
    after = await shop.rows()
    assert after["legacy-1"] == before["legacy-1"]
    assert {wid: after[wid][:3] for wid in ("order-0", "nap-1")} == {
        "order-0": ("SUCCESS", "v2", V2),
        "nap-1": ("SUCCESS", "v2", V2),
    }
    assert await shop.step_names("order-0") == [
        "reserve",
        "aiodurable.set_event",
        "aiodurable.recv",
        "ship",
    ]
    assert shop.effects() == Counter(
        [f"v1 reserve {wid}" for wid in ("order-0", "nap-1", "legacy-1")]
        + [f"v2 ship {wid}" for wid in ("order-0", "nap-1")]
    )


async def test_auto_upgrade_adopts_at_open_runs_them_and_logs_the_rest(shop: Shop) -> None:
    """``Runtime(auto_upgrade=True)`` adopts as it opens, runs the adopted workflows to the end,
    and logs the one it leaves with its mismatch."""
    await shop.record(orders=1, nap=0.5)
    before = await shop.rows()
    child = shop.adopt("--auto", "--finish")
    assert "adopted 2 workflow(s)" in await child.expect("LOG adopted")
    warning = await child.expect("cannot be adopted")
    _assert_mismatch(warning)
    assert set((await _results(child)).values()) == {
        "v2: reserved order-0, go, shipped order-0",
        "v2: reserved nap-1, shipped nap-1",
    }
    after = await shop.rows()
    assert after["legacy-1"] == before["legacy-1"]
    assert after["order-0"][:3] == after["nap-1"][:3] == ("SUCCESS", "v2", V2)


async def test_a_pending_workflow_of_a_live_executor_is_not_adopted_until_it_stops(
    shop: Shop,
) -> None:
    """While version 1 still runs, its PENDING workflows are reported ("still running on live
    executor") and untouched; once it is gone, they are adopted."""
    v1 = await shop.record(orders=1, nap=600, stay=True)
    try:
        before = await shop.rows()
        child = shop.adopt()
        adopted, incompatible = await _report(child)
        assert await child.wait() == 0
        assert adopted == []
        for wid in ("order-0", "nap-1"):
            assert incompatible[wid] == (
                f"still running on live executor {V1!r} (version 'v1');"
                " upgrade again once it has stopped"
            )
        _assert_mismatch(incompatible["legacy-1"])
        assert await shop.rows() == before
    finally:
        await v1.kill()
    await shop.wait_released(V1)
    child = shop.adopt()
    adopted, incompatible = await _report(child)
    assert await child.wait() == 0
    assert adopted == ["order-0", "nap-1"] and list(incompatible) == ["legacy-1"]


async def test_the_command_line_adopts_for_the_live_runtimes_of_the_new_code(shop: Shop) -> None:
    """``aiodurable workflow upgrade --import MODULE``: a dry run reports and changes nothing; a
    real one moves the compatible workflows to the imported code's version (its hash, as the
    program's own runtime computes it) with no executor, where version 2's runtime claims and
    finishes them. Exit 1 while some workflow stays incompatible, 0 when none does, 2 for a
    module that cannot be imported."""
    await shop.record(orders=1, nap=0.5)
    env = {"AIODURABLE_DATABASE_URL": shop.database_url}

    async def cli(*args: str) -> tuple[int, str]:
        child = Child("-m aiodurable._cli", "workflow", *args, "--schema", shop.schema, env=env)
        code = await child.wait()
        return code, "\n".join(child.lines)

    module = ("--import", "tests.apps.upgrade_v2")
    before = await shop.rows()
    code, out = await cli("upgrade", *module, "--dry-run")
    assert code == 1, out
    assert await shop.rows() == before
    lines = out.splitlines()
    assert lines[0].startswith("would adopt 2 workflow(s) into version ")
    assert lines[1:3] == ["  order-0", "  nap-1"]
    assert lines[3] == "left 1 workflow(s) on their own version:"
    _assert_mismatch(lines[4])

    code, out = await cli("upgrade", *module, "--json")
    assert code == 1, out
    report = json.loads(out)
    hashed = report["app_version"]
    assert report["adopted"] == ["order-0", "nap-1"] and report["dry_run"] is False
    _assert_mismatch(report["incompatible"]["legacy-1"])
    after = await shop.rows()
    assert after["order-0"][:3] == after["nap-1"][:3] == ("PENDING", hashed, "")
    assert after["legacy-1"] == before["legacy-1"]

    # Version 2's program with its default version (the hash) claims and finishes them.
    v2 = shop.adopt("--finish", env={**shop.v2, "AIODURABLE_APP_VERSION": ""})
    assert await _report(v2) == ([], {"legacy-1": report["incompatible"]["legacy-1"]})
    assert set((await _results(v2)).values()) == {
        "v2: reserved order-0, go, shipped order-0",
        "v2: reserved nap-1, shipped nap-1",
    }

    assert (await cli("cancel", "legacy-1"))[0] == 0
    code, out = await cli("upgrade", *module)
    assert (code, out) == (0, f"adopted 0 workflow(s) into version {hashed}")
    code, out = await cli("upgrade", "--import", "tests.apps.no_such_module")
    assert (code, out) == (2, "")  # (the message goes to stderr)


async def test_a_sigkill_during_an_upgrade_leaves_each_workflow_adopted_or_untouched(
    shop: Shop,
) -> None:
    """Version 2 is killed again and again in the middle of adopting many workflows: after each
    kill every workflow is wholly version 1's (version, executor) or wholly version 2's, never a
    mix; an upgrade run to its end adopts the rest, and every workflow then finishes on version
    2 with each step run once, by one version."""
    orders = 120
    await shop.record(orders=orders, nap=0.5)
    everyone = [f"order-{i}" for i in range(orders)] + ["nap-1"]
    env = {**shop.v2, "UPGRADE_BATCH": "10"}
    rng = random.Random(18)
    kills = 0
    while True:
        child = shop.adopt("--trace", env=env)
        try:
            await child.expect(f"ADOPT {rng.randint(1, 50)} ", timeout=60)
        except AssertionError:  # it ended first: the upgrade went to its end
            assert await child.wait() == 0
            break
        await child.kill()
        kills += 1
        pairs = {row[1:3] for wid, row in (await shop.rows()).items() if wid != "legacy-1"}
        assert pairs <= {("v1", V1), ("v2", V2)}, pairs
    assert kills >= 2, f"only {kills} kill(s) landed during the upgrade"
    adopted, incompatible = await _report(child)
    assert set(adopted) <= set(everyone) and list(incompatible) == ["legacy-1"]

    final = shop.adopt("--finish")
    assert await _report(final) == ([], incompatible)
    assert sorted(await _results(final)) == sorted(everyone)
    rows = await shop.rows()
    assert {rows[wid][:3] for wid in everyone} == {("SUCCESS", "v2", V2)}
    assert rows["legacy-1"][:3] == ("PENDING", "v1", V1)
    effects = shop.effects()
    assert effects == Counter(
        [f"v1 reserve {wid}" for wid in [*everyone, "legacy-1"]]
        + [f"v2 ship {wid}" for wid in everyone]
    )


# -- in process: PostgreSQL and memory -------------------------------------------------------

FLOW = "upgrade-test.flow"
orders_queue = Queue("upgrade-test.queue")


@step()
async def first(item: str) -> str:
    return f"first {item}"


@step()
async def second_v1(item: str) -> str:
    return f"second v1 {item}"


@step()
async def second_v2(item: str) -> str:
    return f"second v2 {item}"


async def _flow_v1(item: str) -> str:
    done = await first(item)
    await aiodurable.set_event("stage", "waiting")
    got = await aiodurable.recv("go", timeout=math.inf)
    return f"{done}, {got}, {await second_v1(item)}"


async def _flow_v2(item: str) -> str:
    done = await first(item)
    await aiodurable.set_event("stage", "waiting")
    got = await aiodurable.recv("go", timeout=math.inf)
    return f"{done}, {got}, {await second_v2(item)}"


Opener = Callable[..., AbstractAsyncContextManager[Runtime]]


@pytest.fixture(params=["postgres", "memory"])
def opener(request: pytest.FixtureRequest, database_url: str, schema: str) -> Opener:
    """Open runtimes on one database: this test's PostgreSQL schema, or one memory backend."""
    backend = MemoryBackend()

    @asynccontextmanager
    async def make(**options: Any) -> AsyncIterator[Runtime]:
        where: dict[str, Any] = (
            {"database_url": database_url, "schema": schema}
            if request.param == "postgres"
            else {"backend": backend}
        )
        async with Runtime(**where, **options) as rt:
            yield rt

    return make


async def test_a_restart_on_new_code_adopts_its_own_and_queued_workflows(opener: Opener) -> None:
    """A program restarted with new code (same executor ID, new version) adopts the workflow its
    earlier process left mid-way and one waiting in a queue: it runs the first at once and its
    queue's dispatcher the second; ``from_version`` limits the upgrade to one old version."""
    flow = workflow(name=FLOW)(_flow_v1)
    async with opener(app_version="v1", executor_id="same") as rt:
        with aiodurable.set_workflow_id("p-1"):
            await rt.start_workflow(flow, "p")
        assert await rt.get_event("p-1", "stage") == "waiting"
    async with opener(app_version="v1", executor_id="client", recover=False):
        with aiodurable.set_workflow_id("q-1"):
            await orders_queue.enqueue(flow, "q")

    flow = workflow(name=FLOW)(_flow_v2)
    async with opener(app_version="v2", executor_id="same") as rt:
        assert await rt.upgrade_workflows("v0") == UpgradeReport([], {})
        dry = await rt.upgrade_workflows(dry_run=True)
        assert dry == UpgradeReport(["p-1", "q-1"], {})
        assert [i.app_version for i in await rt.list_workflows()] == ["v1", "v1"]
        assert await rt.upgrade_workflows("v1") == dry
        assert await rt.upgrade_workflows() == UpgradeReport([], {})
        infos = {i.workflow_id: i for i in await rt.list_workflows()}
        assert infos["p-1"].app_version == infos["q-1"].app_version == "v2"
        assert infos["p-1"].executor_id == "same"
        # Each adoption holds only while the row is as read; repeated (an answer lost with its
        # connection), it holds again.
        store, now = hooks(rt).store, rt.clock.now()
        assert await store.adopt("p-1", "v1", "PENDING", "same", "v2", "same", now)
        assert not await store.adopt("p-1", "v1", "PENDING", "same", "v3", "", now)
        assert not await store.adopt("p-1", "v2", "ENQUEUED", "same", "v3", "", now)
        assert (await rt.get_workflow_status("p-1")).app_version == "v2"
        assert await rt.get_event("q-1", "stage") == "waiting"  # dispatched on version 2
        for wid in ("p-1", "q-1"):
            await rt.send(wid, "go", "go")
        results = [await (await rt.retrieve_workflow(w)).get_result() for w in ("p-1", "q-1")]
        assert results == ["first p, go, second v2 p", "first q, go, second v2 q"]
        steps = await rt.list_steps("p-1")
        assert [s.name for s in steps][-1] == "second_v2"
        status = await rt.get_workflow_status("q-1")
        assert (status.status, status.queue_name) == (WorkflowStatus.SUCCESS, orders_queue.name)


async def test_bad_arguments_are_refused_before_anything_is_read() -> None:
    """One string for ``workflow_ids`` and a version that is not a string are errors that say
    what to pass; IDs no row can have match nothing."""
    async with Runtime(backend=MemoryBackend(), app_version="v") as rt:
        engine = engine_of(rt)
        with pytest.raises(TypeError, match=r"sequence of workflow IDs, not one string"):
            await upgrade(engine, workflow_ids="wf-1")
        with pytest.raises(ValueError, match="from_version must be an application version"):
            await rt.upgrade_workflows(5)  # type: ignore[arg-type]
        assert await upgrade(engine, workflow_ids=["nul\x00"]) == UpgradeReport([], {})
