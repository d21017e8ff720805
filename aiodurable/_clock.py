"""The runtime's one clock.

Every durable time goes through a :class:`Clock`: sleep deadlines, ``recv``/``get_event`` timeouts,
retry backoff and the timestamps written into the journal. The runtime owns one, so a test can hand
it a clock of its own and skip time without waiting.

Times are POSIX timestamps in seconds (``float``), because they are written to the database and
must mean the same thing in another process or after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "SystemClock", "wait_woken"]


@runtime_checkable
class Clock(Protocol):
    """What the runtime needs from a clock."""

    def now(self) -> float:
        """The current time as a POSIX timestamp in seconds."""
        ...

    async def sleep_until(self, deadline: float) -> None:
        """Return once ``now() >= deadline``."""
        ...

    async def wait(self, event: asyncio.Event, deadline: float | None) -> bool:
        """Wait for ``event`` until ``deadline`` (``None``: none); return whether it was set."""
        ...


class SystemClock:
    """The wall clock, with asyncio's timers doing the waiting."""

    def now(self) -> float:
        """The current time as a POSIX timestamp in seconds."""
        return time.time()

    async def sleep_until(self, deadline: float) -> None:
        """Return once the wall clock reaches ``deadline``."""
        delay = deadline - time.time()
        while delay > 0:
            await asyncio.sleep(delay)
            # asyncio's timers run on the monotonic clock; re-check against the wall clock.
            delay = deadline - time.time()

    async def wait(self, event: asyncio.Event, deadline: float | None) -> bool:
        """Wait for ``event`` until ``deadline``; return whether it was set."""
        if event.is_set():
            return True
        if deadline is None:
            await event.wait()
            return True
        delay = deadline - time.time()
        if delay <= 0:
            return False
        try:
            async with asyncio.timeout(delay):
                await event.wait()
        except TimeoutError:
            return event.is_set()
        return True


async def wait_woken(
    clock: Clock, event: asyncio.Event, deadline: float | None, fallback: float
) -> None:
    """Wait until ``event`` is set or ``deadline`` (durable time, on ``clock``; None: none)
    passes, and at most ``fallback`` real seconds: the wait of a background loop woken by
    notifications, whose safety re-read must come in real time even on a clock that a test
    holds still."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(fallback):
            await clock.wait(event, deadline)
