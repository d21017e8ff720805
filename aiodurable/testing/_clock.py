"""``TestClock``: durable time that a test moves by hand, without waiting.

A :class:`TestClock` implements the runtime's :class:`~aiodurable.Clock` protocol on a virtual
time. Every durable wait of a runtime opened with it (sleep deadlines, ``recv``/``get_event``
timeouts, workflow deadlines, retry backoff) becomes a *timer* of the clock, which fires only
when the test advances the clock past it; journal timestamps come from the same virtual time, so
recovery arithmetic stays consistent.

*Idle* (the word the rest of this module builds on): every workflow the runtime runs is in a
durable wait (its context counts ``waits > 0``) or finished; no timer has fired, nor event been
set, whose waiter has not resumed yet; no runtime task woken by the clock is still on its way
to its next wait; and this stays true across a NOTIFY round trip through the database, so that
every notification committed before it (a message sent by the test, say) was dispatched first.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .._context import current_workflow
from .._current import current_runtime, open_runtimes
from .._exceptions import DurableError
from .._runtime import Runtime, hooks

__all__ = ["ClockMismatchError", "TestClock", "clock_of"]

# The journal stores times in whole milliseconds, so a deadline read back from it may lie up to
# half a millisecond past the one computed; a timer that close past the target fires too.
_TOLERANCE = 0.001
# Loop iterations given to ready callbacks before each look at the runtime: a woken task needs a
# few to resume (a future, a shield, the task step).
_YIELDS = 8
# Real seconds between two looks at a runtime that is busy (a step doing real I/O, say).
_POLL = 0.002
_BARRIER = "aiodurable-testing-barrier"


class ClockMismatchError(DurableError):
    """Raised when a :class:`TestClock` is used with a runtime that does not run on it."""


@dataclass(eq=False)
class _Wait:
    """One call in progress of ``sleep_until`` or ``wait``."""

    deadline: float | None
    seq: int
    fired: asyncio.Future[None]
    event: asyncio.Event | None
    task: asyncio.Task[Any] | None
    cancelled: bool = field(default=False)

    def __lt__(self, other: _Wait) -> bool:
        return (self.deadline or math.inf, self.seq) < (other.deadline or math.inf, other.seq)

    @property
    def waking(self) -> bool:
        """Whether this waiter is due to resume (its timer fired or its event was set)."""
        return self.fired.done() or (self.event is not None and self.event.is_set())


def _seconds(value: timedelta | float) -> float:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise TypeError(f"advance() takes a timedelta or a number of seconds, not {value!r}")
    return float(value)


def _timestamp(value: datetime | float) -> float:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"{value!r} has no time zone; give an aware datetime")
        return value.timestamp()
    return float(value)


class TestClock:
    """A :class:`~aiodurable.Clock` whose time moves only when the test says so.

    ``start`` is the initial time (a POSIX timestamp or an aware ``datetime``; default: now,
    rounded down to the second). ``await clock.advance(timedelta(days=1))`` fires, in deadline
    order, every timer that falls due, letting the runtime become idle (see the module
    docstring) before each one, so that a woken workflow reaches its next wait before the next
    timer fires. ``auto_advance=True`` (or ``async with clock.auto_advance():``) jumps to the
    next timer whenever the runtime is idle with a workflow running.

    A clock serves one open runtime: it binds to the first runtime that uses it and refuses
    another while that one is open (a runtime opened after it closed may take it over, so time
    goes on across a restart). ``settle_timeout`` bounds, in real seconds, how long
    :meth:`advance` waits for the runtime to become idle before it gives up.
    """

    __test__ = False  # a library class, not a pytest test class

    def __init__(
        self,
        start: datetime | float | None = None,
        *,
        auto_advance: bool = False,
        settle_timeout: float = 10.0,
    ) -> None:
        self._now = float(math.floor(time.time())) if start is None else _timestamp(start)
        self._timers: list[_Wait] = []
        self._waits: set[_Wait] = set()
        # Tasks that left a wait of this clock and have not begun another: a runtime task among
        # them is on its way somewhere (a DB write after a deadline, say) and keeps it busy.
        self._woken: set[asyncio.Task[Any]] = set()
        self._watched: set[asyncio.Task[Any]] = set()
        self._changes: list[asyncio.Future[None]] = []
        self._seq = itertools.count()
        self._lock: asyncio.Lock | None = None
        self._runtime: Runtime | None = None
        self._auto = auto_advance
        self._driver: asyncio.Task[None] | None = None
        self.settle_timeout = settle_timeout
        self.fired: int = 0
        """How many timers this clock has fired."""

    def __repr__(self) -> str:
        when = datetime.fromtimestamp(self._now).astimezone().isoformat()
        return f"<aiodurable.testing.TestClock {when} timers={self.pending_timers}>"

    # -- the Clock protocol ------------------------------------------------------------------

    def now(self) -> float:
        """The virtual time as a POSIX timestamp in seconds."""
        return self._now

    async def sleep_until(self, deadline: float) -> None:
        """Return once the clock has been advanced to ``deadline``."""
        if deadline <= self._now:
            self._mark_woken()
            return
        await self._wait_on(deadline, None)

    async def wait(self, event: asyncio.Event, deadline: float | None) -> bool:
        """Wait for ``event`` until the clock reaches ``deadline``; return whether it was set."""
        if event.is_set():
            self._mark_woken()
            return True
        if deadline is not None and deadline <= self._now:
            self._mark_woken()
            return False
        await self._wait_on(deadline, event)
        return event.is_set()

    # -- moving time -------------------------------------------------------------------------

    @property
    def runtime(self) -> Runtime | None:
        """The open runtime this clock serves, or None before one uses it."""
        return self._find_runtime()

    @property
    def pending_timers(self) -> int:
        """How many timers wait for the clock to reach them."""
        return sum(1 for w in self._waits if w.deadline is not None and not w.fired.done())

    @property
    def next_deadline(self) -> float | None:
        """The time of the earliest timer, or None."""
        timer = self._earliest()
        return None if timer is None else timer.deadline

    async def advance(self, by: timedelta | float) -> None:
        """Move time forward by ``by`` (a ``timedelta`` or seconds), firing each timer that falls
        due in order, each once the runtime is idle. Raises ``ValueError`` for a negative
        ``by``."""
        seconds = _seconds(by)
        if seconds < 0:
            raise ValueError(
                f"a TestClock only moves forward; advance() got {by!r}: to test an earlier"
                " time, create the clock with TestClock(start=...)"
            )
        await self.advance_to(self._now + seconds)

    async def advance_to(self, when: datetime | float) -> None:
        """Move time forward to ``when`` (a POSIX timestamp or an aware ``datetime``), as
        :meth:`advance` does; ``ValueError`` if ``when`` is in the clock's past."""
        target = _timestamp(when)
        if target < self._now:
            raise ValueError(
                f"a TestClock only moves forward: {target} is {self._now - target:g} s before"
                " its current time"
            )
        async with self._exclusive():
            await self._settle(self.settle_timeout)
            while True:
                timer = self._earliest()
                if timer is None or timer.deadline is None or timer.deadline > target + _TOLERANCE:
                    break
                self._fire_through(timer.deadline)
                await self._settle(self.settle_timeout)
            self._now = max(self._now, target)

    async def settle(self) -> None:
        """Wait (at most ``settle_timeout`` real seconds) until the runtime is idle, without
        moving time; ``TimeoutError`` naming the busy workflows if it does not become idle."""
        await self._settle(self.settle_timeout)

    @contextlib.asynccontextmanager
    async def auto_advance(self) -> AsyncIterator[TestClock]:
        """Within the block, jump to the next timer whenever the runtime is idle with a
        workflow running: ``async with clock.auto_advance(): await handle.get_result()``."""
        previous, self._auto = self._auto, True
        driver = asyncio.get_running_loop().create_task(self._drive(), name="TestClock driver")
        outer, self._driver = self._driver, driver
        try:
            yield self
        finally:
            self._auto, self._driver = previous, outer
            driver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await driver

    def bind(self, runtime: Runtime) -> None:
        """Serve ``runtime`` (done on first use); :class:`ClockMismatchError` if it runs on
        another clock, or if this clock serves another runtime that is still open."""
        if runtime.clock is not self:
            raise ClockMismatchError(
                f"{runtime!r} does not run on this TestClock (its clock is {runtime.clock!r});"
                " create the runtime with Runtime(..., clock=clock), or use the durable_clock"
                " fixture, which the durable_runtime fixture then runs on"
            )
        bound = self._runtime
        if bound is not None and bound is not runtime and bound.is_open:
            raise ClockMismatchError(
                f"this TestClock already serves {bound!r}, which is still open; give each"
                " Runtime a TestClock of its own (or close the first before opening the next)"
            )
        self._runtime = runtime

    # -- timers ------------------------------------------------------------------------------

    async def _wait_on(self, deadline: float | None, event: asyncio.Event | None) -> None:
        if current_workflow() is not None:
            self.bind(current_runtime())
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        entry = _Wait(deadline, next(self._seq), loop.create_future(), event, task)
        self._waits.add(entry)
        if deadline is not None:
            heapq.heappush(self._timers, entry)
        if task is not None:
            self._woken.discard(task)
        self._changed()
        if self._auto:
            self._start_driver()
        event_wait = None if event is None else loop.create_task(event.wait())
        try:
            if event_wait is None:
                await entry.fired
            else:
                either: set[asyncio.Future[Any]] = {entry.fired, event_wait}
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            entry.cancelled = True
            entry.fired.cancel()
            if event_wait is not None:
                event_wait.cancel()
            self._waits.discard(entry)
            self._mark_woken()
            self._changed()

    def _mark_woken(self) -> None:
        """Count the calling task as busy until it waits again: it returned from a wait (at
        once, or when woken) and runs on, so time must not move under it."""
        task = asyncio.current_task()
        if task is not None and not task.done():
            self._woken.add(task)
            if task not in self._watched:
                self._watched.add(task)
                task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self._woken.discard(task)
        self._watched.discard(task)

    def _earliest(self) -> _Wait | None:
        while self._timers and (self._timers[0].cancelled or self._timers[0].fired.done()):
            heapq.heappop(self._timers)
        return self._timers[0] if self._timers else None

    def _fire_through(self, deadline: float) -> None:
        """Set the time to ``deadline`` and fire every timer due by then."""
        self._now = max(self._now, deadline)
        while True:
            timer = self._earliest()
            if timer is None or timer.deadline is None or timer.deadline > self._now:
                return
            heapq.heappop(self._timers)
            timer.fired.set_result(None)
            self.fired += 1

    def _changed(self) -> None:
        changes, self._changes = self._changes, []
        for fut in changes:
            if not fut.done():
                fut.set_result(None)

    async def _change(self, timeout: float | None) -> None:
        """Wait for a wait to begin or end, or ``timeout`` real seconds."""
        fut = asyncio.get_running_loop().create_future()
        self._changes.append(fut)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await fut

    @contextlib.asynccontextmanager
    async def _exclusive(self) -> AsyncIterator[None]:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            yield

    # -- idleness ----------------------------------------------------------------------------

    def _find_runtime(self) -> Runtime | None:
        bound = self._runtime
        if bound is not None and bound.is_open:
            return bound
        mine = [rt for rt in open_runtimes() if rt.clock is self]
        if len(mine) > 1:
            raise ClockMismatchError(
                f"{len(mine)} open runtimes share this TestClock; give each Runtime a TestClock"
                " of its own"
            )
        if mine:
            self._runtime = mine[0]
            return mine[0]
        return None

    def _busy(self, rt: Runtime | None) -> list[str]:
        """What keeps the runtime from being idle, as names for an error message."""
        me = asyncio.current_task()
        busy = [
            f"a wait that is resuming in task {w.task.get_name()!r}"
            for w in self._waits
            if w.waking and w.task is not None and w.task is not me
        ]
        if rt is None:
            return busy
        return busy + hooks(rt).busy([task for task in self._woken if task is not me])

    async def _settle(self, timeout: float | None) -> None:
        """Return once idle; ``TimeoutError`` after ``timeout`` real seconds (None: never)."""
        loop = asyncio.get_running_loop()
        give_up = None if timeout is None else loop.time() + timeout
        confirmed = False
        while True:
            for _ in range(_YIELDS):
                await asyncio.sleep(0)
            rt = self._find_runtime()
            busy = self._busy(rt)
            if not busy:
                if confirmed or rt is None:
                    return
                await self._barrier(rt)
                confirmed = True
                continue
            confirmed = False
            if give_up is not None and loop.time() >= give_up:
                raise TimeoutError(
                    f"the runtime did not become idle within {timeout:g} real seconds (busy:"
                    f" {', '.join(busy)}); a workflow may be waiting on something that is not"
                    " durable, such as a step awaiting real I/O. Raise TestClock(settle_timeout=)"
                    " if it only needs longer."
                )
            await self._change(_POLL)

    async def _barrier(self, rt: Runtime) -> None:
        """A NOTIFY round trip: every notification committed before it has been dispatched."""
        testing = hooks(rt)
        notifier = testing.notifier
        if notifier.connection is None:
            return
        token = f"{id(self)}-{next(self._seq)}"
        with notifier.subscribe(maxsize=100_000) as keys:
            await testing.store.notify(_BARRIER, token)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settle_timeout):
                    while await keys.get() != (_BARRIER, token):
                        pass

    # -- auto-advance ------------------------------------------------------------------------

    def _start_driver(self) -> None:
        if self._driver is not None and not self._driver.done():
            return
        rt = self._find_runtime()
        if rt is None:
            return
        self._driver = hooks(rt).spawn(self._drive(), name="aiodurable TestClock driver")

    async def _drive(self) -> None:
        """Jump to the next timer whenever the runtime is idle with a workflow running."""
        while True:
            rt = self._find_runtime()
            timer = self._earliest()
            if rt is None or not hooks(rt).running() or timer is None or timer.deadline is None:
                await self._change(None)
                continue
            async with self._exclusive():
                await self._settle(None)
                rt = self._find_runtime()
                timer = self._earliest()
                if rt is not None and hooks(rt).running() and timer is not None and timer.deadline:
                    self._fire_through(timer.deadline)


def clock_of(runtime: Runtime) -> TestClock:
    """The :class:`TestClock` ``runtime`` runs on, bound to it; :class:`ClockMismatchError`
    naming the fix when the runtime was created with another clock."""
    clock = runtime.clock
    if not isinstance(clock, TestClock):
        raise ClockMismatchError(
            f"{runtime!r} runs on {clock!r}, not on a TestClock; create it with"
            " Runtime(..., clock=aiodurable.testing.TestClock()), or request the durable_clock"
            " fixture so that durable_runtime runs on it"
        )
    clock.bind(runtime)
    return clock
