"""Serving the console with uvicorn: on a TCP address or a private Unix socket, with an access
log that never shows a query string (``?token=`` travels in one), ending its live streams as
shutdown begins."""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from uvicorn.config import LOGGING_CONFIG

from ._app import Console

__all__ = ["ConsoleServer", "WithoutQuery", "bind_tcp", "bind_unix", "listening", "serve"]


class ConsoleServer(uvicorn.Server):
    """A uvicorn server that ends the console's event streams when it starts shutting down:
    uvicorn waits for open responses before it runs the lifespan's shutdown, so without this a
    browser tab would hold the server open."""

    def __init__(self, config: uvicorn.Config, console: Console) -> None:
        super().__init__(config)
        self.console = console

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Stop the streams, then shut down as uvicorn does."""
        self.console.live.stop()
        await super().shutdown(sockets)


class WithoutQuery(logging.Filter):
    """Drops the query string from uvicorn's access log lines (a first visit's carries the
    token; other parameters are not worth the risk of a new one that is secret)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the path argument of an access record; keep every record."""
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (*args[:2], args[2].split("?", 1)[0], *args[3:])
        return True


def _log_config() -> dict[str, Any]:
    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["without_query"] = {"()": WithoutQuery}
    config["handlers"]["access"].setdefault("filters", []).append("without_query")
    return config


def bind_tcp(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (port 0: any free one)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock


def bind_unix(path: str | os.PathLike[str]) -> socket.socket:
    """A listening Unix socket at ``path`` that only its owner may connect to (mode 0600).

    It is bound inside a fresh 0700 folder next to ``path``, made 0600 there and then renamed
    into place, so no other account can connect in between. A socket already at ``path`` is
    replaced only if it is ours and nothing answers on it; anything else there is an error.
    """
    target = Path(path).absolute()
    try:
        found = target.lstat()
    except FileNotFoundError:
        found = None
    if found is not None:
        if not stat.S_ISSOCK(found.st_mode):
            raise ValueError(f"{target} exists and is not a socket; choose another --uds path")
        if found.st_uid != os.geteuid():
            raise ValueError(f"the socket {target} belongs to another account; choose another")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(target))
        except OSError:
            pass  # a stale socket of a console that is gone: it is replaced below
        else:
            raise ValueError(f"something already listens on {target}; choose another --uds path")
        finally:
            probe.close()
    try:
        staging = Path(tempfile.mkdtemp(prefix=".aiodurable-", dir=target.parent))
    except OSError as exc:
        raise ValueError(f"cannot make a socket in {target.parent}: {exc.strerror}") from None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        staged = staging / "s"
        sock.bind(str(staged))
        os.chmod(staged, 0o600)
        os.rename(staged, target)
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    finally:
        with contextlib.suppress(OSError):
            for leftover in staging.iterdir():
                leftover.unlink()
        with contextlib.suppress(OSError):
            staging.rmdir()
    return sock


@contextlib.contextmanager
def listening(
    *, host: str = "127.0.0.1", port: int = 8000, uds: str | os.PathLike[str] | None = None
) -> Iterator[socket.socket]:
    """A listening socket (:func:`bind_unix` when ``uds`` is given, else :func:`bind_tcp`),
    closed at the end, and its socket file removed if it is still ours."""
    if uds is None:
        with bind_tcp(host, port) as sock:
            yield sock
        return
    target = Path(uds).absolute()
    with bind_unix(target) as sock:
        ours = target.lstat().st_ino
        try:
            yield sock
        finally:
            with contextlib.suppress(OSError):
                if target.lstat().st_ino == ours:
                    target.unlink()


async def serve(
    app: Starlette,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    uds: str | os.PathLike[str] | None = None,
    sock: socket.socket | None = None,
) -> None:
    """Serve a console app made by :func:`create_app` until interrupted: on ``sock`` if given,
    else on the Unix socket ``uds`` (mode 0600, removed at the end; pair it with
    ``create_app(unix_socket=True)`` unless the app has a token), else on ``host``:``port``.
    The access log leaves query strings out."""
    console = app.state.console
    assert isinstance(console, Console)
    if sock is None:
        with listening(host=host, port=port, uds=uds) as bound:
            await serve(app, sock=bound)
        return
    config = uvicorn.Config(
        app, log_level="info", lifespan="on", log_config=_log_config(), access_log=True
    )
    await ConsoleServer(config, console).serve(sockets=[sock])
