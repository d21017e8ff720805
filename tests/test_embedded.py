"""Tests of the embedded PostgreSQL launcher, against real servers in throwaway data folders."""

from __future__ import annotations

import asyncio
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from aiodurable import _embedded, _keeper
from aiodurable._embedded import (
    EmbeddedPostgres,
    embedded_server,
    find_pg_bin,
    running_url,
    stop_server,
)
from aiodurable._exceptions import EmbeddedPostgresError

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

IS_ROOT = os.geteuid() == 0
root_only = pytest.mark.skipif(not IS_ROOT, reason="tests running the server as another account")


LINGER = 0.2
"""The keeper's linger in these tests (AIODURABLE_PG_LINGER)."""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def short_linger(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server with no user stops soon after (here and in child processes)."""
    monkeypatch.setenv("AIODURABLE_PG_LINGER", str(LINGER))


def wait_gone(pid: int, timeout: float) -> bool:
    """Whether process ``pid`` exits within ``timeout`` seconds (it need not be our child)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        return bool(poller.poll(timeout * 1000))
    finally:
        os.close(pidfd)


def postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().split()[0])


def process_uids(pid: int) -> list[int]:
    status = Path(f"/proc/{pid}/status").read_text()
    return [
        int(u) for u in next(x for x in status.splitlines() if x.startswith("Uid:")).split()[1:]
    ]


def process_exe(pid: int) -> Path:
    return Path(f"/proc/{pid}/exe").resolve()


@pytest.fixture
def base() -> Iterator[Path]:
    """A folder every account can traverse (pytest's tmp_path is private to root), removed after
    stopping any server left running in it."""
    folder = Path(tempfile.mkdtemp(prefix="aiodurable-test-"))
    folder.chmod(0o755)  # Made by this test, so loosening it is allowed.
    yield folder
    for pidfile in folder.glob("**/postmaster.pid"):
        with open(pidfile) as f:
            pid = int(f.readline())
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            continue
        wait_gone(pid, 10)
    shutil.rmtree(folder, ignore_errors=True)


async def fetch(url: str, query: str) -> object:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(query)
    finally:
        await conn.close()


@pytest.mark.anyio
async def test_cold_start_serves_postgresql_18(base: Path) -> None:
    """A cold start initialises the folder and serves PostgreSQL 18 on the socket in the URL."""
    data = base / "data"
    async with EmbeddedPostgres(data) as url:
        assert url == f"postgresql://postgres@/postgres?host={data}&port=5432"
        version = await fetch(url, "select version()")
        assert isinstance(version, str)
        assert version.startswith("PostgreSQL 18")
        assert await fetch(url, "show listen_addresses") == ""
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert not (data / "postmaster.pid").exists()


@pytest.mark.anyio
async def test_warm_restart_keeps_the_data(base: Path) -> None:
    """A second run on the same folder reuses it, with the rows written by the first."""
    data = base / "data"
    async with EmbeddedPostgres(data) as url:
        await fetch(url, "create table kept as select 42 as x")
    async with EmbeddedPostgres(data, settings={"work_mem": "8MB"}) as url:
        assert await fetch(url, "select x from kept") == 42
        assert await fetch(url, "show work_mem") == "8MB"


@pytest.mark.anyio
async def test_server_started_elsewhere_is_reused_not_stopped(base: Path) -> None:
    """A server already running on the folder is reused and left running by stop()."""
    data = base / "data"
    async with EmbeddedPostgres(data) as url:
        second = EmbeddedPostgres(data)
        assert await second.start() == url
        assert not second.owned
        await second.stop()
        assert await fetch(url, "select 1") == 1


CHILD = """
import asyncio, sys
from aiodurable._embedded import EmbeddedPostgres

async def main():
    server = EmbeddedPostgres(sys.argv[1])
    await server.start()
    print(server.pid, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def test_sigkill_of_the_app_stops_the_server(base: Path) -> None:
    """After kill -9 of its only user, the server shuts down cleanly by itself (its keeper
    stops it after the linger)."""
    data = base / "data"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(data)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], 20)
        assert ready, "the child did not start the server"
        pid = int(child.stdout.readline())
        assert running_url(data) is not None
        child.kill()
        child.wait()
        assert wait_gone(pid, 15), "the server outlived the app"
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    log = (base / "data.log").read_text()
    assert "received fast shutdown request" in log
    assert running_url(data) is None

    async def restart() -> object:
        async with EmbeddedPostgres(data) as url:
            return await fetch(url, "select 1")

    assert asyncio.run(restart()) == 1


@root_only
@pytest.mark.anyio
async def test_as_root_runs_unprivileged_and_touches_no_parent(base: Path) -> None:
    """As root, the server runs as an unprivileged account and no parent folder's mode changes."""
    bin_dir = find_pg_bin()
    watched = [*bin_dir.resolve().parents, base]
    modes = {p: p.stat().st_mode for p in watched}
    data = base / "data"
    async with EmbeddedPostgres(data) as url:
        assert await fetch(url, "select 1") == 1
        assert 0 not in process_uids(postmaster_pid(data))
    assert {p: p.stat().st_mode for p in watched} == modes


@root_only
@pytest.mark.anyio
async def test_as_root_an_unreachable_data_folder_is_refused(base: Path) -> None:
    """As root, a data folder under a private folder is refused, and the folder is not opened."""
    private = base / "private"
    private.mkdir(mode=0o700)
    with pytest.raises(EmbeddedPostgresError, match="cannot reach"):
        await EmbeddedPostgres(private / "data").start()
    assert stat.S_IMODE(private.stat().st_mode) == 0o700


@root_only
def test_parent_death_signal_survives_the_user_switch() -> None:
    """CPython switches user before preexec_fn, so the parent-death signal set there is kept;
    setting it before a user switch would be lost, as the kernel clears it on setuid."""
    account = asyncio.run(_embedded._server_account())
    assert account is not None
    python = next(
        (
            exe
            for exe in (Path(sys.executable).resolve(), Path("/usr/bin/python3").resolve())
            if exe.exists()
            and _embedded._can_reach(exe, account)
            and _embedded._permits(exe, account, 5)
        ),
        None,
    )
    if python is None:
        pytest.skip(f"no Python interpreter that {account.name!r} can run")
    probe = (
        "import ctypes, os, sys\n"
        "libc = ctypes.CDLL(None)\n"
        "sig = ctypes.c_int()\n"
        "if sys.argv[1] == 'switch':\n"
        "    libc.prctl(1, 2, 0, 0, 0)\n"
        f"    os.setuid({account.uid})\n"
        "libc.prctl(2, ctypes.byref(sig), 0, 0, 0)\n"
        "print(os.getuid(), sig.value)\n"
    )
    read, write = os.pipe()
    with os.fdopen(read) as out:
        try:
            proc = _embedded._spawn(
                [str(python), "-I", "-c", probe, "keep"],
                account=account,
                home=Path("/"),
                stdout=write,
                preexec=_keeper.parent_death_hook(),
            )
        finally:
            os.close(write)
        assert out.read().split() == [str(account.uid), str(int(signal.SIGINT))]
    assert proc.wait() == 0
    after_setuid = subprocess.run(
        [str(python), "-I", "-c", probe, "switch"], capture_output=True, text=True, check=True
    )
    assert after_setuid.stdout.split() == [str(account.uid), "0"]


@root_only
@pytest.mark.anyio
async def test_private_binaries_are_copied_not_opened_up(
    base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Binaries under a folder the account cannot enter are run from a readable copy."""
    private = base / "private"
    private.mkdir(mode=0o700)
    install = find_pg_bin().resolve().parent
    copy = private / install.parent.name / install.name
    for part in ("bin", "lib", "share"):
        shutil.copytree(install / part, copy / part, symlinks=True)
    # A wheel repaired by auditwheel finds its vendored libraries through $ORIGIN/../../../.
    vendored = install.parent.with_name(install.parent.name + ".libs")
    if vendored.is_dir():
        shutil.copytree(vendored, private / vendored.name, symlinks=True)
    monkeypatch.setenv("AIODURABLE_PG_BIN", str(copy / "bin"))
    monkeypatch.setattr(_embedded, "_ROOT_BASE", base / "shared")
    data = base / "data"
    async with EmbeddedPostgres(data) as url:
        assert await fetch(url, "select 1") == 1
        copied = process_exe(postmaster_pid(data)).relative_to(base / "shared")
        assert copied.parts[0].startswith("pg-")
    assert stat.S_IMODE(private.stat().st_mode) == 0o700


@pytest.mark.anyio
async def test_empty_pg_bin_names_the_variable(base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """AIODURABLE_PG_BIN naming a folder without binaries fails with a message naming it."""
    monkeypatch.setenv("AIODURABLE_PG_BIN", str(base))
    with pytest.raises(EmbeddedPostgresError, match="AIODURABLE_PG_BIN"):
        await EmbeddedPostgres(base / "data").start()


@pytest.mark.anyio
async def test_embedded_server_is_shared_within_a_process(base: Path) -> None:
    """Two embedded_server() users in one process share one server, which stays up while either
    remains; its keeper stops it the linger after the last one leaves."""
    data = base / "data"
    async with embedded_server(data) as first:
        pid = postmaster_pid(data)
        async with embedded_server(data) as second:
            assert second == first
            assert postmaster_pid(data) == pid
        # No event marks a stop that must not happen: leave the keeper two checks past the
        # linger to stop the server wrongly.
        await asyncio.sleep(LINGER + 2 * _keeper.POLL)
        assert await fetch(first, "select 1") == 1
    assert await _embedded._wait_exit(pid, 10)
    assert running_url(data) is None
    log = (base / "data.log").read_text()
    assert f"no program has used the server for {LINGER:g} s: stopping it" in log


@pytest.mark.anyio
async def test_a_bad_linger_names_the_variable(base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """AIODURABLE_PG_LINGER that is not a number of seconds fails with a message naming it."""
    monkeypatch.setenv("AIODURABLE_PG_LINGER", "soon")
    with pytest.raises(EmbeddedPostgresError, match="AIODURABLE_PG_LINGER='soon'"):
        await EmbeddedPostgres(base / "data").start()
    assert not (base / "data").exists()


@pytest.mark.anyio
async def test_start_and_stop_start_no_thread(base: Path) -> None:
    """Starting (with initdb) and stopping the server starts no thread."""
    before = threading.active_count()
    server = EmbeddedPostgres(base / "data")
    await server.start()
    during = threading.active_count()
    await server.stop()
    assert (before, during, threading.active_count()) == (before, before, before)


@pytest.mark.anyio
async def test_start_failure_shows_the_log(base: Path) -> None:
    """A server that cannot start raises an error holding the end of its log."""
    server = EmbeddedPostgres(base / "data", settings={"no_such_setting": "1"})
    with pytest.raises(EmbeddedPostgresError, match="no_such_setting"):
        await server.start()
    assert not (base / "data" / "postmaster.pid").exists()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aiodurable._cli", *args], capture_output=True, text=True
    )


def test_cli_start_url_stop(base: Path) -> None:
    """`aiodurable postgres start|url|stop` manage a server that outlives the start command."""
    data = str(base / "data")
    started = run_cli("postgres", "start", "--data-dir", data)
    assert started.returncode == 0, started.stderr
    url = started.stdout.strip()
    assert asyncio.run(fetch(url, "select 1")) == 1
    shown = run_cli("postgres", "url", "--data-dir", data)
    assert (shown.returncode, shown.stdout.strip()) == (0, url)
    assert run_cli("postgres", "start", "--data-dir", data).stdout.strip() == url
    pid = postmaster_pid(base / "data")
    stopped = run_cli("postgres", "stop", "--data-dir", data)
    assert stopped.returncode == 0, stopped.stderr
    assert wait_gone(pid, 0)
    missing = run_cli("postgres", "url", "--data-dir", data)
    assert missing.returncode == 1
    assert "aiodurable postgres start" in missing.stderr
    assert run_cli("postgres", "stop", "--data-dir", data).returncode == 0
    assert run_cli("postgres").returncode == 2


@pytest.mark.anyio
async def test_stop_server_reports_whether_one_ran(base: Path) -> None:
    """stop_server() stops a server this process did not start and says if there was one."""
    data = base / "data"
    assert not await stop_server(data)
    await EmbeddedPostgres(data).start(detached=True)
    assert await stop_server(data)
    assert running_url(data) is None
