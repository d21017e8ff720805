"""Hostile input: values over ``max_value_size``, malformed IDs, topics and keys, and pickled
rows planted in the database are refused, and nothing is written or unpickled."""

from __future__ import annotations

import os
import pickle
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

import aiodurable
from aiodurable import SerializationError, WorkflowStatus, step, workflow
from aiodurable.testing import hooks

from .conftest import RuntimeFactory

pytestmark = pytest.mark.anyio

LIMIT = 1000
BIG = "x" * (2 * LIMIT)


@pytest.fixture
async def admin(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection for looking at (and planting) rows."""
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


async def _counts(conn: asyncpg.Connection, schema: str) -> dict[str, int]:
    tables = ("workflows", "steps", "messages", "events")
    return {t: await conn.fetchval(f"SELECT count(*) FROM {schema}.{t}") for t in tables}


@workflow()
async def echo(value: str) -> str:
    return value


@step()
async def big_result(size: int) -> str:
    return "y" * size


@workflow()
async def big_step(size: int) -> str:
    return await big_result(size)


@workflow()
async def big_output(size: int) -> str:
    return "z" * size


@workflow()
async def big_event(size: int) -> str:
    try:
        await aiodurable.set_event("k", "e" * size)
    except SerializationError as exc:
        return f"refused: {exc}"
    return "set"


@workflow()
async def waits(topic: str) -> object:
    return await aiodurable.recv(topic, timeout=30)


@workflow()
async def publishes(key: str) -> str:
    await aiodurable.set_event(key, 1)
    return "set"


# -- max_value_size ------------------------------------------------------------------------------


async def test_inputs_over_the_limit_are_refused_before_anything_is_written(
    runtime: RuntimeFactory, admin: asyncpg.Connection, schema: str
) -> None:
    """Workflow inputs larger than max_value_size raise SerializationError naming the limit,
    and no workflow is recorded."""
    async with runtime(max_value_size=LIMIT) as rt:
        with pytest.raises(SerializationError, match="max_value_size"):
            await rt.start_workflow(echo, BIG)
        assert await rt.start_workflow(echo, "small") is not None
    counts = await _counts(admin, schema)
    assert counts["workflows"] == 1


async def test_step_results_over_the_limit_are_not_journaled(
    runtime: RuntimeFactory, admin: asyncpg.Connection, schema: str
) -> None:
    """A step whose result is over the limit raises SerializationError in its workflow, and no
    journal entry is written for it."""
    async with runtime(max_value_size=LIMIT) as rt:
        handle = await rt.start_workflow(big_step, 2 * LIMIT)
        with pytest.raises(SerializationError, match="max_value_size"):
            await handle.get_result()
        assert (await handle.get_status()).status is WorkflowStatus.ERROR
    assert (await _counts(admin, schema))["steps"] == 0


async def test_workflow_results_over_the_limit_end_it_as_error_with_no_output(
    runtime: RuntimeFactory, admin: asyncpg.Connection, schema: str
) -> None:
    """A workflow whose result is over the limit ends as ERROR, its output not recorded."""
    async with runtime(max_value_size=LIMIT) as rt:
        handle = await rt.start_workflow(big_output, 2 * LIMIT)
        with pytest.raises(SerializationError, match="max_value_size"):
            await handle.get_result()
    row = await admin.fetchrow(f"SELECT status, output FROM {schema}.workflows")
    assert row is not None
    assert (row["status"], row["output"]) == ("ERROR", None)


async def test_messages_and_events_over_the_limit_are_refused(
    runtime: RuntimeFactory, admin: asyncpg.Connection, schema: str
) -> None:
    """A message or an event value over the limit raises SerializationError naming the limit;
    no message, event or journal entry is written."""
    async with runtime(max_value_size=LIMIT) as rt:
        receiver = await rt.start_workflow(waits, "t")
        with pytest.raises(SerializationError, match="max_value_size"):
            await rt.send(receiver.workflow_id, BIG, "t")
        publisher = await rt.start_workflow(big_event, 2 * LIMIT)
        assert (await publisher.get_result()).startswith("refused:")
        assert await rt.get_event(publisher.workflow_id, "k", timeout=0) is None
        await rt.send(receiver.workflow_id, "fits", "t")
        assert await receiver.get_result() == "fits"
    counts = await _counts(admin, schema)
    assert (counts["messages"], counts["events"]) == (0, 0)
    names = await admin.fetch(f"SELECT name FROM {schema}.steps")
    assert [r["name"] for r in names] == ["aiodurable.recv"]


# -- IDs, topics and keys ------------------------------------------------------------------------

BAD_NAMES = ["a" * 1001, "nul\x00inside", ""]


@pytest.mark.parametrize("bad", BAD_NAMES, ids=["too-long", "nul", "empty"])
async def test_malformed_workflow_ids_topics_and_keys_are_refused(
    runtime: RuntimeFactory, admin: asyncpg.Connection, schema: str, bad: str
) -> None:
    """Workflow IDs, topics and event keys over 1000 characters, with a NUL, or empty raise
    ValueError, and nothing is written."""
    async with runtime() as rt:
        with pytest.raises(ValueError), aiodurable.set_workflow_id(bad):
            await rt.start_workflow(echo, "x")
        target = await rt.start_workflow(waits, "t")
        with pytest.raises(ValueError):
            await rt.send(target.workflow_id, "m", bad)
        with pytest.raises(ValueError):
            await rt.send(bad, "m", "t")
        with pytest.raises(ValueError):
            await rt.send(target.workflow_id, "m", "t", idempotency_key=bad)
        with pytest.raises(ValueError):
            await rt.get_event(target.workflow_id, bad, timeout=0)
        in_recv = await rt.start_workflow(waits, bad)
        with pytest.raises(ValueError):
            await in_recv.get_result()
        in_event = await rt.start_workflow(publishes, bad)
        with pytest.raises(ValueError):
            await in_event.get_result()
        await rt.send(target.workflow_id, "ok", "t")
        assert await target.get_result() == "ok"
    counts = await _counts(admin, schema)
    assert (counts["workflows"], counts["messages"], counts["events"]) == (3, 0, 0)
    assert (counts["steps"]) == 1  # the one recv that received "ok"


async def test_ids_of_exactly_1000_characters_are_accepted(runtime: RuntimeFactory) -> None:
    """The limit is inclusive: a 1000-character workflow ID, topic and key work."""
    name = "b" * 1000
    async with runtime() as rt:
        with aiodurable.set_workflow_id(name):
            handle = await rt.start_workflow(waits, name)
        await rt.send(name, "long", name)
        assert await handle.get_result() == "long"
        publisher = await rt.start_workflow(publishes, name)
        await publisher.get_result()
        assert await rt.get_event(publisher.workflow_id, name, timeout=1) == 1


# -- planted pickles -----------------------------------------------------------------------------


class _Trap:
    """Unpickling this creates a file: proof that a pickle was loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.path), "w"))


def _trap(path: Path) -> bytes:
    return pickle.dumps(_Trap(path))


async def _plant_workflow(
    conn: asyncpg.Connection, schema: str, workflow_id: str, name: str, inputs: bytes
) -> None:
    await conn.execute(
        f"INSERT INTO {schema}.workflows (workflow_id, status, name, format, inputs, created_at,"
        " updated_at, app_version, executor_id) VALUES ($1, 'PENDING', $2, 'pickle', $3, 0, 0,"
        " 'test-version', 'test-executor')",
        workflow_id,
        name,
        inputs,
    )


async def test_a_pickled_workflow_row_is_never_unpickled_by_a_json_runtime(
    runtime: RuntimeFactory, admin: asyncpg.Connection, schema: str, tmp_path: Path
) -> None:
    """A PENDING workflow row in pickle format planted by SQL is neither recovered nor
    unpickled: its status shows no inputs and a decode error naming the pickle format, it stays
    PENDING, and the file its pickle would create does not exist."""
    trap = tmp_path / "unpickled"
    async with runtime():
        pass  # create the schema
    await _plant_workflow(admin, schema, "planted", echo.__aiodurable_workflow__.name, _trap(trap))  # type: ignore[attr-defined]  # the decorator's marker
    async with runtime() as rt:
        assert "planted" not in rt.recovered_workflow_ids
        planted = await rt.get_workflow_status("planted")  # listed, never unpickled
        assert planted.inputs is None and planted.decode_error is not None
        assert "pickle" in planted.decode_error
        listed = await rt.list_workflows(workflow_id_prefix="planted", load_input=False)
        assert [w.status for w in listed] == [WorkflowStatus.PENDING]
    assert not trap.exists()
    status = await admin.fetchval(f"SELECT status FROM {schema}.workflows")
    assert status == "PENDING"


async def test_pickled_messages_events_and_steps_are_never_unpickled(
    runtime: RuntimeFactory, admin: asyncpg.Connection, schema: str, tmp_path: Path
) -> None:
    """A message and an event value in pickle format, planted by SQL, raise SerializationError
    when read; a journal entry lists with a decode error naming the format; none is
    unpickled."""
    trap = tmp_path / "unpickled"
    async with runtime() as rt:
        receiver = await rt.start_workflow(waits, "t")
        await hooks(rt).notifier.until_waiting(1)
        wid = receiver.workflow_id
        await admin.execute(
            f"INSERT INTO {schema}.events VALUES ($1, 'k', 'pickle', $2, 0)", wid, _trap(trap)
        )
        with pytest.raises(SerializationError, match="pickle"):
            await rt.get_event(wid, "k", timeout=1)
        await admin.execute(
            f"INSERT INTO {schema}.steps (workflow_id, function_id, name, format, output,"
            " started_at, completed_at) VALUES ($1, 99, 'planted', 'pickle', $2, 0, 0)",
            wid,
            _trap(trap),
        )
        planted = [s for s in await rt.list_steps(wid) if s.function_id == 99]
        assert [(s.output, s.error) for s in planted] == [(None, None)]
        assert planted[0].decode_error is not None and "pickle" in planted[0].decode_error
        await admin.execute(
            f"INSERT INTO {schema}.messages (destination_id, topic, format, value, created_at)"
            " VALUES ($1, 't', 'pickle', $2, 0)",
            wid,
            _trap(trap),
        )
        await admin.execute(
            "SELECT pg_notify($1, json_build_array('m', $2::text, 't')::text)",
            hooks(rt).store.channel,
            wid,
        )
        with pytest.raises(SerializationError, match="pickle"):
            await receiver.get_result()
    assert not trap.exists()
    assert os.listdir(tmp_path) == []
