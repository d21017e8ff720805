"""``aiodurable workflow ...``: list, get, steps, cancel, resume, restart, fork, recover, upgrade.

Each command opens a runtime that recovers nothing and runs nothing itself: commands that need a
workflow's code (resume, restart, fork, recover) leave the workflow PENDING for any live runtime
of the right application version, which takes it at once. ``upgrade`` imports the modules that
define the workflows (the new code) and adopts into that code's application version the
workflows that replay cleanly on it, for its live runtimes to run. Output is a readable table,
or JSON with ``--json``. Exit status: 0 success, 1 workflow not found (``upgrade``: some workflows
could not be adopted), 2 usage error.

Text from the database (IDs, names, outputs, errors) may hold terminal escape sequences, which
could retitle the window, clear the screen or fake output; tables and ``get`` print every control
character (C0, DEL, C1), bidirectional override and unpaired surrogate as a visible escape such as
``\x1b``. ``--json`` escapes what JSON requires and is meant for programs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

import orjson

from ._models import StepInfo, WorkflowInfo, WorkflowStatus
from ._runtime import Runtime, engine_of

__all__ = ["add_workflow_commands"]

_Command = Callable[[Runtime, argparse.Namespace], Awaitable[int]]


def _time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time (for example 2026-11-28T09:30:00+00:00)"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _status(text: str) -> str:
    value = text.upper()
    if value not in {s.value for s in WorkflowStatus}:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a status; use one of {', '.join(s.value for s in WorkflowStatus)}"
        )
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 0 to 2**63 - 1")
    return value


def _text(text: str) -> str:
    """An ID or filter as given: text PostgreSQL can hold (argv bytes that are not UTF-8 arrive
    as unpaired surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(
            f"{_printable(repr(text))} is not valid UTF-8 text, so no workflow has it"
        ) from None
    return text


def schema_name(text: str) -> str:
    """The ``--schema`` option: a plain lower-case SQL identifier, checked whole (a trailing
    newline included)."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,47}", text):
        raise argparse.ArgumentTypeError(
            f"{_printable(repr(text))} is not a plain lower-case SQL identifier: use up to 48"
            " letters, digits and underscores, starting with a letter or underscore"
        )
    return text


def _error_text(error: BaseException | None) -> str | None:
    return None if error is None else f"{type(error).__name__}: {error}"


def _info_dict(info: WorkflowInfo) -> dict[str, object]:
    return {
        "workflow_id": info.workflow_id,
        "status": info.status.value,
        "name": info.name,
        "inputs": info.inputs,
        "output": info.output,
        "error": _error_text(info.error),
        "created_at": info.created_at.isoformat(),
        "updated_at": info.updated_at.isoformat(),
        "app_version": info.app_version,
        "executor_id": info.executor_id,
        "recovery_attempts": info.recovery_attempts,
        "queue_name": info.queue_name,
        "parent_workflow_id": info.parent_workflow_id,
        "decode_error": info.decode_error,
    }


def _step_dict(step: StepInfo) -> dict[str, object]:
    return {
        "function_id": step.function_id,
        "name": step.name,
        "output": step.output,
        "error": _error_text(step.error),
        "child_workflow_id": step.child_workflow_id,
        "started_at": step.started_at.isoformat(),
        "completed_at": step.completed_at.isoformat(),
        "decode_error": step.decode_error,
    }


def _print_json(value: object) -> None:
    sys.stdout.write(orjson.dumps(value, default=str, option=orjson.OPT_INDENT_2).decode() + "\n")


_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_BIDI = [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_ESCAPES: dict[int, str] = {
    **{c: f"\\x{c:02x}" for c in [*range(0x20), *range(0x7F, 0xA0)]},
    **{c: f"\\u{c:04x}" for c in [*_BIDI, *range(0xD800, 0xE000)]},
    **{ord(k): v for k, v in _NAMED.items()},
}


def _printable(text: str) -> str:
    """``text`` with every character that could steer a terminal shown as an escape."""
    return text.translate(_ESCAPES)


def _clip(value: object, width: int) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    text = _printable(text[: width + 1])
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    for line in [headers, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


async def _list(rt: Runtime, args: argparse.Namespace) -> int:
    infos = await rt.list_workflows(
        status=args.status or None,
        name=args.name,
        workflow_id_prefix=args.prefix,
        app_version=args.app_version,
        executor_id=args.executor,
        queue_name=args.queue,
        start_time=args.start_time,
        end_time=args.end_time,
        limit=args.limit,
        offset=args.offset,
        sort_desc=not args.oldest_first,
        load_input=args.json,
        load_output=args.json,
    )
    positions: dict[str, int] = {}
    for queue in {i.queue_name for i in infos if i.status is WorkflowStatus.ENQUEUED}:
        assert queue is not None
        positions.update(await engine_of(rt).store.queue_positions(queue))
    if args.json:
        _print_json(
            [{**_info_dict(i), "queue_position": positions.get(i.workflow_id)} for i in infos]
        )
        return 0
    _table(
        ["WORKFLOW ID", "STATUS", "NAME", "VERSION", "EXECUTOR", "QUEUE", "POS", "CREATED (UTC)"],
        [
            [
                _printable(i.workflow_id),
                i.status.value,
                _clip(i.name, 40),
                _printable(i.app_version[:12]),
                _printable(i.executor_id),
                _printable(i.queue_name or ""),
                str(positions.get(i.workflow_id, "")),
                _when(i.created_at),
            ]
            for i in infos
        ],
    )
    return 0


async def _get(rt: Runtime, args: argparse.Namespace) -> int:
    info = await rt.get_workflow_status(args.workflow_id)
    data = _info_dict(info)
    if args.json:
        _print_json(data)
        return 0
    for key, value in data.items():
        print(f"{key + ':':<20} {_clip(value, 200) if value is not None else ''}")
    return 0


async def _steps(rt: Runtime, args: argparse.Namespace) -> int:
    steps = await rt.list_steps(args.workflow_id)
    if args.json:
        _print_json([_step_dict(s) for s in steps])
        return 0
    _table(
        ["ID", "NAME", "OUTCOME", "CHILD", "MS"],
        [
            [
                str(s.function_id),
                _clip(s.name, 40),
                _clip(_error_text(s.error) or s.output, 60),
                _printable(s.child_workflow_id or ""),
                f"{(s.completed_at - s.started_at).total_seconds() * 1000:.0f}",
            ]
            for s in steps
        ],
    )
    return 0


async def _cancel(rt: Runtime, args: argparse.Namespace) -> int:
    await rt.cancel_workflow(args.workflow_id)
    return await _report(rt, args.workflow_id, args.json)


async def _resume(rt: Runtime, args: argparse.Namespace) -> int:
    await rt.resume_workflow(args.workflow_id)
    return await _report(rt, args.workflow_id, args.json)


async def _restart(rt: Runtime, args: argparse.Namespace) -> int:
    handle = await rt.restart_workflow(args.workflow_id)
    return await _report(rt, handle.workflow_id, args.json)


async def _fork(rt: Runtime, args: argparse.Namespace) -> int:
    handle = await rt.fork_workflow(
        args.workflow_id,
        args.step,
        new_workflow_id=args.new_id,
        app_version=args.app_version,
    )
    return await _report(rt, handle.workflow_id, args.json)


async def _recover(rt: Runtime, args: argparse.Namespace) -> int:
    released = await rt.recover(args.executor)
    if args.json:
        _print_json(released)
    else:
        print(
            f"handed {len(released)} workflow(s) of executor {_printable(repr(args.executor))}"
            " to live runtimes"
        )
    return 0


def _import_code(modules: Sequence[str]) -> None:
    """Import the modules that define the workflows (from the current folder too, as ``python
    -m`` would), so that the runtime hashes and replays their code."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ValueError(
                f"cannot import {module!r} ({exc}); give --import the dotted name of a module"
                " that defines the workflows, importable from this folder"
            ) from None


async def _upgrade(args: argparse.Namespace) -> int:
    _import_code(args.imports)
    url = args.database_url or os.environ.get("AIODURABLE_DATABASE_URL") or None
    async with Runtime(url, schema=args.schema, recover=False) as rt:
        report = await rt.upgrade_workflows(args.from_version, dry_run=args.dry_run)
        version = rt.app_version
    if args.json:
        _print_json(
            {
                "app_version": version,
                "dry_run": args.dry_run,
                "adopted": report.adopted,
                "incompatible": report.incompatible,
            }
        )
    else:
        verb = "would adopt" if args.dry_run else "adopted"
        print(f"{verb} {len(report.adopted)} workflow(s) into version {_printable(version)}")
        for wid in report.adopted:
            print(f"  {_printable(wid)}")
        if report.incompatible:
            print(f"left {len(report.incompatible)} workflow(s) on their own version:")
            for wid, reason in report.incompatible.items():
                print(f"  {_printable(wid)}: {_printable(reason)}")
    return 1 if report.incompatible else 0


async def _report(rt: Runtime, workflow_id: str, as_json: bool) -> int:
    info = await rt.get_workflow_status(workflow_id)
    if as_json:
        _print_json(_info_dict(info))
    else:
        print(f"{_printable(info.workflow_id)}  {info.status.value}")
    return 0


def add_workflow_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """Add the ``workflow`` command group; return its actions, for more (``gc``)."""
    group = commands.add_parser("workflow", help="list, inspect and steer workflows")
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")

    def command(name: str, handler: _Command, help_text: str) -> argparse.ArgumentParser:
        parser = plain_command(name, help_text)
        parser.set_defaults(command=_opened(handler))
        return parser

    def plain_command(name: str, help_text: str) -> argparse.ArgumentParser:
        """A command with the options they all take, which opens its runtime itself."""
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
        return parser

    listing = command("list", _list, "list workflows, newest first")
    listing.add_argument("--status", type=_status, action="append", help="repeatable")
    listing.add_argument("--name", type=_text)
    listing.add_argument("--prefix", type=_text, help="workflow ID prefix")
    listing.add_argument("--app-version", type=_text)
    listing.add_argument("--executor", type=_text)
    listing.add_argument("--queue", type=_text)
    listing.add_argument("--start-time", type=_time, help="created at or after (ISO 8601)")
    listing.add_argument("--end-time", type=_time, help="created at or before (ISO 8601)")
    listing.add_argument("--limit", type=_count, default=50)
    listing.add_argument("--offset", type=_count, default=0)
    listing.add_argument("--oldest-first", action="store_true")
    for name, handler, help_text in [
        ("get", _get, "show one workflow"),
        ("steps", _steps, "show a workflow's journal"),
        ("cancel", _cancel, "cancel a workflow"),
        ("resume", _resume, "resume a cancelled workflow from its last completed step"),
        ("restart", _restart, "run a workflow again under a new ID"),
    ]:
        command(name, handler, help_text).add_argument("workflow_id", type=_text)
    fork = command("fork", _fork, "start a new workflow reusing the journal below a step")
    fork.add_argument("workflow_id", type=_text)
    fork.add_argument("--step", type=_count, required=True, help="the function ID to rerun from")
    fork.add_argument(
        "--new-id", type=_text, default=None, help="the new workflow's ID (default: a UUID)"
    )
    fork.add_argument(
        "--app-version", type=_text, default=None, help="the version to run the fork on"
    )
    recover = command("recover", _recover, "hand a gone executor's workflows to live runtimes")
    recover.add_argument("--executor", type=_text, required=True)
    upgrade = plain_command(
        "upgrade", "adopt other versions' unfinished workflows that replay cleanly on the code"
    )
    upgrade.set_defaults(command=_upgrade)
    upgrade.add_argument(
        "--import",
        dest="imports",
        metavar="MODULE",
        action="append",
        required=True,
        help="a module defining the workflows (the new code); repeatable",
    )
    upgrade.add_argument(
        "--from-version", type=_text, default=None, help="adopt only from this application version"
    )
    upgrade.add_argument(
        "--dry-run", action="store_true", help="check and report only: change nothing"
    )
    return actions


def _opened(handler: _Command) -> Callable[[argparse.Namespace], Awaitable[int]]:
    async def run(args: argparse.Namespace) -> int:
        url = args.database_url or os.environ.get("AIODURABLE_DATABASE_URL") or None
        runtime = Runtime(url, schema=args.schema, recover=False, app_version="cli")
        async with runtime as rt:
            return await handler(rt, args)

    return run
