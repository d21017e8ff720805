"""The keeper: the process that runs an embedded PostgreSQL server for every program using it.

:mod:`aiodurable._embedded` runs this file by its path (``python -I -S _keeper.py ...``): it
imports only the standard library, so it starts fast. It is double-forked into a session of its
own, so it outlives the program that started it and no signal from that program's terminal
(Control + C) reaches it. Its standard output and error are the server's log.

The keeper starts ``postgres`` as its child, tied to it by the parent-death signal (Linux), so
the server stops (a fast shutdown) if the keeper dies, even by ``kill -9``. It stops the server
itself when no program has used it for ``--linger`` seconds, when it receives SIGTERM or SIGINT,
and exits if the server exits on its own.

Four files next to the data folder ``<data>`` coordinate the programs (flock locks, released by
the kernel when their holder dies, however it dies):

- ``<data>.lock``, the *start lock*: held while a program checks for a server, starts one, or
  becomes a user of it, and by the keeper while it decides to stop the server and stops it.
- ``<data>.users``: every program using the server holds a shared lock on it for as long as it
  does. The keeper tests for users by trying an exclusive lock, which it releases at once.
- ``<data>.keeper``: the keeper holds an exclusive lock on it for its whole life, and writes its
  process ID (then the server's) into it. It releases it only after the server has exited, so a
  program holding the start lock that finds it unlocked knows no keeper will ever serve it.
- ``<data>.pinned``: while it exists, the server stays up with no users (``aiodurable postgres
  start``); ``aiodurable postgres stop`` removes it.

These files belong to the account that starts servers (root, or the user), not to the server's;
every one is opened without following a symbolic link and must be a plain file of that account
with a single name, so nobody else can plant one to redirect a write or hold a lock.

The protocol keeps one invariant: while a program holds the start lock and the keeper file is
locked, the server will not be stopped by the keeper (it stops only while holding the start lock
itself). So a program that takes the start lock, finds the server up and takes its shared lock
before releasing the start lock can never see the server vanish: the keeper's next check under
the start lock finds the user. A program that starts while the keeper stops the server waits for
the start lock, then finds no keeper and starts a new one.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import fcntl
import os
import select
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

__all__ = ["lock_paths", "main", "parent_death_hook"]

POLL = 0.25
"""Seconds between two checks for users."""

STOP_TIMEOUT = 30.0
"""Seconds a fast shutdown may take before the keeper asks for an immediate one."""

_PR_SET_PDEATHSIG = 1


def lock_paths(data_dir: str) -> tuple[str, str, str, str]:
    """The start lock, users, keeper and pinned files of the data folder ``data_dir``."""
    base = os.path.abspath(data_dir)
    return f"{base}.lock", f"{base}.users", f"{base}.keeper", f"{base}.pinned"


def parent_death_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` tying the child to this process with PR_SET_PDEATHSIG (Linux only): the
    child receives SIGINT (PostgreSQL's fast shutdown) when this process dies.

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


def _say(message: str) -> None:
    """A line in the server's log, stamped like the server's own lines."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    print(f"{now} UTC [{os.getpid()}] aiodurable keeper: {message}", flush=True)


class _Refused(Exception):
    """A coordination file that is not a plain file of this account with a single name."""


def _open(path: str) -> int:
    """Open (creating it) a coordination file, never through a symbolic link nor a FIFO, and
    refuse one another account could have planted."""
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        raise _Refused(f"cannot open {path} ({exc.strerror}); remove it") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_nlink != 1:
        os.close(fd)
        raise _Refused(f"{path} is not a plain file of uid {os.geteuid()} with a single name")
    return fd


def _try_lock(fd: int, operation: int) -> bool:
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _unused(users_fd: int) -> bool:
    """Whether no program holds the users lock; the test takes no lock that outlives it."""
    if not _try_lock(users_fd, fcntl.LOCK_EX):
        return False
    fcntl.flock(users_fd, fcntl.LOCK_UN)
    return True


class _Keeper:
    """The keeper's state: its lock files, and the signals it was sent."""

    def __init__(self, data_dir: str, linger: float) -> None:
        self.linger = linger
        start, users, _, self.pinned = lock_paths(data_dir)
        self.start_fd = _open(start)
        self.users_fd = _open(users)
        self.asked_to_stop = False
        self._wake_r, wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(wake_w, False)
        # Handlers only set a flag: every wait is a select() on the wake-up pipe, which a signal
        # makes readable, so the keeper acts on SIGTERM, SIGINT and its child's exit at once.
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)

    def _on_stop(self, signum: int, frame: object) -> None:
        self.asked_to_stop = True

    def _wait(self, server: subprocess.Popen[bytes], timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a signal; whether the keeper must end now (asked
        to stop, or the server exited)."""
        if not self.asked_to_stop and server.poll() is None:
            if select.select([self._wake_r], [], [], max(0.0, timeout))[0]:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self._wake_r, 512):
                        pass
        return self.asked_to_stop or server.poll() is not None

    def run(self, server: subprocess.Popen[bytes]) -> int:
        """Serve until the server is to stop; the exit status (0: the keeper stopped the server,
        1: it exited by itself)."""
        idle_since: float | None = None
        while True:
            timeout = POLL
            if idle_since is not None:
                timeout = min(POLL, idle_since + self.linger - time.monotonic())
            if self._wait(server, timeout):
                return self._end(server)
            if os.path.lexists(self.pinned) or not _unused(self.users_fd):
                idle_since = None
                continue
            now = time.monotonic()
            if idle_since is None:
                idle_since = now
            if now - idle_since < self.linger:
                continue
            # Nobody has used the server for the whole linger: decide under the start lock, so
            # that no program can become a user between the last check and the stop.
            while not _try_lock(self.start_fd, fcntl.LOCK_EX):
                if self._wait(server, 0.02):
                    return self._end(server)
            if not os.path.lexists(self.pinned) and _unused(self.users_fd):
                _say(f"no program has used the server for {self.linger:g} s: stopping it")
                return self._end(server)  # The start lock goes when the keeper exits.
            fcntl.flock(self.start_fd, fcntl.LOCK_UN)
            idle_since = None

    def _end(self, server: subprocess.Popen[bytes]) -> int:
        code = server.poll()
        if code is not None:
            _say(f"the server exited by itself (status {code}); the keeper ends too")
            return 1
        if self.asked_to_stop:
            _say("asked to stop: stopping the server")
        _stop(server)
        return 0


def _stop(server: subprocess.Popen[bytes]) -> None:
    """A fast shutdown; an immediate one (recovery runs at the next start) if it hangs."""
    server.send_signal(signal.SIGINT)
    try:
        server.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        _say(f"the server did not stop within {STOP_TIMEOUT:g} s: immediate shutdown")
        server.send_signal(signal.SIGQUIT)
        try:
            server.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="_keeper.py", description="Run an embedded PostgreSQL server while programs use it."
    )
    parser.add_argument("--data", required=True, help="the server's data folder")
    parser.add_argument("--linger", type=float, required=True, help="seconds kept with no users")
    parser.add_argument("--user", type=int, default=None, help="run the server as this uid")
    parser.add_argument("--group", type=int, default=None, help="and this gid")
    parser.add_argument("server", nargs=argparse.REMAINDER, help="-- the postgres command")
    args = parser.parse_args(argv)
    if args.server[:1] == ["--"]:
        args.server = args.server[1:]
    if not args.server:
        parser.error("give the postgres command after --")
    return args


def _take_keeper_lock(path: str) -> int | None:
    """The keeper file, locked; None if another keeper holds it. Programs that check for a
    keeper take a shared lock for an instant, so a few retries get past them."""
    fd = _open(path)
    deadline = time.monotonic() + 2.0
    while not _try_lock(fd, fcntl.LOCK_EX):
        if time.monotonic() >= deadline:
            os.close(fd)
            return None
        time.sleep(0.005)
    return fd


def main(argv: Sequence[str] | None = None) -> int:
    """Run the keeper; its exit status."""
    args = _parse(argv)
    keeper_path = lock_paths(args.data)[2]
    try:
        return _serve(args, keeper_path)
    except _Refused as exc:
        _say(f"{exc}; the keeper ends")
        return 3


def _serve(args: argparse.Namespace, keeper_path: str) -> int:
    keeper_fd = _take_keeper_lock(keeper_path)
    if keeper_fd is None:
        _say(f"another keeper holds {keeper_path}; this one ends")
        return 2
    try:
        # Signal handlers first: whoever reads a process ID in the keeper file may send SIGTERM.
        keeper = _Keeper(args.data, args.linger)
        os.ftruncate(keeper_fd, 0)
        os.pwrite(keeper_fd, f"{os.getpid()}\n".encode(), 0)
        account = args.user is not None
        server = subprocess.Popen(
            args.server,
            stdin=subprocess.DEVNULL,
            preexec_fn=parent_death_hook(),
            user=args.user,
            group=args.group,
            extra_groups=[] if account else None,
        )
        os.pwrite(keeper_fd, f"{os.getpid()} {server.pid}\n".encode(), 0)
        _say(f"server started (pid {server.pid}), to stop {args.linger:g} s after its last user")
        try:
            return keeper.run(server)
        except BaseException:
            if server.poll() is None:
                server.send_signal(signal.SIGINT)
                server.wait()
            raise
    finally:
        # Released only now, after the server has exited: an unlocked keeper file means no
        # server of this keeper runs (the start lock, if held, goes with the process after it).
        os.close(keeper_fd)


if __name__ == "__main__":
    sys.exit(main())
