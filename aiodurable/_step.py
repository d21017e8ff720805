"""``@step()``: the decorator and the step cache.

A step's first execution costs one checkpoint (one INSERT, one round trip) and no read: the
workflow's whole journal was loaded once when it started or resumed. A replayed step returns its
recorded output, or re-raises its recorded exception, without running its body.

Each step function also gets a one-step workflow (:func:`_one_step_workflow`), by which a queue
runs the step on its own: ``q.enqueue(step_fn, *args)``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

from ._context import WorkflowContext, current_workflow, in_step, step_body
from ._exceptions import MaxRetriesExceeded
from ._journal import Live, journaled
from ._records import StepRow
from ._retry import NonRetryable, Retry
from ._serde import encode_exception, return_hint
from ._tracing import step_span
from ._validate import check_id, check_timeout
from ._workflow import (
    DEFAULT_MAX_RECOVERY_ATTEMPTS,
    STEP_WORKFLOW_PREFIX,
    WorkflowDef,
    register_internal,
    stable_module_name,
)

__all__ = ["StepDef", "checkpoint_failure", "step"]

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(eq=False, slots=True)
class StepDef:
    """A decorated step function and its options."""

    name: str
    fn: Callable[..., Coroutine[Any, Any, Any]]
    retry: Retry | None
    timeout: float | None
    hint: object = field(default=None)

    async def invoke(
        self, ctx: WorkflowContext, args: tuple[object, ...], kwargs: dict[str, Any]
    ) -> object:
        """Run the body, with the retry policy and the per-attempt timeout."""
        errors: list[BaseException] = []
        while True:
            try:
                if self.timeout is None:
                    return await self.fn(*args, **kwargs)
                async with asyncio.timeout(self.timeout):
                    return await self.fn(*args, **kwargs)
            except Exception as exc:
                retry = self.retry
                if retry is None or isinstance(exc, NonRetryable):
                    raise
                if not isinstance(exc, retry.retry_on):
                    raise
                errors.append(exc)
                if len(errors) >= retry.max_attempts:
                    raise MaxRetriesExceeded(self.name, errors) from exc
                clock = ctx.engine.clock
                await ctx.interruptible(clock.sleep_until(clock.now() + retry.delay(len(errors))))


async def checkpoint_failure(
    ctx: WorkflowContext, function_id: int, name: str, exc: BaseException, started: float
) -> StepRow | None:
    """Journal ``exc`` as the outcome of the call at ``function_id``; return the entry already
    there if another execution journaled it first (None when ours was written)."""
    now = ctx.engine.clock.now()
    row = StepRow(function_id, name, "json", None, encode_exception(exc), None, started, now)
    return await ctx.engine.checkpoint(ctx, row)


async def _run_step(
    ctx: WorkflowContext,
    function_id: int,
    sdef: StepDef,
    args: tuple[object, ...],
    kwargs: dict[str, Any],
) -> StepRow | Live:
    """A live step: run its body, then checkpoint its result or its failure."""
    engine = ctx.engine
    name = sdef.name
    started = engine.clock.now()
    try:
        with step_span(name, ctx.workflow_id, function_id), step_body(name):
            result = await sdef.invoke(ctx, args, kwargs)
    except Exception as exc:
        entry = await checkpoint_failure(ctx, function_id, name, exc, started)
        if entry is None:
            raise
        return entry
    fmt = engine.serializer.name
    data = engine.encode(result, what=f"the result of step {name!r}")
    row = StepRow(function_id, name, fmt, data, None, None, started, engine.clock.now())
    return await engine.checkpoint(ctx, row) or Live(result)


def _one_step_workflow(
    name: str | None,
    fn: Callable[..., Coroutine[Any, Any, Any]],
    call: Callable[..., Coroutine[Any, Any, Any]],
) -> WorkflowDef:
    """The workflow that runs the step ``call`` (``fn`` decorated) once and returns its result,
    registered as aiodurable's own, so that every runtime with the step can run and recover it.

    Named ``aiodurable.step:`` and the step's pinned ``name``, else its module and qualified name
    (a step's default name, its qualified name alone, may be the same in two modules)."""

    async def one_step(*args: Any, **kwargs: Any) -> Any:
        return await call(*args, **kwargs)

    # The step's signature and annotations: they encode the inputs and decode the result.
    functools.update_wrapper(one_step, fn)
    ident = name if name is not None else f"{stable_module_name(fn.__module__)}:{fn.__qualname__}"
    wdef = WorkflowDef(STEP_WORKFLOW_PREFIX + ident, one_step, DEFAULT_MAX_RECOVERY_ATTEMPTS)
    register_internal(wdef)
    return wdef


def step(
    *, retry: Retry | None = None, name: str | None = None, timeout: float | None = None
) -> Callable[[Callable[P, Coroutine[Any, Any, R]]], Callable[P, Coroutine[Any, Any, R]]]:
    """Make an ``async def`` function a step: checkpointed once it completes, never run again.

    Inside a workflow, each call is journaled under its function ID; a replay returns the
    recorded result (or re-raises the recorded exception). Outside a workflow, and inside another
    step, it is a plain call. ``retry`` retries failures with backoff; ``timeout`` bounds each
    attempt (seconds; ``None`` or ``float("inf")`` for no bound). ``name`` defaults to the
    function's qualified name; it is journaled with each call, so it is checked here, at
    decoration, like a workflow ID (UTF-8 text, no NUL, at most 1,000 bytes), rather than after
    the step's first run. A step given to :meth:`Queue.enqueue <aiodurable.Queue.enqueue>` runs
    as a one-step workflow whose result is the step's.
    """
    if retry is not None and not isinstance(retry, Retry):
        raise TypeError(f"step(retry=) takes an aiodurable.Retry, not {retry!r}")
    if name is not None:
        check_id("step name", name)
    if timeout is not None:
        timeout = check_timeout(timeout, "step(timeout=)")

    def decorate(fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(
                f"@step() decorates an async def function, and {fn!r} is not one; write it as"
                " `async def` (run blocking code in your own executor inside it if you must)"
            )
        sdef = StepDef(check_id("step name", name or fn.__qualname__), fn, retry, timeout)
        hints: list[object] = []

        @functools.wraps(fn)
        def call(*args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
            ctx = current_workflow()
            if ctx is None or in_step():
                return fn(*args, **kwargs)
            function_id = ctx.next_function_id()  # taken now, before the first await
            if not hints:
                hints.append(return_hint(fn))
            return journaled(
                ctx,
                function_id,
                sdef.name,
                _run_step,
                ctx,
                function_id,
                sdef,
                args,
                kwargs,
                hint=hints[0],
            )

        call.__aiodurable_step__ = sdef  # type: ignore[attr-defined]  # our marker attribute
        one_step = _one_step_workflow(name, fn, call)
        call.__aiodurable_step_workflow__ = one_step  # type: ignore[attr-defined]  # marker
        return call

    return decorate
