"""What both versions of the upgrade tests' shop program share: their side-effect log, and the
modes a test runs them in. It registers no workflow (each version defines its own).

Modes (``upgrade_v1.py MODE ...`` or ``upgrade_v2.py MODE ...``):

- ``record ORDERS NAP [--stay]`` (v1): start ``order-0``... (each waits in ``recv``), ``nap-1``
  (in a durable sleep of NAP seconds) and ``legacy-1`` (in ``recv``); print ``READY`` once each
  is waiting, then close (or, with ``--stay``, keep running until killed).
- ``adopt [--dry-run] [--trace] [--finish] [--auto]`` (v2): open a runtime (``--auto``: with
  ``auto_upgrade=True``, logging to stdout), upgrade (print ``REPORT`` and the report as JSON),
  and with ``--finish`` send ``go`` to each PENDING order of this version and print ``RESULT ID
  VALUE`` for every workflow of this version once it ends. ``--trace`` prints ``ADOPT N ID`` as
  the Nth adoption is submitted, for a test to kill the program in the middle of the upgrade.

Settings from the environment: AIODURABLE_DATABASE_URL, AIODURABLE_EXECUTOR_ID,
AIODURABLE_APP_VERSION (else the hash of the version's workflows), TEST_SCHEMA, UPGRADE_LOG (a
file each step execution appends ``VERSION STEP WORKFLOW_ID`` to), UPGRADE_BATCH (candidates per
page).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import aiodurable
from aiodurable import Runtime, WorkflowStatus
from aiodurable import _upgrade as upgrade_module
from aiodurable.testing import hooks

Workflow = Callable[..., Coroutine[Any, Any, str]]


def log(version: str, step_name: str) -> None:
    """Append one line to the side-effect log: a single O_APPEND write, so lines never tear."""
    line = f"{version} {step_name} {aiodurable.current_workflow_id()}\n"
    fd = os.open(os.environ["UPGRADE_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _runtime(**options: Any) -> Runtime:
    return Runtime(schema=os.environ["TEST_SCHEMA"], **options)


async def record(
    order: Workflow, nap: Workflow, legacy: Workflow, args: argparse.Namespace
) -> None:
    """Start the workflows and return once each waits (in recv or sleep)."""
    async with _runtime():
        started: list[tuple[str, Workflow, tuple[object, ...]]]
        started = [(f"order-{i}", order, ()) for i in range(args.orders)]
        started += [("nap-1", nap, (args.nap,)), ("legacy-1", legacy, ())]
        for wid, fn, extra in started:
            with aiodurable.set_workflow_id(wid):
                await aiodurable.start_workflow(fn, wid, *extra)
        for wid, _, _ in started:
            assert await aiodurable.get_event(wid, "stage", timeout=60) == "waiting", wid
        print("READY", flush=True)
        if args.stay:
            await asyncio.Event().wait()


def _trace(rt: Runtime) -> None:
    """Print ``ADOPT N ID`` before the Nth adoption the store is asked for."""
    store = hooks(rt).store
    adopt = store.adopt
    count = itertools.count(1)

    async def traced(workflow_id: str, *rest: Any) -> bool:
        print("ADOPT", next(count), workflow_id, flush=True)
        return await adopt(workflow_id, *rest)

    setattr(store, "adopt", traced)  # noqa: B010 (mypy refuses assigning to a method)


async def adopt(args: argparse.Namespace) -> None:
    """Upgrade, print the report, and with ``--finish`` run this version's workflows to the end."""
    batch = os.environ.get("UPGRADE_BATCH")
    if batch:
        upgrade_module.UPGRADE_BATCH = int(batch)
    if args.auto:
        logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="LOG %(message)s")
    async with _runtime(auto_upgrade=args.auto) as rt:
        if args.trace:
            _trace(rt)
        if not args.auto:
            report = await aiodurable.upgrade_workflows(dry_run=args.dry_run)
            print("REPORT", json.dumps([report.adopted, report.incompatible]), flush=True)
        if args.finish:
            await _finish(rt)


async def _finish(rt: Runtime) -> None:
    mine = await rt.list_workflows(app_version=rt.app_version)
    for info in mine:
        if info.workflow_id.startswith("order-") and info.status is WorkflowStatus.PENDING:
            await rt.send(info.workflow_id, "go", "go")
    for info in mine:
        handle = await rt.retrieve_workflow(info.workflow_id)
        print("RESULT", info.workflow_id, await handle.get_result(), flush=True)
    print("DONE", flush=True)


def main(order: Workflow, nap: Workflow, legacy: Workflow) -> None:
    """Run the mode the command line names."""
    parser = argparse.ArgumentParser()
    modes = parser.add_subparsers(dest="mode", required=True)
    rec = modes.add_parser("record")
    rec.add_argument("orders", type=int)
    rec.add_argument("nap", type=float)
    rec.add_argument("--stay", action="store_true")
    up = modes.add_parser("adopt")
    for flag in ("--dry-run", "--trace", "--finish", "--auto"):
        up.add_argument(flag, action="store_true")
    args = parser.parse_args()
    if args.mode == "record":
        asyncio.run(record(order, nap, legacy, args))
    else:
        asyncio.run(adopt(args))
