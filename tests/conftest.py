"""Shared fixtures: one real PostgreSQL for the session, a fresh schema for each test.

The server is the embedded one (started here in a throwaway folder) unless
``AIODURABLE_TEST_DATABASE_URL`` names another.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from aiodurable import Runtime
from aiodurable._embedded import EmbeddedPostgres

# The project's own tests use its pytest plugin too (aiodurable.testing's durable_* fixtures).
pytest_plugins = ["aiodurable.testing"]

# Tests never crash the server itself, so durability of its disk writes buys them nothing.
_FAST = {"fsync": "off", "full_page_writes": "off", "max_connections": "400"}


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Run async tests on asyncio (asyncpg is asyncio-only)."""
    return "asyncio"


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """The URL of the session's PostgreSQL."""
    url = os.environ.get("AIODURABLE_TEST_DATABASE_URL")
    if url:
        yield url
        return
    # A folder the unprivileged server account can reach when the tests run as root.
    base = Path(tempfile.mkdtemp(prefix="aiodurable-tests-"))
    base.chmod(0o755)
    server = EmbeddedPostgres(base / "pg", settings=_FAST)
    url = asyncio.run(server.start())
    try:
        yield url
    finally:
        asyncio.run(server.stop())
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def schema(database_url: str) -> Iterator[str]:
    """A schema name of this test's own, dropped afterwards."""
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


@pytest.fixture(scope="session")
def durable_database_url(database_url: str) -> str:
    """aiodurable.testing's runtimes use this session's server (one server, not two)."""
    return database_url
