"""Durable sleep, messages (``send``/``recv``) and events (``set_event``/``get_event``).

Each of these, called in a workflow, takes its function ID when it is called (these are plain
functions returning a coroutine) and is a checkpoint: replay returns what the first execution
saw. Each effect commits in the same statement as its journal entry.

Durations are checked by `check_timeout`: seconds >= 0, at most ``MAX_SECONDS``, and
``float("inf")`` means no limit (``sleep`` sleeps until the workflow is cancelled, ``recv`` and
``get_event`` wait until something arrives), the same as it does for workflow timeouts.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import orjson

from ._context import WorkflowContext, current_workflow, in_step, require_workflow
from ._current import current_engine
from ._exceptions import SerializationError
from ._journal import JournalCall, Live, journaled
from ._records import AUTO_KEY_PREFIX, StepRow
from ._serde import decode
from ._signals import Signal
from ._validate import check_id, check_timeout

if TYPE_CHECKING:
    from ._engine import Engine
    from ._reach import Reach

__all__ = ["get_event", "get_event_on", "recv", "send", "send_on", "set_event", "sleep"]

SLEEP = "aiodurable.sleep"
RECV = "aiodurable.recv"
SEND = "aiodurable.send"
SET_EVENT = "aiodurable.set_event"
GET_EVENT = "aiodurable.get_event"


def _seconds(name: str, value: object) -> float | None:
    """A wait's duration, checked; None for no limit (``float("inf")``)."""
    return check_timeout(value, name, zero=True)


def _durable(ctx: WorkflowContext | None) -> WorkflowContext | None:
    return None if ctx is None or in_step() else ctx


# -- sleep ---------------------------------------------------------------------------------------


def sleep(seconds: float) -> Coroutine[Any, Any, None]:
    """Sleep durably: in a workflow the wake-up time is recorded, so after a crash the workflow
    sleeps only what remains. ``float("inf")`` sleeps until the workflow is cancelled (or its
    deadline passes). Outside a workflow (or in a step) it is ``asyncio.sleep``."""
    delay = _seconds("sleep(seconds)", seconds)
    ctx = _durable(current_workflow())
    if ctx is None:
        return asyncio.sleep(math.inf if delay is None else delay)
    return _sleep(ctx, ctx.next_function_id(), delay)


async def _sleep(ctx: WorkflowContext, function_id: int, seconds: float | None) -> None:
    engine = ctx.engine
    call = JournalCall(ctx, function_id, SLEEP)
    entry = call.recorded
    if entry is None:
        if call.start():
            await call.prove()
        now = engine.clock.now()
        # The wake-up time, or null for a sleep without end.
        wake = b"null" if seconds is None else orjson.dumps(now + seconds)
        entry = StepRow(function_id, SLEEP, "json", wake, None, None, now, now)
        entry = await engine.checkpoint(ctx, entry) or entry
    elif ctx.replay_only:
        return  # a replay never waits
    wake_at = _wake_time(call, entry)
    if wake_at is None:
        await ctx.interruptible(engine.clock.wait(asyncio.Event(), None))  # until cancelled
    else:
        await ctx.interruptible(engine.clock.sleep_until(wake_at))


def _wake_time(call: JournalCall, entry: StepRow) -> float | None:
    """The wake-up time a sleep recorded (None: it sleeps until cancelled)."""
    wake_at = call.result(entry)
    if wake_at is None:
        return None
    if isinstance(wake_at, bool) or not isinstance(wake_at, int | float):
        raise SerializationError(
            f"the sleep at function ID {entry.function_id} of workflow"
            f" {call.ctx.workflow_id!r} recorded {wake_at!r} as its wake-up time, which is not"
            " a time"
        )
    return float(wake_at)


# -- messages ------------------------------------------------------------------------------------


def send(
    destination_id: str,
    message: object,
    topic: str | None = None,
    *,
    idempotency_key: str | None = None,
) -> Coroutine[Any, Any, None]:
    """Send ``message`` to a workflow, queued per ``topic``; it is never lost once this returns.

    From a workflow it is a checkpoint, so it is delivered exactly once. From elsewhere, an
    ``idempotency_key`` makes repeated sends with that key deliver once. Raises
    :class:`WorkflowNotFound` for an unknown destination.
    """
    return send_on(
        current_engine(), destination_id, message, topic, idempotency_key=idempotency_key
    )


def send_on(
    rt: Reach,
    destination_id: str,
    message: object,
    topic: str | None = None,
    *,
    idempotency_key: str | None = None,
) -> Coroutine[Any, Any, None]:
    """:func:`send` on a given runtime."""
    check_id("destination workflow ID", destination_id)
    topic_key = "" if topic is None else check_id("topic", topic)
    if idempotency_key is not None:
        check_id("idempotency key", idempotency_key)
        if idempotency_key.startswith(AUTO_KEY_PREFIX):
            raise ValueError(
                f"idempotency keys starting with {AUTO_KEY_PREFIX!r} are aiodurable's own;"
                " choose another key"
            )
    data = rt.encode(message, what=f"the message to workflow {destination_id!r}")
    ctx = _durable(current_workflow())
    function_id = ctx.next_function_id() if ctx is not None and ctx.engine is rt else None
    return _send(rt, ctx, function_id, destination_id, topic_key, data, idempotency_key)


async def _send(
    rt: Reach,
    ctx: WorkflowContext | None,
    function_id: int | None,
    destination_id: str,
    topic: str,
    data: bytes,
    idempotency_key: str | None,
) -> None:
    fmt = rt.serializer.name
    if ctx is None or function_id is None:
        now = rt.clock.now()
        await rt.store.send(destination_id, topic, fmt, data, now, idempotency_key=idempotency_key)
        return
    await journaled(
        ctx,
        function_id,
        SEND,
        _deliver,
        ctx.engine,
        ctx,
        function_id,
        destination_id,
        topic,
        fmt,
        data,
    )


async def _deliver(
    rt: Engine,
    ctx: WorkflowContext,
    function_id: int,
    destination_id: str,
    topic: str,
    fmt: str,
    data: bytes,
) -> Live:
    """A live send from a workflow: the message and its journal entry in one statement."""
    now = rt.clock.now()
    entry = StepRow(function_id, SEND, "json", None, None, None, now, now)
    checkpoint = (ctx.workflow_id, entry)
    await rt.store.send(destination_id, topic, fmt, data, now, checkpoint=checkpoint)
    return Live(None)


def recv(topic: str | None = None, timeout: float = 60.0) -> Coroutine[Any, Any, Any]:
    """In a workflow, wait for the oldest message on ``topic`` (no topic: only messages sent
    without one) and consume it; ``None`` after ``timeout`` seconds (``float("inf")``: never).

    The consume and its checkpoint commit together, so each message is received exactly once.
    The deadline is recorded: a workflow recovered mid-wait waits only what remains.
    """
    topic_key = "" if topic is None else check_id("topic", topic)
    seconds = _seconds("recv(timeout)", timeout)
    ctx = require_workflow("aiodurable.recv()")
    return _recv(ctx, ctx.next_function_id(), topic_key, seconds)


async def _recv(ctx: WorkflowContext, function_id: int, topic: str, timeout: float | None) -> Any:
    call = JournalCall(ctx, function_id, RECV)
    entry = call.recorded
    if entry is not None:
        return call.result(entry)
    if call.start():
        await call.prove()
    rt = ctx.engine
    deadline: float | None = None  # none recorded yet, or (timeout None) none at all
    with rt.notifier.watch(Signal.MESSAGE, ctx.workflow_id, topic) as waiter:
        while True:
            waiter.clear()
            now = rt.clock.now()
            entry = await rt.store.consume_message(ctx.workflow_id, topic, function_id, RECV, now)
            if entry is not None:
                return call.result(entry)
            if deadline is None and timeout is not None:
                deadline = await rt.store.wait_deadline(ctx.workflow_id, function_id, now + timeout)
            if deadline is not None and now >= deadline:
                row = StepRow(function_id, RECV, "json", b"null", None, None, now, now)
                return call.result(await rt.checkpoint(ctx, row) or row)
            await ctx.interruptible(waiter.wait(deadline))


# -- events --------------------------------------------------------------------------------------


def set_event(key: str, value: object) -> Coroutine[Any, Any, None]:
    """In a workflow, publish ``value`` under ``key`` (the latest value wins) and wake readers."""
    check_id("event key", key)
    ctx = require_workflow("aiodurable.set_event()")
    rt = ctx.engine
    data = rt.encode(value, what=f"the value of event {key!r}")
    return _set_event(ctx, ctx.next_function_id(), key, data)


async def _set_event(ctx: WorkflowContext, function_id: int, key: str, data: bytes) -> None:
    await journaled(ctx, function_id, SET_EVENT, _publish, ctx, function_id, key, data)


async def _publish(ctx: WorkflowContext, function_id: int, key: str, data: bytes) -> Live:
    """A live set_event: the value and its journal entry in one statement."""
    rt = ctx.engine
    now = rt.clock.now()
    fmt = rt.serializer.name
    entry = StepRow(function_id, SET_EVENT, fmt, data, None, None, now, now)
    await rt.store.set_event(ctx.workflow_id, entry, key, fmt, data)
    return Live(None)


def get_event(workflow_id: str, key: str, timeout: float = 60.0) -> Coroutine[Any, Any, Any]:
    """Wait until workflow ``workflow_id`` has published ``key``; return its latest value, or
    ``None`` after ``timeout`` seconds (``float("inf")``: never). In a workflow it is a
    checkpoint: replay sees the value read the first time."""
    return get_event_on(current_engine(), workflow_id, key, timeout)


def get_event_on(
    rt: Reach, workflow_id: str, key: str, timeout: float = 60.0
) -> Coroutine[Any, Any, Any]:
    """:func:`get_event` on a given runtime."""
    check_id("workflow ID", workflow_id)
    check_id("event key", key)
    seconds = _seconds("get_event(timeout)", timeout)
    ctx = _durable(current_workflow())
    if ctx is None or ctx.engine is not rt:
        return _get_event(rt, None, 0, workflow_id, key, seconds)
    return _get_event(rt, ctx, ctx.next_function_id(), workflow_id, key, seconds)


async def _get_event(
    rt: Reach,
    ctx: WorkflowContext | None,
    function_id: int,
    workflow_id: str,
    key: str,
    timeout: float | None,
) -> Any:
    call = None if ctx is None else JournalCall(ctx, function_id, GET_EVENT)
    if call is not None:
        if call.recorded is not None:
            return call.result(call.recorded)
        if call.start():
            await call.prove()
    deadline: float | None = None  # none computed yet, or (timeout None) none at all
    with rt.notifier.watch(Signal.EVENT, workflow_id, key) as waiter:
        while True:
            waiter.clear()
            found = await rt.store.get_event(workflow_id, key)
            now = rt.clock.now()
            if found is not None:
                break
            if deadline is None and timeout is not None:
                deadline = now + timeout
                if ctx is not None:
                    deadline = await rt.store.wait_deadline(ctx.workflow_id, function_id, deadline)
            if deadline is not None and now >= deadline:
                break
            wait = waiter.wait(deadline)
            await (wait if ctx is None else ctx.interruptible(wait))
    fmt, data = found if found is not None else ("json", b"null")
    if call is not None and ctx is not None:
        row = StepRow(function_id, GET_EVENT, fmt, data, None, None, now, now)
        recorded = await ctx.engine.checkpoint(ctx, row)
        if recorded is not None:
            return call.result(recorded)
    return _decode_event(rt, workflow_id, key, fmt, data)


def _decode_event(rt: Reach, workflow_id: str, key: str, fmt: str, data: bytes) -> Any:
    what = f"the value of event {key!r} of workflow {workflow_id!r}"
    return decode(rt.serializer_for(fmt), data, None, what=what)
