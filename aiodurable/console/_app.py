"""``create_app``: the console's routes, its runtime, and the handlers that read and steer."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from .._exceptions import DurableError, NoRuntimeError, SerializationError, WorkflowNotFound
from .._models import WorkflowInfo, WorkflowStatus
from .._runtime import Runtime
from .._serde import error_record
from . import _queries
from ._live import Live
from ._render import (
    PAGE_SIZE,
    Filters,
    Value,
    WorkflowView,
    layout,
    list_body,
    list_fragment,
    pretty,
    workflow_body,
    workflow_fragment,
)
from ._security import Guard, csrf_token, is_same_origin

__all__ = ["Console", "create_app"]

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
        self.live: Live = Live(self.runtime)

    def runtime(self) -> Runtime:
        """The open runtime the console reads and steers through."""
        if self._runtime is None or not self._runtime.is_open:
            raise NoRuntimeError(
                "the console's runtime is not open: pass create_app(runtime=...) when mounting"
                " the console in another app (a mounted app's lifespan does not run)"
            )
        return self._runtime

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
) -> Starlette:
    """The web console as an ASGI app: serve it (``aiodurable console``) or mount it.

    With ``runtime`` it reads and steers through that open runtime (required when mounted, since
    a mounted app's lifespan does not run); otherwise its lifespan opens
    ``Runtime(database_url, schema=schema, recover=False)``. With no ``token`` it answers
    loopback requests only; with one, every request must carry it (see
    :mod:`aiodurable.console._security`).
    """
    console: Console

    def guarded(handler: Callable[[Request], Awaitable[Response]]) -> Callable[..., Any]:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except WorkflowNotFound as exc:
                return _page(request, "Not found", f"<h1>Not found</h1><p>{_esc(exc)}</p>", 404)
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
        wid = request.path_params["workflow_id"]
        fragment = await _workflow_fragment(console, request, wid)
        notice = request.query_params.get("notice", "")[:500]
        return _page(request, wid, workflow_body(_base(request), wid, fragment, notice))

    async def workflow_part(request: Request) -> Response:
        wid = request.path_params["workflow_id"]
        return HTMLResponse(await _workflow_fragment(console, request, wid))

    async def act(request: Request) -> Response:
        wid, action = request.path_params["workflow_id"], request.path_params["action"]
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
        headers = {k.lower(): v for k, v in request.headers.items()}
        if not is_same_origin(headers) or form.get("csrf") != console.csrf:
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
    ]
    inner = Starlette(routes=routes)
    guard = Guard(inner, token=token)
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


def _filters(request: Request) -> Filters:
    p = request.query_params
    status = p.get("status", "").upper()
    if status not in {s.value for s in WorkflowStatus}:
        status = ""
    try:
        page = max(1, int(p.get("page", "1")))
    except ValueError:
        page = 1
    return Filters(
        status=status,
        name=p.get("name", "").strip(),
        queue=p.get("queue", "").strip(),
        prefix=p.get("prefix", "").strip(),
        start=p.get("start", "").strip(),
        end=p.get("end", "").strip(),
        page=page,
    )


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
    positions: dict[str, int] = {}
    for queue in {i.queue_name for i in infos if i.status is WorkflowStatus.ENQUEUED}:
        if queue is not None:
            positions.update(await rt.store.queue_positions(queue))
    shown = infos[:PAGE_SIZE]
    return list_fragment(_base(request), filters, shown, len(infos) > PAGE_SIZE, positions)


def _decoded(rt: Runtime, fmt: str, data: bytes | None, clipped: bool = False) -> Value:
    if data is None:
        return Value("null")
    if clipped:
        return Value(data.decode("utf-8", "replace"), "the first 64 KiB, not decoded")
    try:
        return Value(pretty(rt.serializer_for(fmt).loads(data, None)))
    except (SerializationError, ValueError, TypeError) as exc:
        return Value(data[:4096].decode("utf-8", "replace"), f"not decoded: {exc}")


async def _workflow_fragment(console: Console, request: Request, workflow_id: str) -> str:
    rt = console.runtime()
    row = await rt.store.require_workflow(workflow_id)
    info: WorkflowInfo
    try:
        info = rt.info(row)
        inputs = Value(pretty(info.inputs))
        output = Value(pretty(info.output)) if info.status is WorkflowStatus.SUCCESS else None
    except (SerializationError, ValueError, TypeError):
        info = rt.info(row, load_data=False)
        inputs = _decoded(rt, row.format, row.inputs)
        output = _decoded(rt, row.format, row.output) if row.output is not None else None
    error_type = error_message = traceback = ""
    if row.error is not None:
        record = error_record(row.error)
        error_type, error_message, traceback = record.type, record.message, record.traceback
    steps = await rt.list_steps(workflow_id)
    step_values = {s.function_id: Value(pretty(s.output)) for s in steps}
    children = [s.child_workflow_id for s in steps if s.child_workflow_id is not None]
    linked = [*children, *([info.parent_workflow_id] if info.parent_workflow_id else [])]
    briefs = await _queries.workflow_briefs(rt, linked)
    events = [
        (ev.key, _decoded(rt, ev.format, ev.value, ev.clipped), _at(ev.updated_at))
        for ev in await _queries.events(rt, workflow_id)
    ]
    messages = [
        (m.topic, _decoded(rt, m.format, m.value, m.clipped), _at(m.created_at))
        for m in await _queries.messages(rt, workflow_id)
    ]
    position = None
    if info.status is WorkflowStatus.ENQUEUED and info.queue_name is not None:
        position = (await rt.store.queue_positions(info.queue_name)).get(workflow_id)
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
        step_values=step_values,
        events=events,
        messages=messages,
        briefs=briefs,
        queue_position=position,
        ends_at=max(ends),
        notice=request.query_params.get("notice", "")[:500],
        children=children,
    )
    return workflow_fragment(_base(request), view, console.csrf)


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
