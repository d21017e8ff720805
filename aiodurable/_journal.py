"""One journaled call: every durable operation (a step, a transaction, a sleep, a message sent or
received, an event set or read, a child started) goes through :func:`journaled`.

The decision between replaying and running is pure: the journal entry at the call's function ID
(loaded once, when the workflow started or resumed) either exists, and the call returns what it
recorded, or does not, and the call runs its effect, which writes the entry. What waits after the
decision (the rest of a durable sleep) waits only in a live run, never while
:func:`aiodurable.testing.check_replay` replays a journal.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from ._context import WorkflowContext
from ._store import StepRow

__all__ = ["Live", "journaled"]


class Live(NamedTuple):
    """What an effect returns when this execution wrote the journal entry: the value itself,
    returned as is (not decoded again from what was recorded)."""

    value: object


async def journaled(
    ctx: WorkflowContext,
    function_id: int,
    name: str,
    effect: Callable[[], Awaitable[StepRow | Live]],
    *,
    hint: object = None,
    decode: Callable[[StepRow], Any] | None = None,
    settle: Callable[[StepRow], Awaitable[None]] | None = None,
) -> Any:
    """Replay the entry recorded at ``function_id``, or run ``effect`` to make it.

    ``effect`` runs only in a live execution, when nothing is recorded there: it performs the
    operation and writes its entry (in the same statement where the operation is a write), and
    returns :class:`Live` with the value when its own entry was written, or the entry another
    execution wrote first, which then stands. A failure the effect raises after journaling it is
    the call's outcome. ``decode`` turns an entry into the call's value (default: the recorded
    output decoded per ``hint``, or the recorded exception raised); ``settle`` runs after the
    decision in a live execution only (a sleep's remaining time).
    """
    entry = ctx.recorded(function_id, name)
    if entry is None:
        ctx.check_cancelled()
        engine = ctx.engine
        if not engine.ownership_fresh():  # after a pause or an outage: prove it, stop if lost
            await engine.confirm_ownership()
            ctx.check_cancelled()
        outcome = await effect()
        if isinstance(outcome, Live):
            return outcome.value
        entry = outcome
    if settle is not None and not ctx.replay_only:
        await settle(entry)
    if decode is not None:
        return decode(entry)
    return ctx.engine.replay(ctx.workflow_id, entry, hint)
