"""``aiodurable console``: serve the web console.

It binds to 127.0.0.1 by default. Binding to any other address requires a token (``--token`` or
``AIODURABLE_CONSOLE_TOKEN``); loopback means ``localhost`` or an address in 127.0.0.0/8 or ::1.
Open the printed URL (it carries the token the first time, then a cookie does).
"""

from __future__ import annotations

import argparse
import os
import sys
from urllib.parse import quote

__all__ = ["add_console_command"]


async def _console(args: argparse.Namespace) -> int:
    try:
        from aiodurable.console import create_app, serve
        from aiodurable.console._security import is_loopback_host
    except ImportError as exc:
        print(
            f"aiodurable: the console needs its extra ({exc.name} is missing);"
            " install it with: pip install 'aiodurable[console]'",
            file=sys.stderr,
        )
        return 1
    token = args.token or os.environ.get("AIODURABLE_CONSOLE_TOKEN") or None
    if token is None and not is_loopback_host(args.host):
        print(
            f"aiodurable: binding to {args.host} (not a loopback address) requires a token:"
            " pass --token or set AIODURABLE_CONSOLE_TOKEN",
            file=sys.stderr,
        )
        return 2
    url = args.database_url or os.environ.get("AIODURABLE_DATABASE_URL") or None
    app = create_app(database_url=url, schema=args.schema, token=token)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    link = f"http://{shown}:{args.port}/"
    if token is not None:
        link += f"?token={quote(token, safe='')}"
    print(f"aiodurable console on {link}", file=sys.stderr, flush=True)
    await serve(app, host=args.host, port=args.port)
    return 0


def add_console_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``aiodurable console``."""
    help_text = "serve the web console (needs the 'console' extra)"
    parser = commands.add_parser(
        "console",
        help=help_text,
        description="Serve the web console. It binds to 127.0.0.1 by default; any other address"
        " requires a token (--token or AIODURABLE_CONSOLE_TOKEN). Loopback means localhost,"
        " 127.0.0.0/8 or ::1.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument(
        "--database-url",
        default=None,
        help="PostgreSQL URL (default: AIODURABLE_DATABASE_URL, else the embedded server)",
    )
    parser.add_argument("--schema", default="aiodurable", help="aiodurable's schema")
    parser.add_argument(
        "--token",
        default=None,
        help="access token, required off loopback (default: AIODURABLE_CONSOLE_TOKEN)",
    )
    parser.set_defaults(command=_console)
