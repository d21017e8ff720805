"""The console's workflow page shows the workflow's streams: each key with its count of values,
whether it was closed, and its last few values (clipped), escaped. On PostgreSQL (the console's
SQL is under test) and on the in-memory backend (its store's summary is the same)."""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import httpx
import pytest

import aiodurable
from aiodurable import Runtime, workflow
from aiodurable.console import create_app
from aiodurable.console._app import STREAM_TAIL
from aiodurable.testing import MemoryBackend

from .conftest import RuntimeFactory

pytestmark = pytest.mark.anyio

BIG = "x" * 10_000


@workflow(name="stream_console.writer")
async def writer() -> None:
    for i in range(8):
        await aiodurable.write_stream("tokens", f"token-{i}")
    await aiodurable.close_stream("tokens")
    await aiodurable.write_stream("<b>open</b>", BIG)
    await aiodurable.set_event("written", True)
    await aiodurable.recv("go", timeout=math.inf)


async def page_of(rt: Runtime) -> str:
    handle = await rt.start_workflow(writer)
    await rt.get_event(handle.workflow_id, "written", timeout=30)
    transport = httpx.ASGITransport(app=create_app(rt), client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        response = await http.get(f"/workflows/{handle.workflow_id}")
    assert response.status_code == 200
    await rt.cancel_workflow(handle.workflow_id)
    return response.text


def check(html: str) -> None:
    section = html.split("<h2>Streams</h2>", 1)[1].split("<h2>", 1)[0]
    rows = re.findall(r"<tr><td>(.*?)</td><td>([\d,]+)</td><td>(\w+)</td>", section)
    assert rows == [("&lt;b&gt;open&lt;/b&gt;", "1", "open"), ("tokens", "8", "closed")]
    shown = re.findall(r"token-(\d)", section)
    assert shown == [str(i) for i in range(8 - STREAM_TAIL, 8)]  # the last ones, in order
    assert "<b>open</b>" not in section
    assert "not decoded" in section  # the big value is clipped, not decoded
    assert BIG not in section


@asynccontextmanager
async def on_memory(backend: MemoryBackend) -> AsyncIterator[Runtime]:
    async with Runtime(backend=backend, executor_id="console", app_version="console") as rt:
        yield rt


@pytest.mark.parametrize("store", ["postgresql", "memory"])
async def test_the_workflow_page_shows_its_streams(
    store: str, runtime: RuntimeFactory, backend: MemoryBackend
) -> None:
    """Keys in order, the number of values, closed or open, the last values oldest first, a
    large value clipped, and the key escaped."""
    opened: AbstractAsyncContextManager[Runtime] = (
        runtime() if store == "postgresql" else on_memory(backend)
    )
    async with opened as rt:
        check(await page_of(rt))


async def test_a_workflow_without_streams_says_so(backend: MemoryBackend) -> None:
    """A workflow that wrote no stream shows that it has none."""

    async with on_memory(backend) as rt:
        handle = await rt.start_workflow(empty)
        await handle.get_result()
        transport = httpx.ASGITransport(app=create_app(rt), client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            html = (await http.get(f"/workflows/{handle.workflow_id}")).text
    assert "No stream written." in html


@workflow(name="stream_console.empty")
async def empty() -> None:
    return None
