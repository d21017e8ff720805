"""The embedded PostgreSQL shared by several programs: real processes on one data folder, each a
Runtime with no database URL (tests/apps/shared_app.py)."""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from aiodurable._embedded import _url, _wait_exit
from aiodurable._keeper import POLL

from .proc import Child

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only"),
]

LINGER = 0.2
"""The keeper's linger in these tests (AIODURABLE_PG_LINGER)."""

UP_WITHIN = 10.0
"""The contract: a program started while the server stops is up within this many seconds."""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Folder:
    """One embedded data folder, and the programs started on it."""

    def __init__(self, base: Path) -> None:
        self.data = base / "pg"
        self.env = {
            "AIODURABLE_PG_DATA": str(self.data),
            "AIODURABLE_PG_LINGER": str(LINGER),
            "AIODURABLE_DATABASE_URL": "",  # none: the embedded server
            "AIODURABLE_APP_VERSION": "shared-test",
        }
        self.children: list[Child] = []

    def program(self, *args: str) -> Child:
        child = Child("shared_app.py", *args, env=self.env)
        self.children.append(child)
        return child

    def log(self) -> str:
        """The server's log, next to the data folder."""
        return Path(f"{self.data}.log").read_text()

    def server_pid(self) -> int:
        """The postmaster's process ID, from its pid file."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def keeper_pid(self) -> int:
        """The keeper's process ID, from the keeper file."""
        return int(Path(f"{self.data}.keeper").read_text().split()[0])

    def locked(self, suffix: str) -> bool:
        """Whether some process holds the lock file ``<data><suffix>``."""
        fd = os.open(f"{self.data}{suffix}", os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    async def cli(self, *args: str) -> tuple[int, str]:
        """Run ``aiodurable postgres ARGS`` on this folder; its exit status and output."""
        child = Child(
            "-m aiodurable._cli", "postgres", *args, "--data-dir", str(self.data), env=self.env
        )
        code = await child.wait()
        return code, "\n".join(child.lines)

    async def no_server_remains(self, server: int, keeper: int) -> None:
        """The server and its keeper exit within a deadline, leaving no pid file or lock."""
        assert await _wait_exit(server, UP_WITHIN), "the server outlived its last user"
        assert await _wait_exit(keeper, UP_WITHIN), "the keeper outlived its server"
        assert not (self.data / "postmaster.pid").exists()
        assert not self.locked(".keeper")
        assert not self.locked(".users")


def controlling_terminal(pid: int) -> int:
    """The device number of the process's controlling terminal; 0 for none."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[4])


def reachable_folder() -> Path:
    base = Path(tempfile.mkdtemp(prefix="aiodurable-shared-"))
    base.chmod(0o755)  # Made by this test, so loosening it is allowed.
    return base


@pytest.fixture
async def folder() -> AsyncIterator[Folder]:
    """A fresh data folder that every account can reach (the server runs as the dedicated
    account 'aiodurable' when the tests run as root); its programs, keeper and server are ended
    afterwards."""
    base = reachable_folder()
    shared = Folder(base)
    try:
        yield shared
    finally:
        for child in shared.children:
            if child.proc.poll() is None:
                await child.kill()
            else:
                await child.wait()
        if shared.locked(".keeper"):
            keeper = shared.keeper_pid()
            os.kill(keeper, signal.SIGTERM)
            await _wait_exit(keeper, 30)
        shutil.rmtree(base, ignore_errors=True)


async def run_workflow(program: Child, number: int) -> None:
    program.proc.send_signal(signal.SIGUSR1)
    assert await program.expect(f"RAN hello {number}", timeout=UP_WITHIN)


async def end(program: Child, how: str) -> None:
    if how == "kill":
        await program.kill()
    else:
        program.proc.send_signal(signal.SIGTERM)
        assert await program.wait() == 0


@pytest.mark.parametrize("how", ["exit", "kill"])
async def test_the_server_lives_while_any_program_uses_it(folder: Folder, how: str) -> None:
    """A opens, B opens, A exits (or is killed): B keeps working on the same server. Then B
    exits (or is killed) too, and soon no server, keeper or pid file remains."""
    a = folder.program()
    await a.expect("READY")
    server, keeper = folder.server_pid(), folder.keeper_pid()
    b = folder.program()
    await b.expect("READY")
    assert folder.server_pid() == server

    await end(a, how)
    await run_workflow(b, 1)
    # The keeper checks for users every POLL seconds: leave it time to stop the server
    # (wrongly) past its linger; there is no event for a stop that must not happen.
    await asyncio.sleep(LINGER + 2 * POLL)
    await run_workflow(b, 2)
    assert folder.server_pid() == server

    await end(b, how)
    await folder.no_server_remains(server, keeper)


@pytest.mark.parametrize("when", ["while A exits", "while the keeper stops the server"])
async def test_a_program_starting_while_the_server_stops_is_up_within_10_s(
    folder: Folder, when: str
) -> None:
    """B starts while A, the only user, exits, or while the keeper is stopping the server after
    A's exit: B is up within 10 s and keeps working after A is gone."""
    a = folder.program()
    await a.expect("READY")
    server = folder.server_pid()
    b = folder.program("wait")  # Python and aiodurable imported, runtime not yet opened
    await b.expect("WAITING")

    if when == "while A exits":
        b.proc.send_signal(signal.SIGUSR2)
        a.proc.send_signal(signal.SIGTERM)
    else:
        a.proc.send_signal(signal.SIGTERM)
        assert await a.wait() == 0
        # With A gone and B not yet started, only the keeper takes the start lock: it holds it
        # from the moment it decides to stop the server until the server has exited.
        deadline = time.monotonic() + UP_WITHIN
        while not folder.locked(".lock"):
            assert time.monotonic() < deadline, "the keeper never stopped the unused server"
            await asyncio.sleep(0.002)
        b.proc.send_signal(signal.SIGUSR2)
    started = time.monotonic()
    await b.expect("READY", timeout=UP_WITHIN)
    await run_workflow(b, 1)
    assert time.monotonic() - started < UP_WITHIN
    assert await a.wait() == 0
    if when != "while A exits":
        assert folder.server_pid() != server  # B started the server again
    await asyncio.sleep(LINGER + 2 * POLL)  # As above: a stop that must not happen has no event.
    await run_workflow(b, 2)

    keeper = folder.keeper_pid()
    server = folder.server_pid()
    await end(b, "exit")
    await folder.no_server_remains(server, keeper)


async def test_postgres_start_pins_the_server_until_postgres_stop(folder: Folder) -> None:
    """`aiodurable postgres start`, run while a program uses the server, keeps it up after that
    program exits; `aiodurable postgres stop` stops it."""
    a = folder.program()
    await a.expect("READY")
    server, keeper = folder.server_pid(), folder.keeper_pid()
    code, url = await folder.cli("start")
    assert (code, url) == (0, _url(folder.data))

    await end(a, "exit")
    await asyncio.sleep(LINGER + 2 * POLL)  # As above: a stop that must not happen has no event.
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("select pg_backend_pid() > 0")
    finally:
        await conn.close()
    assert folder.server_pid() == server

    assert (await folder.cli("stop"))[0] == 0
    await folder.no_server_remains(server, keeper)


async def test_the_keeper_keeps_nothing_of_the_program_that_started_it(folder: Folder) -> None:
    """The keeper runs in a session of its own with no terminal, reads /dev/null and writes to
    the server's log: Control + C in the program's terminal never reaches it, and the
    program's output closes when the program exits (Child.wait reads it to its end)."""
    a = folder.program()
    await a.expect("READY")
    keeper = folder.keeper_pid()
    assert os.getsid(keeper) not in {os.getsid(0), os.getsid(a.proc.pid)}
    assert controlling_terminal(keeper) == 0
    fds = [os.readlink(f"/proc/{keeper}/fd/{fd}") for fd in (0, 1, 2)]
    assert fds == ["/dev/null", *2 * [f"{folder.data}.log"]]
    await end(a, "exit")


async def test_killing_the_keeper_stops_the_server_and_the_next_program_restarts_it(
    folder: Folder,
) -> None:
    """kill -9 of the keeper takes its server down (the parent-death signal); a program that
    starts at that moment waits for the dying server to go and starts a new one."""
    a = folder.program()
    await a.expect("READY")
    server, keeper = folder.server_pid(), folder.keeper_pid()
    b = folder.program("wait")
    await b.expect("WAITING")
    os.kill(keeper, signal.SIGKILL)
    b.proc.send_signal(signal.SIGUSR2)
    await b.expect("READY", timeout=UP_WITHIN)
    assert await _wait_exit(server, UP_WITHIN)
    assert "received fast shutdown request" in folder.log()
    assert folder.server_pid() != server
    await run_workflow(b, 1)
