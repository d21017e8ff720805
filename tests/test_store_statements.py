"""The store as one seam: its SQL written in one module, its notification kinds named once, its
members those of :class:`StoreProtocol`, and the calls that replaced SQL run elsewhere (the
executor lock, a plain notification, the console's reads)."""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import orjson
import pytest

from aiodurable._records import NewWorkflow, StepRow
from aiodurable._signals import Signal
from aiodurable._store import Statements, Store, StoreProtocol

pytestmark = pytest.mark.anyio

STORE_DIR = Path(__file__).parent.parent / "aiodurable" / "_store"
_SQL = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|WITH|CREATE|SET)\b")


def test_every_notification_kind_the_sql_sends_is_a_signal() -> None:
    statements = Statements.for_schema("demo")
    texts = [v for v in (getattr(statements, f) for f in statements.__slots__) if "pg_notify" in v]
    sent = {kind for text in texts for kind in re.findall(r"json_build_array\('(\w+)'", text)}
    assert sent == {
        Signal.WORKFLOW,
        Signal.MESSAGE,
        Signal.EVENT,
        Signal.STREAM,
        Signal.CLAIMABLE,
        Signal.QUEUE,
        Signal.SCHEDULE,
        Signal.DEBOUNCE,
    }
    assert all("demo_signal" in text for text in texts if "json_build_array" in text)


def test_sql_is_written_in_the_texts_module_only() -> None:
    found: list[str] = []
    for path in sorted(STORE_DIR.glob("*.py")):
        if path.name.startswith("_texts"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if _SQL.match(node.value):
                    found.append(f"{path.name}:{node.lineno}: {node.value[:60]!r}")
    assert found == []


def test_the_store_has_every_member_of_its_protocol_with_the_same_signature() -> None:
    members = [
        name
        for name in dir(StoreProtocol)
        if not name.startswith("_") and callable(getattr(StoreProtocol, name))
    ]
    assert {"record_step", "try_hold_executor", "notify", "workflow_events"} <= set(members)
    for name in members:
        expected = inspect.signature(getattr(StoreProtocol, name))
        assert inspect.signature(getattr(Store, name)) == expected, name
    for attribute in ("pool", "channel", "reachable", "retry_for", "max_backoff", "on_fenced"):
        assert attribute in StoreProtocol.__annotations__ or isinstance(
            getattr(StoreProtocol, attribute), property
        )


@pytest.fixture
async def store(database_url: str, schema: str) -> AsyncIterator[Store]:
    opened = await Store.open(database_url, schema)
    try:
        await opened.migrate()
        yield opened
    finally:
        await opened.close()


async def test_notify_sends_the_key_on_the_stores_channel(store: Store, database_url: str) -> None:
    received: asyncio.Queue[str] = asyncio.Queue()
    conn = await asyncpg.connect(database_url)
    try:
        await conn.add_listener(store.channel, lambda *args: received.put_nowait(args[3]))
        await store.notify("barrier", "token-1")
        async with asyncio.timeout(10):
            payload = await received.get()
    finally:
        await conn.close()
    assert orjson.loads(payload) == ["barrier", "token-1"]


async def test_an_executor_is_held_by_one_session_until_it_closes(
    store: Store, database_url: str
) -> None:
    first = await asyncpg.connect(database_url)
    second = await asyncpg.connect(database_url)
    try:
        assert await store.try_hold_executor(first, "exec-a")
        assert not await store.try_hold_executor(second, "exec-a")
        assert await store.try_hold_executor(second, "exec-b")
        assert await store.executor_alive("exec-a")
        await first.close()
        assert not await store.executor_alive("exec-a")
        assert await store.try_hold_executor(second, "exec-a")
    finally:
        await first.close()
        await second.close()


def _new(workflow_id: str, created_at: float, queue: str | None = None) -> NewWorkflow:
    return NewWorkflow(workflow_id, "wf", "json", b"[]", created_at, "v1", "", queue_name=queue)


async def test_the_consoles_reads(store: Store) -> None:
    assert await store.list_watermark() is None
    assert await store.insert_workflow(_new("w1", 100.0))
    first_mark = await store.list_watermark()
    assert first_mark is not None
    mark = await store.workflow_watermark("w1")
    assert await store.workflow_watermark("missing") is None

    entry = StepRow(1, "set_event", "json", None, None, None, 101.0, 101.0)
    assert await store.set_event("w1", entry, "progress", "json", b"0123456789")
    await store.send("w1", "topic", "json", b"abcdefgh", 102.0)
    await store.send("w1", "topic", "json", b"ab", 103.0)

    (event,) = await store.workflow_events("w1", clip=4)
    assert (event.key, event.value, event.clipped, event.updated_at) == (
        "progress",
        b"0123",
        True,
        101.0,
    )
    messages = await store.workflow_messages("w1", 10, clip=4)
    assert [(m.value, m.clipped, m.created_at) for m in messages] == [
        (b"abcd", True, 102.0),
        (b"ab", False, 103.0),
    ]
    assert len(await store.workflow_messages("w1", 1, clip=4)) == 1
    assert await store.workflow_watermark("w1") != mark

    briefs = await store.workflow_briefs(["w1", "nobody"])
    assert list(briefs) == ["w1"]
    assert (briefs["w1"].name, briefs["w1"].status) == ("wf", "PENDING")
    assert await store.workflow_briefs([]) == {}

    for n in range(3):
        assert await store.enqueue(_new(f"q{n}", 200.0 + n, queue="jobs"))
    assert await store.list_watermark() != first_mark
    assert await store.enqueued_positions("jobs", ["q2", "q0", "w1"]) == {"q0": 1, "q2": 3}
    assert await store.enqueued_positions("jobs", []) == {}
