"""Shared fixtures: one real PostgreSQL for the session, a fresh schema for each test.

They come from the project's own pytest plugin, ``aiodurable.testing``: the server is the
embedded one (started in a throwaway folder) unless ``AIODURABLE_TEST_DATABASE_URL`` names
another.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest

from aiodurable import Runtime

if TYPE_CHECKING:
    from aiodurable.testing import MemoryBackend, TestClock

# The project's own tests use its pytest plugin too (aiodurable.testing's durable_* fixtures).
pytest_plugins = ["aiodurable.testing"]


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Run async tests on asyncio (asyncpg is asyncio-only)."""
    return "asyncio"


@pytest.fixture(scope="session")
def database_url(durable_database_url: str) -> str:
    """The URL of the session's PostgreSQL (the plugin's: embedded, or the test database)."""
    return durable_database_url


@pytest.fixture
def schema(database_url: str) -> Iterator[str]:
    """A schema name of this test's own (not the plugin's ``durable_schema``: a test may use
    both), dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name

    async def drop() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        finally:
            await conn.close()

    asyncio.run(drop())


RuntimeFactory = Callable[..., AbstractAsyncContextManager[Runtime]]


@pytest.fixture
def runtime(database_url: str, schema: str) -> RuntimeFactory:
    """Open runtimes on this test's schema: ``async with runtime(executor_id="a") as rt:``."""

    @asynccontextmanager
    async def make(**options: Any) -> AsyncIterator[Runtime]:
        options.setdefault("schema", schema)
        options.setdefault("executor_id", "test-executor")
        options.setdefault("app_version", "test-version")
        async with Runtime(database_url, **options) as rt:
            yield rt

    return make


@pytest.fixture
def backend() -> MemoryBackend:
    """An empty in-memory backend: runtimes opened on it one after another see the same data."""
    # Imported here: pytest registers aiodurable.testing (pytest_plugins above) only after this
    # module is imported, and a plugin imported before it is registered is not assert-rewritten.
    from aiodurable.testing import MemoryBackend

    return MemoryBackend()


@pytest.fixture
def clock() -> TestClock:
    """A TestClock for runtimes on the in-memory backend."""
    from aiodurable.testing import TestClock  # (imported here: see backend())

    return TestClock()
