"""``aiodurable workflow gc``: delete finished workflows, as :func:`aiodurable.garbage_collect`.

``--older-than 30d`` deletes the finished workflows last updated longer ago (a duration: whole
numbers with units ``d``, ``h``, ``m``, ``s``, as ``30d``, ``12h``, ``90m``, ``45s`` or ``1d12h``);
``--keep-latest N`` deletes all finished workflows but the newest N; with both, a workflow is
deleted only when neither keeps it. PENDING and ENQUEUED workflows are never touched. Prints the
number deleted (``--json``: ``{"deleted": N}``). Exit status: 0 success, 2 usage error.
"""

from __future__ import annotations

import argparse
import re
from datetime import timedelta

from ._cli_workflow import _count, _opened, _print_json, schema_name
from ._retention import check_collect
from ._runtime import Runtime

__all__ = ["add_gc_command", "duration"]

_UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
_PART = re.compile(r"(\d{1,9})([dhms])")


def duration(text: str) -> timedelta:
    """A duration such as ``30d``, ``12h``, ``90m``, ``45s`` or ``1d12h``."""
    compact = text.strip().lower()
    parts = _PART.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration; use whole numbers with a unit of d (days), h (hours),"
            " m (minutes) or s (seconds), such as 30d, 12h, 90m, 45s or 1d12h"
        )
    try:
        return sum((timedelta(**{_UNITS[u]: int(n)}) for n, u in parts), timedelta())
    except OverflowError:
        raise argparse.ArgumentTypeError(f"{text!r} is longer than any date can go back") from None


async def _gc(rt: Runtime, args: argparse.Namespace) -> int:
    deleted = await rt.garbage_collect(older_than=args.older_than, keep_latest=args.keep_latest)
    if args.json:
        _print_json({"deleted": deleted})
    else:
        print(f"deleted {deleted} finished workflow(s)")
    return 0


async def _run(args: argparse.Namespace) -> int:
    if args.older_than is None and args.keep_latest is None:
        raise ValueError(
            "workflow gc needs --older-than DURATION (such as 30d), --keep-latest N, or both"
        )
    check_collect(args.older_than, args.keep_latest)
    return await _opened(_gc)(args)


def add_gc_command(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``gc`` to the ``workflow`` command group's ``actions``."""
    help_text = "delete finished workflows with their journals, events, streams and messages"
    description = (
        f"{help_text}: those --older-than (last updated longer ago), or all but the newest"
        " --keep-latest, or, with both, those neither keeps. PENDING and ENQUEUED workflows"
        " are never touched."
    )
    parser = actions.add_parser("gc", help=help_text, description=description)
    parser.add_argument(
        "--database-url",
        default=None,
        help="PostgreSQL URL (default: AIODURABLE_DATABASE_URL, else the embedded server)",
    )
    parser.add_argument(
        "--schema", type=schema_name, default="aiodurable", help="aiodurable's schema"
    )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser.add_argument(
        "--older-than",
        type=duration,
        default=None,
        metavar="DURATION",
        help="delete those last updated longer ago than this (30d, 12h, 90m, 45s)",
    )
    parser.add_argument(
        "--keep-latest",
        type=_count,
        default=None,
        metavar="N",
        help="keep the newest N finished workflows whatever their age",
    )
    parser.set_defaults(command=_run)
