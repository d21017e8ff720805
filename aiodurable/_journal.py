"""One journaled call: every durable operation (a step, a transaction, a sleep, a message sent or
received, an event set or read, a child started) goes through :class:`JournalCall`, most of
them through its one-line form :func:`journaled`.

The decision between replaying and running is pure: the journal entry at the call's function ID
(loaded once, when the workflow started or resumed) either exists, and the call returns what it
recorded, or does not, and the call runs its effect, which writes the entry. What waits after the
decision (the rest of a durable sleep, a recv) waits only in a live run, never while
:func:`aiodurable.testing.check_replay` replays a journal: there a call with nothing recorded
stops the replay (the journal ends there) or is a mismatch.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from ._context import WorkflowContext
from ._records import StepRow

__all__ = ["JournalCall", "Live", "journaled"]


class Live(NamedTuple):
    """What an effect returns when this execution wrote the journal entry: the value itself,
    returned as is (not decoded again from what was recorded)."""

    value: object


class JournalCall:
    """One durable call at a function ID of a workflow.

    Made when the call is awaited: ``recorded`` is the journal entry there (checked against the
    call's name; no I/O). When it is None the call is live: :meth:`start` (and, when it says
    so, :meth:`prove`) is its checkpoint boundary (cancellation, proof of ownership), then the
    operation writes its entry, and :meth:`result` turns the entry that stands into the call's
    value either way. An operation that waits (a recv) waits in its own frame between the two,
    so that a workflow waiting there costs no more memory than the wait itself.
    """

    __slots__ = ("ctx", "function_id", "recorded")

    def __init__(self, ctx: WorkflowContext, function_id: int, name: str) -> None:
        self.ctx = ctx
        self.function_id = function_id
        self.recorded: StepRow | None = ctx.recorded(function_id, name)

    def start(self) -> bool:
        """The live call's checkpoint boundary: stop here if the workflow was cancelled. True
        when ownership must be proved first (after a pause or an outage): then await
        :meth:`prove` before the effect. (Two calls, so that the usual case awaits nothing.)"""
        ctx = self.ctx
        ctx.check_cancelled()
        return not ctx.engine.ownership_fresh()

    async def prove(self) -> None:
        """Prove that this runtime still owns the workflow; it stops here if it does not."""
        await self.ctx.engine.confirm_ownership()
        self.ctx.check_cancelled()

    def result(self, entry: StepRow, hint: object = None) -> Any:
        """The call's value from its entry: the recorded output decoded per ``hint``, or the
        recorded exception raised."""
        ctx = self.ctx
        return ctx.engine.replay(ctx.workflow_id, entry, hint)


async def journaled(
    ctx: WorkflowContext,
    function_id: int,
    name: str,
    effect: Callable[..., Awaitable[StepRow | Live]],
    *args: object,
    hint: object = None,
) -> Any:
    """Replay the entry recorded at ``function_id``, or run ``effect(*args)`` to make it.

    ``effect`` runs only in a live execution, when nothing is recorded there: it performs the
    operation and writes its entry (in the same statement where the operation is a write), and
    returns :class:`Live` with the value when its own entry was written, or the entry another
    execution wrote first, which then stands. A failure the effect raises after journaling it is
    the call's outcome. The arguments are passed, not captured in a closure: a step's hot path
    allocates nothing more than the call itself.
    """
    call = JournalCall(ctx, function_id, name)
    entry = call.recorded
    if entry is None:
        if call.start():
            await call.prove()
        outcome = await effect(*args)
        if isinstance(outcome, Live):
            return outcome.value
        entry = outcome
    return call.result(entry, hint)
