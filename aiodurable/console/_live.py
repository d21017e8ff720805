"""``/events``: server-sent events that tell a page to re-fetch its fragment.

A stream follows the runtime's notifications (:meth:`Notifier.subscribe`): for the list, every
workflow status change, enqueue and LISTEN reconnection; for one workflow
(``/events?workflow=ID``), its status changes, messages and events. Starting a workflow and
journaling a step send no notification, so a cheap probe (the newest creation time for the list;
the workflow's status, journal length and mailbox for one workflow) also runs once a second and
reports a change it sees. A message carries no data (``data: changed``): the page re-reads.

A stream ends when the client disconnects (a task waits for ``http.disconnect``), when
:meth:`Live.stop` is called (the console's server calls it as it starts shutting down, since
uvicorn waits for open responses before the lifespan ends), when the runtime closes, and after
:data:`LIFETIME` seconds in any case (``EventSource`` reconnects by itself), which bounds how long
any server, however it is run, can wait for one.

At most :data:`MAX_STREAMS` streams are open at once (a browser holds one per tab); the next one
gets 503. A ``workflow`` parameter that no recorded workflow ID can equal (it holds a NUL or an
unpaired surrogate) gets 400.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

from .._engine import Engine
from .._signals import Signal
from . import _queries
from ._security import Receive, Scope, Send, is_storable, plain_response

__all__ = ["LIFETIME", "MAX_STREAMS", "Live"]

PROBE_INTERVAL = 1.0
"""Seconds between probes for changes that send no notification."""
KEEPALIVE = 15.0
"""Seconds of silence after which a comment line keeps proxies from closing the stream."""
MIN_GAP = 0.2
"""Seconds after a message before the next one may be sent."""
LIFETIME = 60.0
"""Seconds after which a stream ends and the browser reconnects."""
MAX_STREAMS = 32
"""The most streams open at once; each probes the database once a second."""

_LIST_KINDS = frozenset({Signal.WORKFLOW, Signal.QUEUE, Signal.CLAIMABLE})
_WORKFLOW_KINDS = frozenset({Signal.WORKFLOW, Signal.MESSAGE, Signal.EVENT})


class Live:
    """The ``/events`` ASGI endpoint; ``runtime`` returns the console's open runtime."""

    def __init__(self, runtime: Callable[[], Engine]) -> None:
        self._runtime = runtime
        self._streams: set[asyncio.Task[None]] = set()
        self._stopped = False

    @property
    def open_streams(self) -> int:
        """How many streams are open."""
        return len(self._streams)

    def stop(self) -> None:
        """End every open stream now, and each new one at once."""
        self._stopped = True
        for task in list(self._streams):
            task.cancel()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rt = self._runtime()
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        workflow_id = query.get("workflow") or None
        if workflow_id is not None and not is_storable(workflow_id):
            await plain_response(send, 400, "no workflow ID holds a NUL or an unpaired surrogate")
            return
        if len(self._streams) >= MAX_STREAMS:
            await plain_response(
                send, 503, f"this console already serves {MAX_STREAMS} live streams"
            )
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"x-accel-buffering", b"no"),
                ],
            }
        )
        stream = asyncio.get_running_loop().create_task(self._stream(rt, workflow_id, send))
        self._streams.add(stream)
        disconnected = False

        async def watch() -> None:
            nonlocal disconnected
            while (await receive())["type"] != "http.disconnect":
                pass
            disconnected = True
            stream.cancel()

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            if self._stopped:
                stream.cancel()
            await asyncio.wait({stream})
            if not stream.cancelled():
                error = stream.exception()
                if error is not None and not isinstance(error, OSError):  # OSError: client gone
                    raise error
        finally:
            self._streams.discard(stream)
            stream.cancel()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            if not disconnected:
                with contextlib.suppress(OSError):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _stream(self, rt: Engine, workflow_id: str | None, send: Send) -> None:
        probe: Callable[[], Awaitable[object]]
        if workflow_id is None:
            kinds = _LIST_KINDS

            def probe() -> Awaitable[object]:
                return _queries.list_watermark(rt)

        else:
            kinds = _WORKFLOW_KINDS

            def probe() -> Awaitable[object]:
                return _queries.workflow_watermark(rt, workflow_id)

        async def emit(text: str) -> None:
            await send({"type": "http.response.body", "body": text.encode(), "more_body": True})

        def relevant(key: tuple[str, ...]) -> bool:
            if key[0] == Signal.RECONNECTED:
                return True
            return key[0] in kinds and (workflow_id is None or key[1:2] == (workflow_id,))

        with rt.notifier.subscribe(maxsize=256) as keys:
            await emit("retry: 1000\n: connected\n\n")
            loop = asyncio.get_running_loop()
            ends_at = loop.time() + LIFETIME
            quiet_since = loop.time()
            mark = await probe()
            next_probe = loop.time() + PROBE_INTERVAL
            while rt.is_open and loop.time() < ends_at:
                key: tuple[str, ...] | None = None
                with contextlib.suppress(TimeoutError):
                    key = await asyncio.wait_for(keys.get(), max(0.0, next_probe - loop.time()))
                changed = key is not None and relevant(key)
                while not keys.empty():  # coalesce a burst into one message
                    changed = relevant(keys.get_nowait()) or changed
                if changed or loop.time() >= next_probe:
                    try:
                        now_mark = await probe()
                    except Exception:  # the runtime is closing, or the database is away
                        return
                    changed = changed or now_mark != mark
                    mark = now_mark
                    next_probe = loop.time() + PROBE_INTERVAL
                if changed:
                    await emit("data: changed\n\n")
                    quiet_since = loop.time()
                    await asyncio.sleep(MIN_GAP)  # a busy database: at most a few a second
                elif loop.time() - quiet_since > KEEPALIVE:
                    await emit(": keepalive\n\n")
                    quiet_since = loop.time()
