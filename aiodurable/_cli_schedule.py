"""``aiodurable schedule ...``: list, pause, resume and delete cron schedules.

Each command opens a runtime that runs nothing itself (as ``aiodurable workflow`` does) and
changes the schedules table; every live runtime of the program is notified at once. Creating a
schedule needs the workflow's code, so it is done in Python (``create_schedule``) or with
``@scheduled``. Output is a readable table, or JSON with ``--json``. Exit status: 0 success, 1 no
schedule of that name, 2 usage error.
"""

from __future__ import annotations

import argparse
from datetime import datetime

from ._cli_workflow import _opened, _print_json, _printable, _table, _text, schema_name
from ._runtime import Runtime
from ._schedule import ScheduleInfo

__all__ = ["add_schedule_commands"]


def _moment(moment: datetime | None) -> str:
    return "" if moment is None else moment.isoformat()


def _info_dict(info: ScheduleInfo) -> dict[str, object]:
    return {
        "name": info.name,
        "workflow_name": info.workflow_name,
        "cron": info.cron,
        "tz": info.tz,
        "catch_up": info.catch_up,
        "paused": info.paused,
        "declared": info.declared,
        "last_tick": _moment(info.last_tick) or None,
        "next_tick": _moment(info.next_tick) or None,
        "created_at": info.created_at.isoformat(),
    }


async def _list(rt: Runtime, args: argparse.Namespace) -> int:
    infos = await rt.list_schedules()
    if args.json:
        _print_json([_info_dict(i) for i in infos])
        return 0
    _table(
        ["NAME", "WORKFLOW", "CRON", "TZ", "STATE", "CATCH UP", "LAST TICK", "NEXT TICK"],
        [
            [
                _printable(i.name),
                _printable(i.workflow_name),
                _printable(i.cron),
                _printable(i.tz),
                "paused" if i.paused else "active",
                "yes" if i.catch_up else "no",
                _moment(i.last_tick),
                _moment(i.next_tick),
            ]
            for i in infos
        ],
    )
    return 0


async def _pause(rt: Runtime, args: argparse.Namespace) -> int:
    await rt.pause_schedule(args.name)
    return _done(args, "paused")


async def _resume(rt: Runtime, args: argparse.Namespace) -> int:
    await rt.resume_schedule(args.name)
    return _done(args, "resumed")


async def _delete(rt: Runtime, args: argparse.Namespace) -> int:
    await rt.delete_schedule(args.name)
    return _done(args, "deleted")


def _done(args: argparse.Namespace, what: str) -> int:
    if args.json:
        _print_json({"name": args.name, "done": what})
    else:
        print(f"{_printable(args.name)}  {what}")
    return 0


def add_schedule_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``schedule`` command group."""
    group = commands.add_parser("schedule", help="list, pause, resume and delete cron schedules")
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, handler, help_text in [
        ("list", _list, "list the schedules with their last and next ticks"),
        ("pause", _pause, "stop starting a schedule's ticks until it is resumed"),
        ("resume", _resume, "start a paused schedule's ticks again, from the next one"),
        ("delete", _delete, "delete a schedule (the workflows it started stay)"),
    ]:
        parser = actions.add_parser(name, help=help_text, description=help_text)
        parser.add_argument(
            "--database-url",
            default=None,
            help="PostgreSQL URL (default: AIODURABLE_DATABASE_URL, else the embedded server)",
        )
        parser.add_argument(
            "--schema", type=schema_name, default="aiodurable", help="aiodurable's schema"
        )
        parser.add_argument("--json", action="store_true", help="print JSON for scripts")
        parser.set_defaults(command=_opened(handler))
        if name != "list":
            parser.add_argument("name", type=_text, help="the schedule's name")
