"""``patch()`` and ``deprecate_patch()``: changing a workflow's code while workflows are in flight.

A workflow that resumes replays its journal against the code it finds, so code that now makes
other calls would not line up with what the first run recorded. ``if await patch("name"):``
guards the changed code: executions that reach it for the first time journal a marker and take
the new branch; executions whose journal holds something else at that point ran the old code
there, and take the old branch, whose calls then line up with their journal.

Once no workflow that ran the old branch remains, ``deprecate_patch("name")`` replaces the
``patch()`` call: it journals nothing, and passes over the marker of workflows that recorded one.
Once none of those remains either, the call can be deleted.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from ._context import EndOfJournal, WorkflowContext, require_workflow
from ._exceptions import NonDeterminismError
from ._journal import JournalCall
from ._records import StepRow
from ._validate import check_id

__all__ = ["PATCH_PREFIX", "deprecate_patch", "patch"]

PATCH_PREFIX = "aiodurable.patch:"
"""A patch marker's journal name is this prefix followed by the patch's name."""


def patch(name: str) -> Coroutine[Any, Any, bool]:
    """Whether this execution of the workflow takes the new code guarded by patch ``name``.

    ``if await aiodurable.patch("name"): new code else: old code`` changes a workflow safely
    while executions of it are in flight. It is True in an execution that reaches this point for
    the first time: it journals a marker here (``aiodurable.patch:name`` in
    :func:`aiodurable.list_steps`), so that a replay of that execution is True again. It is False
    in an execution whose journal holds another call here: that one ran the code from before the
    patch, and the old branch replays its journal in line (the patch then uses no function ID).

    Call it in the workflow itself, not in a step. Once no workflow that took the old branch
    remains, replace the call by :func:`deprecate_patch`.
    """
    check_id("patch name", name)
    ctx = require_workflow("aiodurable.patch()")
    marker = PATCH_PREFIX + name
    function_id = ctx.last_function_id + 1
    entry = ctx.journal.get(function_id)
    if entry is not None:
        if entry.name != marker:
            return _answer(False)  # recorded before the patch existed: the old branch
        ctx.next_function_id()
        return _answer(True)
    if ctx.replay_only:
        if ctx.ended:
            return _answer(False)  # the recorded run ended without reaching a patch here
        raise EndOfJournal(function_id)
    return _mark(ctx, ctx.next_function_id(), marker)


def deprecate_patch(name: str) -> Coroutine[Any, Any, bool]:
    """The replacement of ``patch(name)`` once no workflow that took its old branch remains:
    always True, so ``if await aiodurable.deprecate_patch("name"):`` keeps the new branch.

    It journals nothing. A workflow that recorded the patch's marker here passes over it and
    replays in line; other executions record nothing here, so once no workflow that recorded the
    marker remains, the call (and the ``if``) can be deleted. Call it in the workflow itself, not
    in a step.
    """
    check_id("patch name", name)
    ctx = require_workflow("aiodurable.deprecate_patch()")
    entry = ctx.journal.get(ctx.last_function_id + 1)
    if entry is not None and entry.name == PATCH_PREFIX + name:
        ctx.next_function_id()
    return _answer(True)


async def _answer(value: bool) -> bool:
    """The value of a patch decided when it was called, with nothing to write."""
    return value


async def _mark(ctx: WorkflowContext, function_id: int, marker: str) -> bool:
    """A live patch: journal its marker at ``function_id``, then take the new branch."""
    call = JournalCall(ctx, function_id, marker)
    if call.start():
        await call.prove()
    engine = ctx.engine
    now = engine.clock.now()
    row = StepRow(function_id, marker, "json", b"true", None, None, now, now)
    existing = await engine.checkpoint(ctx, row)
    if existing is not None and existing.name != marker:
        raise NonDeterminismError(
            f"workflow {ctx.workflow_id!r} recorded {existing.name!r} at function ID"
            f" {function_id} while this execution reached {marker!r} there: two executions"
            " of the workflow ran different versions of its code at once. Let one version"
            " stop running the workflow before another resumes it"
        )
    return True
