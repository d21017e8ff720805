"""``aiodurable console``: serve the web console.

Who may use it, by how it is started:

- ``aiodurable console`` binds 127.0.0.1 and makes a random token, printed once in the link to
  open (``/?token=...``); the first visit swaps it for a session cookie and a clean URL. Every
  account on the machine can reach a loopback port, so the token is what keeps the others out.
- ``--token-file PATH`` or ``AIODURABLE_CONSOLE_TOKEN`` sets the token instead (at least 16
  printable characters); ``--token`` works too but shows it to every account in ``ps``.
- ``--no-token`` serves loopback without one: only on a machine nobody else logs into.
- ``--uds PATH`` serves on a Unix socket only this account may connect to (mode 0600), with no
  token unless one is given.
- Any address other than loopback needs a token.
"""

from __future__ import annotations

import argparse
import os
import socket
import stat
import sys
from pathlib import Path
from urllib.parse import quote

from aiodurable._cli_workflow import schema_name

__all__ = ["add_console_command"]


def _say(text: str) -> None:
    print(f"aiodurable: {text}", file=sys.stderr, flush=True)


def _given_token(args: argparse.Namespace) -> str | None:
    """The token from --token-file, --token or the environment; ValueError if ambiguous."""
    if args.token is not None and args.token_file is not None:
        raise ValueError("pass --token or --token-file, not both")
    if args.token_file is not None:
        path = Path(args.token_file)
        try:
            mode = path.stat().st_mode
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read the token file {path}: {exc}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            _say(f"warning: other accounts may read {path}; chmod 600 it")
        return text.strip()
    if args.token is not None:
        _say(
            "warning: --token is visible to every account in the process list;"
            " prefer AIODURABLE_CONSOLE_TOKEN or --token-file"
        )
        return str(args.token)
    return os.environ.get("AIODURABLE_CONSOLE_TOKEN") or None


async def _console(args: argparse.Namespace) -> int:
    try:
        from aiodurable.console import create_app
        from aiodurable.console._security import check_token, is_loopback_host, new_token
        from aiodurable.console._serve import listening, serve
    except ImportError as exc:
        _say(
            f"the console needs its extra ({exc.name} is missing);"
            " install it with: pip install 'aiodurable[console]'"
        )
        return 1
    token = _given_token(args)
    if args.no_token and token is not None:
        raise ValueError("--no-token was given together with a token; drop one of them")
    if args.uds is not None and (args.host is not None or args.port is not None):
        raise ValueError("--uds serves on a Unix socket: drop --host and --port")
    host = args.host or "127.0.0.1"
    port = 8000 if args.port is None else args.port
    generated = False
    if args.uds is None and token is None:
        if not is_loopback_host(host):
            if args.no_token:
                raise ValueError(f"--no-token is for loopback only; {host} needs a token")
            _say(
                f"binding to {host} (not a loopback address) requires a token:"
                " set AIODURABLE_CONSOLE_TOKEN or pass --token-file"
            )
            return 2
        if not args.no_token:
            token, generated = new_token(), True
    if token is not None:
        check_token(token)
    url = args.database_url or os.environ.get("AIODURABLE_DATABASE_URL") or None
    app = create_app(
        database_url=url, schema=args.schema, token=token, unix_socket=args.uds is not None
    )
    try:
        with listening(host=host, port=port, uds=args.uds) as sock:
            _say(_where(sock, host, args.uds, token, generated))
            await serve(app, sock=sock)
    except OSError as exc:
        _say(f"cannot serve the console: {exc}")
        return 1
    return 0


def _where(
    sock: socket.socket, host: str, uds: str | None, token: str | None, generated: bool
) -> str:
    """The line that tells where the console is, and who may use it."""
    if uds is not None:
        return (
            f"console on the Unix socket {Path(uds).absolute()} (mode 0600: this account only;"
            " from another machine: ssh -L 8000:<that path> <this host>)"
        )
    shown = f"[{host}]" if ":" in host else host
    link = f"http://{shown}:{sock.getsockname()[1]}/"
    if generated:
        assert token is not None
        return (
            f"console on {link}?token={quote(token, safe='')}"
            " (a new token each start: whoever has this link can read and steer workflows)"
        )
    if token is not None:
        return (
            f"console on {link} (open {link}?token=<your token> once, or send"
            " 'Authorization: Bearer <your token>')"
        )
    return f"console on {link} (no token: every account on this machine can use it)"


def add_console_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``aiodurable console``."""
    help_text = "serve the web console (needs the 'console' extra)"
    parser = commands.add_parser(
        "console",
        help=help_text,
        description="Serve the web console. It binds to 127.0.0.1 with a random token, printed"
        " in the link to open. Other accounts on this machine can reach a loopback port, so"
        " --no-token is for single-user machines only; --uds serves on a socket only this account"
        " may use; any address other than loopback (localhost, 127.0.0.0/8, ::1) needs a token.",
    )
    parser.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default 8000; 0: any)")
    parser.add_argument(
        "--uds", default=None, metavar="PATH", help="serve on a Unix socket (mode 0600) instead"
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="PostgreSQL URL (default: AIODURABLE_DATABASE_URL, else the embedded server)",
    )
    parser.add_argument(
        "--schema", type=schema_name, default="aiodurable", help="aiodurable's schema"
    )
    parser.add_argument(
        "--token-file",
        default=None,
        metavar="PATH",
        help="read the access token (16+ characters) from this file",
    )
    parser.add_argument(
        "--token",
        default=None,
        help="the access token (visible in ps: prefer AIODURABLE_CONSOLE_TOKEN or --token-file)",
    )
    parser.add_argument(
        "--no-token",
        action="store_true",
        help="no token: any account on this machine may use the console (loopback only)",
    )
    parser.set_defaults(command=_console)
