"""Workflow streams: ``write_stream`` and ``close_stream`` in a workflow, ``read_stream`` anywhere.

A stream is a sequence of values a workflow writes under a key. Its values have offsets 0, 1,
2... in the order of the ``write_stream`` calls, taken when each is called (with its function
ID, before any ``await``), so a replay gives every value the offset it had. Each write is a
checkpoint: the value's row and its journal entry commit in one statement, fenced by the
workflow's owner, and a replay (after a crash, or on another executor) finds the entry and
writes nothing. Writes arriving together, from one workflow or many, share one statement
(group commit). ``close_stream`` writes a marker row after the last value.

A reader yields every value in offset order. It registers for the stream's notifications (and
the workflow's status) before it reads, reads a page of values at a time, and ends at the close
marker, or once the workflow has ended (SUCCESS, ERROR, CANCELLED,
MAX_RECOVERY_ATTEMPTS_EXCEEDED) and every value it wrote was yielded. Values written at the
same time may commit out of order (``asyncio.gather`` of writes): the reader waits at a missing
offset until it is written, or, once the workflow has ended, skips it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Coroutine
from typing import TYPE_CHECKING, Any

from ._context import WorkflowContext, current_workflow, in_step, require_workflow
from ._current import current_engine
from ._exceptions import WorkflowNotFound
from ._journal import Live, journaled
from ._models import WorkflowStatus
from ._records import StepRow
from ._serde import decode
from ._signals import Signal
from ._validate import check_id

if TYPE_CHECKING:
    from ._reach import Reach

__all__ = ["close_stream", "read_stream", "read_stream_on", "write_stream"]

WRITE_STREAM = "aiodurable.write_stream"
CLOSE_STREAM = "aiodurable.close_stream"

PAGE = 256
"""Rows a reader fetches per query."""


def write_stream(key: str, value: object) -> Coroutine[Any, Any, None]:
    """In a workflow, append ``value`` to the workflow's stream ``key`` and wake its readers.

    A checkpoint: the value and its journal entry commit together, so a replay never writes
    it twice. Raises :class:`SerializationError` (before anything is written) for a value the
    runtime's serializer cannot encode, and ValueError after ``close_stream(key)``.
    """
    check_id("stream key", key)
    ctx = require_workflow("aiodurable.write_stream()")
    offset, closed = ctx.streams.get(key, (0, False))
    if closed:
        raise ValueError(
            f"stream {key!r} of workflow {ctx.workflow_id!r} is closed: close_stream({key!r})"
            " was called before this write_stream. Write every value before closing the"
            " stream, or write to another key"
        )
    rt = ctx.engine
    data = rt.encode(value, what=f"the value written to stream {key!r}")
    ctx.streams[key] = (offset + 1, False)
    return _write(ctx, ctx.next_function_id(), key, offset, rt.serializer.name, data)


def close_stream(key: str) -> Coroutine[Any, Any, None]:
    """In a workflow, close the workflow's stream ``key``: its readers end once they have
    yielded every value. A checkpoint. Closing a closed stream does nothing; writing to it
    raises ValueError. A stream need not be closed: it also ends when the workflow ends."""
    check_id("stream key", key)
    ctx = require_workflow("aiodurable.close_stream()")
    offset, closed = ctx.streams.get(key, (0, False))
    if closed:
        return _nothing()
    ctx.streams[key] = (offset, True)
    return _write(ctx, ctx.next_function_id(), key, offset, None, None)


async def _nothing() -> None:
    return None


async def _write(
    ctx: WorkflowContext,
    function_id: int,
    key: str,
    offset: int,
    fmt: str | None,
    data: bytes | None,
) -> None:
    name = CLOSE_STREAM if data is None else WRITE_STREAM
    await journaled(ctx, function_id, name, _append, ctx, function_id, key, offset, fmt, data)


async def _append(
    ctx: WorkflowContext,
    function_id: int,
    key: str,
    offset: int,
    fmt: str | None,
    data: bytes | None,
) -> StepRow | Live:
    """A live write (or close): the stream's row and its journal entry in one statement."""
    rt = ctx.engine
    now = rt.clock.now()
    name = CLOSE_STREAM if data is None else WRITE_STREAM
    entry = StepRow(function_id, name, "json", None, None, None, now, now)
    existing = await rt.store.write_stream(ctx.workflow_id, entry, key, offset, fmt, data)
    if existing is not None:
        ctx.journal[function_id] = existing
        return existing
    return Live(None)


def read_stream(workflow_id: str, key: str) -> AsyncGenerator[Any, None]:
    """Every value workflow ``workflow_id`` writes to its stream ``key``, in order:
    ``async for value in aiodurable.read_stream(workflow_id, key)``.

    Values already written come first, then each new one as it commits (woken by NOTIFY). The
    iteration ends when the stream is closed, or when the workflow has ended, after the last
    value. Raises :class:`WorkflowNotFound` for an unknown workflow. In a workflow, the values
    read are not journaled: a replay reads the stream again (read it in a step to record what
    was read).
    """
    return read_stream_on(current_engine(), workflow_id, key)


def read_stream_on(rt: Reach, workflow_id: str, key: str) -> AsyncGenerator[Any, None]:
    """:func:`read_stream` on a given runtime."""
    check_id("workflow ID", workflow_id)
    check_id("stream key", key)
    ctx = current_workflow()
    if ctx is not None and (in_step() or ctx.engine is not rt):
        ctx = None
    return _read(rt, ctx, workflow_id, key)


async def _read(
    rt: Reach, ctx: WorkflowContext | None, workflow_id: str, key: str
) -> AsyncGenerator[Any, None]:
    keys = [(Signal.STREAM.value, workflow_id, key), (Signal.WORKFLOW.value, workflow_id)]
    serializers = rt.serializer_for
    what = f"a value of stream {key!r} of workflow {workflow_id!r}"
    expected = 0  # the next offset to yield
    first = True
    with rt.notifier.watch_any(keys) as waiter:
        while True:
            waiter.clear()
            page = await rt.store.read_stream(workflow_id, key, expected, PAGE)
            if page is None:
                if first:
                    raise WorkflowNotFound(workflow_id)
                return  # deleted since (garbage-collected): it had ended
            first = False
            ended = WorkflowStatus(page.status).is_terminal
            for item in page.items:
                if item.offset != expected and not ended:
                    break  # a value written earlier has not committed yet: wait for it
                if item.closes:
                    return
                assert item.format is not None and item.value is not None
                yield decode(serializers(item.format), item.value, None, what=what)
                expected = item.offset + 1
            else:
                if len(page.items) == PAGE:
                    continue  # more to read now
                if ended:
                    return
            wait = waiter.wait()
            await (wait if ctx is None else ctx.interruptible(wait))
