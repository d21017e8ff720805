"""The aiodurable.testing pytest plugin, run as a user runs it: pytest in a child process."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
from pathlib import Path

import asyncpg
import pytest

from .proc import ROOT

pytestmark = pytest.mark.anyio

EXAMPLE = "examples/test_example_workflows.py"


async def _pytest(*args: str, cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    """Run pytest in a child process; its exit code and output."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pytest",
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return await proc.wait(), out.decode()


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "AIODURABLE_TEST_DATABASE_URL"}
    env.pop("PYTEST_ADDOPTS", None)
    return {**env, **extra}


async def test_the_example_passes_on_anyio_with_its_own_embedded_server() -> None:
    """`python -m pytest -p aiodurable.testing examples/test_example_workflows.py` passes,
    starting an embedded PostgreSQL for its session."""
    args = ["-p", "aiodurable.testing", "-p", "no:asyncio"]  # anyio's plugin, not pytest-asyncio
    code, out = await _pytest(*args, EXAMPLE, "-q", cwd=ROOT, env=_env())
    assert code == 0, out
    assert "4 passed" in out, out


async def test_the_example_passes_on_pytest_asyncio_in_auto_mode(database_url: str) -> None:
    """The same file passes with pytest-asyncio in auto mode running the async tests and
    fixtures instead of anyio's plugin."""
    if importlib.util.find_spec("pytest_asyncio") is None:
        pytest.skip("pytest-asyncio is not installed")
    args = [
        "-p",
        "aiodurable.testing",
        "-p",
        "pytest_asyncio.plugin",  # by module: the project turns the entry point off
        "-p",
        "no:anyio",
        "-o",
        "asyncio_mode=auto",
        "-o",
        "asyncio_default_fixture_loop_scope=function",
        # The example's anyio marker means nothing without anyio's plugin.
        "-o",
        "markers=anyio: for anyio's plugin, not loaded in this run",
    ]
    env = _env(AIODURABLE_TEST_DATABASE_URL=database_url)
    code, out = await _pytest(*args, EXAMPLE, "-q", cwd=ROOT, env=env)
    assert code == 0, out
    assert "4 passed" in out, out


USER_TESTS = """
import pytest
from pathlib import Path
from aiodurable import Runtime
from aiodurable.testing import RuntimeFactory, TestClock, clock_of

pytestmark = pytest.mark.anyio


def remember(schema: str) -> None:
    with Path("schemas").open("a") as f:
        f.write(schema + "\\n")


@pytest.mark.durable(test_clock=True, executor_id="marked")
async def test_marked(durable_runtime: Runtime, durable_schema: str) -> None:
    remember(durable_schema)
    assert isinstance(clock_of(durable_runtime), TestClock)
    assert durable_runtime.executor_id == "marked"


async def test_factory(durable_runtime_factory: RuntimeFactory, durable_schema: str) -> None:
    remember(durable_schema)
    async with durable_runtime_factory(executor_id="a") as first:
        assert first.schema == durable_schema
    async with durable_runtime_factory(executor_id="a") as second:
        assert second.schema == durable_schema
        assert not isinstance(second.clock, TestClock)
"""


async def test_each_test_gets_a_schema_of_its_own_dropped_afterwards(
    database_url: str, tmp_path: Path
) -> None:
    """In a user's project, the durable marker is registered (strict markers), each test gets a
    schema of its own, and no schema is left behind once the run ends."""
    (tmp_path / "test_user.py").write_text(USER_TESTS)
    env = _env(AIODURABLE_TEST_DATABASE_URL=database_url)
    args = ["-p", "aiodurable.testing", "-p", "no:asyncio", "--strict-markers", "-W", "error"]
    args += ["-q", "test_user.py"]
    code, out = await _pytest(*args, cwd=tmp_path, env=env)
    assert code == 0, out
    schemas = (tmp_path / "schemas").read_text().split()
    assert len(set(schemas)) == 2
    conn = await asyncpg.connect(database_url)
    try:
        left = await conn.fetchval(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = ANY($1)",
            schemas,
        )
    finally:
        await conn.close()
    assert left == 0
