"""``Client``: reaching the workflows from a program that has none of their code.

A client starts and enqueues workflows by name, messages them, reads their events and streams,
waits for their results and manages them, against the same database as the runtimes that run
them. What it starts is recorded with no executor and no application version: any live runtime
that registers the workflow's name takes it at once (a PENDING start is announced as claimable,
an enqueue wakes the queue's dispatchers), and until one does it waits, PENDING or ENQUEUED.

It is a thin layer over the store and notifier a backend opens (:mod:`aiodurable._client_core`),
and runs the runtime's own code paths for messages, events, streams and listings.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import AsyncGenerator, Callable
from types import TracebackType
from typing import Any, Unpack

from . import _manage
from ._backend import Backend, BackendConfig, PostgresBackend
from ._client_core import ClientCore, ClientState
from ._client_handle import ClientHandle
from ._clock import Clock, SystemClock
from ._comm import get_event_on, send_on
from ._exceptions import DuplicateWorkflowError
from ._ids import new_workflow_id
from ._manage import WorkflowFilter
from ._models import StepInfo, WorkflowInfo
from ._options import from_environment
from ._queue import OnDuplicate
from ._records import AUTO_KEY_PREFIX, NewWorkflow
from ._store import StoreProtocol
from ._stream import read_stream_on
from ._validate import check_id, check_priority

__all__ = ["Client"]

_RECONNECT_BACKOFF = 1.0
"""The longest wait between reconnection attempts of a client's connections, in seconds."""


def _positive(label: str, value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"Client({label}=) must be a positive number, not {value!r}")


def _count(label: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Client({label}=) must be an int of at least 1, not {value!r}")
    return value


class Client:
    """A connection to aiodurable's tables for a program without the workflows' code:
    ``async with aiodurable.Client(database_url) as client:``.

    ``await client.start("orders.checkout", order_id)`` records a workflow by name, with JSON
    arguments, and returns a :class:`ClientHandle`; a live :class:`Runtime` that registers that
    name runs it at once, and until one does it stays PENDING (it waits for a runtime with the
    code; nothing expires it). Values are written and read as JSON: results, events, stream
    values and messages come back as plain JSON values (dicts, lists...), since a client has no
    annotations to rebuild dataclasses with; a value recorded with pickle raises
    :class:`SerializationError`.

    A client is not an executor: it runs no workflow, holds no executor lock, writes no
    heartbeat, and is not a runtime that module-level functions such as
    :func:`aiodurable.send` act on. Opening it migrates the schema if it is missing or old.

    Arguments: ``database_url`` (default ``AIODURABLE_DATABASE_URL``, else the embedded server
    of this machine, as a Runtime's), ``schema``, ``pool_size``, ``connect_timeout``,
    ``command_timeout`` (per statement, ``None`` for none) and ``unreachable_timeout`` in
    seconds, ``notify_fallback`` (seconds between safety re-reads of a waiter, should a
    notification be missed), ``max_value_size`` (the largest encoded input or message, in
    bytes), ``clock`` (for timeouts), and ``backend``: where the tables are (default
    PostgreSQL; a :class:`aiodurable.testing.MemoryBackend` shared with a Runtime in tests).
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        schema: str = "aiodurable",
        pool_size: int = 4,
        connect_timeout: float = 10.0,
        command_timeout: float | None = 30.0,
        unreachable_timeout: float = 30.0,
        notify_fallback: float = 10.0,
        max_value_size: int = 16 * 1024 * 1024,
        clock: Clock | None = None,
        backend: Backend | None = None,
    ) -> None:
        for label, seconds in (
            ("connect_timeout", connect_timeout),
            ("unreachable_timeout", unreachable_timeout),
            ("notify_fallback", notify_fallback),
        ):
            _positive(label, seconds)
        if command_timeout is not None:
            _positive("command_timeout", command_timeout)
        config = BackendConfig(
            database_url=from_environment(database_url, "AIODURABLE_DATABASE_URL"),
            app_database_url=None,
            schema=schema,
            clock=clock or SystemClock(),
            pool_size=_count("pool_size", pool_size),
            connect_timeout=connect_timeout,
            command_timeout=command_timeout,
            unreachable_timeout=unreachable_timeout,
            reconnect_backoff=_RECONNECT_BACKOFF,
            notify_fallback=notify_fallback,
            on_listen_connect=ClientCore.on_listen_connect,
            on_signal=ClientCore.on_signal,
        )
        self._schema = schema
        self._core = ClientCore(
            config, backend or PostgresBackend(), _count("max_value_size", max_value_size)
        )

    # -- what it is --------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """Whether the client is open."""
        return self._core.state is ClientState.OPEN

    @property
    def database_url(self) -> str:
        """The database the client connects to (the embedded server's, once open, when none was
        given; empty before)."""
        return self._core.database_url

    @property
    def schema(self) -> str:
        """The PostgreSQL schema of the tables."""
        return self._schema

    def __repr__(self) -> str:
        return f"<aiodurable.Client {self._core.state.value} schema={self._schema!r}>"

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Client:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        core = getattr(self, "_core", None)
        if core is not None and core.state is ClientState.OPEN:
            _warn(
                f"{self!r} was never closed; use `async with Client(...):` or await close()",
                ResourceWarning,
                source=self,
                stacklevel=1,
            )

    async def open(self) -> None:
        """Connect, migrate the schema if needed, and start listening for notifications. Once
        only: a closed client is not reopened."""
        await self._core.open()

    async def close(self) -> None:
        """Disconnect. The workflows it started go on in the runtimes that run them."""
        await self._core.close()

    # -- starting ----------------------------------------------------------------------------

    async def start(
        self, name: str, *args: object, workflow_id: str | None = None
    ) -> ClientHandle[Any]:
        """Record the workflow registered as ``name`` (its ``@workflow(name=...)``, by default
        ``module:qualname``) to run with the positional ``args``, and return its handle.

        The arguments are recorded as JSON, as a runtime records them, and the runtime that runs
        the workflow converts each to its parameter's annotation. The workflow is PENDING with no
        executor: any live runtime with that name registered runs it at once; with none, it
        waits for one. ``workflow_id`` is an idempotency key: an ID already taken returns the
        handle of the workflow recorded under it (:class:`DuplicateWorkflowError` if that one
        has another name)."""
        new = self._new(name, args, workflow_id)
        store = self._store()
        if await store.insert_workflow(new):
            return self._handle(new.workflow_id)
        return await self._attach(store, new)

    async def enqueue(
        self,
        queue_name: str,
        name: str,
        *args: object,
        workflow_id: str | None = None,
        priority: int | None = None,
        deduplication_id: str | None = None,
        on_duplicate: OnDuplicate = "raise",
        partition_key: str | None = None,
    ) -> ClientHandle[Any]:
        """Record the workflow registered as ``name`` as ENQUEUED on the queue ``queue_name``
        and return its handle: a runtime that declares the queue and registers the name starts
        it within the queue's limits, as if ``Queue.enqueue`` had queued it.

        ``priority``: lower leaves first, on a queue declared with ``priority_enabled`` (a
        32-bit int; default 0). ``deduplication_id``: while a workflow with it is queued or
        running on this queue, enqueueing another raises :class:`DuplicateWorkflowError`
        (``on_duplicate="raise"``) or returns the existing workflow's handle
        (``on_duplicate="return"``). A ``workflow_id`` already taken returns the handle of the
        workflow recorded under it, as :meth:`start` does.

        ``partition_key``: the partition of a queue declared ``partitioned=True``, whose limits
        apply per partition. The client does not have the queue's declaration to check against:
        on a partitioned queue pass one (a workflow enqueued there without a key is never
        dispatched), on any other queue pass none (one with a key is never dispatched either)."""
        queue = check_id("queue name", queue_name)
        if queue.startswith(AUTO_KEY_PREFIX):
            raise ValueError(
                f"queue names starting with {AUTO_KEY_PREFIX!r} are aiodurable's own; enqueue on"
                f" a queue the application declares, not {queue!r}"
            )
        if on_duplicate not in ("raise", "return"):
            raise ValueError(f"on_duplicate must be 'raise' or 'return', not {on_duplicate!r}")
        if deduplication_id is not None:
            check_id("deduplication ID", deduplication_id)
        if partition_key is not None:
            check_id("partition key", partition_key)
        new = self._new(
            name,
            args,
            workflow_id,
            status="ENQUEUED",
            queue_name=queue,
            priority=check_priority(0 if priority is None else priority),
            deduplication_id=deduplication_id,
            partition_key=partition_key,
        )
        store = self._store()
        try:
            if await store.enqueue(new):
                return self._handle(new.workflow_id)
        except DuplicateWorkflowError:
            if on_duplicate == "return" and deduplication_id is not None:
                existing = await store.deduplicated(queue, deduplication_id)
                if existing is not None:
                    return self._handle(existing)
            raise
        return await self._attach(store, new)

    def _new(
        self, name: str, args: tuple[object, ...], workflow_id: str | None, **queued: Any
    ) -> NewWorkflow:
        """The row of a workflow this client records: no executor, no application version, and
        the inputs in a runtime's shape (``{"args": [...], "kwargs": {}}``)."""
        check_id("workflow name", name)
        wid = new_workflow_id() if workflow_id is None else check_id("workflow ID", workflow_id)
        inputs = self._core.encode(
            {"args": list(args), "kwargs": {}}, what=f"the inputs of workflow {name!r}"
        )
        return NewWorkflow(
            workflow_id=wid,
            name=name,
            format=self._core.serializer.name,
            inputs=inputs,
            created_at=self._core.clock.now(),
            app_version="",
            executor_id="",
            **queued,
        )

    async def _attach(self, store: StoreProtocol, new: NewWorkflow) -> ClientHandle[Any]:
        """The handle of the workflow already recorded under ``new``'s ID: a workflow ID runs
        once, ever."""
        row = await store.get_workflow(new.workflow_id)
        if row is not None and row.name != new.name:
            raise DuplicateWorkflowError(
                f"workflow ID {new.workflow_id!r} is already taken by a workflow of {row.name!r},"
                f" so it cannot run {new.name!r}; choose another workflow ID"
            )
        return self._handle(new.workflow_id)

    # -- messages, events, streams -----------------------------------------------------------

    async def send(
        self,
        destination_id: str,
        message: object,
        topic: str | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> None:
        """Send a JSON ``message`` to a workflow, as :func:`aiodurable.send` does from outside a
        workflow: never lost once this returns; an ``idempotency_key`` makes repeated sends
        with that key deliver once. :class:`WorkflowNotFound` for an unknown destination."""
        engine = self._core.reach()
        await send_on(engine, destination_id, message, topic, idempotency_key=idempotency_key)

    async def get_event(self, workflow_id: str, key: str, timeout: float = 60.0) -> Any:
        """Wait until workflow ``workflow_id`` has published ``key``; return its latest value as
        plain JSON, or ``None`` after ``timeout`` seconds (``float("inf")``: never)."""
        return await get_event_on(self._core.reach(), workflow_id, key, timeout)

    def read_stream(self, workflow_id: str, key: str) -> AsyncGenerator[Any, None]:
        """Every value workflow ``workflow_id`` writes to its stream ``key``, in order, as plain
        JSON: ``async for value in client.read_stream(workflow_id, key)``; see
        :func:`aiodurable.read_stream` (it ends when the stream is closed or the workflow
        ends; :class:`WorkflowNotFound` for an unknown workflow)."""
        return read_stream_on(self._core.reach(), workflow_id, key)

    # -- waiting and managing ----------------------------------------------------------------

    async def retrieve_workflow(self, workflow_id: str) -> ClientHandle[Any]:
        """A handle to a recorded workflow; :class:`WorkflowNotFound` if the ID is unknown."""
        await self._store().require_workflow(workflow_id)
        return self._handle(workflow_id)

    async def list_workflows(self, **filters: Unpack[WorkflowFilter]) -> list[WorkflowInfo]:
        """Workflows matching every filter given, oldest first; see
        :func:`aiodurable.list_workflows` for the filters. Inputs and outputs are plain JSON."""
        return await _manage.list_workflows(self._core.reach(), **filters)

    async def list_steps(self, workflow_id: str) -> list[StepInfo]:
        """A workflow's journal in function-ID order; :class:`WorkflowNotFound` if unknown."""
        return await _manage.list_steps(self._core.reach(), workflow_id)

    async def cancel_workflow(self, workflow_id: str) -> None:
        """Cancel a PENDING or ENQUEUED workflow: the runtime running it stops it at its next
        checkpoint (at once if it is waiting), it is never recovered, and its waiters get
        :class:`WorkflowCancelled`. A finished workflow is left as it is; an unknown ID raises
        :class:`WorkflowNotFound`."""
        store = self._store()
        await store.require_workflow(workflow_id)
        await store.set_status(
            workflow_id, "CANCELLED", only_from=["PENDING", "ENQUEUED"], now=self._core.clock.now()
        )

    async def resume_workflow(self, workflow_id: str) -> ClientHandle[Any]:
        """Continue a CANCELLED or MAX_RECOVERY_ATTEMPTS_EXCEEDED workflow from its last
        completed step (an ENQUEUED one starts at once, bypassing its queue): it becomes PENDING
        with no executor and no application version, and any live runtime that registers its
        name runs it, as after ``aiodurable workflow resume``. A SUCCESS, ERROR or PENDING
        workflow is left as it is. Returns its handle; :class:`WorkflowNotFound` if unknown."""
        store = self._store()
        await store.require_workflow(workflow_id)
        await store.resume(workflow_id, "", "", self._core.clock.now())
        return self._handle(workflow_id)

    # -- helpers -----------------------------------------------------------------------------

    def _store(self) -> StoreProtocol:
        return self._core.store

    def _handle(self, workflow_id: str) -> ClientHandle[Any]:
        return ClientHandle(self._core, workflow_id)
