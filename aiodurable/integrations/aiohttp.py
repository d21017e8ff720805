"""aiohttp: a ``cleanup_ctx`` entry that opens the aiodurable runtime with the application.

.. code-block:: python

    from aiohttp import web
    from aiodurable.integrations.aiohttp import RUNTIME_KEY, cleanup_ctx

    app = web.Application()
    app.cleanup_ctx.append(cleanup_ctx())  # before the entries that use the runtime
    app.cleanup_ctx.append(my_own_context)  # runs inside the open runtime

    async def handler(request: web.Request) -> web.Response:
        rt = request.config_dict[RUNTIME_KEY]
        ...

The runtime opens when the application starts (recovering the unfinished workflows of this
executor) and closes when it is cleaned up; aiohttp runs later ``cleanup_ctx`` entries inside
earlier ones, so the application's own entries stay composable. The runtime is stored as
``app[RUNTIME_KEY]`` (a typed ``web.AppKey``); the module-level functions
(``aiodurable.start_workflow``, ``send``, ``get_event``...) act on it too when it is the only
runtime open in the process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TypeAlias

from aiohttp import web

from .._runtime import Runtime

__all__ = ["RUNTIME_KEY", "RuntimeSource", "cleanup_ctx", "get_runtime", "setup"]

RUNTIME_KEY: web.AppKey[Runtime] = web.AppKey("aiodurable_runtime", Runtime)
"""Where the open runtime is stored on the application: ``app[RUNTIME_KEY]``."""

RuntimeSource: TypeAlias = Runtime | Callable[[], Runtime] | None
"""A runtime to open, a factory making one for each start of the application, or None for
``Runtime()`` (settings from the environment, else the embedded PostgreSQL)."""


def cleanup_ctx(
    runtime: RuntimeSource = None,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` entry that opens ``runtime`` while the application runs and stores it
    as ``app[RUNTIME_KEY]``."""

    async def run(app: web.Application) -> AsyncIterator[None]:
        if runtime is None:
            rt = Runtime()
        elif isinstance(runtime, Runtime):
            rt = runtime
        else:
            rt = runtime()
        async with rt:
            # Set during startup, before aiohttp freezes the application; left in place at
            # cleanup, since changing a frozen application is deprecated.
            app[RUNTIME_KEY] = rt
            yield

    return run


def setup(app: web.Application, runtime: RuntimeSource = None) -> None:
    """Append :func:`cleanup_ctx` to ``app.cleanup_ctx``."""
    app.cleanup_ctx.append(cleanup_ctx(runtime))


def get_runtime(source: web.Request | web.Application) -> Runtime:
    """The open runtime, from a request (its application or a parent) or an application."""
    mapping = source.config_dict if isinstance(source, web.Request) else source
    try:
        return mapping[RUNTIME_KEY]
    except KeyError:
        raise LookupError(
            "no aiodurable runtime on this application; add"
            " aiodurable.integrations.aiohttp.cleanup_ctx() to app.cleanup_ctx"
        ) from None
