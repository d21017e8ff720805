"""``ClientCore``: what an :class:`aiodurable.Client` is connected to, and nothing more.

A client opens what a runtime's backend opens (a store and a LISTEN notifier, see
:mod:`aiodurable._backend`) and none of what makes a runtime an executor: it takes no executor
lock, writes no executor row or heartbeat, claims, dispatches and recovers nothing, and is not
counted among the open runtimes that module-level functions act on. It has no workflow code, so
it decodes every value as plain JSON, without annotations.

Outside a workflow, the runtime's ``send``, ``get_event``, ``read_stream`` and listings touch
only a handful of the engine's members: ``store``, ``notifier``, ``clock``, ``codec``,
``serializer``, ``encode`` and ``serializer_for``. The core has exactly those, so the client runs
the same code paths (:func:`aiodurable._comm.send_on` and the like) through :meth:`reach`.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from ._backend import Backend, BackendConfig, Connected
from ._clock import Clock
from ._engine._codec import Codec
from ._engine._tasks import TaskGroup
from ._exceptions import NoRuntimeError, SerializationError
from ._health import Loops
from ._models import WorkflowStatus
from ._notify import Key, Notifier
from ._serde import JsonSerializer, Serializer
from ._signals import Signal
from ._store import StoreProtocol

if TYPE_CHECKING:
    from ._reach import Reach

__all__ = ["ClientCodec", "ClientCore", "ClientState"]


class ClientState(enum.Enum):
    """Where a client is in its life: it opens once and closes once."""

    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


class ClientCodec(Codec):
    """JSON in and out; a value recorded in another format (pickle) raises an error that says
    why a client cannot read it."""

    __slots__ = ()

    OWNER = "Client"

    def __init__(self, max_value_size: int) -> None:
        super().__init__(JsonSerializer(), max_value_size)

    def serializer_for(self, fmt: str) -> Serializer:
        """The JSON serializer; :class:`SerializationError` for any other recorded format."""
        if fmt != "json":
            raise SerializationError(
                f"a value was recorded in format {fmt!r}, and a Client reads JSON only: it has"
                " none of the workflows' code to rebuild such a value with. Read it from a"
                f" Runtime opened with a {fmt!r} serializer, or record JSON values"
            )
        return self.serializer


class ClientCore:
    """A client's store, notifier, clock and codec, open between :meth:`open` and
    :meth:`close`; its one background task keeps the LISTEN connection up."""

    def __init__(self, config: BackendConfig, backend: Backend, max_value_size: int) -> None:
        self.state: ClientState = ClientState.UNOPENED
        self.clock: Clock = config.clock
        self.codec: Codec = ClientCodec(max_value_size)
        self.database_url: str = config.database_url or ""
        self._config = config
        self._backend = backend
        self._tasks = TaskGroup()
        self._connected: Connected | None = None

    @staticmethod
    async def on_listen_connect(session: object) -> None:
        """For ``BackendConfig``: a client holds no executor lock on its LISTEN connection, so
        there is nothing to take on each (re)connection."""

    @staticmethod
    def on_signal(key: Key) -> None:
        """For ``BackendConfig``: a client runs no loop that a notification wakes (its waiters
        are woken by the notifier itself)."""

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect (starting the embedded server when no URL was given), migrate the schema if
        it is missing or old, and start listening."""
        if self.state is not ClientState.UNOPENED:
            raise NoRuntimeError(
                f"this Client is {self.state.value}; a Client opens once, create a new one"
            )
        self.state = ClientState.OPEN
        try:
            connected = self._connected = await self._backend.open(self._config)
            self.database_url = connected.database_url
            loops = Loops(lambda coro, name: self._tasks.spawn(coro, name=name))
            loops.start("client notifier", connected.notifier.run)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Stop listening and disconnect (once); waits in progress end with the connection."""
        if self.state is ClientState.CLOSED:
            return
        self.state = ClientState.CLOSED
        await self._tasks.close()
        if self._connected is not None:
            await self._connected.close()

    def _parts(self) -> Connected:
        if self.state is not ClientState.OPEN or self._connected is None:
            raise NoRuntimeError(
                f"this Client is {self.state.value}; use it inside"
                " `async with aiodurable.Client(database_url) as client:`"
            )
        return self._connected

    # -- what the engine's outside-a-workflow code paths use ---------------------------------

    @property
    def store(self) -> StoreProtocol:
        """The store (every statement) while open; :class:`NoRuntimeError` otherwise."""
        return self._parts().store

    @property
    def notifier(self) -> Notifier:
        """The LISTEN connection's dispatcher while open."""
        return self._parts().notifier

    @property
    def serializer(self) -> Serializer:
        """The serializer values are recorded with: JSON."""
        return self.codec.serializer

    def encode(self, value: object, *, what: str) -> bytes:
        """Encode a value to record, within the client's ``max_value_size``."""
        return self.codec.encode(value, what=what)

    def serializer_for(self, fmt: str) -> Serializer:
        """The serializer of a recorded format: JSON only (see :class:`ClientCodec`)."""
        return self.codec.serializer_for(fmt)

    def reach(self) -> Reach:
        """This core, open, for the operations a runtime and a client share (``send_on``,
        ``get_event_on``, ``read_stream_on`` and the listings of :mod:`aiodurable._manage`, which
        take a :class:`~aiodurable._reach.Reach`). :class:`NoRuntimeError` unless the client is
        open."""
        self._parts()
        return self

    # -- results -----------------------------------------------------------------------------

    async def await_result(self, workflow_id: str) -> object:
        """Wait until the workflow ends, woken by its status notification, and return its result
        decoded as plain JSON, or raise its exception (:class:`WorkflowCancelled`,
        :class:`WorkflowFailed`...); :class:`WorkflowNotFound` for an unknown ID."""
        with self.notifier.watch(Signal.WORKFLOW, workflow_id) as waiter:
            while True:
                waiter.clear()
                row = await self.store.require_workflow(workflow_id)
                if WorkflowStatus(row.status).is_terminal:
                    return self.codec.result_of(row, None)
                await waiter.wait()
