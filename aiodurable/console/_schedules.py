"""The console's schedules page: every cron schedule, with pause and resume.

``GET /schedules`` lists the schedules (name, workflow, expression and zone, state, last and next
tick); ``POST /schedules/{name}/pause`` and ``.../resume`` change one, protected as the workflow
actions are: a same-origin request carrying the console's CSRF token, at most
:data:`~aiodurable.console._app.MAX_FORM` bytes of form. Each answers with a redirect to the list
and a notice saying what was done.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol
from urllib.parse import parse_qsl, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from .._exceptions import NoRuntimeError, ScheduleNotFound
from .._runtime import Runtime
from .._schedule import ScheduleInfo
from ._render import e, layout, q
from ._security import is_same_origin, is_storable

__all__ = ["MAX_FORM", "schedule_routes", "schedules_body"]

MAX_FORM = 64 * 1024
"""The largest action form body, in bytes (as the workflow actions')."""


class ConsoleLike(Protocol):
    """What the schedules page needs of the console."""

    def runtime(self) -> Runtime:
        """The open runtime the console steers through."""
        ...

    @property
    def csrf(self) -> str:
        """The token every state-changing form carries."""
        ...


def _tick(moment: datetime | None) -> str:
    return "" if moment is None else moment.isoformat()


def _action(base: str, info: ScheduleInfo, csrf: str) -> str:
    action, label = ("resume", "Resume") if info.paused else ("pause", "Pause")
    return (
        f'<form method="post" action="{e(base)}/schedules/{q(info.name)}/{action}"'
        f' data-confirm="{e(f"{label} schedule {info.name}?")}" class="action">'
        f'<input type="hidden" name="csrf" value="{e(csrf)}">'
        f'<button type="submit" name="action" value="{action}">{label}</button></form>'
    )


def schedules_body(base: str, infos: Sequence[ScheduleInfo], csrf: str, notice: str = "") -> str:
    """The schedules page: a table of every schedule, each with its pause or resume button."""
    rows = "".join(
        f'<tr data-schedule="{e(i.name)}">'
        f"<td>{e(i.name)}{' <small>(declared)</small>' if i.declared else ''}</td>"
        f"<td>{e(i.workflow_name)}</td><td><code>{e(i.cron)}</code></td><td>{e(i.tz)}</td>"
        f'<td class="state-{"paused" if i.paused else "active"}">'
        f"{'paused' if i.paused else 'active'}</td>"
        f"<td>{'yes' if i.catch_up else 'no'}</td>"
        f"<td>{e(_tick(i.last_tick))}</td><td>{e(_tick(i.next_tick))}</td>"
        f"<td>{_action(base, i, csrf)}</td></tr>"
        for i in infos
    )
    if not rows:
        rows = '<tr><td colspan="9" class="empty">No schedule.</td></tr>'
    shown = f'<p class="notice">{e(notice)}</p>' if notice else ""
    return f"""<h1>Schedules</h1>
{shown}<table class="schedules">
<thead><tr><th>Name</th><th>Workflow</th><th>Cron</th><th>Time zone</th><th>State</th>
<th>Catch up</th><th>Last tick</th><th>Next tick</th><th></th></tr></thead>
<tbody>{rows}</tbody>
</table>
"""


def _base(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


async def _form(request: Request) -> dict[str, str] | None:
    """The request's form, or None once its body proves longer than :data:`MAX_FORM`."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FORM:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            return None
    return dict(parse_qsl(bytes(body).decode("utf-8", "replace")))


def schedule_routes(console: Callable[[], ConsoleLike]) -> list[Route]:
    """The schedules page and its actions, for the console ``console()`` returns."""

    async def page(request: Request) -> Response:
        try:
            infos = await console().runtime().list_schedules()
        except NoRuntimeError as exc:
            return PlainTextResponse(str(exc), status_code=503)
        notice = request.query_params.get("notice", "")[:500]
        body = schedules_body(_base(request), infos, console().csrf, notice)
        return HTMLResponse(layout(_base(request), "Schedules", body))

    async def act(request: Request) -> Response:
        name, action = str(request.path_params["name"]), request.path_params["action"]
        if action not in ("pause", "resume"):
            return PlainTextResponse("unknown action", status_code=404)
        form = await _form(request)
        if form is None:
            return PlainTextResponse(
                f"a console form is at most {MAX_FORM:,} bytes", status_code=413
            )
        headers = {k.lower(): v for k, v in request.headers.items()}
        offered = form.get("csrf", "").encode("utf-8", "replace")
        expected = console().csrf.encode()
        if not is_same_origin(headers) or not hmac.compare_digest(offered, expected):
            return PlainTextResponse("cross-site request refused", status_code=403)
        try:
            if not is_storable(name):
                raise ScheduleNotFound(name)
            rt = console().runtime()
            if action == "pause":
                await rt.pause_schedule(name)
            else:
                await rt.resume_schedule(name)
        except ScheduleNotFound as exc:
            return PlainTextResponse(str(exc), status_code=404)
        except NoRuntimeError as exc:
            return PlainTextResponse(str(exc), status_code=503)
        notice = f"{'Paused' if action == 'pause' else 'Resumed'} {name}."
        location = f"{_base(request)}/schedules?{urlencode({'notice': notice})}"
        return RedirectResponse(location, status_code=303)

    return [
        Route("/schedules", page),
        Route("/schedules/{name:path}/{action:str}", act, methods=["POST"]),
    ]
