"""A real PgBouncer (Debian's package) in transaction pooling mode, started by the tests.

The session's server admits its owner alone, over a Unix socket (peer authentication), and
PgBouncer, which refuses to run as root, cannot be that owner; so :func:`pgbouncer` starts a
private PostgreSQL that also listens on loopback TCP with a password, puts a PgBouncer in front
of it, and hands out the two URLs a managed service lists: the pooled one and the direct one.
A small ``default_pool_size`` makes clients really share server connections between
transactions.

Loaded as a pytest plugin (``-p tests.pgbouncer``), the module makes the tests' own
connections (``asyncpg.connect``) prepare unnamed statements only, as any client behind a
transaction pooler must: see :func:`pytest_configure`.
"""

from __future__ import annotations

import asyncio
import functools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import asyncpg
import pytest

from aiodurable._embedded import EmbeddedPostgres, _wait_child

__all__ = ["Bouncer", "pgbouncer", "pytest_configure"]

_PASSWORD = "bouncer-test"
_Process = subprocess.Popen[bytes]
_INSTALL = (
    "PgBouncer is not installed, and the PgBouncer tests need it: install Debian's package"
    " (sudo apt-get install pgbouncer), as .ci/run does"
)


@dataclass(frozen=True, slots=True)
class Bouncer:
    """A running PgBouncer and the server behind it."""

    pooled_url: str
    """Through PgBouncer, in transaction pooling mode."""
    direct_url: str
    """Straight to the server, over TCP with a password."""
    pool_size: int
    """PgBouncer's ``default_pool_size``: the server connections all its clients share."""
    log: Path
    """PgBouncer's log."""

    def logins(self) -> int:
        """How many clients have logged in through PgBouncer so far."""
        return self.log.read_text(errors="replace").count(" login attempt: ")


def _binary() -> str:
    """The pgbouncer program (Debian installs it in /usr/sbin, often off a user's PATH)."""
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/bin")
    if found is None:
        pytest.fail(_INSTALL, pytrace=False)
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scratch_folder() -> Path:
    """A world-traversable temporary folder (the server's account, when root, must reach it)."""
    base = Path(tempfile.mkdtemp(prefix="aiodurable-pgbouncer-"))
    base.chmod(0o755)
    return base


def _spawn(binary: str, base: Path, server_port: int, port: int, pool_size: int) -> _Process:
    """Write PgBouncer's configuration and password file into a folder of its own (only its
    account may read it) and start it, logging to ``base/pgbouncer.log``."""
    folder = base / "bouncer"
    folder.mkdir(mode=0o700)
    users = folder / "userlist.txt"
    users.write_text(f'"postgres" "{_PASSWORD}"\n')
    ini = folder / "pgbouncer.ini"
    ini.write_text(
        "[databases]\n"
        f"postgres = host=127.0.0.1 port={server_port} dbname=postgres\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {port}\n"
        "unix_socket_dir =\n"
        "auth_type = scram-sha-256\n"
        f"auth_file = {users}\n"
        "pool_mode = transaction\n"
        f"default_pool_size = {pool_size}\n"
        "min_pool_size = 0\n"
        "reserve_pool_size = 0\n"
        "max_client_conn = 2000\n"
    )
    command = [binary, str(ini)]
    if os.geteuid() == 0:  # PgBouncer refuses to run as root: it runs as nobody
        nobody = pwd.getpwnam("nobody")
        for path in (folder, users, ini):
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
        command = [binary, "-u", "nobody", str(ini)]
    log = base / "pgbouncer.log"
    with log.open("wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)


def _fail(proc: _Process, base: Path, why: str) -> NoReturn:
    log = (base / "pgbouncer.log").read_text(errors="replace")
    pytest.fail(f"pgbouncer {why} ({proc.args!r}); its log:\n{log}", pytrace=False)


async def _wait_for(proc: _Process, url: str, base: Path) -> None:
    """Return once PgBouncer answers a query at ``url``; fail, with its log, if it exits or
    stays silent for 15 s."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + 15.0
    while True:
        if proc.poll() is not None:
            _fail(proc, base, f"exited ({proc.returncode})")
        try:
            conn = await asyncpg.connect(url, timeout=2, statement_cache_size=0)
        except (OSError, asyncpg.PostgresError):
            if loop.time() > give_up:
                _fail(proc, base, "did not answer within 15 s")
            await asyncio.sleep(0.05)  # (polling: PgBouncer offers no readiness signal)
            continue
        try:
            await conn.fetchval("SELECT 1")
        finally:
            await conn.close()
        return


@asynccontextmanager
async def pgbouncer(*, pool_size: int = 5) -> AsyncIterator[Bouncer]:
    """A private PostgreSQL behind a PgBouncer in transaction mode with ``pool_size`` server
    connections, both stopped and removed afterwards."""
    binary = _binary()
    base = _scratch_folder()
    server_port, port = _free_port(), _free_port()
    server = EmbeddedPostgres(
        base / "pg",
        settings={"fsync": "off", "full_page_writes": "off", "max_connections": "200"},
        tcp_host="127.0.0.1",
        port=server_port,
    )
    proc: _Process | None = None
    try:
        admin = await asyncpg.connect(await server.start())
        try:
            await admin.execute(f"ALTER ROLE postgres PASSWORD '{_PASSWORD}'")
        finally:
            await admin.close()
        proc = _spawn(binary, base, server_port, port, pool_size)
        pooled = f"postgresql://postgres:{_PASSWORD}@127.0.0.1:{port}/postgres"
        await _wait_for(proc, pooled, base)
        yield Bouncer(
            pooled_url=pooled,
            direct_url=f"postgresql://postgres:{_PASSWORD}@127.0.0.1:{server_port}/postgres",
            pool_size=pool_size,
            log=base / "pgbouncer.log",
        )
    finally:
        if proc is not None:
            proc.terminate()
            if await _wait_child(proc, 10) is None:
                proc.kill()
                await _wait_child(proc)
        await server.stop()
        shutil.rmtree(base, ignore_errors=True)


def pytest_configure(config: pytest.Config) -> None:
    """As a plugin (``-p tests.pgbouncer``), in a pytest whose ``AIODURABLE_TEST_DATABASE_URL``
    goes through PgBouncer: make the tests' own ``asyncpg.connect`` prepare unnamed statements
    (a named one lives on one server connection, which the next transaction may not get)."""
    connect = asyncpg.connect
    asyncpg.connect = functools.partial(connect, statement_cache_size=0)  # type: ignore[assignment]  # (same call, one default changed)
