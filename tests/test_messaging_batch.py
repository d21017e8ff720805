"""Group commit for messages and events on a real PostgreSQL: sends, consumes and events that
arrive together share one statement, and each caller gets the outcome it would have had alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest

import aiodurable
from aiodurable import OwnershipLost, WorkflowNotFound, workflow
from aiodurable._batch import Batcher
from aiodurable._records import NewWorkflow, StepRow
from aiodurable._store import Store

from .conftest import RuntimeFactory

pytestmark = pytest.mark.anyio

OWNER = "exec-a"


@pytest.fixture
async def store(database_url: str, schema: str) -> AsyncIterator[Store]:
    """A migrated store whose journal writes are fenced as executor ``OWNER``."""
    opened = await Store.open(database_url, schema)
    try:
        await opened.migrate()
        await opened.set_owner(OWNER)
        yield opened
    finally:
        await opened.close()


def flushes(batcher: Batcher[Any, Any]) -> list[int]:
    """Record the size of each batch ``batcher`` flushes from now on."""
    sizes: list[int] = []
    flush: Callable[[Sequence[Any]], Awaitable[Sequence[Any]]] = batcher._flush

    async def counted(items: Sequence[Any]) -> Sequence[Any]:
        sizes.append(len(items))
        return await flush(items)

    batcher._flush = counted
    return sizes


async def add_workflows(store: Store, *ids: str, executor: str = OWNER) -> None:
    for wid in ids:
        new = NewWorkflow(wid, "wf", "json", b"[]", 1.0, "v", executor)
        assert await store.insert_workflow(new)


def entry(function_id: int, name: str = "aiodurable.send", output: bytes | None = None) -> StepRow:
    return StepRow(function_id, name, "json", output, None, None, 2.0, 2.0)


async def send(store: Store, sender: str, function_id: int, to: str, value: bytes) -> bool:
    checkpoint = (sender, entry(function_id))
    return await store.send(to, "t", "json", value, 2.0, checkpoint=checkpoint)


async def gather(*calls: Awaitable[object]) -> list[object]:
    return list(await asyncio.gather(*calls, return_exceptions=True))


async def test_sends_from_many_workflows_share_statements_and_land_once(store: Store) -> None:
    """40 workflows send at once: a few statements carry them all, each message is queued once
    with its journal entry, and sending again (the same function IDs) queues nothing."""
    senders = [f"s{i}" for i in range(40)]
    await add_workflows(store, *senders, "dest")
    sizes = flushes(store._sends_batch)
    sent = await gather(
        *(send(store, s, 1, "dest", str(i).encode()) for i, s in enumerate(senders))
    )
    assert sent == [True] * 40
    assert max(sizes) > 1 and len(sizes) < 40
    again = await gather(*(send(store, s, 1, "dest", b"0") for s in senders))
    assert again == [False] * 40
    async with store.pool.acquire() as c:
        assert await c.fetchval(f"SELECT count(*) FROM {store.schema}.messages") == 40
        steps = f"SELECT count(*) FROM {store.schema}.steps WHERE name = 'aiodurable.send'"
        assert await c.fetchval(steps) == 40


async def test_an_unknown_destination_fails_only_its_caller(store: Store) -> None:
    """A batch holding a send to a workflow that does not exist fails as a statement; written
    again one by one, only that caller gets WorkflowNotFound, and its entry is not journaled."""
    senders = [f"s{i}" for i in range(10)]
    await add_workflows(store, *senders, "dest")
    sizes = flushes(store._sends_batch)
    targets = ["dest"] * 9 + ["nowhere"]
    sent = await gather(
        *(send(store, s, 1, t, b"1") for s, t in zip(senders, targets, strict=True))
    )
    assert sent[:9] == [True] * 9
    assert isinstance(sent[9], WorkflowNotFound) and "nowhere" in str(sent[9])
    assert sizes[:3] == [1, 1, 8]  # two alone while the rest queue, then those eight together
    assert len(sizes) == 3 + 8  # the failed batch, again item by item
    assert await store.get_step("s9", 1) is None
    assert (await store.get_step("s8", 1)) is not None


async def test_a_fenced_workflow_gets_ownership_lost_for_its_own_item_only(store: Store) -> None:
    """In batches of sends and of events, the item of a workflow another executor owns is
    refused by the fence (OwnershipLost to its caller alone); the others are written."""
    ours = [f"s{i}" for i in range(8)]
    await add_workflows(store, *ours, "dest")
    await add_workflows(store, "theirs", executor="exec-b")
    senders = [*ours, "theirs"]
    sizes = flushes(store._sends_batch)
    sent = await gather(*(send(store, s, 1, "dest", b"1") for s in senders))
    assert sent[:8] == [True] * 8
    assert isinstance(sent[8], OwnershipLost) and "theirs" in str(sent[8])
    assert len(sizes) == 3  # no retry: the statement itself tells the fenced item apart
    event_sizes = flushes(store._events_batch)
    set_ = await gather(
        *(
            store.set_event(s, entry(2, "aiodurable.set_event", b"7"), "k", "json", b"7")
            for s in senders
        )
    )
    assert set_[:8] == [True] * 8
    assert isinstance(set_[8], OwnershipLost)
    assert len(event_sizes) == 3
    assert await store.get_event("theirs", "k") is None
    assert await store.get_event("s7", "k") == ("json", b"7")


async def test_events_set_twice_in_one_batch(store: Store) -> None:
    """Several values of one (workflow, key) in one batch: the event keeps the last submitted,
    the history keeps them all, and setting again (journaled already) is False. (The first two
    calls of a burst go out alone, at the same time, and commit in the race's order: they set
    another workflow's event, so that every value of "w" is in the batch.)"""
    await add_workflows(store, "w", "x")
    sizes = flushes(store._events_batch)

    def set_(wid: str, fid: int, value: bytes) -> Awaitable[bool]:
        return store.set_event(wid, entry(fid, "aiodurable.set_event", value), "k", "json", value)

    alone = [set_("x", 1, b"x1"), set_("x", 2, b"x2")]
    calls = alone + [set_("w", fid, str(fid).encode()) for fid in range(1, 7)]
    assert await gather(*calls) == [True] * 8
    assert sizes[:3] == [1, 1, 6]
    assert await store.get_event("w", "k") == ("json", b"6")
    async with store.pool.acquire() as c:
        history = await c.fetch(
            f"SELECT function_id, value FROM {store.schema}.event_history WHERE workflow_id = 'w'"
            " ORDER BY function_id"
        )
    assert [(r["function_id"], r["value"]) for r in history] == [
        (fid, str(fid).encode()) for fid in range(1, 7)
    ]
    assert await gather(*(set_("w", fid, b"again") for fid in range(1, 7))) == [False] * 6
    assert await store.get_event("w", "k") == ("json", b"6")


async def test_messages_keep_their_order_and_consumers_of_one_topic_share_a_batch(
    store: Store,
) -> None:
    """Messages one workflow sends to one topic in a batch are queued in the order sent; a
    batch of consumes on that topic takes them oldest first, one each, in the order asked.
    (The first two calls of each burst go out alone, at the same time: their order is the
    race's.)"""
    await add_workflows(store, "src", "dest")
    sizes = flushes(store._sends_batch)
    sent = await gather(*(send(store, "src", i, "dest", str(i).encode()) for i in range(20)))
    assert sent == [True] * 20
    assert sizes == [1, 1, 18]
    async with store.pool.acquire() as c:
        rows = await c.fetch(f"SELECT value FROM {store.schema}.messages ORDER BY message_id")
    queued = [int(r["value"]) for r in rows]
    assert set(queued[:2]) == {0, 1} and queued[2:] == list(range(2, 20))
    consumed = flushes(store._consumes_batch)
    # The first two consumes of the burst go out alone, racing the batch: they ask for another
    # topic, so that every consume of "t" is in the batch.
    alone = [store.consume_message("dest", "u", 98 + i, "aiodurable.recv", 3.0) for i in (0, 1)]
    batched = [
        store.consume_message("dest", "t", 100 + i, "aiodurable.recv", 3.0) for i in range(22)
    ]
    taken = await gather(*alone, *batched)
    assert consumed == [1, 1, 22]
    values = [int(t.output) if isinstance(t, StepRow) and t.output else t for t in taken]
    assert values == [None, None, *queued, None, None]
    assert await store.get_step("dest", 105) == StepRow(
        105, "aiodurable.recv", "json", str(queued[5]).encode(), None, None, 3.0, 3.0
    )


async def test_consumes_of_many_workflows_share_a_statement(store: Store) -> None:
    """Consumes of many workflows in one batch each take their own message, journaled with it;
    one with nothing queued gets None, a fenced one OwnershipLost, and nothing is consumed
    twice."""
    receivers = [f"r{i}" for i in range(12)]
    await add_workflows(store, *receivers)
    await add_workflows(store, "theirs", executor="exec-b")
    for i, r in enumerate(receivers[:-1]):
        assert await store.send(r, "t", "json", str(i).encode(), 1.0, idempotency_key="k")
    assert await store.send("theirs", "t", "json", b"x", 1.0)
    sizes = flushes(store._consumes_batch)
    taken = await gather(
        *(store.consume_message(r, "t", 1, "aiodurable.recv", 3.0) for r in [*receivers, "theirs"])
    )
    assert sizes == [1, 1, 11]
    assert [t.output if isinstance(t, StepRow) else t for t in taken[:12]] == [
        str(i).encode() for i in range(11)
    ] + [None]
    assert isinstance(taken[12], OwnershipLost)
    async with store.pool.acquire() as c:
        left = await c.fetch(f"SELECT destination_id FROM {store.schema}.messages")
    assert [r["destination_id"] for r in left] == ["theirs"]


async def test_a_consume_at_a_journaled_function_id_returns_its_entry(store: Store) -> None:
    """A batch of consumes with one whose function ID is journaled already fails as a
    statement; again one by one, that caller gets the existing entry and consumes nothing,
    the others their messages."""
    receivers = [f"r{i}" for i in range(6)]
    await add_workflows(store, *receivers)
    for r in receivers:
        assert await store.send(r, "t", "json", r.encode(), 1.0)
    assert await store.consume_message("r5", "t", 1, "aiodurable.recv", 2.0) is not None
    assert await store.send("r5", "t", "json", b"later", 1.0)
    sizes = flushes(store._consumes_batch)
    taken = await gather(
        *(store.consume_message(r, "t", 1, "aiodurable.recv", 3.0) for r in receivers)
    )
    assert [t.output if isinstance(t, StepRow) else t for t in taken] == [
        r.encode() for r in receivers
    ]
    assert sizes == [1, 1, 4, 1, 1, 1, 1]
    async with store.pool.acquire() as c:
        left = await c.fetch(f"SELECT value FROM {store.schema}.messages")
    assert [r["value"] for r in left] == [b"later"]


async def test_keyed_sends_from_outside_share_a_statement(store: Store) -> None:
    """Sends from outside a workflow go out together: a key used twice in the batch sends once
    (the second is False), and an unknown destination fails its caller alone."""
    await add_workflows(store, "dest")
    sizes = flushes(store._keyed_sends_batch)
    keys = ["a", "b", "c", "d", "c", None, None]
    calls = [
        store.send("dest", "t", "json", str(i).encode(), 1.0, idempotency_key=k)
        for i, k in enumerate(keys)
    ]
    assert await gather(*calls) == [True, True, True, True, False, True, True]
    assert sizes == [1, 1, 5]
    unknown = await gather(
        *(store.send(d, "t", "json", b"1", 1.0) for d in ["dest", "dest", "dest", "nowhere"])
    )
    assert unknown[:3] == [True] * 3 and isinstance(unknown[3], WorkflowNotFound)
    async with store.pool.acquire() as c:
        rows = await c.fetch(f"SELECT value FROM {store.schema}.messages ORDER BY message_id")
    assert [r["value"] for r in rows] == [b"0", b"1", b"2", b"3", b"5", b"6"] + [b"1"] * 3


@workflow(name="batch.echo")
async def echo(rounds: int) -> int:
    for i in range(rounds):
        request = await aiodurable.recv("request", timeout=60)
        await aiodurable.set_event(f"reply-{i}", request)
    return rounds


async def test_concurrent_round_trips_through_many_workflows(runtime: RuntimeFactory) -> None:
    """32 callers each drive their own workflow (send, recv, set_event, get_event) for three
    rounds: every reply is the caller's own request, and the workflows' writes shared
    statements."""
    async with runtime() as rt:
        store = rt._engine.store
        assert isinstance(store, Store)
        sizes = {
            name: flushes(getattr(store, f"_{name}_batch"))
            for name in ("sends", "keyed_sends", "events", "consumes")
        }
        handles = [await rt.start_workflow(echo, 3) for _ in range(32)]

        async def drive(n: int) -> list[object]:
            wid = handles[n].workflow_id
            replies = []
            for i in range(3):
                await rt.send(wid, [n, i], "request")
                replies.append(await rt.get_event(wid, f"reply-{i}", 30))
            return replies

        async with asyncio.timeout(60):
            replies = await asyncio.gather(*(drive(n) for n in range(32)))
            assert [await h.get_result() for h in handles] == [3] * 32
    assert replies == [[[n, i] for i in range(3)] for n in range(32)]
    for name in ("keyed_sends", "events", "consumes"):
        assert len(sizes[name]) < 96 and max(sizes[name]) > 1, (name, sizes[name])
