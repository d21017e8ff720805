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
from ._store import APPLICATION_NAME, Store, StoreProtocol, redact_url

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
    # A direct URL for the LISTEN connection (and the executor lock it holds) when
    # ``database_url`` goes through a transaction pooler; the pools then cache no statements.
    listen_database_url: str | None = None


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
    """PostgreSQL at ``config.database_url``, else the embedded server of this machine.

    With ``config.listen_database_url``, ``database_url`` is taken to go through a transaction
    pooler such as PgBouncer: its pools prepare no named statements, and the LISTEN connection
    (a session, which a pooler cannot carry) connects to the direct URL instead, once checked
    to reach the same database."""

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
        pooled = config.listen_database_url is not None
        if pooled and config.listen_database_url == config.database_url:
            raise ValueError(
                "Runtime(listen_database_url=) is database_url itself; give it only when"
                " database_url goes through a connection pooler, and then the direct URL of the"
                " same database (LISTEN cannot work through a transaction pooler)"
            )
        if config.database_url is None:
            if pooled:
                raise ValueError(
                    "Runtime(listen_database_url=) is for a database_url that goes through a"
                    " connection pooler; the embedded server needs none: give database_url too,"
                    " or no listen_database_url (nor AIODURABLE_LISTEN_DATABASE_URL)"
                )
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
            statement_cache=not pooled,
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
                statement_cache=not pooled,
            )
            parts.push_async_callback(app_store.close)
            await app_store.migrate()
        timeout = config.connect_timeout
        listen_url = config.listen_database_url or url

        async def connect() -> asyncpg.Connection:
            return await asyncpg.connect(
                listen_url, timeout=timeout, server_settings={"application_name": APPLICATION_NAME}
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
        listening = notifier.connection
        if pooled and listening is not None and not await store.same_server(listening):
            raise ValueError(
                f"listen_database_url ({redact_url(listen_url)}) reaches another database or"
                f" server than database_url ({redact_url(url)}); give the direct URL of the"
                " database behind the pooler (managed services list it beside the pooled one)"
            )
        return Connected(url, store, app_store, notifier, server)
