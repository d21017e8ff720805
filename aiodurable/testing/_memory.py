"""``MemoryBackend``: a runtime's journal in memory, for fast tests of workflow logic.

``Runtime(backend=MemoryBackend())`` runs workflows, steps, messages, events, sleeps, queues,
recovery and management as on PostgreSQL, with no server: the store
(:class:`MemoryStore`) keeps the tables in dicts and the notifier (:class:`MemoryNotifier`)
hands each notification straight to its waiters. The backend object keeps the state, so a
second runtime opened on the same backend after the first closed finds its workflows, as a
restarted process would. Nothing survives the Python process, and ``@transaction`` (SQL in the
application database) is not available.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson

from .._backend import BackendConfig, Connected
from .._clock import Clock
from .._exceptions import NoRuntimeError
from .._notify import Notifier
from .._store import StoreProtocol
from ._memory_state import Key, MemoryState
from ._memory_store import MemoryStore

__all__ = ["MemoryBackend", "MemoryNotifier", "MemoryStore"]


async def _no_connection() -> asyncpg.Connection:
    raise NoRuntimeError("a MemoryNotifier has no database connection to open")


class MemorySession:
    """The LISTEN session a :class:`MemoryNotifier` hands to ``on_connect``, which the engine
    hands back to :meth:`MemoryStore.try_hold_executor`: the executor locks taken for it are
    held until the notifier closes, as a session's advisory locks are."""

    def __repr__(self) -> str:
        return f"<aiodurable.testing.MemorySession at {id(self):#x}>"


class MemoryNotifier(Notifier):
    """A :class:`~aiodurable._notify.Notifier` that never connects: the memory store of its
    schema delivers each notification to it, and it dispatches it to waiters, subscribers and
    ``on_signal`` as a received NOTIFY is dispatched."""

    def __init__(
        self,
        state: MemoryState,
        channel: str,
        clock: Clock,
        *,
        fallback_interval: float = 5.0,
        on_connect: Callable[[Any], Awaitable[None]] | None = None,
        on_signal: Callable[[Key], None] | None = None,
    ) -> None:
        super().__init__(
            _no_connection,
            channel,
            clock,
            fallback_interval=fallback_interval,
            on_signal=on_signal,
        )
        self._state = state
        self._on_session = on_connect
        self.session = MemorySession()
        self._started = False
        self._stopped = asyncio.Event()

    @property
    def listening(self) -> bool:
        """Whether notifications reach this notifier: from :meth:`start` to :meth:`close`."""
        return self._started and not self.closed

    async def start(self) -> None:
        """Listen, then call ``on_connect`` with this notifier's session (once: it never
        drops)."""
        self._state.listeners.add(self.deliver)
        try:
            if self._on_session is not None:
                await self._on_session(self.session)
        except BaseException:
            self._detach()
            raise
        self._started = True

    async def run(self) -> None:
        """Return once closed: there is no connection to keep up."""
        await self._stopped.wait()

    async def close(self) -> None:
        """Stop listening and release the session's executor locks."""
        self._detach()
        self._stopped.set()
        await super().close()

    def _detach(self) -> None:
        self._state.listeners.discard(self.deliver)
        self._state.release(self.session)

    def deliver(self, key: Key) -> None:
        """Dispatch ``key`` as a NOTIFY with that payload would be."""
        payload = orjson.dumps(list(key)).decode()
        self._on_notification(None, 0, self.channel, payload)


class MemoryBackend:
    """A :class:`~aiodurable._backend.Backend` that keeps the journal in memory.

    ``Runtime(backend=MemoryBackend())`` needs no PostgreSQL. Each schema name has tables of
    its own; runtimes opened on the same backend object share them, one after another (a
    restart) or side by side (failover between executors). Nothing survives the process, and
    ``@transaction`` raises :class:`~aiodurable.NoRuntimeError`: test transactions on
    PostgreSQL.
    """

    def __init__(self) -> None:
        self._schemas: dict[str, MemoryState] = {}

    def __repr__(self) -> str:
        counts = {s: len(state.workflows) for s, state in self._schemas.items()}
        return f"<aiodurable.testing.MemoryBackend workflows={counts}>"

    def state(self, schema: str = "aiodurable") -> MemoryState:
        """The tables of ``schema`` (made empty on first use), for a test that looks at them or
        changes them behind the runtime's back (another executor taking a workflow over)."""
        return self._schemas.setdefault(schema, MemoryState())

    async def open(self, config: BackendConfig) -> Connected:
        """A store and a started notifier over the tables of ``config.schema``."""
        state = self.state(config.schema)
        store: StoreProtocol = MemoryStore(state, config.schema)
        store.max_backoff = config.reconnect_backoff
        store.retry_for = config.unreachable_timeout
        notifier = MemoryNotifier(
            state,
            store.channel,
            config.clock,
            fallback_interval=config.notify_fallback,
            on_connect=config.on_listen_connect,
            on_signal=config.on_signal,
        )
        await notifier.start()
        return Connected("memory://", store, store, notifier, contextlib.AsyncExitStack())
