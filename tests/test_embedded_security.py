"""The embedded PostgreSQL against hostile neighbours: the findings H1, M1, M2, L6, L7 and L10 of
the December 2026 security review (../shared/reviews/security-2026-12.md), each against a real
server, with a real second OS account where the finding needs one.

As root (CI), a session fixture creates a second account with useradd and removes it afterwards,
and the server runs as the dedicated account 'aiodurable'. Not as root, no second account can be
made: each finding's test runs what one account can show (a link planted by that same account, a
socket outside the data folder, a process of the same account in the pid file, a lock file it
cannot open), and the tests that need a second account or root's ownership changes (the
dedicated account, M2's hand-over) are skipped with that reason.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import secrets
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from aiodurable import _embedded
from aiodurable._embedded import EmbeddedPostgres, find_pg_bin, running_url, stop_server
from aiodurable._exceptions import EmbeddedPostgresError

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only"),
]

IS_ROOT = os.geteuid() == 0
root_only = pytest.mark.skipif(
    not IS_ROOT,
    reason="needs root: only root can create a second account or run the server as another one",
)
SAFE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def short_linger(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server with no user stops soon after; no AIODURABLE_PG_USER from the environment."""
    monkeypatch.setenv("AIODURABLE_PG_LINGER", "0.2")
    monkeypatch.delenv("AIODURABLE_PG_USER", raising=False)


Account = _embedded._Account


def _useradd(name: str) -> Account:
    subprocess.run(
        [
            *("useradd", "--system", "--user-group", "--no-create-home"),
            *("--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name),
        ],
        check=True,
        capture_output=True,
        env={"PATH": SAFE_PATH},
    )
    entry = pwd.getpwnam(name)
    return Account(name, entry.pw_uid, entry.pw_gid)


def _userdel(name: str) -> None:
    subprocess.run(["userdel", name], check=False, capture_output=True, env={"PATH": SAFE_PATH})


@pytest.fixture(scope="session")
def other() -> Iterator[Account | None]:
    """A second OS account of this session (root only; None otherwise), removed afterwards."""
    if not IS_ROOT:
        yield None
        return
    account = _useradd(f"aiodt{secrets.token_hex(4)}")
    try:
        yield account
    finally:
        _userdel(account.name)


def me() -> Account:
    entry = pwd.getpwuid(os.geteuid())
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid)


async def server_account() -> Account:
    """The account the server runs as: the dedicated one as root, else this process's."""
    return await _embedded._server_account() or me()


def _switch(account: Account) -> bool:
    """Whether a child must change account (with no supplementary groups) to run as
    ``account``."""
    return IS_ROOT and account.uid != os.geteuid()


def run_as(
    account: Account, *argv: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command as ``account``, as another account would."""
    return subprocess.run(
        list(argv),
        input=stdin,
        capture_output=True,
        text=True,
        cwd="/",
        env={"PATH": SAFE_PATH, "LC_ALL": "C"},
        user=account.uid if _switch(account) else None,
        group=account.gid if _switch(account) else None,
        extra_groups=[] if _switch(account) else None,
    )


def psql_as(account: Account, conninfo: str) -> subprocess.CompletedProcess[str]:
    """``psql -c 'select current_user'`` run as ``account``, with no password to give."""
    bin_dir = find_pg_bin()
    if IS_ROOT:
        bin_dir = _embedded._readable_install(bin_dir, account)
    return subprocess.run(
        [str(bin_dir / "psql"), "-w", "-X", "-At", "-d", conninfo, "-c", "select current_user"],
        capture_output=True,
        text=True,
        cwd="/",
        env={"PATH": SAFE_PATH, "LC_ALL": "C", "HOME": "/nonexistent"},  # No ~/.pgpass.
        user=account.uid if _switch(account) else None,
        group=account.gid if _switch(account) else None,
        extra_groups=[] if _switch(account) else None,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().split()[0])


def process_uid(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(x for x in status.splitlines() if x.startswith("Uid:")).split()[1])


def snapshot(folder: Path) -> dict[str, tuple[int, int, int]]:
    """Owner, group and mode of a folder and of everything in it."""
    entries = [folder, *folder.rglob("*")]
    return {str(p): (s.st_uid, s.st_gid, s.st_mode) for p in entries if (s := p.lstat())}


async def fetch(url: str, query: str) -> object:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(query)
    finally:
        await conn.close()


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


def _stop_leftovers(folder: Path) -> None:
    """End the keepers (and so the servers) a failed test left in ``folder``."""
    for keeper_file in folder.glob("**/*.keeper"):
        fd = os.open(keeper_file, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            continue  # No keeper holds it.
        except BlockingIOError:
            pid = int(os.pread(fd, 64, 0).split()[0])
        finally:
            os.close(fd)
        os.kill(pid, signal.SIGTERM)
        wait_gone(pid, 30)


@pytest.fixture
def base() -> Iterator[Path]:
    """A folder every account can traverse (not pytest's tmp_path, private to root), removed
    after ending any server left running in it."""
    folder = Path(tempfile.mkdtemp(prefix="aiodurable-security-"))
    folder.chmod(0o755)  # Made by this test, so loosening it is allowed.
    try:
        yield folder
    finally:
        _stop_leftovers(folder)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def shared(base: Path) -> Path:
    """A folder every account may write to, sticky like /tmp."""
    folder = base / "shared"
    folder.mkdir()
    folder.chmod(0o1777)
    return folder


# --- H1: root never writes through a link that the server's account planted --------------------


async def test_h1_the_log_is_never_written_through_a_link_in_the_data_folder(base: Path) -> None:
    """H1: the server's account (any SQL superuser can act as it, with COPY ... TO PROGRAM)
    replaces the log of older versions, aiodurable-server.log in the data folder, with a link to
    a file only the starter may write, then starts the server again and writes attacker-chosen
    text to its log: nothing is written through the link; the log lives next to the data folder,
    a plain 0600 file of the starter, where the server's account cannot put a link."""
    data = base / "data"
    target = base / "root-only"
    target.write_text("ROOT-ONLY FILE\n")
    target.chmod(0o600)
    async with EmbeddedPostgres(data):
        pass
    account = await server_account()
    # -f: that account may remove any entry of its folder, the log of an older version included.
    planted = run_as(account, "ln", "-sf", str(target), str(data / "aiodurable-server.log"))
    assert planted.returncode == 0, planted.stderr
    async with EmbeddedPostgres(data) as url:
        with pytest.raises(asyncpg.PostgresError):
            await asyncpg.connect(url, user="x\n* * * * * root touch /tmp/INJECTED\n")
    assert target.read_text() == "ROOT-ONLY FILE\n"
    log = base / "data.log"
    st = log.lstat()
    assert (stat.S_ISREG(st.st_mode), st.st_uid, stat.S_IMODE(st.st_mode)) == (
        True,
        os.geteuid(),
        0o600,
    )
    assert "INJECTED" in log.read_text()  # The attempt went to the real log.
    if IS_ROOT:
        refused = run_as(account, "ln", "-sf", str(target), str(log))
        assert refused.returncode != 0
        assert "Permission denied" in refused.stderr


async def test_h1_a_link_where_the_log_goes_is_refused(
    shared: Path, base: Path, other: Account | None
) -> None:
    """In a folder every account may write to (sticky, like /tmp), another account (not as
    root: this one) plants <data>.log as a link to a file of the starter: start() refuses it,
    naming the file, and nothing is written through it."""
    target = base / "mine"
    target.write_text("MINE\n")
    target.chmod(0o644)
    planted = run_as(other or me(), "ln", "-s", str(target), str(shared / "data.log"))
    assert planted.returncode == 0, planted.stderr
    with pytest.raises(EmbeddedPostgresError, match=r"data\.log is a symbolic link"):
        await EmbeddedPostgres(shared / "data").start()
    assert target.read_text() == "MINE\n"


# --- L10: a dedicated account, and only the owner connects -------------------------------------


@root_only
async def test_l10_as_root_the_server_runs_as_a_dedicated_account(
    base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """L10: as root the server runs as the dedicated system account 'aiodurable', which cannot
    log in, never as the shared 'nobody'; AIODURABLE_PG_USER naming 'nobody' or root is refused
    with an error naming the variable, before any folder is made."""
    data = base / "data"
    async with EmbeddedPostgres(data) as url:
        assert await fetch(url, "select 1") == 1
        entry = pwd.getpwuid(process_uid(postmaster_pid(data)))
        assert entry.pw_name == "aiodurable"
        assert entry.pw_shell.endswith(("/nologin", "/false"))
        assert data.stat().st_uid == entry.pw_uid
    for name in ("nobody", "root"):
        monkeypatch.setenv("AIODURABLE_PG_USER", name)
        with pytest.raises(EmbeddedPostgresError, match=f"AIODURABLE_PG_USER='{name}'"):
            await EmbeddedPostgres(base / "refused").start()
        assert not (base / "refused").exists()


@root_only
async def test_l10_the_dedicated_account_is_created_on_first_use(
    base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no such account yet, the first start as root creates it: a system account with its
    own group, no home and no login shell; the server runs as it."""
    name = f"aiodt{secrets.token_hex(4)}"
    monkeypatch.setattr(_embedded, "_DEFAULT_ACCOUNT", name)
    try:
        data = base / "data"
        async with EmbeddedPostgres(data) as url:
            assert await fetch(url, "select 1") == 1
            entry = pwd.getpwnam(name)
            assert process_uid(postmaster_pid(data)) == entry.pw_uid
        assert entry.pw_uid < 1000
        assert (entry.pw_dir, entry.pw_shell) == ("/nonexistent", "/usr/sbin/nologin")
    finally:
        _userdel(name)


async def test_l10_only_the_starting_account_may_connect(base: Path, other: Account | None) -> None:
    """Only the account that started the server (the user, or root) may connect, as any role:
    the server's own account is refused over the socket (peer authentication, not trust), another
    account cannot reach the socket, nor 'nobody', and TCP asks for a password, of which none is
    set. A data folder whose pg_hba.conf says trust, as older versions wrote it, is protected
    the same."""
    data = base / "data"
    port = free_port()
    async with EmbeddedPostgres(data, port=port) as url:
        await fetch(url, "create role app login")
    (data / "pg_hba.conf").write_text("local all all trust\nhost all all all trust\n")
    async with EmbeddedPostgres(data, port=port, tcp_host="127.0.0.1") as url:
        assert await fetch(url, "select current_user") == "postgres"
        assert await fetch(url.replace("postgres@", "app@"), "select current_user") == "app"
        socket_info = f"host={data} port={port} user=postgres dbname=postgres"
        tcp_info = f"host=127.0.0.1 port={port} user=postgres dbname=postgres"

        by_tcp = psql_as(me(), tcp_info)
        assert by_tcp.returncode != 0
        assert "no password supplied" in by_tcp.stderr
        if IS_ROOT:
            assert other is not None
            server = await server_account()
            as_server = psql_as(server, socket_info)
            assert as_server.returncode != 0
            assert "Peer authentication failed" in as_server.stderr
            nobody = pwd.getpwnam("nobody")
            for stranger in (other, Account("nobody", nobody.pw_uid, nobody.pw_gid)):
                by_socket = psql_as(stranger, socket_info)
                assert by_socket.returncode != 0
                assert "Permission denied" in by_socket.stderr
                assert "no password supplied" in psql_as(stranger, tcp_info).stderr


# --- M1: a folder, pid file or socket of someone else is never used ----------------------------


@root_only
async def test_m1_a_server_named_in_another_accounts_folder_is_refused(
    shared: Path, other: Account | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """M1: another account runs a server of its own, makes the folder where the app's data folder
    is expected (in a folder every account may write to) and copies its postmaster.pid into it:
    the app refuses that folder, naming its owner, instead of connecting to that account's
    server; `postgres url` refuses it too, and the folder is left as it was."""
    assert other is not None
    monkeypatch.setenv("AIODURABLE_PG_USER", other.name)
    attacker = EmbeddedPostgres(shared / "atk")
    await attacker.start()
    monkeypatch.delenv("AIODURABLE_PG_USER")
    try:
        victim = shared / "app"
        copied = run_as(
            other,
            "sh",
            "-c",
            f"mkdir -m 755 {victim} && cp {shared / 'atk' / 'postmaster.pid'} {victim}/ "
            f"&& chmod 644 {victim}/postmaster.pid",
        )
        assert copied.returncode == 0, copied.stderr
        before = snapshot(victim)
        with pytest.raises(EmbeddedPostgresError, match=f"belongs to '{other.name}'"):
            await EmbeddedPostgres(victim).start()
        with pytest.raises(EmbeddedPostgresError, match=f"belongs to '{other.name}'"):
            running_url(victim)
        assert snapshot(victim) == before
    finally:
        await attacker.stop()


async def test_m1_a_pid_file_naming_another_server_or_an_outside_socket_is_refused(
    base: Path,
) -> None:
    """M1: a postmaster.pid copied from another server's folder names a process that is not this
    folder's postmaster: no server is found there (it was connected to before). A server whose
    pid file names a socket outside its data folder, where another account could listen, is
    refused, by start() and running_url() alike."""
    account = await server_account()
    async with EmbeddedPostgres(base / "a") as url_a:
        copy = base / "b"
        copy.mkdir(mode=0o700)
        shutil.copy(base / "a" / "postmaster.pid", copy / "postmaster.pid")
        for path in (copy, copy / "postmaster.pid"):
            os.chown(path, account.uid, account.gid)
        assert running_url(copy) is None
        assert running_url(base / "a") == url_a

    sockets = base / "sockets"
    sockets.mkdir()
    sockets.chmod(0o1777)
    data = base / "a"
    elsewhere = EmbeddedPostgres(data, settings={"unix_socket_directories": f"{sockets},{data}"})
    with pytest.raises(EmbeddedPostgresError, match="outside its data folder"):
        await elsewhere.start()
    assert running_url(data) is None  # The refused server was stopped at once.


# --- M2: as root, nothing is handed over but an empty folder or an older data folder -----------


@root_only
async def test_m2_an_existing_folder_is_never_handed_to_the_server_account(base: Path) -> None:
    """M2: as root, an existing non-empty folder that is not a PostgreSQL data folder, or a link
    to it, given as the data folder is refused with an error naming it, before anything in it
    changes (owner, group, mode); an empty folder of root's own is handed over and used."""
    existing = base / "existing"
    (existing / "sub").mkdir(parents=True)
    (existing / "file.txt").write_text("important\n")
    existing.chmod(0o755)
    before = snapshot(existing)
    with pytest.raises(EmbeddedPostgresError, match=f"{existing} belongs to 'root'"):
        await EmbeddedPostgres(existing).start()
    link = base / "link"
    link.symlink_to(existing)
    with pytest.raises(EmbeddedPostgresError, match="is a symbolic link"):
        await EmbeddedPostgres(link).start()
    assert snapshot(existing) == before

    empty = base / "empty"
    empty.mkdir(mode=0o755)
    async with EmbeddedPostgres(empty) as url:
        assert await fetch(url, "select 1") == 1
    account = await server_account()
    st = empty.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (account.uid, account.gid, 0o700)


@root_only
async def test_m2_a_data_folder_an_older_version_gave_to_nobody_is_handed_over(
    base: Path,
) -> None:
    """A data folder that an older aiodurable made as root (owned by 'nobody', trust in its
    pg_hba.conf) is handed to the dedicated account at the next start, entry by entry: a link
    'nobody' planted in it is never followed, and what it points to keeps its owner."""
    entry = pwd.getpwnam("nobody")
    nobody = Account("nobody", entry.pw_uid, entry.pw_gid)
    data = base / "data"
    data.mkdir(mode=0o700)
    os.chown(data, nobody.uid, nobody.gid)
    bin_dir = _embedded._readable_install(find_pg_bin(), nobody)
    initdb = run_as(
        nobody,
        str(bin_dir / "initdb"),
        "-D",
        str(data),
        "--auth=trust",
        "-U",
        "postgres",
        "-E",
        "UTF8",
        "--locale=C",
    )
    assert initdb.returncode == 0, initdb.stderr
    target = base / "root-file"
    target.write_text("root's\n")
    target.chmod(0o600)
    assert run_as(nobody, "ln", "-s", str(target), str(data / "planted")).returncode == 0

    async with EmbeddedPostgres(data) as url:
        assert await fetch(url, "select 1") == 1
        account = await server_account()
        assert pwd.getpwuid(process_uid(postmaster_pid(data))).pw_name == "aiodurable"
    owners = {p.lstat().st_uid for p in [data, *data.rglob("*")] if not p.is_symlink()}
    assert owners == {account.uid}
    assert (data / "planted").lstat().st_uid == nobody.uid
    assert (target.stat().st_uid, target.read_text()) == (0, "root's\n")


# --- L6: stop signals only the folder's own postmaster -----------------------------------------


def start_dummy(base: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """A process of this account named postgres-dummy (a copy of sleep), working in ``cwd``."""
    exe = base / "postgres-dummy"
    shutil.copy("/bin/sleep", exe)
    return subprocess.Popen([str(exe), "60"], cwd=cwd)


async def test_l6_stop_signals_only_the_folders_own_postmaster(base: Path) -> None:
    """L6: the server's account writes a postmaster.pid naming another process called postgres*
    (as root: a root process working in the data folder; otherwise a process of this account
    working elsewhere): `postgres stop` does not signal it and finds no server, nor does
    `postgres url`."""
    data = base / "data"
    data.mkdir(mode=0o700)
    account = await server_account()
    os.chown(data, account.uid, account.gid)
    dummy = start_dummy(base, cwd=data if IS_ROOT else base)
    try:
        lines = [str(dummy.pid), str(data), "0", "5432", str(data), "", "1 1", "ready", ""]
        written = run_as(
            account,
            "sh",
            "-c",
            f"cat > {data / 'postmaster.pid'}",
            stdin="\n".join(lines),
        )
        assert written.returncode == 0, written.stderr
        assert not await stop_server(data)
        assert running_url(data) is None
        assert dummy.poll() is None, "the process named in the pid file was signalled"
    finally:
        dummy.kill()
        dummy.wait()


# --- L7: a lock file that is not ours is a clear error -----------------------------------------


async def test_l7_a_lock_file_of_another_account_is_a_clear_error(
    shared: Path, base: Path, other: Account | None
) -> None:
    """L7: a start lock <data>.lock made by another account (not as root: one this account cannot
    open) makes start() and `postgres stop` fail with an error naming the file and the fix, not a
    raw PermissionError, and nothing is started; as root, a lock that is a link planted by
    another account is refused the same, its target untouched."""
    lock = shared / "data.lock"
    if other is not None:
        made = run_as(other, "sh", "-c", f"umask 077 && : > {lock}")
        assert made.returncode == 0, made.stderr
    else:
        lock.touch()
        lock.chmod(0)
    for attempt in (EmbeddedPostgres(shared / "data").start(), stop_server(shared / "data")):
        with pytest.raises(EmbeddedPostgresError, match="remove") as error:
            await attempt
        assert str(lock) in str(error.value)
    assert not (shared / "data").exists()

    if other is not None:
        target = base / "root-file"
        target.write_text("root's\n")
        target.chmod(0o600)
        linked = run_as(other, "ln", "-s", str(target), str(shared / "linked.lock"))
        assert linked.returncode == 0, linked.stderr
        with pytest.raises(EmbeddedPostgresError, match=r"linked\.lock is a symbolic link"):
            await EmbeddedPostgres(shared / "linked").start()
        assert (target.stat().st_uid, target.read_text()) == (0, "root's\n")
