"""``create_app``: the console's routes, its runtime, and the handlers that read and steer.

A PENDING or ENQUEUED workflow of another application version than the console's runtime is
checked on its page by a dry-run adoption (its journal replayed against the code of the program
the console runs in: nothing written, no step run); the "adopt" action then moves it to the
console's version, as ``upgrade_workflows`` would, for that one workflow.

Bad input gets a 4xx, never a 500: a workflow ID with a NUL or an unpaired surrogate (which no
recorded workflow can have) is 404, such a filter or a page past :data:`MAX_PAGE` is 400, and an
action's form over :data:`MAX_FORM` bytes is 413, refused before it is read.
"""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from .._engine import Engine
from .._exceptions import DurableError, NoRuntimeError, WorkflowNotFound
from .._models import WorkflowInfo, WorkflowStatus, from_timestamp
from .._records import StepRow
from .._runtime import Runtime, engine_of
from .._upgrade import upgrade
from .._workflow import lookup
from . import _queries
from ._live import Live
from ._render import (
    PAGE_SIZE,
    Adoption,
    Filters,
    StepLine,
    StreamView,
    WorkflowView,
    layout,
    list_body,
    list_fragment,
    workflow_body,
    workflow_fragment,
)
from ._schedules import schedule_routes
from ._security import Guard, csrf_token, is_same_origin, is_storable
from ._values import error_view, shown

__all__ = ["MAX_FORM", "MAX_PAGE", "Console", "create_app"]

MAX_FORM = 64 * 1024
"""The largest action form body, in bytes."""
MAX_PAGE = 1_000_000
"""The deepest page of the list (50 million workflows; filter to go further)."""
STEP_LIMIT = 1000
"""The most journal entries a workflow page shows (the last ones)."""
EVENT_LIMIT = 100
"""The most events a workflow page shows."""
STREAM_LIMIT = 50
"""The most streams a workflow page shows (the first keys)."""
STREAM_TAIL = 5
"""The last values of each stream that a workflow page shows."""

_STATIC = {
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
}


class Console:
    """The console's state: its runtime (given, or opened in the lifespan), its CSRF secret and
    its live streams. ``app.state.console`` holds it."""

    def __init__(
        self, runtime: Runtime | None, database_url: str | None, schema: str, guard: Guard
    ) -> None:
        self._runtime = runtime
        self._database_url = database_url
        self._schema = schema
        self.guard = guard
        self.live: Live = Live(self.engine)

    def runtime(self) -> Runtime:
        """The open runtime the console reads and steers through."""
        if self._runtime is None or not self._runtime.is_open:
            raise NoRuntimeError(
                "the console's runtime is not open: pass create_app(runtime=...) when mounting"
                " the console in another app (a mounted app's lifespan does not run)"
            )
        return self._runtime

    def engine(self) -> Engine:
        """The engine of :meth:`runtime`, which the console's own reads go through."""
        return engine_of(self.runtime())

    @property
    def csrf(self) -> str:
        """The token every state-changing form carries."""
        return csrf_token(self.guard.secret)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """Open a runtime of its own unless one was given; stop the live streams on the way out."""
        async with contextlib.AsyncExitStack() as stack:
            if self._runtime is None:
                # recover=False: the console runs no workflows; what it resumes, restarts or forks
                # without the code is left PENDING for a live runtime, which takes it at once.
                self._runtime = await stack.enter_async_context(
                    Runtime(self._database_url, schema=self._schema, recover=False)
                )
            try:
                yield
            finally:
                self.live.stop()


def create_app(
    runtime: Runtime | None = None,
    *,
    database_url: str | None = None,
    schema: str = "aiodurable",
    token: str | None = None,
    unix_socket: bool = False,
) -> Starlette:
    """The web console as an ASGI app: serve it (``aiodurable console``) or mount it.

    With ``runtime`` it reads and steers through that open runtime (required when mounted, since
    a mounted app's lifespan does not run); otherwise its lifespan opens
    ``Runtime(database_url, schema=schema, recover=False)``. With a ``token`` (at least 16
    printable ASCII characters; ``ValueError`` otherwise) every request must carry it. With none
    it answers loopback requests only, which on a shared machine means every local account; with
    none and ``unix_socket=True`` it answers only requests that arrive over a Unix socket, whose
    file permissions then decide who may connect (see :mod:`aiodurable.console._security`).
    """
    console: Console

    def guarded(handler: Callable[[Request], Awaitable[Response]]) -> Callable[..., Any]:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except WorkflowNotFound as exc:
                return _page(request, "Not found", f"<h1>Not found</h1><p>{_esc(exc)}</p>", 404)
            except _BadRequest as exc:
                return _page(request, "Bad request", f"<h1>Bad request</h1><p>{_esc(exc)}</p>", 400)
            except NoRuntimeError as exc:
                return PlainTextResponse(str(exc), status_code=503)

        return endpoint

    async def list_page(request: Request) -> Response:
        filters = _filters(request)
        fragment = await _list_fragment(console.runtime(), request, filters)
        return _page(request, "Workflows", list_body(_base(request), filters, fragment))

    async def list_part(request: Request) -> Response:
        filters = _filters(request)
        return HTMLResponse(await _list_fragment(console.runtime(), request, filters))

    async def workflow_page(request: Request) -> Response:
        wid = _workflow_id(request)
        fragment = await _workflow_fragment(console, request, wid)
        notice = request.query_params.get("notice", "")[:500]
        return _page(request, wid, workflow_body(_base(request), wid, fragment, notice))

    async def workflow_part(request: Request) -> Response:
        wid = _workflow_id(request)
        return HTMLResponse(await _workflow_fragment(console, request, wid))

    async def act(request: Request) -> Response:
        wid, action = _workflow_id(request), request.path_params["action"]
        body = await _bounded_body(request, MAX_FORM)
        if body is None:
            return PlainTextResponse(
                f"a console form is at most {MAX_FORM:,} bytes", status_code=413
            )
        form = dict(parse_qsl(body.decode("utf-8", "replace")))
        headers = {k.lower(): v for k, v in request.headers.items()}
        offered = form.get("csrf", "").encode("utf-8", "replace")
        if not is_same_origin(headers) or not hmac.compare_digest(offered, console.csrf.encode()):
            return PlainTextResponse("cross-site request refused", status_code=403)
        rt = console.runtime()
        target, notice = wid, ""
        try:
            if action == "cancel":
                await rt.cancel_workflow(wid)
                notice = "Cancelled."
            elif action == "resume":
                await rt.resume_workflow(wid)
                notice = "Resumed."
            elif action == "restart":
                target = (await rt.restart_workflow(wid)).workflow_id
                notice = f"Restarted from {wid}."
            elif action == "fork":
                step = int(form.get("step", ""))
                target = (await rt.fork_workflow(wid, step)).workflow_id
                notice = f"Forked from {wid} at step {step}."
            elif action == "adopt":
                notice = await _adopt(console.engine(), wid)
            else:
                return PlainTextResponse("unknown action", status_code=404)
        except (ValueError, DurableError) as exc:
            if isinstance(exc, WorkflowNotFound):
                raise
            notice = f"{action} failed: {exc}"
        location = f"{_base(request)}/workflows/{quote(target, safe='')}"
        return RedirectResponse(f"{location}?{urlencode({'notice': notice})}", status_code=303)

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in _STATIC:
            return PlainTextResponse("not found", status_code=404)
        data = resources.files(__package__).joinpath("static", name).read_bytes()
        return Response(data, media_type=_STATIC[name])

    routes = [
        Route("/", guarded(list_page)),
        Route("/fragments/list", guarded(list_part)),
        Route("/workflows/{workflow_id:path}/{action:str}", guarded(act), methods=["POST"]),
        Route("/workflows/{workflow_id:path}", guarded(workflow_page)),
        Route("/fragments/workflows/{workflow_id:path}", guarded(workflow_part)),
        Route("/static/{name:str}", static),
        *schedule_routes(lambda: console),
    ]
    inner = Starlette(routes=routes)
    guard = Guard(inner, token=token, unix_socket=unix_socket)
    console = Console(runtime, database_url, schema, guard)
    inner.router.routes.append(Route("/events", console.live))
    app = Starlette(lifespan=console.lifespan)
    app.mount("", guard)
    app.state.console = console
    return app


def _esc(value: object) -> str:
    from ._render import e

    return e(value)


def _base(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def _page(request: Request, title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(layout(_base(request), title, body), status_code=status)


class _BadRequest(ValueError):
    """A request the console cannot answer (400), with the reason."""


def _workflow_id(request: Request) -> str:
    wid = str(request.path_params["workflow_id"])
    if not is_storable(wid):
        raise WorkflowNotFound(wid)  # (its message shows the ID's repr: escaped)
    return wid


async def _bounded_body(request: Request, limit: int) -> bytes | None:
    """The request's body, or None once it proves longer than ``limit`` (the rest unread)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _filters(request: Request) -> Filters:
    p = request.query_params
    status = p.get("status", "").upper()
    if status not in {s.value for s in WorkflowStatus}:
        status = ""
    text = {key: p.get(key, "").strip() for key in ("name", "queue", "prefix", "start", "end")}
    for key, value in text.items():
        if not is_storable(value):
            raise _BadRequest(f"the {key} filter holds a NUL or an unpaired surrogate")
    try:
        page = max(1, int(p.get("page", "1")))
    except ValueError:
        page = 1
    if page > MAX_PAGE:
        raise _BadRequest(f"page {page} is past the last page shown ({MAX_PAGE:,}); filter instead")
    return Filters(status=status, page=page, **text)


def _moment(text: str) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


async def _list_fragment(rt: Runtime, request: Request, filters: Filters) -> str:
    infos = await rt.list_workflows(
        status=filters.status or None,
        name=filters.name or None,
        queue_name=filters.queue or None,
        workflow_id_prefix=filters.prefix or None,
        start_time=_moment(filters.start),
        end_time=_moment(filters.end),
        limit=PAGE_SIZE + 1,
        offset=(filters.page - 1) * PAGE_SIZE,
        sort_desc=True,
    )
    shown_infos = infos[:PAGE_SIZE]
    positions: dict[str, int] = {}
    waiting: dict[str, list[str]] = {}
    for i in shown_infos:
        if i.status is WorkflowStatus.ENQUEUED and i.queue_name is not None:
            waiting.setdefault(i.queue_name, []).append(i.workflow_id)
    for queue, ids in waiting.items():
        positions.update(await _queries.queue_positions(engine_of(rt), queue, ids))
    more = len(infos) > PAGE_SIZE
    return list_fragment(_base(request), filters, shown_infos, more, positions, rt.app_version)


def _step_line(entry: StepRow, engine: Engine) -> StepLine:
    if entry.error is not None:
        outcome, failed = error_view(entry.error).short, True
    else:
        # The timeline shows 120 characters: 1 KiB of a value is plenty to find them in.
        outcome, failed = shown(engine, entry.format, entry.output, limit=1024).text, False
    started = from_timestamp(entry.started_at)
    completed = from_timestamp(entry.completed_at)
    assert started is not None and completed is not None
    return StepLine(
        entry.function_id,
        entry.name,
        outcome,
        failed,
        entry.child_workflow_id,
        started,
        completed,
    )


async def _workflow_fragment(console: Console, request: Request, workflow_id: str) -> str:
    engine = console.engine()
    row = await engine.store.require_workflow(workflow_id)
    # Values are decoded here, plainly and clipped, never through the workflow's annotations:
    # a page shows JSON, and a value too large or unreadable still leaves the page readable.
    info: WorkflowInfo = engine.codec.info(row, load_data=False)
    inputs = shown(engine, row.format, row.inputs)
    output = shown(engine, row.format, row.output) if row.status == "SUCCESS" else None
    error_type = error_message = traceback = ""
    if row.error is not None:
        error = error_view(row.error)
        error_type, error_message, traceback = error.type, error.message, error.traceback
    journal = list((await engine.store.load_journal(workflow_id)).values())
    hidden = max(0, len(journal) - STEP_LIMIT)
    steps = [_step_line(entry, engine) for entry in journal[hidden:]]
    children = [s.child_workflow_id for s in steps if s.child_workflow_id is not None]
    linked = [*children, *([info.parent_workflow_id] if info.parent_workflow_id else [])]
    briefs = await _queries.workflow_briefs(engine, linked)
    events = [
        (ev.key, shown(engine, ev.format, ev.value, clipped=ev.clipped), _at(ev.updated_at))
        for ev in (await _queries.events(engine, workflow_id))[:EVENT_LIMIT]
    ]
    messages = [
        (m.topic, shown(engine, m.format, m.value, clipped=m.clipped), _at(m.created_at))
        for m in await _queries.messages(engine, workflow_id)
    ]
    streams = [
        StreamView(
            s.key,
            s.count,
            s.closed,
            [
                (
                    i.offset,
                    shown(
                        engine,
                        i.format or "json",
                        i.value,
                        clipped=i.clipped,
                        limit=_queries.STREAM_VALUE_LIMIT,
                    ),
                    _at(i.created_at),
                )
                for i in s.last
            ],
        )
        for s in await _queries.streams(engine, workflow_id, STREAM_TAIL, STREAM_LIMIT)
    ]
    position = None
    if info.status is WorkflowStatus.ENQUEUED and info.queue_name is not None:
        found = await _queries.queue_positions(engine, info.queue_name, [workflow_id])
        position = found.get(workflow_id)
    ends = [info.updated_at if info.status.is_terminal else datetime.now(UTC)]
    ends += [s.completed_at for s in steps]
    view = WorkflowView(
        info=info,
        inputs=inputs,
        output=output,
        error_type=error_type,
        error_message=error_message,
        traceback=traceback,
        steps=steps,
        events=events,
        messages=messages,
        briefs=briefs,
        queue_position=position,
        ends_at=max(ends),
        notice=request.query_params.get("notice", "")[:500],
        children=children,
        steps_not_shown=hidden,
        adoption=await _adoption(engine, info),
        streams=streams,
    )
    return workflow_fragment(_base(request), view, console.csrf)


_NOT_HERE = (
    " (the console adopts with the workflow code of the program it runs in: mount it in your"
    " application with create_app(runtime=...), or run `aiodurable workflow upgrade --import"
    " MODULE`)"
)
_NOT_A_CANDIDATE = "it is no longer PENDING or ENQUEUED under another application version"


async def _adoption(engine: Engine, info: WorkflowInfo) -> Adoption | None:
    """For a PENDING or ENQUEUED workflow of another version, whether this program's code can
    adopt it: a dry run of the upgrade (it writes nothing and runs no step). None otherwise."""
    waiting = info.status in (WorkflowStatus.PENDING, WorkflowStatus.ENQUEUED)
    if not waiting or info.app_version == engine.app_version:
        return None
    wid = info.workflow_id
    try:
        report = await upgrade(engine, workflow_ids=[wid], dry_run=True)
    except DurableError as exc:
        return Adoption(engine.app_version, f"the check failed: {exc}")
    if wid in report.adopted:
        return Adoption(engine.app_version)
    reason = report.incompatible.get(wid, _NOT_A_CANDIDATE)
    if lookup(info.name) is None:
        reason += _NOT_HERE
    return Adoption(engine.app_version, reason)


async def _adopt(engine: Engine, workflow_id: str) -> str:
    """Adopt one workflow into this program's version; the notice that says how it went."""
    report = await upgrade(engine, workflow_ids=[workflow_id])
    if workflow_id in report.adopted:
        return f"Adopted: it now belongs to application version {engine.app_version}."
    return f"adopt failed: {report.incompatible.get(workflow_id, _NOT_A_CANDIDATE)}"


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
