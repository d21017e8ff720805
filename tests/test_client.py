"""``aiodurable.Client``: a program without the workflows' code starts, enqueues, messages,
reads and manages workflows that a separate runtime process runs.

The first test runs the worker (``tests/apps/client_worker.py``) as a real process and acts on
it from here, where none of its workflows is imported; both sides re-read the tables only once a
minute, so everything below that happens within the test's few seconds was pushed by a
notification. The others use the in-memory backend, a Runtime and a Client sharing it.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator

import asyncpg
import pytest

import aiodurable
from aiodurable import (
    Client,
    DuplicateWorkflowError,
    NoRuntimeError,
    PickleSerializer,
    Queue,
    Runtime,
    SerializationError,
    WorkflowCancelled,
    WorkflowNotFound,
    WorkflowStatus,
    workflow,
)
from aiodurable._current import open_runtimes
from aiodurable._workflow import lookup
from aiodurable.testing import MemoryBackend, TestClock

from .proc import Child

pytestmark = pytest.mark.anyio

WORKER_NAMES = ["client.greet", "client.total", "client.fail", "client.waiter", "client.progress"]


@pytest.fixture
async def worker(database_url: str, schema: str) -> AsyncIterator[Child]:
    """The worker process, open and claiming; killed afterwards."""
    env = {
        "AIODURABLE_DATABASE_URL": database_url,
        "AIODURABLE_EXECUTOR_ID": "client-worker",
        "TEST_SCHEMA": schema,
    }
    child = Child("client_worker.py", env=env)
    try:
        await child.expect("READY")
        yield child
    finally:
        await child.kill()


async def test_a_client_without_the_code_drives_workflows_run_by_another_process(
    worker: Child, database_url: str, schema: str
) -> None:
    """Start and enqueue by name, send, get_event, read_stream, results (pushed), errors,
    retrieve, list, steps, cancel and resume: all against a runtime in another process, from
    a program that imported none of its workflows; a name no runtime has stays PENDING."""
    assert [lookup(name) for name in WORKER_NAMES] == [None] * len(WORKER_NAMES)
    async with asyncio.timeout(20), Client(database_url, schema=schema, notify_fallback=60) as c:
        assert open_runtimes() == []  # a client is no runtime module-level functions act on
        orphan = await c.start("client.nobody-has-this", 1)

        greeting = await c.start("client.greet", "ada", workflow_id="greet-ada")
        assert await greeting.get_result() == "hello ada"
        again = await c.start("client.greet", "bob", workflow_id="greet-ada")  # taken: attach
        assert await again.get_result() == "hello ada"
        receipt = await c.start("client.total", {"item": "pen", "quantity": 3}, 2)
        assert await receipt.get_result() == {"item": "pen", "total": 6}  # plain JSON
        with pytest.raises(ValueError, match="boom"):
            await (await c.start("client.fail", "boom")).get_result()

        queued = await c.enqueue("client-q", "client.greet", "queue")
        assert await queued.get_result() == "hello queue"
        assert (await queued.get_status()).queue_name == "client-q"
        tenant = await c.enqueue("client-pq", "client.greet", "tenant", partition_key="t-1")
        assert await tenant.get_result() == "hello tenant"
        assert (await tenant.get_status()).partition_key == "t-1"

        chat = await c.start("client.waiter", "greeting")
        await c.send(chat.workflow_id, {"hi": [1, 2]}, "greeting")
        assert await chat.get_result() == {"hi": [1, 2]}

        streamed = await c.start("client.progress", 3)
        assert [v async for v in c.read_stream(streamed.workflow_id, "numbers")] == [
            {"i": 0},
            {"i": 1},
            {"i": 2},
        ]
        assert await c.get_event(streamed.workflow_id, "total") == 3
        assert await (await c.retrieve_workflow(streamed.workflow_id)).get_result() == 3
        steps = await c.list_steps(streamed.workflow_id)
        assert [s.name for s in steps] == [
            *["aiodurable.write_stream"] * 3,
            "aiodurable.close_stream",
            "aiodurable.set_event",
        ]
        with pytest.raises(WorkflowNotFound):
            await c.retrieve_workflow("no-such-workflow")

        parked = await c.start("client.waiter", "go")
        await worker.expect("WAITING go")  # running in the worker: the cancel stops it there
        await c.cancel_workflow(parked.workflow_id)
        await worker.expect("STOPPED")
        with pytest.raises(WorkflowCancelled):
            await parked.get_result()
        resumed = await c.resume_workflow(parked.workflow_id)
        await c.send(parked.workflow_id, "onwards", "go")
        assert await resumed.get_result() == "onwards"
        assert await parked.get_result() == "onwards"  # the old handle follows the resumed run

        greets = await c.list_workflows(name="client.greet")
        assert [(w.inputs, w.output) for w in greets] == [
            ({"args": ["ada"], "kwargs": {}}, "hello ada"),
            ({"args": ["queue"], "kwargs": {}}, "hello queue"),
            ({"args": ["tenant"], "kwargs": {}}, "hello tenant"),
        ]
        info = await orphan.get_status()
        assert (info.status, info.executor_id, info.app_version) == (WorkflowStatus.PENDING, "", "")

    conn = await asyncpg.connect(database_url)
    try:
        executors = await conn.fetch(f"SELECT executor_id FROM {schema}.executors")
    finally:
        await conn.close()
    assert [r["executor_id"] for r in executors] == ["client-worker"]  # the client is none


# -- on the in-memory backend: a Runtime and a Client in this process ----------------------------

MEMORY_QUEUE = Queue("client-memory-q")


@workflow(name="client_test.echo")
async def echo(value: object) -> object:
    return value


async def test_a_client_start_wakes_a_runtime_at_once_on_the_memory_backend(
    backend: MemoryBackend, clock: TestClock
) -> None:
    """A client's start is announced as claimable by the in-memory store too, so a runtime on the
    same backend runs it without waiting for its minute-long fallback re-read."""
    async with (
        Runtime(backend=backend, clock=clock, notify_fallback=60),
        Client(backend=backend, clock=clock) as client,
    ):
        await clock.settle()  # the runtime's first look for unassigned work is over
        handle = await client.start("client_test.echo", [1, "two"])
        async with asyncio.timeout(5):
            assert await handle.get_result() == [1, "two"]


async def test_taken_workflow_ids_and_deduplication_ids(
    backend: MemoryBackend, clock: TestClock
) -> None:
    """A taken workflow ID attaches, unless a workflow of another name holds it; a queued
    deduplication ID raises, or with on_duplicate="return" gives the queued workflow's handle."""
    async with Client(backend=backend, clock=clock) as client:
        first = await client.start("client_test.echo", 1, workflow_id="w")
        assert (await client.start("client_test.echo", 2, workflow_id="w")).workflow_id == "w"
        with pytest.raises(DuplicateWorkflowError, match="already taken by a workflow of"):
            await client.enqueue("client-memory-q", "client_test.other", workflow_id="w")
        assert (await first.get_status()).inputs == {"args": [1], "kwargs": {}}

        queued = await client.enqueue(
            "client-memory-q", "client_test.echo", 3, deduplication_id="d"
        )
        with pytest.raises(DuplicateWorkflowError, match="deduplication ID 'd'"):
            await client.enqueue("client-memory-q", "client_test.echo", 4, deduplication_id="d")
        same = await client.enqueue(
            "client-memory-q", "client_test.echo", 5, deduplication_id="d", on_duplicate="return"
        )
        assert same.workflow_id == queued.workflow_id
        assert (await same.get_status()).status == WorkflowStatus.ENQUEUED


async def test_a_pickled_value_raises_a_clear_error(
    backend: MemoryBackend, clock: TestClock
) -> None:
    """A result recorded with pickle raises SerializationError saying a client reads JSON only;
    a listing shows the row with its decode_error instead of failing."""
    async with Runtime(backend=backend, clock=clock, serializer=PickleSerializer()) as rt:
        done = await rt.start_workflow(echo, {1, 2})
        await done.get_result()
    async with Client(backend=backend, clock=clock) as client:
        handle = await client.retrieve_workflow(done.workflow_id)
        with pytest.raises(SerializationError, match="a Client reads JSON only"):
            await handle.get_result()
        (info,) = await client.list_workflows()
        assert info.output is None and "JSON only" in (info.decode_error or "")


async def test_bad_arguments_and_a_client_that_is_not_open(
    backend: MemoryBackend, clock: TestClock
) -> None:
    """Bad settings and arguments fail before anything is written, naming the problem; a client
    is used only while open, and opens once."""
    with pytest.raises(ValueError, match="pool_size"):
        Client(backend=backend, pool_size=0)
    async with Client(backend=backend, clock=clock, max_value_size=64) as small:
        with pytest.raises(SerializationError, match=r"client's max_value_size of 64.*Client\("):
            await small.start("client_test.echo", "x" * 100)
    client = Client(backend=backend, clock=clock)
    with pytest.raises(NoRuntimeError, match="unopened"):
        await client.start("client_test.echo")
    async with client:
        with pytest.raises(ValueError, match="aiodurable's own"):
            await client.enqueue("aiodurable:debounce", "client_test.echo")
        with pytest.raises(SerializationError, match="inputs of workflow"):
            await client.start("client_test.echo", object())
        with pytest.raises(ValueError, match="priority"):
            await client.enqueue("client-memory-q", "client_test.echo", priority=2**31)
        assert await client.list_workflows() == []
    with pytest.raises(NoRuntimeError, match="closed"):
        await client.get_event("w", "k", timeout=math.inf)
    with pytest.raises(NoRuntimeError, match="opens once"):
        await client.open()
    assert aiodurable.Client is Client
