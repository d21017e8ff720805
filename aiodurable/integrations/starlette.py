"""Starlette and FastAPI: a lifespan that opens the aiodurable runtime with the application.

.. code-block:: python

    from starlette.applications import Starlette
    from aiodurable.integrations.starlette import durable_lifespan, get_runtime

    app = Starlette(routes=routes, lifespan=durable_lifespan())
    # FastAPI is Starlette: FastAPI(lifespan=durable_lifespan()) works the same way.

The runtime opens before the application starts serving (recovering the unfinished workflows of
this executor) and closes after it stops. Handlers reach it as ``request.app.state.aiodurable``,
``request.state.aiodurable`` or :func:`get_runtime`; the module-level functions
(``aiodurable.start_workflow``, ``send``, ``get_event``...) act on it too when it is the only
runtime open in the process.

The application's own lifespan stays composable: pass it as ``lifespan=``. It runs inside the
open runtime (so its startup may start workflows), and the state it yields is merged with
``{"aiodurable": runtime}``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeAlias, TypeVar

from starlette.applications import Starlette
from starlette.requests import HTTPConnection

from .._runtime import Runtime

__all__ = ["STATE_KEY", "RuntimeSource", "durable_lifespan", "get_runtime"]

STATE_KEY = "aiodurable"
"""The name of the runtime on ``app.state`` and in the lifespan state (``request.state``)."""

AppT = TypeVar("AppT", bound=Starlette)

RuntimeSource: TypeAlias = Runtime | Callable[[], Runtime] | None
"""A runtime to open, a factory making one for each start of the application (useful when an
application is started more than once, as tests do), or None for ``Runtime()`` (settings from
the environment, else the embedded PostgreSQL)."""

AppLifespan: TypeAlias = Callable[
    [AppT], AbstractAsyncContextManager[None] | AbstractAsyncContextManager[Mapping[str, Any]]
]


def _make_runtime(source: RuntimeSource) -> Runtime:
    if source is None:
        return Runtime()
    if isinstance(source, Runtime):
        return source
    return source()


def durable_lifespan(
    runtime: RuntimeSource = None,
    *,
    lifespan: AppLifespan[AppT] | None = None,
) -> Callable[[AppT], AbstractAsyncContextManager[Mapping[str, Any]]]:
    """A Starlette (or FastAPI) lifespan that opens ``runtime`` for the application's lifetime,
    puts it on ``app.state.aiodurable`` and in the lifespan state, and runs the application's own
    ``lifespan`` (if any) inside it."""

    @asynccontextmanager
    async def run(app: AppT) -> AsyncIterator[Mapping[str, Any]]:
        async with _make_runtime(runtime) as rt:
            setattr(app.state, STATE_KEY, rt)
            try:
                if lifespan is None:
                    yield {STATE_KEY: rt}
                    return
                async with lifespan(app) as inner:
                    yield {**(inner or {}), STATE_KEY: rt}
            finally:
                delattr(app.state, STATE_KEY)

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
