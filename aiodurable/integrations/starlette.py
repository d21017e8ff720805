"""Starlette and FastAPI: a lifespan that opens the aiodurable runtime with the application.

.. code-block:: python

    from starlette.applications import Starlette
    from aiodurable.integrations.starlette import durable_lifespan, get_runtime

    app = Starlette(routes=routes, lifespan=durable_lifespan(lifespan=my_lifespan))
    # FastAPI is Starlette: FastAPI(lifespan=durable_lifespan()) works the same way.

Handlers reach the runtime as ``request.app.state.aiodurable``, ``request.state.aiodurable`` or
:func:`get_runtime`; the module-level functions (``aiodurable.start_workflow``, ``send``,
``get_event``...) act on it too when it is the only runtime open in the process.

The order, at startup: the runtime connects (it can start workflows from here on), the
application's own ``lifespan`` starts (say, opening its HTTP session or database pool), and only
then does the runtime recover this executor's unfinished workflows and start dispatching its
queues, so that a recovered workflow finds everything that startup set up. At shutdown, after the
server has finished its requests, the runtime closes first (its workflows stop where they stand
and resume at the next start), then the application's own lifespan cleans up: no workflow sees
its resources torn down. The state the application's lifespan yields is merged with
``{"aiodurable": runtime}``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeAlias, TypeVar

from starlette.applications import Starlette
from starlette.requests import HTTPConnection

from .._runtime import Runtime
from ._source import RuntimeSource, make_runtime

__all__ = ["STATE_KEY", "RuntimeSource", "durable_lifespan", "get_runtime"]

STATE_KEY = "aiodurable"
"""The name of the runtime on ``app.state`` and in the lifespan state (``request.state``)."""

AppT = TypeVar("AppT", bound=Starlette)

AppLifespan: TypeAlias = Callable[
    [AppT], AbstractAsyncContextManager[None] | AbstractAsyncContextManager[Mapping[str, Any]]
]


def durable_lifespan(
    runtime: RuntimeSource = None,
    *,
    lifespan: AppLifespan[AppT] | None = None,
) -> Callable[[AppT], AbstractAsyncContextManager[Mapping[str, Any]]]:
    """A Starlette (or FastAPI) lifespan that opens ``runtime`` for the application's lifetime
    and puts it on ``app.state.aiodurable`` and in the lifespan state.

    The application's own ``lifespan`` (if any) starts once the runtime is connected, before
    recovery begins, and cleans up once the runtime has closed."""

    @asynccontextmanager
    async def run(app: AppT) -> AsyncIterator[Mapping[str, Any]]:
        rt = make_runtime(runtime)
        await rt.open(begin=False)
        # Module-level functions called by the application's own lifespan act on this runtime
        # even when the process has others open: opening it made it this task's runtime.
        try:
            setattr(app.state, STATE_KEY, rt)
            try:
                async with contextlib.AsyncExitStack() as own:
                    inner = (
                        None if lifespan is None else await own.enter_async_context(lifespan(app))
                    )
                    try:
                        await rt.begin()
                        yield {**(inner or {}), STATE_KEY: rt}
                    finally:
                        # Before the application's own cleanup: its workflows stop first.
                        await rt.close()
            finally:
                delattr(app.state, STATE_KEY)
        finally:
            await rt.close()

    return run


def get_runtime(source: HTTPConnection | Starlette) -> Runtime:
    """The runtime the lifespan opened, from a request (or websocket) or the application."""
    app = source.app if isinstance(source, HTTPConnection) else source
    rt = getattr(app.state, STATE_KEY, None)
    if not isinstance(rt, Runtime):
        raise LookupError(
            "no aiodurable runtime on this application; create it with"
            " lifespan=aiodurable.integrations.starlette.durable_lifespan()"
        )
    return rt
