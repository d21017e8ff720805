"""The ``aiodurable`` command line.

Command groups are subparsers; each command is an ``async`` function taking the parsed arguments
and returning the exit status. Exit status: 0 success, 1 failure (a message on stderr), 2 usage
error (from argparse). ``postgres stop`` with no server running says so and exits 0, since the
wanted state (no server) holds; ``postgres url`` with no server running exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from aiodurable._cli_console import add_console_command
from aiodurable._cli_gc import add_gc_command
from aiodurable._cli_schedule import add_schedule_commands
from aiodurable._cli_workflow import add_workflow_commands
from aiodurable._embedded import (
    EmbeddedPostgres,
    default_data_dir,
    running_url,
    stop_server,
)
from aiodurable._exceptions import DurableError, WorkflowNotFound

__all__ = ["main"]

_Command = Callable[[argparse.Namespace], Awaitable[int]]


async def _postgres_start(args: argparse.Namespace) -> int:
    url = await EmbeddedPostgres(args.data_dir).start(detached=True)
    print(url)
    return 0


async def _postgres_url(args: argparse.Namespace) -> int:
    url = running_url(args.data_dir)
    if url is None:
        print(
            f"no server runs on {args.data_dir}; start one with 'aiodurable postgres start'",
            file=sys.stderr,
        )
        return 1
    print(url)
    return 0


async def _postgres_stop(args: argparse.Namespace) -> int:
    if await stop_server(args.data_dir):
        print(f"stopped the server on {args.data_dir}")
    else:
        print(f"no server runs on {args.data_dir}; nothing to stop")
    return 0


def _add_postgres(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = commands.add_parser("postgres", help="manage the embedded PostgreSQL server")
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, command, help_text in [
        (
            "start",
            _postgres_start,
            "keep the server up until 'postgres stop' (start it if needed); print its URL",
        ),
        ("url", _postgres_url, "print the URL of the running server (exit 1 if none)"),
        ("stop", _postgres_stop, "stop the server now (fast shutdown), even while programs use it"),
    ]:
        parser = actions.add_parser(name, help=help_text, description=help_text)
        parser.add_argument(
            "--data-dir",
            type=lambda s: Path(s).absolute(),
            default=None,
            help="the server's data folder (default: AIODURABLE_PG_DATA, or a per-user folder)",
        )
        parser.set_defaults(command=command)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; a new command group is one more ``_add_...(commands)`` call."""
    parser = argparse.ArgumentParser(
        prog="aiodurable", description="Durable execution on PostgreSQL."
    )
    commands = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")
    _add_postgres(commands)
    add_gc_command(add_workflow_commands(commands))
    add_schedule_commands(commands)
    add_console_command(commands)
    return parser


def _runner() -> Callable[[Coroutine[Any, Any, int]], int]:
    """uvloop's ``run`` when it is installed, else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def _run(coro: Awaitable[int]) -> int:
    async def wrapper() -> int:
        return await coro

    # Run outside the ``except ImportError`` above, or every error of a command would be chained
    # to uvloop's absence ("During handling of the above exception ...").
    return _runner()(wrapper())


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    args = build_parser().parse_args(argv)
    if getattr(args, "data_dir", "") is None:
        args.data_dir = default_data_dir()
    command: _Command = args.command
    try:
        return _run(command(args))
    except WorkflowNotFound as exc:
        print(f"aiodurable: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"aiodurable: error: {exc}", file=sys.stderr)
        return 2
    except DurableError as exc:
        print(f"aiodurable: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
