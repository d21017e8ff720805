"""Crash simulation and replay checking, in process.

:func:`crash_after` freezes a workflow right after a named step's checkpoint is written (observed
through :meth:`TestingHooks.on_checkpoint`, for the duration: nothing else changes), crashes the
runtime as a killed process would, and recovers it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .._context import set_workflow_id
from .._current import current_runtime
from .._handle import WorkflowHandle
from .._records import StepRow
from .._runtime import Runtime, hooks

__all__ = ["CrashPointNotReached", "check_replay", "crash_after"]

R = TypeVar("R")


class CrashPointNotReached(AssertionError):
    """Raised by :func:`crash_after` when the workflow ended without writing the named step's
    checkpoint (a test expectation that failed, hence an ``AssertionError``)."""


async def crash_after(
    runtime: Runtime,
    fn: Callable[..., Coroutine[Any, Any, R]],
    *args: object,
    step: str,
    occurrence: int = 1,
    workflow_id: str | None = None,
) -> WorkflowHandle[R]:
    """Start ``fn(*args)`` on ``runtime``, crash the runtime right after the checkpoint of the
    ``occurrence``-th call of the step named ``step`` is written, and recover it; return the
    handle of the recovered workflow.

    The crash is :meth:`Runtime.crash`: every workflow running on ``runtime`` stops where it
    stands, keeping only what its checkpoints wrote; the workflow under test stops between the
    checkpoint and whatever follows it. Recovery is :meth:`Runtime.restart`. ``step`` is a
    journal name: a ``@step`` (its ``name=``, by default its qualified name) or a durable
    sleep (``"aiodurable.sleep"``). Raises :class:`CrashPointNotReached` if the workflow ends
    first.
    """
    if occurrence < 1:
        raise ValueError(f"occurrence counts from 1, not {occurrence!r}")
    testing = hooks(runtime)
    wid = workflow_id or f"crash-after-{uuid.uuid4().hex}"
    loop = asyncio.get_running_loop()
    reached: asyncio.Future[None] = loop.create_future()
    frozen: asyncio.Future[None] = loop.create_future()  # never set: the crash cancels it
    seen = 0

    async def written(workflow_id: str, entry: StepRow) -> None:
        nonlocal seen
        if workflow_id == wid and entry.name == step and not reached.done():
            seen += 1
            if seen == occurrence:
                reached.set_result(None)
                await frozen  # the checkpoint is written; the process "dies" here

    result: asyncio.Future[R] | None = None
    try:
        with testing.on_checkpoint(written):
            with set_workflow_id(wid):
                handle = await runtime.start_workflow(fn, *args)
            result = asyncio.ensure_future(handle.get_result())
            waits: set[asyncio.Future[Any]] = {reached, result}
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if not reached.done():
                steps = [s.name for s in await runtime.list_steps(wid)]
                raise CrashPointNotReached(
                    f"workflow {wid!r} ended without writing checkpoint number {occurrence} of"
                    f" step {step!r}; its journal holds {steps}"
                )
            await runtime.crash()
    finally:
        frozen.cancel()
        if result is not None:
            result.cancel()
            await asyncio.gather(result, return_exceptions=True)
    await runtime.restart()
    recovered: WorkflowHandle[R] = await runtime.retrieve_workflow(wid)
    return recovered


async def check_replay(workflow_id: str, runtime: Runtime | None = None) -> None:
    """Replay a recorded workflow's current code against its journal without running a step;
    raise :class:`~aiodurable.NonDeterminismError` naming the first call that differs (a step
    renamed, added, removed or moved). ``runtime`` defaults to the current one."""
    rt = runtime if runtime is not None else current_runtime()
    await rt.check_replay(workflow_id)
