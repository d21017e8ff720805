"""aiohttp: a ``cleanup_ctx`` entry that opens the aiodurable runtime with the application.

.. code-block:: python

    from aiohttp import web
    from aiodurable.integrations import aiohttp as durable

    app = web.Application()
    app.cleanup_ctx.append(my_http_session)  # the application's own contexts, in any order
    durable.setup(app)  # or: app.cleanup_ctx.append(durable.cleanup_ctx())

    async def handler(request: web.Request) -> web.Response:
        rt = durable.get_runtime(request)  # or request.config_dict[durable.RUNTIME_KEY]
        ...

The order, at startup: the runtime connects as its own entry runs, and is stored as
``app[RUNTIME_KEY]`` (a typed ``web.AppKey``), so the entries after it may start workflows.
Recovery of this executor's unfinished workflows (and dispatch of its queues) begins only once
every ``cleanup_ctx`` entry has started, wherever this one sits in the list, so that a recovered
workflow finds the application's HTTP session or database pool; with :func:`setup`, it begins
later still, in an ``on_startup`` handler, after the ``on_startup`` handlers registered before
:func:`setup` too. At cleanup, after the server has finished its requests, the runtime closes
before any ``cleanup_ctx`` entry exits and before any ``on_cleanup`` handler runs, so no workflow
sees the application's resources torn down. (``on_shutdown`` handlers run before that, while
requests may still be in flight: tear resources down in ``cleanup_ctx`` or ``on_cleanup``.)

To run after all the other entries, the entry appends a second entry of its own to
``app.cleanup_ctx`` when the application starts (aiohttp runs entries appended during startup).
A sub-application's list is frozen by then: there, append :func:`cleanup_ctx` last.

The module-level functions (``aiodurable.start_workflow``, ``send``, ``get_event``...) act on the
runtime too when it is the only runtime open in the process.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import TypeAlias

from aiohttp import web

from .._runtime import Runtime
from ._source import RuntimeSource, make_runtime

__all__ = ["RUNTIME_KEY", "RuntimeSource", "cleanup_ctx", "get_runtime", "setup"]

logger: logging.Logger = logging.getLogger("aiodurable")

RUNTIME_KEY: web.AppKey[Runtime] = web.AppKey("aiodurable_runtime", Runtime)
"""Where the open runtime is stored on the application: ``app[RUNTIME_KEY]``."""

_CleanupCtx: TypeAlias = Callable[[web.Application], AsyncIterator[None]]


def _entry(runtime: RuntimeSource, *, begins: bool) -> _CleanupCtx:
    """The ``cleanup_ctx`` entry; ``begins``: whether it begins the runtime itself (else an
    ``on_startup`` handler does)."""

    async def last(app: web.Application) -> AsyncIterator[None]:
        # Entered after every other entry has started; exited before any of them cleans up.
        rt = app[RUNTIME_KEY]
        try:
            if begins:
                await rt.begin()
            yield
        finally:
            await rt.close()

    async def first(app: web.Application) -> AsyncIterator[None]:
        rt = make_runtime(runtime)
        await rt.open(begin=False)
        # The entries after this one, which run in this task, act on this runtime when they
        # call module-level functions, even with other runtimes open in the process: opening
        # it made it this task's runtime.
        try:
            # Set during startup, before aiohttp freezes the application; left in place at
            # cleanup, since changing a frozen application is deprecated.
            app[RUNTIME_KEY] = rt
            entries = app.cleanup_ctx
            if entries[-1] is first:
                if begins:  # every other entry has started already
                    await rt.begin()
            elif last not in entries:  # (it is when the same application starts again)
                if not entries.frozen:
                    entries.append(last)
                else:
                    logger.warning(
                        "aiodurable's entry is not the last of a frozen app.cleanup_ctx (a"
                        " sub-application's), so the runtime stops only after the entries"
                        " after it have cleaned up%s. Add it after this application's own"
                        " cleanup_ctx entries.",
                        ", and recovers workflows before they start" if begins else "",
                    )
                    if begins:
                        await rt.begin()
            yield
        finally:
            await rt.close()

    return first


def cleanup_ctx(
    runtime: RuntimeSource = None,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` entry that opens ``runtime`` while the application runs and stores it
    as ``app[RUNTIME_KEY]``.

    Wherever it sits in ``app.cleanup_ctx``, workflows are recovered once every entry has
    started and stopped before any entry cleans up (see the module's documentation)."""
    return _entry(runtime, begins=True)


def setup(app: web.Application, runtime: RuntimeSource = None) -> None:
    """Open ``runtime`` with ``app``: append a :func:`cleanup_ctx` entry to ``app.cleanup_ctx``,
    and an ``on_startup`` handler that recovers workflows after every ``cleanup_ctx`` entry and
    after the ``on_startup`` handlers registered so far."""

    async def begin(app: web.Application) -> None:
        await app[RUNTIME_KEY].begin()

    app.cleanup_ctx.append(_entry(runtime, begins=False))
    app.on_startup.append(begin)


def get_runtime(source: web.Request | web.Application) -> Runtime:
    """The open runtime, from a request (its application or a parent) or an application."""
    mapping = source.config_dict if isinstance(source, web.Request) else source
    try:
        return mapping[RUNTIME_KEY]
    except KeyError:
        raise LookupError(
            "no aiodurable runtime on this application; add"
            " aiodurable.integrations.aiohttp.setup(app), or"
            " aiodurable.integrations.aiohttp.cleanup_ctx() to app.cleanup_ctx"
        ) from None
