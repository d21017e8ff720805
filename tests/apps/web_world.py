"""A workflow that needs a resource the web application's own startup sets up (its HTTP session
or database pool), for the Starlette and aiohttp tests of the startup and shutdown order.

Each test makes its own world (``new_world()``); the workflow finds it by the key it is given, so
two tests, or two runs of one application in a test, share nothing else.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiodurable import Runtime, step, workflow


class SessionMissing(RuntimeError):
    """The workflow ran before the application's startup made its session."""


class SessionClosed(RuntimeError):
    """The application's cleanup closed the session under a running workflow."""


class Session:
    """Stands in for the application's own HTTP session or pool. A call waits until the session
    answers (at once when made with ``answering=True``); ``close()``, like a pool's, fails the
    calls in flight and waits for them to end."""

    def __init__(self, name: str, *, answering: bool) -> None:
        self.name = name
        self.closed = False
        self._answer = asyncio.Event()
        if answering:
            self._answer.set()
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def get(self) -> str:
        """This session's name, once it answers."""
        if self.closed:
            raise SessionClosed(f"session {self.name} is closed")
        self._in_flight += 1
        self._idle.clear()
        try:
            await self._answer.wait()
            if self.closed:
                raise SessionClosed(f"session {self.name} was closed during the call")
            return self.name
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    async def close(self) -> None:
        """Close: the calls in flight fail, and this returns once they have ended."""
        self.closed = True
        self._answer.set()
        await self._idle.wait()


@dataclass
class World:
    """What one test's application and workflow share across runs of the application."""

    session: Session | None = None
    go: asyncio.Event = field(default_factory=asyncio.Event)
    """Lets the workflow past its first step."""
    waiting: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the workflow waits at its first step."""
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the workflow reaches the session."""
    seen: list[str] = field(default_factory=list)
    """What each run of the session step found: a session's name, "no session", "NAME closed"."""


worlds: dict[str, World] = {}  # keyed by new_world()'s unique keys: nothing to reset


def new_world() -> str:
    """A fresh world; its key, the workflow's input."""
    key = uuid.uuid4().hex[:12]
    worlds[key] = World()
    return key


def workflow_id(key: str) -> str:
    """The ID the applications give the workflow of ``key``."""
    return f"fetch-{key}"


@step()
async def wait_for_go(key: str) -> None:
    """Wait until the test lets the workflow go on."""
    world = worlds[key]
    world.waiting.set()
    await world.go.wait()


@step()
async def call_session(key: str) -> str:
    """Use the application's session; record what was found."""
    world = worlds[key]
    world.reached.set()
    session = world.session
    if session is None:
        world.seen.append("no session")
        raise SessionMissing("the application's session is not set up")
    try:
        name = await session.get()
    except SessionClosed:
        world.seen.append(f"{session.name} closed")
        raise
    world.seen.append(name)
    return name


@workflow()
async def fetch(key: str) -> str:
    """Wait for the go, then fetch through the application's session."""
    await wait_for_go(key)
    return await call_session(key)


@asynccontextmanager
async def own_session(
    rt: Runtime, key: str, name: str, *, answering: bool
) -> AsyncIterator[Session]:
    """The application's own startup and cleanup: open the session (see :class:`Session` for
    ``answering``), close it.

    The startup is slow, as connecting and authenticating are: it lasts until any workflow the
    runtime recovered before it has reached the session. That makes a recovery that runs before
    this startup fail every time instead of most times; a recovery after it waits for nothing.
    """
    world = worlds[key]
    if rt.recovered_workflow_ids:
        await world.reached.wait()
    session = Session(name, answering=answering)
    world.session = session
    try:
        yield session
    finally:
        world.session = None
        await session.close()
