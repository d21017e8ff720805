"""Where a runtime keeps its journal: the backend seam.

A :class:`Backend` opens the three things the engine talks to: the store (every statement), the
application store (``@transaction`` runs there) and the notifier (the LISTEN side). The default,
:class:`PostgresBackend`, connects to ``database_url`` or starts the embedded server;
:class:`aiodurable.testing.MemoryBackend` keeps everything in memory, for fast tests of workflow
logic without PostgreSQL (and without durability).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg

from ._clock import Clock
from ._notify import Key, Notifier
from ._store import APPLICATION_NAME, Store, StoreProtocol

__all__ = ["Backend", "BackendConfig", "Connected", "PostgresBackend"]


@dataclass(frozen=True, slots=True)
class BackendConfig:
    """What a backend needs from the runtime's settings, and the runtime's two callbacks."""

    database_url: str | None
    app_database_url: str | None
    schema: str
    clock: Clock
    pool_size: int
    connect_timeout: float
    command_timeout: float | None
    unreachable_timeout: float
    reconnect_backoff: float
    notify_fallback: float
    # Called on each (re)connection of the LISTEN session with an opaque session object, which
    # the engine hands back to ``store.try_hold_executor(session, executor_id)``.
    on_listen_connect: Callable[[Any], Awaitable[None]]
    on_signal: Callable[[Key], None]


@dataclass(slots=True)
class Connected:
    """An open backend: what the engine uses until it calls :meth:`close`."""

    database_url: str
    store: StoreProtocol
    app_store: StoreProtocol
    notifier: Notifier
    exit_stack: contextlib.AsyncExitStack

    async def close(self) -> None:
        """Close the notifier, the stores, and whatever the backend started (a server)."""
        try:
            await self.notifier.close()
            if self.app_store is not self.store:
                await self.app_store.close()
            await self.store.close()
        finally:
            await self.exit_stack.aclose()


class Backend(Protocol):
    """Opens a store, an application store and a notifier for a runtime."""

    async def open(self, config: BackendConfig) -> Connected:
        """Connect (starting whatever must run), migrate the schema, and return the parts; the
        notifier is started (listening) but its ``run`` loop is the engine's to supervise."""
        ...


class PostgresBackend:
    """PostgreSQL at ``config.database_url``, else the embedded server of this machine."""

    async def open(self, config: BackendConfig) -> Connected:
        server = contextlib.AsyncExitStack()  # the embedded server, closed last
        try:
            async with contextlib.AsyncExitStack() as parts:  # closed here only on failure
                connected = await self._open(config, server, parts)
                parts.pop_all()
                return connected
        except BaseException:
            await server.aclose()
            raise

    async def _open(
        self,
        config: BackendConfig,
        server: contextlib.AsyncExitStack,
        parts: contextlib.AsyncExitStack,
    ) -> Connected:
        if config.database_url is None:
            from ._embedded import embedded_server  # (import here: only when embedded)

            url = await server.enter_async_context(embedded_server())
        else:
            url = config.database_url
        store = await Store.open(
            url,
            config.schema,
            pool_size=config.pool_size,
            connect_timeout=config.connect_timeout,
            command_timeout=config.command_timeout,
        )
        parts.push_async_callback(store.close)
        store.max_backoff = config.reconnect_backoff
        store.retry_for = config.unreachable_timeout
        await store.migrate()
        app_store = store
        if config.app_database_url and config.app_database_url != url:
            app_store = await Store.open(
                config.app_database_url,
                config.schema,
                pool_size=config.pool_size,
                connect_timeout=config.connect_timeout,
            )
            parts.push_async_callback(app_store.close)
            await app_store.migrate()
        timeout = config.connect_timeout

        async def connect() -> asyncpg.Connection:
            return await asyncpg.connect(
                url, timeout=timeout, server_settings={"application_name": APPLICATION_NAME}
            )

        notifier = Notifier(
            connect,
            store.channel,
            config.clock,
            fallback_interval=config.notify_fallback,
            on_connect=config.on_listen_connect,
            on_signal=config.on_signal,
            max_backoff=config.reconnect_backoff,
        )
        parts.push_async_callback(notifier.close)
        await notifier.start()
        return Connected(url, store, app_store, notifier, server)
