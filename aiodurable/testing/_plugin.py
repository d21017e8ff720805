"""The pytest plugin: a session's PostgreSQL, a fresh schema per test, runtimes on it.

Load it with ``-p aiodurable.testing`` or ``pytest_plugins = ["aiodurable.testing"]`` in the root
``conftest.py``. Async fixtures need an async test plugin: anyio's (mark the tests
``pytest.mark.anyio``) or pytest-asyncio with ``asyncio_mode = "auto"``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

from .._runtime import Runtime
from ._clock import TestClock

__all__ = [
    "RuntimeFactory",
    "durable_clock",
    "durable_database_url",
    "durable_runtime",
    "durable_runtime_factory",
    "durable_schema",
    "pytest_configure",
]

T = TypeVar("T")

# Tests never crash the server itself, so durability of its disk writes buys them nothing.
_FAST = {"fsync": "off", "full_page_writes": "off", "max_connections": "400"}


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on a private loop, leaving the thread's current loop (an async test
    plugin's) alone."""
    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
        return runner.run(coro)


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``durable`` marker."""
    config.addinivalue_line(
        "markers",
        "durable(**options): options for the runtimes of durable_runtime and"
        " durable_runtime_factory: Runtime keywords (executor_id=, serializer=, ...), plus"
        " test_clock=True to run them on the durable_clock fixture, auto_advance=True for a"
        " durable_clock that skips to the next timer whenever the runtime is idle",
    )


def _marker_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    options: dict[str, Any] = {}
    # Closest marker last: a test's own marker overrides its module's.
    for marker in reversed(list(request.node.iter_markers("durable"))):
        if marker.args:
            raise TypeError("@pytest.mark.durable takes keyword options only")
        options.update(marker.kwargs)
    return options


@pytest.fixture(scope="session")
def durable_database_url() -> Iterator[str]:
    """The URL of the session's PostgreSQL: ``AIODURABLE_TEST_DATABASE_URL``, else an embedded
    server started for the session in a throwaway folder."""
    url = os.environ.get("AIODURABLE_TEST_DATABASE_URL")
    if url:
        yield url
        return
    from .._embedded import EmbeddedPostgres  # (import here: only when embedded)

    # A folder the unprivileged server account can reach when the tests run as root.
    base = Path(tempfile.mkdtemp(prefix="aiodurable-testing-"))
    base.chmod(0o755)
    server = EmbeddedPostgres(base / "pg", settings=_FAST)
    try:
        url = _run(server.start())
        yield url
    finally:
        _run(server.stop())
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def durable_schema(durable_database_url: str) -> Iterator[str]:
    """A schema name of this test's own; the schema is dropped afterwards."""
    name = f"durable_{uuid.uuid4().hex[:12]}"
    yield name

    async def drop() -> None:
        conn = await asyncpg.connect(durable_database_url)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        finally:
            await conn.close()

    _run(drop())


@pytest.fixture
def durable_clock(request: pytest.FixtureRequest) -> TestClock:
    """A :class:`TestClock` for this test; the durable runtimes of a test that requests it run
    on it."""
    return TestClock(auto_advance=bool(_marker_options(request).get("auto_advance", False)))


class RuntimeFactory:
    """Opens runtimes on the test's schema: ``async with durable_runtime_factory() as rt:``.

    Keyword options are ``Runtime``'s, over the test's defaults (the ``durable`` marker's, the
    test clock when the test uses one, ``executor_id="durable-test"``,
    ``app_version="durable-test"``). Runtimes opened one after another on the same executor ID
    see each other's workflows, as a restarted process would.
    """

    def __init__(self, database_url: str, schema: str, defaults: dict[str, Any]) -> None:
        self.database_url = database_url
        self.schema = schema
        self.defaults = defaults

    def __call__(self, **options: Any) -> AbstractAsyncContextManager[Runtime]:
        """An async context manager opening a runtime with ``options``."""
        return self._open({**self.defaults, **options})

    @asynccontextmanager
    async def _open(self, options: dict[str, Any]) -> AsyncIterator[Runtime]:
        async with Runtime(self.database_url, **options) as rt:
            yield rt


@pytest.fixture
def durable_runtime_factory(
    request: pytest.FixtureRequest, durable_database_url: str, durable_schema: str
) -> RuntimeFactory:
    """A :class:`RuntimeFactory` for runtimes on this test's schema (several, one after another
    for a crash and restart, or side by side with their own executor IDs)."""
    options = _marker_options(request)
    use_clock = bool(options.pop("test_clock", False)) | bool(options.pop("auto_advance", False))
    defaults: dict[str, Any] = {
        "schema": durable_schema,
        "executor_id": "durable-test",
        "app_version": "durable-test",
    }
    if "clock" not in options and (use_clock or "durable_clock" in request.fixturenames):
        defaults["clock"] = request.getfixturevalue("durable_clock")
    defaults.update(options)
    return RuntimeFactory(durable_database_url, durable_schema, defaults)


@pytest.fixture
async def durable_runtime(durable_runtime_factory: RuntimeFactory) -> AsyncIterator[Runtime]:
    """An open runtime on this test's fresh schema, closed after the test."""
    async with durable_runtime_factory() as rt:
        yield rt
