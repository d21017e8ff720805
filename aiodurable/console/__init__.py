"""The aiodurable web console: see and steer workflows in a browser.

``aiodurable console`` serves it (see ``aiodurable console --help``); :func:`create_app` returns
it as an ASGI app to mount in your own. It needs the ``console`` extra
(``pip install 'aiodurable[console]'``: Starlette and uvicorn).

Pages: the workflow list (filters, paging, live updates over server-sent events fed by the
runtime's notifications) and a workflow's page (status, inputs, output or error with traceback,
a timeline of its steps, events, pending messages, children and parent) with the actions cancel,
resume, restart and fork from a step. Access rules are in :mod:`aiodurable.console._security`.
"""

from __future__ import annotations

from ._app import Console, create_app
from ._serve import serve

__all__ = ["Console", "create_app", "serve"]
