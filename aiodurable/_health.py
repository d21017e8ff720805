"""The runtime's background loops, kept alive, and the health a readiness probe reads.

Every long-lived loop of a runtime (the queue dispatcher, the claimer, liveness, maintenance)
runs under :class:`Loops`: an error of any kind is logged, the loop waits a little (longer after
each failure in a row, at most :data:`MAX_BACKOFF` seconds) and runs again; a loop that returns
when it should not is restarted the same way. So no outage, however long, and no unforeseen
error switches dispatch off for good. :class:`RuntimeHealth` is what
:meth:`aiodurable.Runtime.health` reports.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from ._exceptions import DatabaseUnavailable

__all__ = ["MAX_BACKOFF", "LoopHealth", "Loops", "RuntimeHealth"]

logger = logging.getLogger("aiodurable")

MAX_BACKOFF = 1.0
"""The longest wait, in seconds, before a failed loop runs again. Short: a loop fails on an
outage only once the store has retried for ``unreachable_timeout`` already."""

_FIRST_BACKOFF = 0.1
_HEALTHY_AFTER = 30.0  # a loop that ran this long before failing starts its backoff afresh


@dataclass(frozen=True, slots=True)
class LoopHealth:
    """One background loop: whether it runs now, how often it was restarted, its last error."""

    name: str
    running: bool
    restarts: int
    last_error: str | None


@dataclass(frozen=True, slots=True)
class RuntimeHealth:
    """A snapshot of a runtime's health, for a readiness probe: :attr:`ok`, else :attr:`problems`
    says what is wrong, in words.

    - ``open``: the runtime is open.
    - ``database``: the last statement reached PostgreSQL (False while it is out of reach).
    - ``listening``: the notification connection, which holds the executor's lock, is up.
    - ``owner``: this runtime has proved, within its lease, that it still owns its workflows.
    - ``loops``: each background loop.
    """

    open: bool
    database: bool
    listening: bool
    owner: bool
    loops: tuple[LoopHealth, ...]

    @property
    def problems(self) -> tuple[str, ...]:
        """What is wrong, one sentence each; empty when healthy."""
        found: list[str] = []
        if not self.open:
            found.append("the runtime is not open")
        if not self.database:
            found.append("PostgreSQL is out of reach")
        if not self.listening:
            found.append("the notification connection is down")
        if not self.owner:
            found.append("this executor has not confirmed its ownership within the lease")
        found += [f"the {loop.name} is restarting" for loop in self.loops if not loop.running]
        return tuple(found)

    @property
    def ok(self) -> bool:
        """Whether nothing is wrong."""
        return not self.problems


@dataclass(slots=True)
class _LoopState:
    running: bool = True
    restarts: int = 0
    last_error: str | None = None


class Loops:
    """The supervised background loops of one runtime; ``spawn`` runs a coroutine in the
    runtime's task group (cancelled and awaited when it closes)."""

    def __init__(self, spawn: Callable[[Coroutine[Any, Any, None], str], object]) -> None:
        self._spawn = spawn
        self._state: dict[str, _LoopState] = {}

    def start(self, name: str, body: Callable[[], Awaitable[None]]) -> None:
        """Run ``body()`` as the loop called ``name``, for as long as the runtime is open."""
        self._state[name] = _LoopState()
        self._spawn(self._supervise(name, body), f"aiodurable {name}")

    def health(self) -> tuple[LoopHealth, ...]:
        """Each loop's state now."""
        return tuple(
            LoopHealth(name, s.running, s.restarts, s.last_error) for name, s in self._state.items()
        )

    async def _supervise(self, name: str, body: Callable[[], Awaitable[None]]) -> None:
        state = self._state[name]
        backoff = _FIRST_BACKOFF
        while True:
            began = time.monotonic()
            try:
                await body()
            except asyncio.CancelledError:
                raise
            except DatabaseUnavailable as exc:
                state.last_error = str(exc)
                logger.warning("aiodurable %s paused: %s; it goes on in %.1f s", name, exc, backoff)
            except Exception as exc:
                state.last_error = f"{type(exc).__name__}: {exc}"
                logger.exception("aiodurable %s failed; it restarts in %.1f s", name, backoff)
            else:
                state.last_error = "returned unexpectedly"
                logger.error(
                    "aiodurable %s stopped unexpectedly; it restarts in %.1f s", name, backoff
                )
            state.running = False
            state.restarts += 1
            if time.monotonic() - began > _HEALTHY_AFTER:
                backoff = _FIRST_BACKOFF
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)
            state.running = True
