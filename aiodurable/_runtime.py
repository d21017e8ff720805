"""``Runtime``: the public face of a runtime, its lifecycle and documented operations.

Everything a runtime does happens in its engine (:mod:`aiodurable._engine`); this class holds
the settings, opens and closes the engine, and forwards each documented method to it.
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncGenerator, Callable, Coroutine
from contextvars import Token
from dataclasses import dataclass, field
from datetime import timedelta
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, Unpack

from ._backend import Backend, PostgresBackend
from ._clock import Clock, SystemClock
from ._current import call_workflow, current_runtime, make_current, restore_current
from ._engine import Engine, State
from ._engine._hooks import TestingHooks
from ._handle import WorkflowHandle
from ._health import RuntimeHealth
from ._manage import WorkflowFilter
from ._models import StepInfo, WorkflowInfo
from ._options import RuntimeOptions, StartSettings, default_executor_id, from_environment
from ._runtime_admin import AdminMethods
from ._serde import JsonSerializer, Serializer

__all__ = ["Runtime", "StartOptions", "call_workflow", "current_runtime", "engine_of", "hooks"]

P = ParamSpec("P")
R = TypeVar("R")


class Runtime(AdminMethods):
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
    - ``listen_database_url`` (default ``AIODURABLE_LISTEN_DATABASE_URL``): when
      ``database_url`` goes through a transaction pooler (PgBouncer), the direct URL of the same
      database, for the LISTEN connection and the executor lock it holds (sessions a pooler
      cannot carry); the pools then prepare no named statements.
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
    - ``auto_upgrade=True``: as it begins, before recovering, adopt the PENDING and ENQUEUED
      workflows of other application versions whose journals replay cleanly on this code, and
      run them (see :meth:`upgrade_workflows`); the report is logged, with a WARNING naming each
      workflow left on its own version and why. A ``recover=False`` runtime adopts nothing.
    - ``retention`` (a positive ``timedelta``, such as ``timedelta(days=30)``): as it begins
      and then periodically (every 24th of it, at most hourly), delete the finished workflows
      last updated longer ago, with everything they recorded (see :meth:`garbage_collect`).
      Default None: keep them all. A ``recover=False`` runtime collects nothing by itself.
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
        auto_upgrade: bool = False,
        listen_database_url: str | None = None,
        retention: timedelta | None = None,
    ) -> None:
        options = RuntimeOptions(
            database_url=from_environment(database_url, "AIODURABLE_DATABASE_URL"),
            app_version=from_environment(app_version, "AIODURABLE_APP_VERSION"),
            executor_id=(
                from_environment(executor_id, "AIODURABLE_EXECUTOR_ID") or default_executor_id()
            ),
            schema=schema,
            app_database_url=app_database_url,
            serializer=serializer or JsonSerializer(),
            clock=clock or SystemClock(),
            pool_size=pool_size,
            connect_timeout=connect_timeout,
            notify_fallback=notify_fallback,
            recover=recover,
            heartbeat_interval=heartbeat_interval,
            executor_lease=executor_lease,
            max_value_size=max_value_size,
            command_timeout=command_timeout,
            unreachable_timeout=unreachable_timeout,
            backend=backend or PostgresBackend(),
            auto_upgrade=auto_upgrade,
            listen_database_url=from_environment(
                listen_database_url, "AIODURABLE_LISTEN_DATABASE_URL"
            ),
            retention=retention,
        )
        self._engine = Engine(options, self)
        self._token: Token[Engine | None] | None = None

    # -- what it is --------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """Whether the runtime is open."""
        return self._engine.is_open

    @property
    def recovered_workflow_ids(self) -> list[str]:
        """The IDs of the workflows this runtime resumed when it opened."""
        return list(self._engine.recovered)

    @property
    def app_version(self) -> str:
        """The application version recorded on the workflows this runtime starts."""
        return self._engine.app_version

    @property
    def executor_id(self) -> str:
        """The executor ID this runtime runs as: the one asked for, or ``ID-2``... when another
        live runtime holds it."""
        return self._engine.executor_id

    @property
    def schema(self) -> str:
        """The PostgreSQL schema of the tables."""
        return self._engine.options.schema

    @property
    def database_url(self) -> str:
        """The database this runtime connects to (the embedded server's, once open, when none
        was given; empty before)."""
        return self._engine.database_url

    @property
    def app_database_url(self) -> str | None:
        """The database ``@transaction`` runs in, when not the runtime's own."""
        return self._engine.options.app_database_url

    @property
    def clock(self) -> Clock:
        """The clock of every durable wait and journal timestamp."""
        return self._engine.clock

    @property
    def serializer(self) -> Serializer:
        """The serializer new values are recorded with."""
        return self._engine.serializer

    @property
    def heartbeat_interval(self) -> float:
        """Seconds between this executor's heartbeats."""
        return self._engine.options.heartbeat_interval

    @property
    def executor_lease(self) -> float:
        """Seconds another executor may stay silent before this runtime takes its work over."""
        return self._engine.options.executor_lease

    @property
    def max_value_size(self) -> int:
        """The largest encoded input, output, message or event, in bytes."""
        return self._engine.options.max_value_size

    def health(self) -> RuntimeHealth:
        """A snapshot of this runtime's health, for a readiness probe: ``health().ok``, else
        ``health().problems`` in words. See :class:`aiodurable.RuntimeHealth`."""
        return self._engine.health()

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Runtime:
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
        engine = getattr(self, "_engine", None)
        if engine is not None and engine.state is State.OPEN:
            _warn(
                f"{self!r} was never closed; use `async with Runtime():` or await close()",
                ResourceWarning,
                source=self,
                stacklevel=1,
            )

    def __repr__(self) -> str:
        engine = self._engine
        return f"<aiodurable.Runtime {engine.state.value} executor={engine.executor_id!r}>"

    async def open(self, *, begin: bool = True) -> None:
        """Connect, migrate, start background tasks and recover; see the class docstring.

        ``begin=False`` connects and migrates only: the runtime can start workflows, but it
        recovers nothing and dispatches no queue until :meth:`begin` is awaited. A web
        integration opens this way, runs the application's own startup, then begins, so that
        recovered workflows find what that startup sets up.

        The task that opens the runtime (and the tasks it starts from then on) act on it with
        the module-level functions, until it closes."""
        await self._engine.open(begin=begin)
        self._token = make_current(self._engine)

    async def begin(self) -> None:
        """Recover this executor's unfinished workflows and start running queued and unassigned
        work; :meth:`open` does this unless called with ``begin=False``. Once only; a runtime
        made with ``recover=False`` begins nothing."""
        await self._engine.begin()

    async def close(self) -> None:
        """Stop every workflow where it stands (it resumes at the next start) and disconnect."""
        if self._token is not None:
            restore_current(self._token)  # (nothing to restore if closed in another context)
            self._token = None
        await self._engine.close()

    # -- workflows ---------------------------------------------------------------------------

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
        return self._engine.start_workflow(fn, args, kwargs)

    def with_options(
        self, *, workflow_id: str | None = None, timeout: float | None = None
    ) -> StartOptions:
        """Options for the next start, given apart from the workflow's own arguments:
        ``await rt.with_options(workflow_id="order-7", timeout=30).start_workflow(fn, x)``.

        ``workflow_id`` is an idempotency key (as :func:`aiodurable.set_workflow_id`);
        ``timeout`` (seconds) a deadline (as :func:`aiodurable.set_workflow_timeout`;
        ``float("inf")`` for none, even inside ``set_workflow_timeout``). Nothing is taken out
        of the workflow's keywords, so a workflow may have parameters of these names."""
        return StartOptions(self._engine, StartSettings(workflow_id, timeout))

    def send(
        self,
        destination_id: str,
        message: object,
        topic: str | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Coroutine[Any, Any, None]:
        """Send a message to a workflow; see :func:`aiodurable.send`."""
        return self._engine.send(destination_id, message, topic, idempotency_key)

    def get_event(
        self, workflow_id: str, key: str, timeout: float = 60.0
    ) -> Coroutine[Any, Any, Any]:
        """Wait for a workflow's event; see :func:`aiodurable.get_event`."""
        return self._engine.get_event(workflow_id, key, timeout)

    def read_stream(self, workflow_id: str, key: str) -> AsyncGenerator[Any, None]:
        """Every value of a workflow's stream, in order; see :func:`aiodurable.read_stream`."""
        return self._engine.read_stream(workflow_id, key)

    async def retrieve_workflow(self, workflow_id: str) -> WorkflowHandle[Any]:
        """A handle to a recorded workflow; :class:`WorkflowNotFound` if the ID is unknown."""
        return await self._engine.retrieve_workflow(workflow_id)

    async def get_workflow_status(self, workflow_id: str) -> WorkflowInfo:
        """A :class:`WorkflowInfo` snapshot; :class:`WorkflowNotFound` if the ID is unknown."""
        return await self._engine.get_workflow_status(workflow_id)

    # -- management --------------------------------------------------------------------------

    async def list_workflows(self, **filters: Unpack[WorkflowFilter]) -> list[WorkflowInfo]:
        """Workflows matching the filters; see :func:`aiodurable.list_workflows`."""
        return await self._engine.list_workflows(**filters)

    async def list_steps(self, workflow_id: str) -> list[StepInfo]:
        """A workflow's journal; see :func:`aiodurable.list_steps`."""
        return await self._engine.list_steps(workflow_id)

    async def cancel_workflow(self, workflow_id: str) -> None:
        """Cancel a workflow; see :func:`aiodurable.cancel_workflow`."""
        await self._engine.cancel_workflow(workflow_id)

    async def resume_workflow(self, workflow_id: str) -> WorkflowHandle[Any]:
        """Resume a workflow; see :func:`aiodurable.resume_workflow`."""
        return await self._engine.resume_workflow(workflow_id)

    async def restart_workflow(self, workflow_id: str) -> WorkflowHandle[Any]:
        """Run a workflow again under a new ID; see :func:`aiodurable.restart_workflow`."""
        return await self._engine.restart_workflow(workflow_id)

    async def fork_workflow(
        self,
        workflow_id: str,
        start_step: int,
        *,
        new_workflow_id: str | None = None,
        app_version: str | None = None,
    ) -> WorkflowHandle[Any]:
        """Fork a workflow from a step; see :func:`aiodurable.fork_workflow`."""
        return await self._engine.fork_workflow(
            workflow_id, start_step, new_workflow_id, app_version
        )

    async def recover(self, executor_id: str | None = None) -> list[str]:
        """Resume the PENDING workflows of this executor on this application version from their
        last completed step; return their IDs. Given another ``executor_id``, which must be gone
        (no live runtime holds it), hand its PENDING workflows to the live runtimes of their
        application version, this one included.

        Workflows whose name no registered function has are logged and left PENDING; workflows
        recovered more than their ``max_recovery_attempts`` become
        ``MAX_RECOVERY_ATTEMPTS_EXCEEDED``.
        """
        return await self._engine.recover(executor_id)

    # -- for tests ---------------------------------------------------------------------------

    async def check_replay(self, workflow_id: str) -> None:
        """Run a recorded workflow's current code against its journal, running no step, and raise
        :class:`NonDeterminismError` naming the first call that differs from the journal (a
        renamed, added, removed or reordered step). Nothing is written."""
        await self._engine.check_replay(workflow_id)

    async def crash(self) -> None:
        """Abandon every workflow running here as a killed process would: each stops where it
        stands and keeps only what its checkpoints wrote. For tests; see :meth:`restart`."""
        await self._engine.crash()

    async def restart(self) -> list[str]:
        """Recover this executor's PENDING workflows, as a restarted process would after a
        :meth:`crash`; return their IDs."""
        return await self._engine.recover()


@dataclass(frozen=True, slots=True)
class StartOptions:
    """A runtime with options for the next start; see :meth:`Runtime.with_options`."""

    _engine: Engine = field(repr=False)
    settings: StartSettings

    def start_workflow(
        self, fn: Callable[P, Coroutine[Any, Any, R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> Coroutine[Any, Any, WorkflowHandle[R]]:
        """Start ``fn(*args, **kwargs)`` with these options (see
        :meth:`Runtime.start_workflow`); a ``timeout`` is refused for a child workflow, which
        runs within its parent's deadline."""
        return self._engine.start_workflow(fn, args, kwargs, self.settings)


def engine_of(runtime: Runtime) -> Engine:
    """The engine of ``runtime``: for aiodurable's own console and command line, which read
    and steer through it."""
    return runtime._engine


def hooks(runtime: Runtime) -> TestingHooks:
    """What tests may see and do of ``runtime``'s internals: see
    :class:`aiodurable.testing.TestingHooks`."""
    return runtime._engine.testing
