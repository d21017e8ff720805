"""The LISTEN connection and the waiters it wakes.

Notifications signal; they never carry data. A payload names what changed, as a JSON array such as
``["w", workflow_id, status]`` (a workflow's status changed), ``["m", workflow_id, topic]`` (a
message arrived) or ``["e", workflow_id, key]`` (an event was set); the kinds are the members of
:class:`~aiodurable._signals.Signal`. A waiter is keyed by the first two or three items it cares
about.

The protocol a waiter follows, so that no wake-up is lost::

    with notifier.watch(key) as w:        # register first
        while True:
            w.clear()
            ...read the table...           # then read; a NOTIFY from here on sets w
            if done: break
            await w.wait(deadline)         # wakes on NOTIFY, on reconnect, or on the fallback

When the LISTEN connection drops, the notifier reconnects with backoff and wakes every waiter so
that each re-reads. A slow fallback (``fallback_interval`` seconds) bounds how long a missed
notification can delay a waiter.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager

import asyncpg
import orjson

from ._clock import Clock, SystemClock
from ._signals import Signal

__all__ = ["Notifier", "Waiter"]

logger = logging.getLogger("aiodurable")

Key = tuple[str, ...]


class Waiter:
    """One registration: an event set when its key (or any of its keys) is notified. A context
    manager: registered on entry, removed on exit (see :meth:`Notifier.watch`)."""

    __slots__ = ("_event", "_notifier", "key", "keys")

    def __init__(self, notifier: Notifier, key: Key, *more: Key) -> None:
        self._notifier = notifier
        self._event = asyncio.Event()
        self.key: Key = key
        self.keys: tuple[Key, ...] = (key, *more)

    def __enter__(self) -> Waiter:
        self._notifier._register(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self._notifier._unregister(self)

    def clear(self) -> None:
        """Forget past wake-ups; call just before reading the table."""
        self._event.clear()

    def set(self) -> None:
        """Wake the waiter."""
        self._event.set()

    async def wait(self, deadline: float | None = None) -> bool:
        """Wait for a wake-up, for ``deadline`` on the runtime's clock, or for the fallback
        interval; True if woken. The fallback is real time, not durable time: it guards against
        a missed notification, so a test clock that skips days must not fire it."""
        clock = self._notifier.clock
        # Jitter spreads the fallback re-reads of many waiters over time.
        fallback = self._notifier.fallback_interval * random.uniform(0.9, 1.1)
        if isinstance(clock, SystemClock):  # durable time is real time: one timer serves both
            until = clock.now() + fallback
            return await clock.wait(
                self._event, until if deadline is None else min(deadline, until)
            )
        try:
            async with asyncio.timeout(fallback):
                return await clock.wait(self._event, deadline)
        except TimeoutError:
            return self._event.is_set()


class Notifier:
    """Dispatches one channel's notifications, on the event loop, to keyed waiters."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[asyncpg.Connection]],
        channel: str,
        clock: Clock,
        *,
        fallback_interval: float = 5.0,
        keepalive_interval: float = 5.0,
        on_connect: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
        on_signal: Callable[[Key], None] | None = None,
        max_backoff: float = 2.0,
    ) -> None:
        self._connect = connect
        self.max_backoff = max_backoff
        self.channel = channel
        self.clock = clock
        self.fallback_interval = fallback_interval
        self.keepalive_interval = keepalive_interval
        self._on_connect = on_connect
        self._on_signal = on_signal
        self._waiters: dict[Key, set[Waiter]] = {}
        self._subscribers: set[asyncio.Queue[Key]] = set()
        self._conn: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self._closed = False
        self._registered = asyncio.Event()

    @property
    def waiting(self) -> int:
        """How many waiters are registered (one on several keys counts once)."""
        return len({waiter for peers in self._waiters.values() for waiter in peers})

    async def until_waiting(self, count: int) -> None:
        """Return once at least ``count`` waiters are registered (for tests and tooling)."""
        while True:
            self._registered.clear()
            if self.waiting >= count:
                return
            await self._registered.wait()

    @property
    def listening(self) -> bool:
        """Whether the LISTEN connection (which holds the executor's lock) is up now."""
        return self._conn is not None and not self._lost.is_set() and not self._closed

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def connection(self) -> asyncpg.Connection | None:
        """The LISTEN connection while it is up."""
        return self._conn

    def watch(self, *key: str) -> Waiter:
        """A waiter for ``key``, registered for the duration of a ``with`` block."""
        return Waiter(self, key)

    def watch_any(self, keys: Sequence[Key]) -> Waiter:
        """One waiter woken by any of ``keys`` (at least one), registered for the duration of a
        ``with`` block: a wait on several things at once, such as the first of several
        workflows to end."""
        if not keys:
            raise ValueError("watch_any() needs at least one key to watch")
        return Waiter(self, *keys)

    def _register(self, waiter: Waiter) -> None:
        for key in waiter.keys:
            self._waiters.setdefault(key, set()).add(waiter)
        self._registered.set()

    def _unregister(self, waiter: Waiter) -> None:
        for key in waiter.keys:
            peers = self._waiters.get(key)
            if peers is not None:
                peers.discard(waiter)
                if not peers:
                    del self._waiters[key]

    @contextmanager
    def subscribe(self, maxsize: int = 1000) -> Iterator[asyncio.Queue[Key]]:
        """Receive every notification's key (``("w", workflow_id, status)``...) in a queue for
        the duration of the block, plus ``("reconnected",)`` after the connection was lost. A
        subscriber that falls ``maxsize`` behind loses the oldest keys: treat keys as hints to
        re-read, never as data."""
        queue: asyncio.Queue[Key] = asyncio.Queue(maxsize)
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)

    def _publish(self, key: Key) -> None:
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(key)

    def wake(self, *key: str) -> None:
        """Wake every waiter registered for ``key`` (and for its prefix of two items)."""
        for k in (key, key[:2]) if len(key) > 2 else (key,):
            for waiter in self._waiters.get(k, ()):
                waiter.set()

    def wake_all(self) -> None:
        """Wake every waiter, so each re-reads the tables."""
        for peers in self._waiters.values():
            for waiter in peers:
                waiter.set()

    def _on_notification(self, conn: object, pid: int, channel: str, payload: object) -> None:
        try:
            key = orjson.loads(payload)  # type: ignore[arg-type]  # asyncpg hands a str
        except orjson.JSONDecodeError:
            logger.warning("ignoring a malformed notification on %s: %r", channel, payload)
            return
        if isinstance(key, list) and key:
            parts = tuple("" if part is None else str(part) for part in key)
            self.wake(*parts)
            self._publish(parts)
            if self._on_signal is not None:
                self._on_signal(parts)

    def _on_termination(self, conn: object) -> None:
        self._lost.set()

    async def _open(self) -> None:
        conn = await self._connect()
        try:
            await conn.add_listener(self.channel, self._on_notification)
            conn.add_termination_listener(self._on_termination)
            if self._on_connect is not None:
                await self._on_connect(conn)
        except BaseException:
            await conn.close(timeout=1)
            raise
        self._conn = conn
        self._lost.clear()

    async def start(self) -> None:
        """Open the LISTEN connection; errors propagate to the caller."""
        await self._open()

    async def run(self) -> None:
        """Keep the connection up until :meth:`close`; reconnect with backoff when it drops."""
        while not self._closed:
            await self._watch()
            if self.closed:
                return
            self._conn = None
            delay = 0.05
            while not self._closed:
                try:
                    await self._open()
                except Exception as exc:  # any failure to reconnect: log it and try again
                    logger.warning(
                        "LISTEN connection lost (%s); reconnecting in %.2f s", exc, delay
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.max_backoff)
                    continue
                logger.info("LISTEN connection restored")
                # Anything may have changed while the connection was down.
                self.wake_all()
                self._publish((Signal.RECONNECTED.value,))
                break

    async def _watch(self) -> None:
        """Return once the connection is lost. A connection can look open while the network
        drops every packet, so it is pinged now and then; no answer in time counts as lost."""
        while not self._lost.is_set():
            try:
                async with asyncio.timeout(self.keepalive_interval):
                    await self._lost.wait()
                return
            except TimeoutError:
                pass
            conn = self._conn
            if conn is None:
                return
            try:
                await conn.fetchval("SELECT 1", timeout=self.keepalive_interval)
            except Exception as exc:  # any failure of the ping (a broken client state too)
                logger.warning("LISTEN connection unresponsive (%s); reconnecting", exc)
                conn.terminate()
                self._lost.set()

    async def close(self) -> None:
        """Close the connection and stop reconnecting."""
        self._closed = True
        self._lost.set()
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.remove_termination_listener(self._on_termination)
            await conn.close(timeout=2)
