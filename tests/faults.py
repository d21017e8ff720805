"""Helpers for the fault tests: a private PostgreSQL a test may stop, a TCP proxy it may cut, the
message-passing workload they run, and the checks that follow every fault.

The workload (``partner`` workflows in pairs) is also run by ``tests/apps/fault_app.py`` and
``tests/apps/failover_app.py``, which import this module; its steps log each execution to the
file named by ``$FAULT_LOG``, so a test can tell which execution of a step its journal recorded.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

import aiodurable
from aiodurable import step, workflow
from aiodurable._embedded import EmbeddedPostgres

LOG_ENV = "FAULT_LOG"

# -- the workload --------------------------------------------------------------------------------


def log_execution(line: str) -> None:
    """Append one line to ``$FAULT_LOG``: a single O_APPEND write, so lines never tear."""
    fd = os.open(os.environ[LOG_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@step()
async def work(workflow_id: str, index: int, pause: float) -> str:
    """A step that takes ``pause`` seconds and logs each execution with a token of its own."""
    token = uuid.uuid4().hex
    await asyncio.sleep(pause)
    log_execution(f"{workflow_id} {index} {token}")
    return token


@workflow()
async def partner(peer: str, rounds: int, pause: float) -> list[str]:
    """Wait for "go", then ``rounds`` times: a step, a message to ``peer``, a message from it,
    a durable sleep. Returns the messages received, in order."""
    me = aiodurable.current_workflow_id()
    assert await aiodurable.recv("go", timeout=120) == "go"
    received: list[str] = []
    for i in range(rounds):
        await work(me, i, pause)
        await aiodurable.send(peer, f"{me}:{i}", "ping")
        message = await aiodurable.recv("ping", timeout=120)
        assert isinstance(message, str), message
        received.append(message)
        await aiodurable.sleep(pause)
    return received


@workflow()
async def chain(steps: int, pause: float) -> int:
    """``steps`` logged steps one after the other."""
    me = aiodurable.current_workflow_id()
    for i in range(steps):
        await work(me, i, pause)
    return steps


def pair_ids(prefix: str, pairs: int) -> list[tuple[str, str]]:
    """The workflow IDs of ``pairs`` pairs of partners."""
    return [(f"{prefix}-{i}a", f"{prefix}-{i}b") for i in range(pairs)]


def expected_messages(peer: str, rounds: int) -> list[str]:
    """What a partner of ``peer`` receives: each of its messages once, in order."""
    return [f"{peer}:{i}" for i in range(rounds)]


async def start_pairs(
    rt: aiodurable.Runtime, prefix: str, pairs: int, rounds: int, pause: float, *, go: bool = True
) -> dict[str, aiodurable.WorkflowHandle[list[str]]]:
    """Start the pairs (idempotent: a restarted driver attaches to those already recorded), then
    unless ``go`` is false send each its "go" (see :func:`send_go`)."""
    handles: dict[str, aiodurable.WorkflowHandle[list[str]]] = {}
    for a, b in pair_ids(prefix, pairs):
        for me, peer in ((a, b), (b, a)):
            with aiodurable.set_workflow_id(me):
                handles[me] = await rt.start_workflow(partner, peer, rounds, pause)
    if go:
        await send_go(rt, handles)
    return handles


async def send_go(rt: aiodurable.Runtime, workflow_ids: Iterable[str]) -> None:
    """Send each workflow its "go", with an idempotency key (a repeated driver sends it once)."""
    for wid in workflow_ids:
        await rt.send(wid, "go", "go", idempotency_key=f"go-{wid}")


# -- the checks after a fault --------------------------------------------------------------------


@dataclass
class Verdict:
    """What the database and the execution log say about a finished run."""

    workflows: int = 0
    steps: int = 0
    reruns: int = 0
    problems: list[str] = field(default_factory=list)


def read_log(log: Path) -> dict[tuple[str, int], list[str]]:
    """The tokens each step execution logged, by workflow ID and step index, in order."""
    executions: dict[tuple[str, int], list[str]] = defaultdict(list)
    if log.exists():
        for line in log.read_text().splitlines():
            wid, index, token = line.split()
            executions[(wid, int(index))].append(token)
    return executions


async def check_run(
    conn: asyncpg.Connection, schema: str, log: Path, *, rounds: int | None = None
) -> Verdict:
    """Every workflow ended SUCCESS (none PENDING); no message is left queued; each partner
    received each of its peer's messages exactly once, in order; and the recorded execution of
    every logged step is the last one logged (no completed step ran again)."""
    verdict = Verdict()
    rows = await conn.fetch(f"SELECT workflow_id, status, name FROM {schema}.workflows")
    verdict.workflows = len(rows)
    for r in rows:
        if r["status"] != "SUCCESS":
            verdict.problems.append(f"workflow {r['workflow_id']} is {r['status']}")
    left = await conn.fetchval(f"SELECT count(*) FROM {schema}.messages")
    if left:
        verdict.problems.append(f"{left} message(s) left queued")
    if rounds is not None:
        recvs = await conn.fetch(
            f"SELECT workflow_id, function_id, output FROM {schema}.steps"
            " WHERE name = 'aiodurable.recv' AND function_id > 1 ORDER BY workflow_id, function_id"
        )
        got: dict[str, list[str]] = defaultdict(list)
        for r in recvs:
            got[r["workflow_id"]].append(bytes(r["output"]).decode().strip('"'))
        for r in rows:
            wid = r["workflow_id"]
            if not r["name"].endswith(":partner"):
                continue
            peer = wid[:-1] + ("b" if wid.endswith("a") else "a")
            if got[wid] != expected_messages(peer, rounds):
                verdict.problems.append(f"{wid} received {got[wid]}")
    executions = read_log(log)
    journal = await conn.fetch(
        f"SELECT workflow_id, output FROM {schema}.steps WHERE name = 'work'"
        " ORDER BY workflow_id, function_id"
    )
    recorded: dict[str, list[str]] = defaultdict(list)
    for r in journal:
        recorded[r["workflow_id"]].append(bytes(r["output"]).decode().strip('"'))
    for wid, tokens in recorded.items():
        for index, token in enumerate(tokens):
            runs = executions.get((wid, index), [])
            verdict.steps += 1
            if not runs or runs[-1] != token:
                verdict.problems.append(f"step {wid}#{index}: recorded {token}, logged {runs}")
            verdict.reruns += max(len(runs) - 1, 0)
    return verdict


# -- watching the database -----------------------------------------------------------------------


async def poll(conn: asyncpg.Connection, sql: str, *, timeout: float = 30.0) -> object:
    """Read ``sql`` until it gives a truthy value (how a test watches work that happens in the
    database or in another process), at most ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout
    while True:
        value = await conn.fetchval(sql)
        if value:
            return value
        if loop.time() > give_up:
            raise AssertionError(f"{sql!r} gave nothing within {timeout} s")
        await asyncio.sleep(0.02)


async def terminate_backends(admin: asyncpg.Connection) -> int:
    """Terminate every aiodurable backend; how many there were."""
    return int(
        await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = 'aiodurable' AND pid <> pg_backend_pid()"
        )
    )


async def aiodurable_connections(admin: asyncpg.Connection) -> int:
    """How many connections aiodurable has open to the server."""
    return int(
        await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'aiodurable'"
        )
    )


def rss_kib(pid: int | str = "self") -> int:
    """The resident set size of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc status")


# -- a private server ----------------------------------------------------------------------------


class PrivatePostgres:
    """A PostgreSQL server of one test's own, which the test may stop and start again."""

    def __init__(self, base: Path) -> None:
        self.data_dir = base / "pg"
        self._server = EmbeddedPostgres(self.data_dir, settings={"fsync": "off"})
        self.url = ""

    @property
    def socket(self) -> Path:
        """The server's Unix socket."""
        return self.data_dir / ".s.PGSQL.5432"

    async def start(self) -> None:
        """Start the server (again) on its data folder."""
        self.url = await self._server.start()

    async def stop(self) -> None:
        """Stop the server (a fast shutdown: sessions are disconnected)."""
        await self._server.stop()
        self._server = EmbeddedPostgres(self.data_dir, settings={"fsync": "off"})

    async def crash(self) -> None:
        """Stop the server in immediate mode (SIGQUIT to the postmaster: no checkpoint, every
        session cut at once), as a crash or a container restart would."""
        pid = self._server.pid
        assert pid is not None, "the server was not started by this test"
        os.kill(pid, signal.SIGQUIT)
        await self._server.stop()  # reaps it (already exiting)
        self._server = EmbeddedPostgres(self.data_dir, settings={"fsync": "off"})

    async def connect(self) -> asyncpg.Connection:
        """An admin connection (not an 'aiodurable' one, so terminations spare it)."""
        return await asyncpg.connect(self.url)


def _scratch_folder() -> Path:
    base = Path(tempfile.mkdtemp(prefix="aiodurable-faults-"))
    base.chmod(0o755)
    return base


@asynccontextmanager
async def private_postgres() -> AsyncIterator[PrivatePostgres]:
    """A private server in a world-traversable temporary folder (the server runs as ``nobody``
    when the tests run as root), removed afterwards."""
    base = _scratch_folder()
    server = PrivatePostgres(base)
    try:
        await server.start()
        yield server
    finally:
        await server.stop()
        shutil.rmtree(base, ignore_errors=True)


# -- a TCP proxy that a test can cut -------------------------------------------------------------

Opener = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


class _Link:
    """One proxied connection: the client's side and the server's."""

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream = upstream
        self.muted = False  # the server's answers are dropped

    def abort(self) -> None:
        self.client.transport.abort()
        self.upstream.transport.abort()


class Proxy:
    """A TCP proxy on 127.0.0.1 that forwards each connection to ``open_upstream()``.

    ``reset()`` closes every proxied connection at once (as a restarted router or a dead peer
    would); ``blackhole()`` keeps the sockets open but stops relaying bytes, in both directions,
    until ``restore()`` (as dropped packets would); ``lose_answer_to(marker)`` lets the next
    request containing ``marker`` reach the server, drops the answer and then closes that
    connection (as a network failure just after a commit would)."""

    def __init__(self, open_upstream: Opener) -> None:
        self._open_upstream = open_upstream
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._marker: bytes | None = None
        self.answer_lost = asyncio.Event()
        self.port = 0

    @property
    def url(self) -> str:
        """The URL through the proxy."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    async def start(self) -> None:
        """Listen on an ephemeral loopback port."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await self._open_upstream()
        except OSError:
            writer.transport.abort()
            return
        link = _Link(writer, up_writer)
        self._links.add(link)
        pumps = [
            asyncio.create_task(self._pump(reader, link, upstream=True)),
            asyncio.create_task(self._pump(up_reader, link, upstream=False)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            self._tasks.difference_update(pumps)
            self._links.discard(link)
            link.abort()

    async def _pump(self, reader: asyncio.StreamReader, link: _Link, *, upstream: bool) -> None:
        writer = link.upstream if upstream else link.client
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                await self._flowing.wait()  # a blackhole holds the bytes here
                if upstream and self._marker is not None and self._marker in data:
                    self._marker = None
                    link.muted = True
                    loop = asyncio.get_running_loop()
                    loop.call_later(0.5, self._cut_muted, link)
                if link.muted and not upstream:
                    continue
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            return

    def _cut_muted(self, link: _Link) -> None:
        link.abort()
        self.answer_lost.set()

    def lose_answer_to(self, marker: bytes) -> None:
        """Drop the answer to the next request that contains ``marker``, then cut its
        connection; ``answer_lost`` is set once it is cut."""
        self.answer_lost.clear()
        self._marker = marker

    def reset(self) -> int:
        """Close every proxied connection now; how many there were."""
        links = list(self._links)
        for link in links:
            link.abort()
        return len(links)

    def blackhole(self) -> None:
        """Stop relaying bytes (connections stay open and new ones are accepted)."""
        self._flowing.clear()

    def restore(self) -> None:
        """Relay bytes again."""
        self._flowing.set()

    async def close(self) -> None:
        """Stop listening and close every connection."""
        self.restore()
        if self._server is not None:
            self._server.close()
        self.reset()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()


@asynccontextmanager
async def proxy_to(socket: Path) -> AsyncIterator[Proxy]:
    """A :class:`Proxy` to a server's Unix socket, closed afterwards."""

    async def open_upstream() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_unix_connection(str(socket))

    proxy = Proxy(open_upstream)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
