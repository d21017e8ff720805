"""``Runtime``: connection, schema, background tasks, execution and recovery of workflows."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import inspect
import logging
import os
import socket
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

import asyncpg

from . import _manage
from ._backend import Backend, BackendConfig, Connected, PostgresBackend
from ._clock import Clock, SystemClock
from ._comm import get_event_on, send_on
from ._context import (
    WorkflowContext,
    check_timeout,
    current_workflow,
    enter_workflow,
    in_step,
    take_assigned_id,
    workflow_timeout,
)
from ._current import _current, _open_runtimes, call_workflow, current_runtime
from ._exceptions import (
    DatabaseUnavailable,
    DuplicateWorkflowError,
    DurableError,
    NonDeterminismError,
    NoRuntimeError,
    OwnershipLost,
    SerializationError,
    WorkflowCancelled,
    WorkflowFailed,
    WorkflowNotFound,
)
from ._handle import Outcome, WorkflowHandle
from ._health import Loops, RuntimeHealth
from ._manage import StatusFilter, TimeFilter
from ._models import StepInfo, WorkflowInfo, WorkflowStatus, from_timestamp
from ._notify import Notifier
from ._queue import registered_queues
from ._serde import (
    JsonSerializer,
    Serializer,
    decode,
    decode_exception,
    decode_inputs,
    encode,
    encode_exception,
    encode_inputs,
    return_hint,
)
from ._store import DequeueRequest, NewWorkflow, StepRow, Store, WorkflowRow
from ._tracing import workflow_span
from ._workflow import (
    WorkflowDef,
    application_version,
    check_id,
    definition_of,
    lookup,
    registered_names,
)

__all__ = ["Runtime", "call_workflow", "current_runtime"]

logger = logging.getLogger("aiodurable")

P = ParamSpec("P")
R = TypeVar("R")

_RECOVERY_BATCH = 500
_DISPATCH_BATCH = 100
_MAX_EXECUTOR_SUFFIX = 100


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


@dataclass(eq=False, slots=True)
class _Running:
    ctx: WorkflowContext
    future: asyncio.Future[Outcome]
    deadline_task: asyncio.Task[Any] | None = None


def _positive(label: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"Runtime({label}=) must be a positive number, not {value!r}")


def _undecoded(what: str, exc: SerializationError) -> str:
    """Why a recorded value was not decoded, for ``decode_error``, naming ``what`` it was."""
    text = str(exc)
    return text if text.startswith("cannot decode") else f"cannot decode {what}: {text}"


def default_executor_id() -> str:
    """An executor ID that is stable across restarts of the same program on the same machine."""
    main = sys.modules.get("__main__")
    program = getattr(main, "__file__", None) or (sys.argv[0] if sys.argv else "") or "python"
    digest = hashlib.sha256(os.path.abspath(program).encode()).hexdigest()[:10]
    return f"{socket.gethostname()}-{digest}"


class Runtime:
    """The durable execution runtime: open one per process with ``async with Runtime():``.

    Opening it connects to PostgreSQL (``database_url``, else ``AIODURABLE_DATABASE_URL``, else an
    embedded server it starts itself), creates or migrates the schema, starts its background
    tasks and resumes every PENDING workflow of this executor and application version from its
    last completed step. Closing it stops its workflows where they stand (they resume at the next
    start) and releases everything it opened.

    Arguments:

    - ``app_version``: default ``AIODURABLE_APP_VERSION``, else a hash of the registered
      workflows' source.
    - ``executor_id``: default ``AIODURABLE_EXECUTOR_ID``, else an ID stable across restarts of
      this program on this machine; a second live runtime given an ID in use runs as ``ID-2``.
    - ``schema`` for the tables; ``app_database_url`` for ``@transaction`` (default: the same
      database); ``serializer`` (default JSON); ``clock`` (default the wall clock; see
      :mod:`aiodurable.testing` for one that skips time).
    - ``pool_size``; ``connect_timeout`` and ``command_timeout`` (per statement) in seconds.
    - ``notify_fallback``: seconds between safety re-reads of a waiter, should a notification be
      missed, and between the runtime's self-checks.
    - ``recover=False`` opens a runtime that runs nothing by itself (no recovery, no queue
      dispatch, no claiming): a client, like the command line.
    - ``heartbeat_interval`` and ``executor_lease`` (seconds): liveness, and how long another
      executor may stay silent before this runtime takes its workflows over.
    - ``max_value_size``: the largest encoded input, output, message or event, in bytes.
    - ``backend``: where the journal lives; default PostgreSQL (see above).
      :class:`aiodurable.testing.MemoryBackend` keeps it in memory instead, for fast tests of
      workflow logic: nothing survives the process, and ``@transaction`` is not available.
    - ``unreachable_timeout``: seconds an operation keeps retrying while PostgreSQL is out of
      reach before it raises :class:`DatabaseUnavailable` (the runtime's own background work
      never gives up: it pauses and goes on once the database is back; see :meth:`health`).
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        app_version: str | None = None,
        executor_id: str | None = None,
        schema: str = "aiodurable",
        app_database_url: str | None = None,
        serializer: Serializer | None = None,
        clock: Clock | None = None,
        pool_size: int = 16,
        connect_timeout: float = 10.0,
        notify_fallback: float = 10.0,
        recover: bool = True,
        heartbeat_interval: float = 5.0,
        executor_lease: float = 30.0,
        max_value_size: int = 16 * 1024 * 1024,
        command_timeout: float | None = 30.0,
        unreachable_timeout: float = 30.0,
        backend: Backend | None = None,
    ) -> None:
        self._database_url = database_url or os.environ.get("AIODURABLE_DATABASE_URL") or None
        self._app_version = app_version or os.environ.get("AIODURABLE_APP_VERSION") or None
        self.executor_id: str = (
            executor_id or os.environ.get("AIODURABLE_EXECUTOR_ID") or default_executor_id()
        )
        check_id("executor ID", self.executor_id)
        for label, seconds in (
            ("heartbeat_interval", heartbeat_interval),
            ("executor_lease", executor_lease),
            ("notify_fallback", notify_fallback),
            ("connect_timeout", connect_timeout),
            ("unreachable_timeout", unreachable_timeout),
        ):
            _positive(label, seconds)
        if executor_lease <= heartbeat_interval:
            raise ValueError(
                f"executor_lease ({executor_lease} s) must be longer than heartbeat_interval"
                f" ({heartbeat_interval} s), or live executors would look gone"
            )
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise ValueError(f"Runtime(pool_size=) must be an int of at least 1, not {pool_size!r}")
        if command_timeout is not None:
            _positive("command_timeout", command_timeout)
        if isinstance(max_value_size, bool) or not isinstance(max_value_size, int):
            raise ValueError(f"max_value_size must be an int of bytes, not {max_value_size!r}")
        _positive("max_value_size", max_value_size)
        self.heartbeat_interval = heartbeat_interval
        self.executor_lease = executor_lease
        self.max_value_size = max_value_size
        self._command_timeout = command_timeout
        self._unreachable_timeout = unreachable_timeout
        self.schema = schema
        self.app_database_url = app_database_url
        self.serializer: Serializer = serializer or JsonSerializer()
        self._serializers: dict[str, Serializer] = {"json": JsonSerializer()}
        self._serializers[self.serializer.name] = self.serializer
        self.clock: Clock = clock or SystemClock()
        self._pool_size = pool_size
        self._connect_timeout = connect_timeout
        self._notify_fallback = notify_fallback
        self._recover_on_open = recover
        self._begun = False
        self._loops = Loops(lambda coro, name: self.spawn(coro, name=name))
        # Ownership: the monotonic time of the last proof that this runtime still owns its
        # workflows (a heartbeat that found its executor row), and the proof in progress.
        self._proved_at = -float("inf")
        self._proving: asyncio.Future[None] | None = None
        self._state = _State.UNOPENED
        self._tasks: set[asyncio.Task[Any]] = set()
        self._running: dict[str, _Running] = {}
        self._executor_settled = False
        self._recovered: list[str] = []
        self._claim_wanted = asyncio.Event()
        self._launching: set[str] = set()
        self._reported_unknown: set[str] = set()
        self._dispatch_wanted = asyncio.Event()
        self._token: Any = None
        self._backend: Backend = backend or PostgresBackend()
        self._connected: Connected | None = None
        self._store: Store | None = None
        self._app_store: Store | None = None
        self._notifier: Notifier | None = None
        self.database_url: str = self._database_url or ""

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """Whether the runtime is open."""
        return self._state is _State.OPEN

    @property
    def recovered_workflow_ids(self) -> list[str]:
        """The IDs of the workflows this runtime resumed when it opened."""
        return list(self._recovered)

    @property
    def app_version(self) -> str:
        """The application version recorded on the workflows this runtime starts."""
        if self._app_version is None:
            raise NoRuntimeError("the application version is known once the runtime is open")
        return self._app_version

    @property
    def store(self) -> Store:
        """The store (the one I/O seam) while open."""
        if self._store is None:
            raise NoRuntimeError(
                "this Runtime is not open; use it inside `async with Runtime() as rt:`"
            )
        return self._store

    @property
    def app_store(self) -> Store:
        """The application database's store (``@transaction`` runs there), while open."""
        if self._app_store is None:
            raise NoRuntimeError(
                "this Runtime is not open; use it inside `async with Runtime() as rt:`"
            )
        return self._app_store

    @property
    def notifier(self) -> Notifier:
        """The LISTEN connection's dispatcher while open."""
        if self._notifier is None:
            raise NoRuntimeError("this Runtime is not open")
        return self._notifier

    async def __aenter__(self) -> Runtime:
        await self.open()
        self._token = _current.set(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None:
            with contextlib.suppress(ValueError):  # exited in another context than entered
                _current.reset(self._token)
            self._token = None
        await self.close()

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if getattr(self, "_state", None) is _State.OPEN:
            _warn(
                f"{self!r} was never closed; use `async with Runtime():` or await close()",
                ResourceWarning,
                source=self,
                stacklevel=1,
            )

    def __repr__(self) -> str:
        return f"<aiodurable.Runtime {self._state.value} executor={self.executor_id!r}>"

    async def open(self, *, begin: bool = True) -> None:
        """Connect, migrate, start background tasks and recover; see the class docstring.

        ``begin=False`` connects and migrates only: the runtime can start workflows, but it
        recovers nothing and dispatches no queue until :meth:`begin` is awaited. A web
        integration opens this way, runs the application's own startup, then begins, so that
        recovered workflows find what that startup sets up."""
        if self._state is not _State.UNOPENED:
            raise NoRuntimeError(
                f"this Runtime is {self._state.value}; a Runtime opens once, create a new one"
            )
        self._state = _State.OPEN
        try:
            await self._open()
            if begin:
                await self.begin()
        except BaseException:
            await self.close()
            raise
        _open_runtimes.add(self)

    async def begin(self) -> None:
        """Recover this executor's unfinished workflows and start running queued and unassigned
        work; :meth:`open` does this unless called with ``begin=False``. Once only; a runtime
        made with ``recover=False`` begins nothing."""
        self._check_open()
        if self._begun or not self._recover_on_open:
            return
        self._begun = True
        await self._heartbeat()
        self._recovered = await self.recover()
        await _manage.log_other_versions(self)
        self._loops.start("maintenance", self._maintain)
        self._loops.start("claimer", self._claim_loop)
        self.wake_claimer()
        self._loops.start("dispatcher", self._dispatch_loop)
        self.wake_dispatcher()
        self._loops.start("liveness", self._liveness_loop)

    async def _open(self) -> None:
        if self._app_version is None:
            self._app_version = application_version()
        config = BackendConfig(
            database_url=self._database_url,
            app_database_url=self.app_database_url,
            schema=self.schema,
            clock=self.clock,
            pool_size=self._pool_size,
            connect_timeout=self._connect_timeout,
            command_timeout=self._command_timeout,
            unreachable_timeout=self._unreachable_timeout,
            reconnect_backoff=self._reconnect_backoff,
            notify_fallback=self._notify_fallback,
            on_listen_connect=self._on_listen_connect,
            on_signal=self._on_signal,
        )
        connected = self._connected = await self._backend.open(config)
        self.database_url = connected.database_url
        self._store = connected.store
        self._app_store = connected.app_store
        self._notifier = connected.notifier
        self._loops.start("notifier", self._notifier.run)
        # The executor ID is settled (its lock held): journal writes are fenced from now on.
        self._store.on_fenced = self._on_fenced
        await self._store.set_owner(self.executor_id)

    async def close(self) -> None:
        """Stop every workflow where it stands (it resumes at the next start) and disconnect."""
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        _open_runtimes.discard(self)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for running in self._running.values():
            if not running.future.done():
                running.future.set_result(
                    Outcome(error=self._closed_error(running.ctx.workflow_id))
                )
        self._running.clear()
        if self._connected is not None:
            await self._connected.close()

    @staticmethod
    def _closed_error(workflow_id: str) -> NoRuntimeError:
        return NoRuntimeError(
            f"the runtime closed before workflow {workflow_id!r} finished; it resumes from its"
            " last completed step when a runtime opens again"
        )

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Run ``coro`` in the runtime's own task set: cancelled and awaited on close."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("aiodurable task %s failed", task.get_name(), exc_info=task.exception())

    async def _on_listen_connect(self, conn: asyncpg.Connection) -> None:
        """Hold this executor ID's session lock on the LISTEN connection: one live runtime per
        executor ID, so that no two run (or recover) the same executor's workflows.

        When the ID is held by another live runtime, this one runs as ``ID-2`` (or ``-3``...):
        the next free one, which a restart in the same order takes again. After a reconnect it
        takes back the lock of the ID it runs as."""
        if self._executor_settled:
            # The lock was down with the connection: prove ownership before the next step.
            self._proved_at = -float("inf")
            # Notifications sent meanwhile are lost: look for queued and unassigned work now.
            if self._begun:
                self.wake_claimer()
                self.wake_dispatcher()
                self._start_proof()
            if not await self._try_hold_executor(conn, self.executor_id):
                logger.error(
                    "executor ID %r was taken by another runtime while the connection was"
                    " down; both may now run its workflows",
                    self.executor_id,
                )
            return
        base = self.executor_id
        for n in range(1, _MAX_EXECUTOR_SUFFIX + 1):
            candidate = base if n == 1 else f"{base}-{n}"
            if await self._try_hold_executor(conn, candidate):
                if candidate != base:
                    logger.warning(
                        "executor ID %r is held by another live runtime; this one runs as %r."
                        " Give each process its own AIODURABLE_EXECUTOR_ID to choose.",
                        base,
                        candidate,
                    )
                self.executor_id = candidate
                self._executor_settled = True
                return
        raise DurableError(
            f"executor IDs {base!r} to {base}-{_MAX_EXECUTOR_SUFFIX} are all held by live"
            " runtimes; set AIODURABLE_EXECUTOR_ID to a unique value per process"
        )

    async def _try_hold_executor(self, conn: asyncpg.Connection, executor_id: str) -> bool:
        held = await conn.fetchval(
            "SELECT pg_try_advisory_lock(hashtext($1), hashtext($2))", self.schema, executor_id
        )
        return bool(held)

    @property
    def _reconnect_backoff(self) -> float:
        """The longest wait between reconnection attempts: well under the lease, so that a live
        executor is back before a restart of PostgreSQL could make it look gone."""
        return min(1.0, self.executor_lease / 6)

    async def _heartbeat(self) -> None:
        """Record this executor's heartbeat. It proves ownership too: a takeover deletes the
        gone executor's row, so finding ours missing means our workflows may have moved."""
        started = time.monotonic()
        existed = await self.store.heartbeat(
            self.executor_id, socket.gethostname(), os.getpid(), self.app_version
        )
        if not existed and self._running:
            await self._drop_taken_over()
        self._proved_at = max(self._proved_at, started)

    def ownership_fresh(self) -> bool:
        """Whether this runtime proved, recently enough, that it owns its workflows: within
        most of its lease since the last heartbeat, no other executor can have taken it over."""
        return time.monotonic() - self._proved_at < 0.8 * self.executor_lease

    async def confirm_ownership(self) -> None:
        """Prove that this runtime still owns its workflows before a step runs, when its last
        proof is too old (after a pause, or while PostgreSQL was out of reach): one heartbeat,
        shared by every workflow waiting for it, which stops the workflows taken over since."""
        if self.ownership_fresh():
            return
        await asyncio.shield(self._start_proof())

    def _start_proof(self) -> asyncio.Future[None]:
        """The proof of ownership in progress, started if there is none."""
        if self._proving is None or self._proving.done():
            proving = self._proving = asyncio.ensure_future(self._prove())
            self._tasks.add(proving)  # cancelled on close, like the runtime's own tasks
            proving.add_done_callback(self._tasks.discard)
            proving.add_done_callback(lambda f: f.cancelled() or f.exception())  # its waiters raise
        return self._proving

    async def _prove(self) -> None:
        started = time.monotonic()
        await self._heartbeat()
        await self._drop_taken_over()
        self._proved_at = max(self._proved_at, started)

    async def _drop_taken_over(self) -> None:
        """Stop, here, the workflows that another executor owns now."""
        if not self._running:
            return
        moved = await self.store.not_owned(list(self._running), self.executor_id)
        for workflow_id, where in moved.items():
            self._stop_lost(workflow_id, where)

    def _on_fenced(self, workflow_id: str) -> None:
        self._stop_lost(workflow_id, "another executor")

    def _stop_lost(self, workflow_id: str, holder: str) -> None:
        """A workflow this runtime runs was taken over: stop it here, writing nothing more; its
        waiters here follow it to where it runs now (the outcome is not final)."""
        running = self._running.get(workflow_id)
        if running is None or running.ctx.cancelled:
            return
        logger.warning(
            "workflow %s was taken over while this runtime (executor %r) was paused or cut off"
            " from PostgreSQL for longer than its %g s lease; it is now %s, and stops here",
            workflow_id,
            self.executor_id,
            self.executor_lease,
            holder,
        )
        running.ctx.cancel()
        if not running.future.done():
            running.future.set_result(Outcome(error=WorkflowCancelled(workflow_id)))

    def health(self) -> RuntimeHealth:
        """A snapshot of this runtime's health, for a readiness probe: ``health().ok``, else
        ``health().problems`` in words. See :class:`aiodurable.RuntimeHealth`."""
        opened = self._state is _State.OPEN
        return RuntimeHealth(
            open=opened,
            database=opened and self.store.reachable,
            listening=opened and self.notifier.listening,
            owner=opened and (not self._begun or self.ownership_fresh()),
            loops=self._loops.health(),
        )

    async def _liveness_loop(self) -> None:
        """Record this executor's heartbeat; take over the PENDING workflows of executors of
        this application version that fell silent past the lease."""
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            await self._heartbeat()
            await self._take_over_silent()

    async def _take_over_silent(self) -> None:
        silent = await self.store.silent_executors(
            self.app_version, self.executor_lease, self.executor_id
        )
        for dead in silent:
            rows = await self.store.take_over(
                dead, self.executor_id, self.app_version, registered_names(), self.clock.now()
            )
            if rows is None:
                continue  # its session lock is held: alive, only slow
            if rows:
                logger.warning(
                    "executor %r has been silent for over %g s; took over %d workflow(s)",
                    dead,
                    self.executor_lease,
                    len(rows),
                )
                await self._launch_rows(rows)

    async def _maintain(self) -> None:
        """Now and then: look for unassigned and queued work, in case a notification was
        missed; pick up workflows recorded for this executor that nothing here runs (a dispatch
        whose answer was lost with its connection, say); forget old idempotency keys of the
        runtime's own."""
        while True:
            await asyncio.sleep(self._notify_fallback)
            self.wake_claimer()
            self.wake_dispatcher()
            await self.store.forget_auto_keys(self.clock.now() - 86400)
            await self.recover()

    def _on_signal(self, key: tuple[str, ...]) -> None:
        if len(key) == 3 and key[0] == "w" and key[2] == WorkflowStatus.CANCELLED:
            self.cancel_local(key[1])
        elif key[0] == "x" and self._begun:
            self.wake_claimer()
        elif key[0] == "q":
            self.wake_dispatcher()

    # -- starting and running workflows ------------------------------------------------------

    def _check_open(self) -> None:
        if self._state is not _State.OPEN:
            raise NoRuntimeError(
                f"this Runtime is {self._state.value}; use it inside `async with Runtime() as rt:`"
            )

    def start_workflow(
        self, fn: Callable[P, Coroutine[Any, Any, R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> Coroutine[Any, Any, WorkflowHandle[R]]:
        """Durably start ``fn(*args, **kwargs)`` in the background; return its handle once the
        workflow is recorded (from then on it runs to completion, even across a crash).

        Inside a workflow this starts a child workflow, recorded in the parent's journal.
        For a workflow that has no parameter named ``timeout``, a ``timeout=`` seconds keyword
        gives it a deadline, as :func:`aiodurable.set_workflow_timeout` does (type checkers
        see it as the workflow's own argument: prefer ``set_workflow_timeout`` in typed code).
        """
        wdef = definition_of(fn)
        timeout: float | None = None
        if "timeout" in kwargs and "timeout" not in inspect.signature(wdef.fn).parameters:
            timeout = check_timeout(kwargs.pop("timeout"))
        assigned = take_assigned_id()
        parent = current_workflow()
        if parent is not None and not in_step():
            function_id = parent.next_function_id()
            return self.start_child(parent, function_id, wdef, args, kwargs, assigned)
        return self.start(wdef, args, kwargs, workflow_id=assigned, timeout=timeout)

    async def start(
        self,
        wdef: WorkflowDef,
        args: tuple[object, ...],
        kwargs: dict[str, object],
        *,
        workflow_id: str | None = None,
        parent: WorkflowContext | None = None,
        timeout: float | None = None,
    ) -> WorkflowHandle[Any]:
        """Record and launch a workflow, or attach to the one already recorded under its ID.

        ``timeout`` (seconds) overrides :func:`aiodurable.set_workflow_timeout`."""
        self._check_open()
        wid = str(uuid.uuid4()) if workflow_id is None else check_id("workflow ID", workflow_id)
        if wid in self._running:
            return self.handle(wid, wdef.name)
        inputs = self.encode_inputs(wdef, args, kwargs)
        if parent is not None:
            deadline = parent.deadline_at  # children inherit their parent's deadline
        else:
            timeout = timeout if timeout is not None else workflow_timeout()
            deadline = None if timeout is None else self.clock.now() + timeout
        new = NewWorkflow(
            workflow_id=wid,
            name=wdef.name,
            format=self.serializer.name,
            inputs=inputs,
            created_at=self.clock.now(),
            app_version=self.app_version,
            executor_id=self.executor_id,
            parent_workflow_id=None if parent is None else parent.workflow_id,
            deadline_at=deadline,
        )
        if await self.store.insert_workflow(new):
            self._launch(wdef, wid, args, kwargs, {}, deadline)
            return self.handle(wid, wdef.name)
        # The ID is taken: it ran, or runs, elsewhere or earlier. Attach; never run it again.
        if wid in self._running:
            return self.handle(wid, wdef.name)
        row = await self.store.get_workflow(wid)
        if row is not None and self._is_own_lost_insert(row, new):
            # Our insert committed but its answer was lost with the connection: run it now.
            self._launch(wdef, wid, args, kwargs, {}, deadline)
        elif row is not None and row.name != wdef.name:
            raise DuplicateWorkflowError(
                f"workflow ID {wid!r} is already taken by a workflow of {row.name!r}, so it"
                f" cannot run {wdef.name!r}; choose another workflow ID"
            )
        return self.handle(wid, wdef.name)

    def _is_own_lost_insert(self, row: WorkflowRow, new: NewWorkflow) -> bool:
        """Whether ``row`` is exactly the row this call tried to insert (same executor, inputs
        and creation time, to the millisecond) and nothing runs it here."""
        return (
            row.status == "PENDING"
            and row.executor_id == new.executor_id
            and row.inputs == new.inputs
            and round(row.created_at * 1000) == round(new.created_at * 1000)
            and row.workflow_id not in self._running
            and row.workflow_id not in self._launching
        )

    def start_child(
        self,
        parent: WorkflowContext,
        function_id: int,
        wdef: WorkflowDef,
        args: tuple[object, ...],
        kwargs: dict[str, object],
        assigned: str | None,
    ) -> Coroutine[Any, Any, WorkflowHandle[Any]]:
        """Start (or, on replay, re-attach to) the child recorded at ``function_id``."""

        def start(child_id: str) -> Coroutine[Any, Any, WorkflowHandle[Any]]:
            return self.start(wdef, args, kwargs, workflow_id=child_id, parent=parent)

        return self.attach_child(parent, function_id, wdef.name, assigned, start)

    async def attach_child(
        self,
        parent: WorkflowContext,
        function_id: int,
        name: str,
        assigned: str | None,
        start: Callable[[str], Coroutine[Any, Any, WorkflowHandle[Any]]],
    ) -> WorkflowHandle[Any]:
        """The child recorded at ``function_id``, or a new one made by ``start(child_id)`` and
        journaled there, so a recovered parent re-attaches to the same child. The child's ID is
        ``{parent}-{function_id}`` unless one was assigned."""
        entry = parent.recorded(function_id, name)
        if entry is not None and entry.child_workflow_id is not None:
            return self.handle(entry.child_workflow_id, name)
        parent.check_cancelled()
        handle = await start(assigned or f"{parent.workflow_id}-{function_id}")
        now = self.clock.now()
        row = StepRow(function_id, name, "json", None, None, handle.workflow_id, now, now)
        await self.checkpoint(parent, row)
        return handle

    def _launch(
        self,
        wdef: WorkflowDef,
        workflow_id: str,
        args: tuple[object, ...],
        kwargs: dict[str, object],
        journal: dict[int, StepRow],
        deadline_at: float | None,
    ) -> None:
        """Run a recorded workflow in a task of its own, with its journal; its waiters here
        attach to its future (see :meth:`handle`)."""
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        ctx = WorkflowContext(self, workflow_id, wdef, journal, deadline_at)
        running = self._running[workflow_id] = _Running(ctx, future)
        ctx.task = self.spawn(
            self._execute(ctx, args, kwargs, future), name=f"aiodurable workflow {workflow_id}"
        )
        if deadline_at is not None:
            running.deadline_task = self.spawn(
                self._enforce_deadline(ctx), name=f"aiodurable deadline {workflow_id}"
            )

    async def _execute(
        self,
        ctx: WorkflowContext,
        args: tuple[object, ...],
        kwargs: dict[str, object],
        future: asyncio.Future[Outcome],
    ) -> None:
        enter_workflow(ctx)
        wid = ctx.workflow_id
        try:
            with workflow_span(ctx.definition.name, wid) as span:
                outcome = await self._run_body(ctx, args, kwargs)
                if outcome is not None and outcome.error is not None:
                    span.set_error(outcome.error)
            if outcome is not None and not future.done():
                future.set_result(outcome)
        finally:
            if not future.done():  # stopped by close() or crash(): its waiters must not hang
                future.set_result(Outcome(error=self._closed_error(wid)))
            running = self._running.get(wid)
            if running is not None and running.ctx is ctx:
                del self._running[wid]
                if running.deadline_task is not None:
                    running.deadline_task.cancel()

    async def _run_body(
        self, ctx: WorkflowContext, args: tuple[object, ...], kwargs: dict[str, object]
    ) -> Outcome | None:
        wid = ctx.workflow_id
        fmt = self.serializer.name
        try:
            result = await ctx.definition.fn(*args, **kwargs)
        except asyncio.CancelledError:
            if not ctx.cancelled:
                raise  # the runtime is closing: the workflow stays PENDING
            return Outcome(error=WorkflowCancelled(wid))
        except OwnershipLost:
            return Outcome(error=WorkflowCancelled(wid))  # not final: its waiters follow it
        except DatabaseUnavailable as exc:
            logger.error("workflow %s stopped: %s; it resumes at the next start", wid, exc)
            return Outcome(error=exc)
        except Exception as exc:
            error = encode_exception(exc)
            if await self.store.finish_workflow(wid, "ERROR", fmt, None, error, self.clock.now()):
                return Outcome(error=exc)
            return await self._recorded_outcome(wid, ctx.definition)
        try:
            data = self.encode(result, what=f"the result of workflow {wid!r}")
        except SerializationError as exc:
            error = encode_exception(exc)
            await self.store.finish_workflow(wid, "ERROR", fmt, None, error, self.clock.now())
            return Outcome(error=exc)
        if await self.store.finish_workflow(wid, "SUCCESS", fmt, data, None, self.clock.now()):
            return Outcome(value=result)
        return await self._recorded_outcome(wid, ctx.definition)

    async def _recorded_outcome(self, workflow_id: str, wdef: WorkflowDef) -> Outcome:
        row = await self.store.require_workflow(workflow_id)
        if not WorkflowStatus(row.status).is_terminal:
            # The final status was refused: another executor owns the workflow now.
            self._stop_lost(workflow_id, f"executor {row.executor_id!r}")
            return Outcome(error=WorkflowCancelled(workflow_id))
        try:
            return Outcome(value=self._result_of(row, return_hint(wdef.fn)))
        except Exception as exc:
            return Outcome(error=exc)

    async def checkpoint(self, ctx: WorkflowContext, row: StepRow) -> StepRow | None:
        """Write a journal entry for ``ctx``; return the entry already there, if any."""
        existing = await self.store.record_step(ctx.workflow_id, row)
        if existing is not None:
            ctx.journal[existing.function_id] = existing
        return existing

    def encode(self, value: object, *, what: str) -> bytes:
        """Encode a value to record; :class:`SerializationError` naming ``what`` if it cannot be
        encoded or exceeds ``max_value_size``, before anything is written."""
        return self._bounded(encode(self.serializer, value, what=what), what)

    def encode_inputs(
        self, wdef: WorkflowDef, args: tuple[object, ...], kwargs: dict[str, object]
    ) -> bytes:
        """Encode a workflow's arguments to record, within ``max_value_size``."""
        what = f"the inputs of workflow {wdef.name!r}"
        data = encode_inputs(self.serializer, wdef.fn, args, kwargs, what=f"workflow {wdef.name!r}")
        return self._bounded(data, what)

    def _bounded(self, data: bytes, what: str) -> bytes:
        if len(data) > self.max_value_size:
            raise SerializationError(
                f"{what} takes {len(data):,} bytes encoded, over this runtime's"
                f" max_value_size of {self.max_value_size:,}; store large data elsewhere and pass"
                " a reference, or raise Runtime(max_value_size=)"
            )
        return data

    def serializer_for(self, fmt: str) -> Serializer:
        """The serializer for a row's recorded format."""
        serializer = self._serializers.get(fmt)
        if serializer is None:
            raise SerializationError(
                f"a value was recorded in format {fmt!r}, which this runtime does not decode;"
                f" open the Runtime with serializer= set to a {fmt!r} serializer"
            )
        return serializer

    def replay(self, workflow_id: str, entry: StepRow, hint: object) -> Any:
        """The recorded outcome of a journal entry: its output decoded, or its exception raised."""
        if entry.error is not None:
            raise decode_exception(entry.error, workflow_id=workflow_id)
        if entry.output is None:
            return None
        return decode(
            self.serializer_for(entry.format),
            entry.output,
            hint,
            what=f"the recorded result of {entry.name!r} in workflow {workflow_id!r}",
        )

    # -- results and status ------------------------------------------------------------------

    def _result_of(self, row: WorkflowRow, hint: object) -> object:
        status = row.status
        if status == "SUCCESS":
            if row.output is None:
                return None
            return decode(
                self.serializer_for(row.format),
                row.output,
                hint,
                what=f"the result of workflow {row.workflow_id!r}",
            )
        if status == "ERROR" and row.error is not None:
            raise decode_exception(row.error, workflow_id=row.workflow_id)
        if status == "CANCELLED":
            raise WorkflowCancelled(row.workflow_id)
        raise WorkflowFailed(
            row.workflow_id,
            status,
            f"workflow {row.workflow_id!r} ended as {status}; resume it with resume_workflow()",
        )

    async def await_result(self, workflow_id: str, hint: object = None) -> object:
        """Wait until the workflow ends (woken by its NOTIFY) and return or raise its outcome."""
        self._check_open()
        with self.notifier.watch("w", workflow_id) as waiter:
            while True:
                waiter.clear()
                running = self._running.get(workflow_id)
                if running is not None:
                    outcome = await asyncio.shield(running.future)
                    if outcome.final:
                        return outcome.unwrap()
                    # Cancelled here: the row says whether it stays so or was resumed since.
                row = await self.store.get_workflow(workflow_id)
                if row is None:
                    raise WorkflowNotFound(workflow_id)
                if WorkflowStatus(row.status).is_terminal:
                    if hint is None:
                        wdef = lookup(row.name)
                        hint = None if wdef is None else return_hint(wdef.fn)
                    return self._result_of(row, hint)
                await waiter.wait()

    def send(
        self,
        destination_id: str,
        message: object,
        topic: str | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Coroutine[Any, Any, None]:
        """Send a message to a workflow; see :func:`aiodurable.send`."""
        self._check_open()
        return send_on(self, destination_id, message, topic, idempotency_key=idempotency_key)

    def get_event(
        self, workflow_id: str, key: str, timeout: float = 60.0
    ) -> Coroutine[Any, Any, Any]:
        """Wait for a workflow's event; see :func:`aiodurable.get_event`."""
        self._check_open()
        return get_event_on(self, workflow_id, key, timeout)

    async def retrieve_workflow(self, workflow_id: str) -> WorkflowHandle[Any]:
        """A handle to a recorded workflow; :class:`WorkflowNotFound` if the ID is unknown."""
        self._check_open()
        running = self._running.get(workflow_id)
        if running is not None:
            return self.handle(workflow_id, running.ctx.definition.name)
        row = await self.store.require_workflow(workflow_id)
        return self.handle(workflow_id, row.name)

    async def get_workflow_status(self, workflow_id: str) -> WorkflowInfo:
        """A :class:`WorkflowInfo` snapshot; :class:`WorkflowNotFound` if the ID is unknown."""
        self._check_open()
        return self.info(await self.store.require_workflow(workflow_id))

    def info(self, row: WorkflowRow, *, load_data: bool = True) -> WorkflowInfo:
        """Build the public snapshot of a workflow row, decoding per the workflow's annotations.

        A value that cannot be decoded is left None and explained in ``decode_error``: one such
        row must not fail a whole listing (``get_result()`` still raises for it)."""
        wdef = lookup(row.name)
        inputs: object = None
        output: object = None
        error: BaseException | None = None
        problems: list[str] = []
        if load_data:
            if row.inputs is not None:
                try:
                    inputs = self._decode_inputs(row, wdef)
                except SerializationError as exc:
                    problems.append(_undecoded("the inputs", exc))
            if row.status == "SUCCESS" and row.output is not None:
                try:
                    output = self._result_of(row, None if wdef is None else return_hint(wdef.fn))
                except SerializationError as exc:
                    problems.append(_undecoded("the output", exc))
            if row.error is not None:
                error = decode_exception(row.error, workflow_id=row.workflow_id)
        created = from_timestamp(row.created_at)
        updated = from_timestamp(row.updated_at)
        assert created is not None and updated is not None
        return WorkflowInfo(
            workflow_id=row.workflow_id,
            status=WorkflowStatus(row.status),
            name=row.name,
            inputs=inputs,
            output=output,
            error=error,
            created_at=created,
            updated_at=updated,
            app_version=row.app_version,
            executor_id=row.executor_id,
            recovery_attempts=row.recovery_attempts,
            queue_name=row.queue_name,
            parent_workflow_id=row.parent_workflow_id,
            decode_error="; ".join(problems) or None,
        )

    def _decode_inputs(self, row: WorkflowRow, wdef: WorkflowDef | None) -> object:
        assert row.inputs is not None
        serializer = self.serializer_for(row.format)
        if wdef is None:
            what = f"the inputs of workflow {row.workflow_id!r}"
            return decode(serializer, row.inputs, None, what=what)
        args, kwargs = decode_inputs(serializer, wdef.fn, row.inputs)
        return {"args": list(args), "kwargs": kwargs}

    def step_info(self, workflow_id: str, entry: StepRow) -> StepInfo:
        """Build the public snapshot of a journal entry; an output that cannot be decoded is
        left None and explained in ``decode_error``."""
        output: object = None
        error: BaseException | None = None
        problem: str | None = None
        if entry.error is not None:
            error = decode_exception(entry.error, workflow_id=workflow_id)
        elif entry.output is not None:
            what = f"the output of {entry.name!r} (function ID {entry.function_id})"
            try:
                output = decode(self.serializer_for(entry.format), entry.output, None, what=what)
            except SerializationError as exc:
                problem = _undecoded(what, exc)
        started = from_timestamp(entry.started_at)
        completed = from_timestamp(entry.completed_at)
        assert started is not None and completed is not None
        return StepInfo(
            function_id=entry.function_id,
            name=entry.name,
            output=output,
            error=error,
            child_workflow_id=entry.child_workflow_id,
            started_at=started,
            completed_at=completed,
            decode_error=problem,
        )

    # -- recovery ----------------------------------------------------------------------------

    async def recover(self, executor_id: str | None = None) -> list[str]:
        """Resume the PENDING workflows of this executor on this application version from their
        last completed step; return their IDs. Given another ``executor_id``, which must be gone
        (no live runtime holds it), hand its PENDING workflows to the live runtimes of their
        application version, this one included.

        Workflows whose name no registered function has are logged and left PENDING; workflows
        recovered more than their ``max_recovery_attempts`` become
        ``MAX_RECOVERY_ATTEMPTS_EXCEEDED``.
        """
        self._check_open()
        if executor_id is not None and executor_id != self.executor_id:
            return await _manage.recover_executor(self, executor_id)
        ids: list[str] = []
        for wid, name in await self.store.pending_workflows(self.executor_id, self.app_version):
            if wid in self._running or wid in self._launching:
                continue
            if lookup(name) is None:
                if wid in self._reported_unknown:
                    continue
                self._reported_unknown.add(wid)
                logger.error(
                    "cannot recover workflow %s: no workflow named %r is registered in this"
                    " program (import the module that defines it); it stays PENDING",
                    wid,
                    name,
                )
                continue
            ids.append(wid)
        recovered: list[str] = []
        for start in range(0, len(ids), _RECOVERY_BATCH):
            recovered.extend(await self._recover_batch(ids[start : start + _RECOVERY_BATCH]))
        if recovered:
            logger.info("recovered %d workflow(s)", len(recovered))
        return recovered

    async def _recover_batch(self, ids: list[str]) -> Iterable[str]:
        claimed = await self.store.claim_for_recovery(ids, self.clock.now())
        return await self._launch_rows(claimed)

    async def _launch_rows(self, rows: list[WorkflowRow]) -> list[str]:
        """Launch recorded PENDING workflows with their journals (one query for all)."""
        ids = {r.workflow_id for r in rows}
        self._launching |= ids
        try:
            return await self._launch_loaded(rows)
        finally:
            self._launching -= ids

    async def _launch_loaded(self, rows: list[WorkflowRow]) -> list[str]:
        journals = await self.store.load_journals([r.workflow_id for r in rows])
        recovered: list[str] = []
        for row in rows:
            wdef = lookup(row.name)
            assert wdef is not None
            if row.workflow_id in self._running:
                continue
            if row.deadline_at is not None and row.deadline_at <= self.clock.now():
                await self._cancel_for_deadline(row.workflow_id)
                continue
            if row.recovery_attempts > wdef.max_recovery_attempts:
                logger.error(
                    "workflow %s was recovered %d times (max_recovery_attempts=%d); it is"
                    " marked MAX_RECOVERY_ATTEMPTS_EXCEEDED and no longer recovered",
                    row.workflow_id,
                    row.recovery_attempts,
                    wdef.max_recovery_attempts,
                )
                await self.store.set_status(
                    row.workflow_id,
                    "MAX_RECOVERY_ATTEMPTS_EXCEEDED",
                    only_from=["PENDING"],
                    now=self.clock.now(),
                )
                continue
            try:
                args, kwargs = decode_inputs(
                    self.serializer_for(row.format), wdef.fn, row.inputs or b""
                )
            except SerializationError as exc:
                logger.error(
                    "cannot recover workflow %s: %s; it stays PENDING", row.workflow_id, exc
                )
                continue
            self._launch(
                wdef, row.workflow_id, args, kwargs, journals[row.workflow_id], row.deadline_at
            )
            recovered.append(row.workflow_id)
        return recovered

    # -- claiming unassigned work, relaunching, cancelling -----------------------------------

    def wake_claimer(self) -> None:
        """Look for PENDING workflows that no executor runs (see :mod:`aiodurable._manage`)."""
        self._claim_wanted.set()

    async def _claim_loop(self) -> None:
        self.wake_claimer()  # at each (re)start: a wake-up may have been missed meanwhile
        while True:
            await self._claim_wanted.wait()
            self._claim_wanted.clear()
            while True:
                rows = await self.store.claim_unassigned(
                    registered_names(), self.executor_id, self.app_version, self.clock.now()
                )
                if not rows:
                    break
                for wid in await self._launch_rows(rows):
                    logger.info("took over workflow %s", wid)

    def wake_dispatcher(self) -> None:
        """Look at the queues now (a workflow was enqueued, or one finished)."""
        self._dispatch_wanted.set()

    async def _dispatch_loop(self) -> None:
        """Start queued workflows as the queues' limits allow; woken by notifications, by rate
        limit windows reopening, and now and then as a safety net."""
        retry_at: dict[str, float] = {}
        self.wake_dispatcher()  # at each (re)start: a wake-up may have been missed meanwhile
        while True:
            # Rate-limit windows are durable time (the clock); the safety re-read is real time.
            window = min(retry_at.values(), default=None)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._notify_fallback):
                    await self.clock.wait(self._dispatch_wanted, window)
            self._dispatch_wanted.clear()
            retry_at.clear()
            names = tuple(registered_names())
            for queue in registered_queues():
                limiter = queue.limiter
                result = await self.store.dequeue(
                    DequeueRequest(
                        queue_name=queue.name,
                        executor_id=self.executor_id,
                        app_version=self.app_version,
                        names=names,
                        now=self.clock.now(),
                        batch=_DISPATCH_BATCH,
                        concurrency=queue.concurrency,
                        worker_concurrency=queue.worker_concurrency,
                        rate_limit=None if limiter is None else (limiter.limit, limiter.period),
                        priority_enabled=queue.priority_enabled,
                    )
                )
                if result.rows:
                    await self._launch_rows(result.rows)
                    if len(result.rows) == _DISPATCH_BATCH:
                        self.wake_dispatcher()  # there may be more
                if result.retry_at is not None:
                    retry_at[queue.name] = result.retry_at

    async def relaunch(self, row: WorkflowRow) -> None:
        """Run a workflow that was made PENDING on this executor again (resume, fork), once
        any earlier execution of it in this process has stopped."""
        running = self._running.get(row.workflow_id)
        if running is None:
            await self._launch_rows([row])
            return
        self._launching.add(row.workflow_id)  # not orphaned while the old execution winds down

        async def after_previous() -> None:
            try:
                if running.ctx.task is not None:
                    await asyncio.gather(running.ctx.task, return_exceptions=True)
                await self._launch_rows([row])
            finally:
                self._launching.discard(row.workflow_id)

        self.spawn(after_previous(), name=f"aiodurable relaunch {row.workflow_id}")

    def cancel_local(self, workflow_id: str) -> None:
        """Stop the local execution of a workflow that was just cancelled; its waiters learn of
        it now, even while a step in progress runs to its end."""
        running = self._running.get(workflow_id)
        if running is not None:
            running.ctx.cancel()
            if not running.future.done():
                running.future.set_result(Outcome(error=WorkflowCancelled(workflow_id)))

    async def crash(self) -> None:
        """Abandon every workflow running here as a killed process would: each stops where it
        stands and keeps only what its checkpoints wrote. For tests; see :meth:`restart`."""
        self._check_open()
        running = list(self._running.values())
        for entry in running:
            if entry.ctx.task is not None:
                entry.ctx.task.cancel()
            if entry.deadline_task is not None:
                entry.deadline_task.cancel()
        await asyncio.gather(
            *(e.ctx.task for e in running if e.ctx.task is not None), return_exceptions=True
        )
        for entry in running:
            if not entry.future.done():
                entry.future.set_result(Outcome(error=self._closed_error(entry.ctx.workflow_id)))
        self._running.clear()

    async def restart(self) -> list[str]:
        """Recover this executor's PENDING workflows, as a restarted process would after a
        :meth:`crash`; return their IDs."""
        return await self.recover()

    async def check_replay(self, workflow_id: str) -> None:
        """Run a recorded workflow's current code against its journal, running no step, and raise
        :class:`NonDeterminismError` naming the first call that differs from the journal (a
        renamed, added, removed or reordered step). Nothing is written."""
        self._check_open()
        row = await self.store.require_workflow(workflow_id)
        wdef = lookup(row.name)
        if wdef is None:
            raise NoRuntimeError(
                f"workflow {workflow_id!r} runs {row.name!r}, which this program does not"
                " register; import the module that defines it"
            )
        journal = await self.store.load_journal(workflow_id)
        args, kwargs = decode_inputs(self.serializer_for(row.format), wdef.fn, row.inputs or b"")
        ctx = WorkflowContext(self, workflow_id, wdef, journal, replay_only=True)

        async def replay() -> None:
            enter_workflow(ctx)
            try:
                await wdef.fn(*args, **kwargs)
            except NonDeterminismError:
                raise
            except Exception:  # the recorded run may have ended the same way; the calls matter
                pass

        await asyncio.get_running_loop().create_task(replay())
        unused = sorted(fid for fid in journal if fid > ctx.last_function_id)
        if unused:
            entry = journal[unused[0]]
            raise NonDeterminismError(
                f"workflow {workflow_id!r} recorded {entry.name!r} at function ID"
                f" {entry.function_id}, which the code no longer calls (a removed step)"
            )

    async def wait_stopped(self, workflow_id: str) -> None:
        """Return once this runtime no longer executes ``workflow_id``: after a cancel, the step
        in progress has ended and nothing more of the workflow runs here."""
        running = self._running.get(workflow_id)
        if running is not None and running.ctx.task is not None:
            await asyncio.gather(running.ctx.task, return_exceptions=True)

    def handle(self, workflow_id: str, name: str) -> WorkflowHandle[Any]:
        """A handle to a recorded workflow of the given name."""
        running = self._running.get(workflow_id)
        wdef = lookup(name)
        hint = None if wdef is None else return_hint(wdef.fn)
        return WorkflowHandle(
            self, workflow_id, hint=hint, future=None if running is None else running.future
        )

    async def _enforce_deadline(self, ctx: WorkflowContext) -> None:
        assert ctx.deadline_at is not None
        await self.clock.sleep_until(ctx.deadline_at)
        await self._cancel_for_deadline(ctx.workflow_id)

    async def _cancel_for_deadline(self, workflow_id: str) -> None:
        logger.info("workflow %s passed its deadline; cancelling it", workflow_id)
        await self.store.set_status(
            workflow_id, "CANCELLED", only_from=["PENDING", "ENQUEUED"], now=self.clock.now()
        )
        self.cancel_local(workflow_id)

    # -- management (see aiodurable._manage) --------------------------------------------------

    async def list_workflows(
        self,
        *,
        status: StatusFilter = None,
        name: str | None = None,
        workflow_id_prefix: str | None = None,
        app_version: str | None = None,
        executor_id: str | None = None,
        queue_name: str | None = None,
        start_time: TimeFilter = None,
        end_time: TimeFilter = None,
        limit: int | None = None,
        offset: int | None = None,
        sort_desc: bool = False,
        load_input: bool = True,
        load_output: bool = True,
    ) -> list[WorkflowInfo]:
        """Workflows matching the filters; see :func:`aiodurable.list_workflows`."""
        self._check_open()
        return await _manage.list_workflows(
            self,
            status=status,
            name=name,
            workflow_id_prefix=workflow_id_prefix,
            app_version=app_version,
            executor_id=executor_id,
            queue_name=queue_name,
            start_time=start_time,
            end_time=end_time,
            limit=limit,
            offset=offset,
            sort_desc=sort_desc,
            load_input=load_input,
            load_output=load_output,
        )

    async def list_steps(self, workflow_id: str) -> list[StepInfo]:
        """A workflow's journal; see :func:`aiodurable.list_steps`."""
        self._check_open()
        return await _manage.list_steps(self, workflow_id)

    async def cancel_workflow(self, workflow_id: str) -> None:
        """Cancel a workflow; see :func:`aiodurable.cancel_workflow`."""
        self._check_open()
        await _manage.cancel_workflow(self, workflow_id)

    async def resume_workflow(self, workflow_id: str) -> WorkflowHandle[Any]:
        """Resume a workflow; see :func:`aiodurable.resume_workflow`."""
        self._check_open()
        return await _manage.resume_workflow(self, workflow_id)

    async def restart_workflow(self, workflow_id: str) -> WorkflowHandle[Any]:
        """Run a workflow again under a new ID; see :func:`aiodurable.restart_workflow`."""
        self._check_open()
        return await _manage.restart_workflow(self, workflow_id)

    async def fork_workflow(
        self,
        workflow_id: str,
        start_step: int,
        *,
        new_workflow_id: str | None = None,
        app_version: str | None = None,
    ) -> WorkflowHandle[Any]:
        """Fork a workflow from a step; see :func:`aiodurable.fork_workflow`."""
        self._check_open()
        return await _manage.fork_workflow(
            self, workflow_id, start_step, new_workflow_id=new_workflow_id, app_version=app_version
        )
