"""``Engine``: what a :class:`aiodurable.Runtime` runs on, wired from parts by responsibility.

- :class:`~._start.Starter` records new workflows and children;
- :class:`~._executor.Executor` runs them in this process and waits for their outcomes;
- :class:`~._recovery.Ownership` holds the executor's ID, lock and heartbeat, and proves it
  still owns its workflows; :class:`~._recovery.Recovery` launches recorded work (recovered,
  claimed, taken over);
- :class:`~._dispatch.Dispatcher` starts queued workflows;
- :class:`~._scheduler.Scheduler` starts the ticks of cron schedules, and manages schedules;
- :class:`~._codec.Codec` encodes and decodes values;
- :class:`~._tasks.TaskGroup` owns every task the engine starts.

The durable primitives (steps, messages, transactions, queues, management) reach the engine as
``ctx.engine`` or :func:`aiodurable._current.current_engine`, through the methods below.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncGenerator, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Unpack

from .. import _manage, _upgrade
from .._backend import BackendConfig, Connected
from .._clock import Clock
from .._comm import get_event_on, send_on
from .._context import WorkflowContext
from .._current import closed, opened
from .._debounce import DebounceKeeper
from .._exceptions import NoRuntimeError
from .._handle import WorkflowHandle
from .._health import Loops, RuntimeHealth
from .._manage import WorkflowFilter
from .._models import StepInfo, WorkflowInfo, WorkflowStatus
from .._notify import Key, Notifier
from .._options import RuntimeOptions, StartSettings
from .._records import StepRow
from .._retention import start_retention
from .._serde import Serializer
from .._signals import Signal
from .._store import StoreProtocol
from .._stream import read_stream_on
from .._workflow import application_version
from ._codec import Codec
from ._dispatch import Dispatcher
from ._executor import Executor
from ._hooks import TestingHooks, check_replay
from ._recovery import Ownership, Recovery
from ._scheduler import Scheduler
from ._start import Starter
from ._tasks import TaskGroup

if TYPE_CHECKING:
    from .._runtime import Runtime
    from .._upgrade import UpgradeReport

__all__ = ["Engine", "State"]


class State(enum.Enum):
    """Where a runtime is in its life: it opens once and closes once."""

    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


_NOT_OPEN = "this Runtime is not open; use it inside `async with Runtime() as rt:`"


class Engine:
    """The engine of one :class:`aiodurable.Runtime` (``runtime``), made with its options.

    The runtime and its engine hold each other: while the engine's tasks run, the runtime that
    module-level functions act on stays alive, even when the program keeps no reference to it."""

    def __init__(self, options: RuntimeOptions, runtime: Runtime) -> None:
        self.options: RuntimeOptions = options
        self.runtime: Runtime = runtime
        self.clock: Clock = options.clock
        self.database_url: str = options.database_url or ""
        self.state: State = State.UNOPENED
        self.begun: bool = False
        self.recovered: list[str] = []
        self._app_version = options.app_version
        self.tasks: TaskGroup = TaskGroup()
        self.loops: Loops = Loops(lambda coro, name: self.tasks.spawn(coro, name=name))
        self.codec: Codec = Codec(options.serializer, options.max_value_size)
        self.executor: Executor = Executor(self)
        self.ownership: Ownership = Ownership(self, options.executor_id)
        self.recovery: Recovery = Recovery(self)
        self.dispatcher: Dispatcher = Dispatcher(self)
        self.starter: Starter = Starter(self)
        self.scheduler: Scheduler = Scheduler(self)
        self.debounces: DebounceKeeper = DebounceKeeper(self)
        self.testing: TestingHooks = TestingHooks(self)
        self._connected: Connected | None = None

    def __repr__(self) -> str:
        return f"<aiodurable engine {self.state.value} executor={self.executor_id!r}>"

    # -- what the runtime is -----------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """Whether the runtime is open."""
        return self.state is State.OPEN

    @property
    def executor_id(self) -> str:
        """The executor ID this runtime runs as (``ID-2``... when the one asked for is held)."""
        return self.ownership.executor_id

    @property
    def app_version(self) -> str:
        """The application version recorded on the workflows this runtime starts."""
        if self._app_version is None:
            raise NoRuntimeError("the application version is known once the runtime is open")
        return self._app_version

    @property
    def serializer(self) -> Serializer:
        """The serializer new values are recorded with."""
        return self.codec.serializer

    @property
    def store(self) -> StoreProtocol:
        """The store (the one I/O seam) while open."""
        if self._connected is None:
            raise NoRuntimeError(_NOT_OPEN)
        return self._connected.store

    @property
    def app_store(self) -> StoreProtocol:
        """The application database's store (``@transaction`` runs there), while open."""
        if self._connected is None:
            raise NoRuntimeError(_NOT_OPEN)
        return self._connected.app_store

    @property
    def notifier(self) -> Notifier:
        """The LISTEN connection's dispatcher while open."""
        if self._connected is None:
            raise NoRuntimeError("this Runtime is not open")
        return self._connected.notifier

    # -- lifecycle ---------------------------------------------------------------------------

    def check_open(self) -> None:
        """Raise :class:`NoRuntimeError` unless the runtime is open."""
        if self.state is not State.OPEN:
            raise NoRuntimeError(
                f"this Runtime is {self.state.value}; use it inside `async with Runtime() as rt:`"
            )

    async def open(self, *, begin: bool) -> None:
        """Connect, migrate, start the background tasks and, with ``begin``, :meth:`begin`."""
        if self.state is not State.UNOPENED:
            raise NoRuntimeError(
                f"this Runtime is {self.state.value}; a Runtime opens once, create a new one"
            )
        self.state = State.OPEN
        try:
            await self._connect()
            if begin:
                await self.begin()
        except BaseException:
            await self.close()
            raise
        opened(self)

    async def _connect(self) -> None:
        if self._app_version is None:
            self._app_version = application_version()
        options = self.options
        config = BackendConfig(
            database_url=options.database_url,
            app_database_url=options.app_database_url,
            schema=options.schema,
            clock=self.clock,
            pool_size=options.pool_size,
            connect_timeout=options.connect_timeout,
            command_timeout=options.command_timeout,
            unreachable_timeout=options.unreachable_timeout,
            reconnect_backoff=options.reconnect_backoff,
            notify_fallback=options.notify_fallback,
            on_listen_connect=self.ownership.on_listen_connect,
            on_signal=self._on_signal,
            listen_database_url=options.listen_database_url,
        )
        connected = self._connected = await options.backend.open(config)
        self.database_url = connected.database_url
        await self.ownership.settle()
        self.loops.start("notifier", connected.notifier.run)
        # The executor ID is settled (its lock held): journal writes are fenced from now on.
        connected.store.on_fenced = self.ownership.on_fenced
        await connected.store.set_owner(self.executor_id)

    async def begin(self) -> None:
        """Adopt other versions' workflows (with ``auto_upgrade``), recover, then start claiming,
        dispatching and the liveness checks (once)."""
        self.check_open()
        if self.begun or not self.options.recover:
            return
        self.begun = True
        await self.ownership.heartbeat()
        if self.options.auto_upgrade:
            _upgrade.log_report(await _upgrade.upgrade(self), self.app_version)
        self.recovered = await self.recover()
        await _manage.log_other_versions(self)
        self.loops.start("maintenance", self.recovery.maintain)
        self.loops.start("claimer", self.recovery.claim_loop)
        self.recovery.wake_claimer()
        self.loops.start("dispatcher", self.dispatcher.loop)
        self.dispatcher.wake()
        self.loops.start("liveness", self.recovery.liveness_loop)
        self.loops.start("scheduler", self.scheduler.loop)
        self.loops.start("debounce keeper", self.debounces.loop)
        start_retention(self)

    async def close(self) -> None:
        """Stop every task and workflow where it stands, and disconnect (once)."""
        if self.state is State.CLOSED:
            return
        self.state = State.CLOSED
        closed(self)
        await self.tasks.close()
        self.executor.release()
        if self._connected is not None:
            await self._connected.close()

    def health(self) -> RuntimeHealth:
        """A snapshot of the runtime's health; see :meth:`aiodurable.Runtime.health`."""
        opened = self.state is State.OPEN
        return RuntimeHealth(
            open=opened,
            database=opened and self.store.reachable,
            listening=opened and self.notifier.listening,
            owner=opened and (not self.begun or self.ownership.fresh()),
            loops=self.loops.health(),
        )

    def _on_signal(self, key: Key) -> None:
        kind = key[0]
        if len(key) == 3 and kind == Signal.WORKFLOW and key[2] == WorkflowStatus.CANCELLED:
            self.executor.cancel_local(key[1])
        elif kind == Signal.CLAIMABLE and self.begun:
            self.recovery.wake_claimer()
        elif kind == Signal.QUEUE:
            self.dispatcher.wake()
        elif kind == Signal.SCHEDULE and self.begun:
            self.scheduler.wake()
        elif kind == Signal.DEBOUNCE and self.begun:
            self.debounces.wake()

    # -- what the durable primitives call ----------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Run ``coro`` in the engine's task group: cancelled and awaited on close."""
        return self.tasks.spawn(coro, name=name)

    def encode(self, value: object, *, what: str) -> bytes:
        """Encode a value to record (see :meth:`Codec.encode`)."""
        return self.codec.encode(value, what=what)

    def serializer_for(self, fmt: str) -> Serializer:
        """The serializer for a row's recorded format."""
        return self.codec.serializer_for(fmt)

    def replay(self, workflow_id: str, entry: StepRow, hint: object) -> Any:
        """The recorded outcome of a journal entry: its output decoded, or its exception raised."""
        return self.codec.replay(workflow_id, entry, hint)

    async def checkpoint(self, ctx: WorkflowContext, row: StepRow) -> StepRow | None:
        """Write a journal entry for ``ctx``; return the entry already there, if any."""
        return await self.executor.checkpoint(ctx, row)

    def ownership_fresh(self) -> bool:
        """Whether this runtime proved recently enough that it owns its workflows."""
        return self.ownership.fresh()

    async def confirm_ownership(self) -> None:
        """Prove that this runtime still owns its workflows, when its last proof is too old."""
        await self.ownership.confirm()

    def handle(self, workflow_id: str, name: str) -> WorkflowHandle[Any]:
        """A handle to a recorded workflow of the given name."""
        return self.executor.handle(workflow_id, name)

    async def await_result(self, workflow_id: str, hint: object = None) -> object:
        """Wait until the workflow ends and return or raise its outcome."""
        self.check_open()
        return await self.executor.await_result(workflow_id, hint)

    # -- the runtime's documented operations (see aiodurable.Runtime) ------------------------

    def start_workflow(
        self,
        fn: Callable[..., Coroutine[Any, Any, Any]],
        args: tuple[object, ...],
        kwargs: dict[str, object],
        options: StartSettings | None = None,
    ) -> Coroutine[Any, Any, WorkflowHandle[Any]]:
        """Start ``fn(*args, **kwargs)``: a child inside a workflow, else a top-level one."""
        return self.starter.start_workflow(fn, args, kwargs, options=options)

    def send(
        self, destination_id: str, message: object, topic: str | None, idempotency_key: str | None
    ) -> Coroutine[Any, Any, None]:
        """Send a message to a workflow."""
        self.check_open()
        return send_on(self, destination_id, message, topic, idempotency_key=idempotency_key)

    def get_event(self, workflow_id: str, key: str, timeout: float) -> Coroutine[Any, Any, Any]:
        """Wait for a workflow's event."""
        self.check_open()
        return get_event_on(self, workflow_id, key, timeout)

    def read_stream(self, workflow_id: str, key: str) -> AsyncGenerator[Any, None]:
        """Iterate over a workflow's stream."""
        self.check_open()
        return read_stream_on(self, workflow_id, key)

    async def retrieve_workflow(self, workflow_id: str) -> WorkflowHandle[Any]:
        """A handle to a recorded workflow."""
        self.check_open()
        return await self.executor.retrieve(workflow_id)

    async def get_workflow_status(self, workflow_id: str) -> WorkflowInfo:
        """A snapshot of a recorded workflow."""
        self.check_open()
        return self.codec.info(await self.store.require_workflow(workflow_id))

    async def list_workflows(self, **filters: Unpack[WorkflowFilter]) -> list[WorkflowInfo]:
        """Workflows matching the filters."""
        self.check_open()
        return await _manage.list_workflows(self, **filters)

    async def list_steps(self, workflow_id: str) -> list[StepInfo]:
        """A workflow's journal."""
        self.check_open()
        return await _manage.list_steps(self, workflow_id)

    async def cancel_workflow(self, workflow_id: str) -> None:
        """Cancel a workflow."""
        self.check_open()
        await _manage.cancel_workflow(self, workflow_id)

    async def resume_workflow(self, workflow_id: str) -> WorkflowHandle[Any]:
        """Resume a workflow."""
        self.check_open()
        return await _manage.resume_workflow(self, workflow_id)

    async def restart_workflow(self, workflow_id: str) -> WorkflowHandle[Any]:
        """Run a workflow again under a new ID."""
        self.check_open()
        return await _manage.restart_workflow(self, workflow_id)

    async def fork_workflow(
        self,
        workflow_id: str,
        start_step: int,
        new_workflow_id: str | None,
        app_version: str | None,
    ) -> WorkflowHandle[Any]:
        """Fork a workflow from a step."""
        self.check_open()
        return await _manage.fork_workflow(
            self, workflow_id, start_step, new_workflow_id=new_workflow_id, app_version=app_version
        )

    async def upgrade_workflows(
        self,
        from_version: str | None = None,
        *,
        workflow_ids: Sequence[str] | None = None,
        dry_run: bool = False,
    ) -> UpgradeReport:
        """Adopt other versions' unfinished workflows that replay cleanly on the current code."""
        self.check_open()
        return await _upgrade.upgrade(
            self, from_version=from_version, workflow_ids=workflow_ids, dry_run=dry_run
        )

    async def recover(self, executor_id: str | None = None) -> list[str]:
        """Resume this executor's PENDING workflows, or hand a gone executor's to the live ones."""
        self.check_open()
        if executor_id is not None and executor_id != self.executor_id:
            return await _manage.recover_executor(self, executor_id)
        return await self.recovery.recover()

    async def crash(self) -> None:
        """Abandon every workflow running here as a killed process would."""
        self.check_open()
        await self.executor.crash()

    async def check_replay(self, workflow_id: str) -> None:
        """Replay a recorded workflow against its journal, running no step."""
        self.check_open()
        await check_replay(self, workflow_id)
