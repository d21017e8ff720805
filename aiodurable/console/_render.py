"""The console's HTML: pure functions from data to markup.

Every value that comes from the database goes through :func:`e` (``html.escape`` with quotes) or
:func:`q` (URL quoting, then escaping); nothing else is interpolated raw. Times are shown in UTC.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote, urlencode

import orjson

from .._models import WorkflowInfo, WorkflowStatus
from ._queries import WorkflowBrief

__all__ = [
    "Adoption",
    "Filters",
    "StepLine",
    "Value",
    "WorkflowView",
    "e",
    "layout",
    "list_body",
    "list_fragment",
    "workflow_body",
    "workflow_fragment",
]

PAGE_SIZE = 50


def e(value: object) -> str:
    """``value`` as HTML text (quotes escaped too: safe in attributes)."""
    return html.escape(str(value), quote=True)


def q(value: str) -> str:
    """A path segment: URL-quoted (``/`` included), then HTML-escaped."""
    return e(quote(value, safe=""))


def when(moment: datetime | None) -> str:
    """A UTC time to the millisecond."""
    if moment is None:
        return ""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def pretty(value: object) -> str:
    """A decoded value as indented JSON (``str()`` of what JSON cannot show)."""
    try:
        return orjson.dumps(
            value, default=str, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS
        ).decode()
    except (TypeError, orjson.JSONEncodeError):
        return repr(value)


@dataclass(frozen=True, slots=True)
class Value:
    """A recorded value as the page shows it: decoded text, or why it is not."""

    text: str
    note: str = ""


@dataclass(frozen=True, slots=True)
class Filters:
    """The list page's filters, as its query string carries them."""

    status: str = ""
    name: str = ""
    queue: str = ""
    prefix: str = ""
    start: str = ""  # datetime-local text, UTC
    end: str = ""
    page: int = 1

    def query(self, **changes: object) -> str:
        """The query string for these filters with ``changes`` applied (empty ones left out)."""
        values: dict[str, object] = {
            "status": self.status,
            "name": self.name,
            "queue": self.queue,
            "prefix": self.prefix,
            "start": self.start,
            "end": self.end,
            "page": self.page,
        }
        values.update(changes)
        kept = {k: v for k, v in values.items() if v not in ("", None) and (k, v) != ("page", 1)}
        return urlencode(kept)


@dataclass(frozen=True, slots=True)
class StepLine:
    """One journal entry as the timeline shows it."""

    function_id: int
    name: str
    outcome: str  # the output's text, or "Type: message"
    failed: bool
    child_workflow_id: str | None
    started_at: datetime
    completed_at: datetime


@dataclass(frozen=True, slots=True)
class Adoption:
    """Whether the console's code can adopt a PENDING or ENQUEUED workflow of another
    application version: the outcome of a dry-run replay of its journal."""

    current_version: str  # the console's runtime's version, which adopting moves it to
    reason: str = ""  # why it cannot be adopted; empty when it can

    @property
    def possible(self) -> bool:
        """Whether the dry run found it adoptable."""
        return not self.reason


@dataclass(frozen=True, slots=True)
class StreamView:
    """One stream of a workflow as its page shows it: its last values as (offset, value,
    written at), oldest first."""

    key: str
    count: int
    closed: bool
    last: Sequence[tuple[int, Value, datetime | None]]


@dataclass(frozen=True, slots=True)
class WorkflowView:
    """Everything the workflow page shows."""

    info: WorkflowInfo
    inputs: Value
    output: Value | None
    error_type: str
    error_message: str
    traceback: str
    steps: Sequence[StepLine]
    events: Sequence[tuple[str, Value, datetime | None]]
    messages: Sequence[tuple[str, Value, datetime | None]]
    briefs: Mapping[str, WorkflowBrief]
    queue_position: int | None
    ends_at: datetime
    notice: str = ""
    children: Sequence[str] = field(default_factory=list)
    steps_not_shown: int = 0  # the first ones, when the journal is too long for a page
    adoption: Adoption | None = None  # set for a PENDING or ENQUEUED one of another version
    streams: Sequence[StreamView] = field(default_factory=list)


def layout(base: str, title: str, body: str) -> str:
    """A whole page around ``body``."""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)} · aiodurable console</title>
<link rel="stylesheet" href="{e(base)}/static/console.css">
<script src="{e(base)}/static/console.js" defer></script>
</head>
<body>
<header class="top"><a class="brand" href="{e(base)}/">aiodurable</a>
<nav><a href="{e(base)}/">Workflows</a> <a href="{e(base)}/schedules">Schedules</a></nav></header>
<main>
{body}
</main>
</body>
</html>
"""


def _status(status: str) -> str:
    return f'<span class="status status-{e(status.lower())}">{e(status)}</span>'


def _wf_link(base: str, workflow_id: str, text: str | None = None) -> str:
    label = workflow_id if text is None else text
    return f'<a href="{e(base)}/workflows/{q(workflow_id)}">{e(label)}</a>'


def _field(name: str, label: str, value: str, kind: str = "text", extra: str = "") -> str:
    return (
        f'<label>{e(label)} <input type="{kind}" name="{name}" value="{e(value)}"{extra}></label>'
    )


def list_body(base: str, filters: Filters, fragment: str) -> str:
    """The list page: the filter form and the live table."""
    options = "".join(
        f'<option value="{s.value}"{" selected" if s.value == filters.status else ""}>'
        f"{s.value}</option>"
        for s in WorkflowStatus
    )
    return f"""<h1>Workflows</h1>
<form class="filters" method="get" action="{e(base)}/">
<label>Status <select name="status"><option value="">any</option>{options}</select></label>
{_field("name", "Name", filters.name)}
{_field("queue", "Queue", filters.queue)}
{_field("prefix", "ID prefix", filters.prefix)}
{_field("start", "Created from (UTC)", filters.start, "datetime-local", ' step="1"')}
{_field("end", "to", filters.end, "datetime-local", ' step="1"')}
<button type="submit">Filter</button> <a href="{e(base)}/">clear</a>
</form>
<div id="live" data-fragment="{e(base)}/fragments/list?{e(filters.query())}"
 data-events="{e(base)}/events">
{fragment}
</div>
"""


def list_fragment(
    base: str,
    filters: Filters,
    infos: Sequence[WorkflowInfo],
    has_more: bool,
    positions: Mapping[str, int],
    current_version: str = "",
) -> str:
    """The table of workflows and the pager (what live updates replace). A version other than
    ``current_version`` (the console's runtime's) is marked, with the full version as a title."""
    rows = "".join(
        f'<tr data-workflow-id="{e(i.workflow_id)}">'
        f'<td class="id">{_wf_link(base, i.workflow_id)}</td>'
        f'<td class="st">{_status(i.status.value)}</td>'
        f"<td>{e(i.name)}</td>"
        f"<td>{e(i.queue_name or '')}"
        f"{e(f' #{positions[i.workflow_id]}') if i.workflow_id in positions else ''}</td>"
        f"<td>{e(when(i.created_at))}</td><td>{e(when(i.updated_at))}</td>"
        f"{_version_cell(i.app_version, current_version)}<td>{e(i.executor_id)}</td></tr>"
        for i in infos
    )
    if not rows:
        rows = '<tr><td colspan="8" class="empty">No workflow matches.</td></tr>'
    pager: list[str] = []
    if filters.page > 1:
        pager.append(
            f'<a rel="prev" href="{e(base)}/?{e(filters.query(page=filters.page - 1))}">'
            "&larr; newer</a>"
        )
    pager.append(f"<span>page {filters.page}</span>")
    if has_more:
        pager.append(
            f'<a rel="next" href="{e(base)}/?{e(filters.query(page=filters.page + 1))}">'
            "older &rarr;</a>"
        )
    return f"""<table class="workflows">
<thead><tr><th>Workflow ID</th><th>Status</th><th>Name</th><th>Queue</th>
<th>Created (UTC)</th><th>Updated (UTC)</th><th>Version</th><th>Executor</th></tr></thead>
<tbody>{rows}</tbody>
</table>
<nav class="pager">{" ".join(pager)}</nav>
"""


def _version_cell(version: str, current: str) -> str:
    """A list cell with the first 12 characters of ``version``, marked when it is not the
    console's own ``current`` version (its workflows are left to the processes of theirs)."""
    if not current or version == current:
        return f'<td class="ver" title="{e(version)}">{e(version[:12])}</td>'
    title = f"{version} (this console runs version {current})"
    return f'<td class="ver ver-other" title="{e(title)}">{e(version[:12])}</td>'


def workflow_body(base: str, workflow_id: str, fragment: str, notice: str = "") -> str:
    """The workflow page: its live part (which keeps showing ``notice``)."""
    keep = f"?{urlencode({'notice': notice})}" if notice else ""
    return f"""<p class="crumbs"><a href="{e(base)}/">Workflows</a> /</p>
<div id="live" data-fragment="{e(base)}/fragments/workflows/{q(workflow_id)}{e(keep)}"
 data-events="{e(base)}/events?{e(urlencode({"workflow": workflow_id}))}">
{fragment}
</div>
"""


def _form(
    base: str, wid: str, action: str, csrf: str, label: str, confirm: str, extra: str = ""
) -> str:
    return (
        f'<form method="post" action="{e(base)}/workflows/{q(wid)}/{action}"'
        f' data-confirm="{e(confirm)}" class="action">'
        f'<input type="hidden" name="csrf" value="{e(csrf)}">{extra}'
        f'<button type="submit" name="action" value="{action}">{e(label)}</button></form>'
    )


def _value_block(value: Value) -> str:
    note = f'<p class="note">{e(value.note)}</p>' if value.note else ""
    return f"{note}<pre>{e(value.text)}</pre>"


def _timeline(base: str, view: WorkflowView, csrf: str) -> str:
    info = view.info
    if not view.steps:
        return '<p class="empty">No step recorded yet.</p>'
    t0 = info.created_at
    span = max((view.ends_at - t0).total_seconds(), 1e-3)
    rows: list[str] = []
    for s in view.steps:
        start = max((s.started_at - t0).total_seconds(), 0.0)
        duration = max((s.completed_at - s.started_at).total_seconds(), 0.0)
        left = min(start / span * 100, 99.5)
        width = max(min(duration / span * 100, 100 - left), 0.4)
        outcome = (
            f'<span class="err">{e(_clip(s.outcome, 300))}</span>'
            if s.failed
            else e(_clip(s.outcome, 120))
        )
        child = ""
        if s.child_workflow_id is not None:
            brief = view.briefs.get(s.child_workflow_id)
            child = " child " + _wf_link(base, s.child_workflow_id)
            if brief is not None:
                child += " " + _status(brief.status)
        fork = _form(
            base,
            info.workflow_id,
            "fork",
            csrf,
            "Fork from here",
            f"Start a new workflow that reuses steps 1-{s.function_id - 1} and runs again"
            f" from step {s.function_id}?",
            f'<input type="hidden" name="step" value="{s.function_id}">',
        )
        rows.append(
            f'<tr data-function-id="{s.function_id}"><td class="fid">{s.function_id}</td>'
            f'<td class="sname">{e(s.name)}{child}</td>'
            f'<td class="track"><div class="bar{" bar-err" if s.failed else ""}"'
            f' style="margin-left:{left:.2f}%;width:{width:.2f}%"></div></td>'
            f'<td class="ms">{duration * 1000:.1f} ms</td><td class="out">{outcome}</td>'
            f"<td>{fork}</td></tr>"
        )
    hidden = ""
    if view.steps_not_shown:
        hidden = (
            f'<p class="note">The first {view.steps_not_shown:,} steps are not shown'
            " (aiodurable workflow steps lists them all).</p>"
        )
    return hidden + (
        '<table class="timeline"><thead><tr><th>#</th><th>Step</th>'
        f'<th class="track">0 to {span * 1000:.0f} ms</th><th>Duration</th><th>Outcome</th>'
        f"<th></th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _pairs(rows: Iterable[tuple[str, Value, datetime | None]], empty: str, head: str) -> str:
    body = "".join(
        f"<tr><td>{e(k) if k else '<em>(no topic)</em>'}</td><td>{_value_block(v)}</td>"
        f"<td>{e(when(t))}</td></tr>"
        for k, v, t in rows
    )
    if not body:
        return f'<p class="empty">{e(empty)}</p>'
    return f'<table class="pairs"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _streams(streams: Sequence[StreamView]) -> str:
    if not streams:
        return '<p class="empty">No stream written.</p>'
    body = "".join(
        f"<tr><td>{e(s.key)}</td><td>{s.count:,}</td>"
        f"<td>{'closed' if s.closed else 'open'}</td><td>"
        + "".join(
            f'<p class="note">#{offset} at {e(when(t))}</p>{_value_block(v)}'
            for offset, v, t in s.last
        )
        + "</td></tr>"
        for s in streams
    )
    head = "<th>Key</th><th>Values</th><th>State</th><th>Last values</th>"
    return f'<table class="pairs"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _adoption_text(adoption: Adoption | None) -> str:
    """What a dry-run adoption found, for the details table ("" when there was none)."""
    if adoption is None:
        return ""
    version = f"<code>{e(adoption.current_version)}</code>"
    if adoption.possible:
        return (
            f'<span class="adopt-ok">can be adopted by version {version}</span>: its journal'
            " replays cleanly against this code"
        )
    return (
        f"cannot be adopted by version {version}:"
        f' <span class="err adopt-no">{e(_clip(adoption.reason, 600))}</span>'
    )


def workflow_fragment(base: str, view: WorkflowView, csrf: str) -> str:
    """The workflow's details, timeline and actions (what live updates replace)."""
    info = view.info
    wid = info.workflow_id
    status = info.status
    actions: list[str] = []
    if status in (WorkflowStatus.PENDING, WorkflowStatus.ENQUEUED):
        actions.append(_form(base, wid, "cancel", csrf, "Cancel", f"Cancel workflow {wid}?"))
    if status in (
        WorkflowStatus.CANCELLED,
        WorkflowStatus.MAX_RECOVERY_ATTEMPTS_EXCEEDED,
        WorkflowStatus.ENQUEUED,
    ):
        actions.append(
            _form(base, wid, "resume", csrf, "Resume", f"Resume workflow {wid} where it stopped?")
        )
    adoption = view.adoption
    if adoption is not None and adoption.possible:
        actions.append(
            _form(
                base,
                wid,
                "adopt",
                csrf,
                "Adopt",
                f"Move workflow {wid} to application version {adoption.current_version} and"
                " let this version's code finish it?",
            )
        )
    actions.append(
        _form(
            base,
            wid,
            "restart",
            csrf,
            "Restart",
            f"Run workflow {wid} again from the beginning, under a new ID?",
        )
    )
    parent = ""
    if info.parent_workflow_id is not None:
        brief = view.briefs.get(info.parent_workflow_id)
        parent = _wf_link(base, info.parent_workflow_id) + (
            " " + _status(brief.status) if brief is not None else ""
        )
    queue = e(info.queue_name or "")
    if view.queue_position is not None:
        queue += f" (position {view.queue_position})"
    details = [
        ("Name", e(info.name)),
        ("Created (UTC)", e(when(info.created_at))),
        ("Updated (UTC)", e(when(info.updated_at))),
        ("Application version", e(info.app_version)),
        ("Upgrade", _adoption_text(adoption)),
        ("Executor", e(info.executor_id) or "<em>any live runtime</em>"),
        ("Recovery attempts", e(info.recovery_attempts)),
        ("Queue", queue),
        ("Parent", parent),
    ]
    rows = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in details if v)
    outcome = ""
    if view.output is not None:
        outcome = f"<h2>Output</h2>{_value_block(view.output)}"
    if view.error_type or view.error_message:
        outcome += f'<h2>Error</h2><p class="err">{e(view.error_type)}: {e(view.error_message)}</p>'
        if view.traceback:
            outcome += f'<pre class="traceback">{e(view.traceback)}</pre>'
    notice = f'<p class="notice" role="status">{e(view.notice)}</p>' if view.notice else ""
    children = "".join(
        f"<li>{_wf_link(base, c)} "
        + (
            _status(view.briefs[c].status) + " " + e(view.briefs[c].name)
            if c in view.briefs
            else ""
        )
        + "</li>"
        for c in view.children
    )
    return f"""{notice}<h1><span class="wid">{e(wid)}</span> {_status(status.value)}</h1>
<div class="actions">{"".join(actions)}</div>
<table class="details">{rows}</table>
<h2>Inputs</h2>{_value_block(view.inputs)}
{outcome}
<h2>Timeline</h2>
{_timeline(base, view, csrf)}
<h2>Children</h2>
{f'<ul class="children">{children}</ul>' if children else '<p class="empty">None.</p>'}
<h2>Events</h2>
{_pairs(view.events, "No event set.", "<th>Key</th><th>Value</th><th>Set at (UTC)</th>")}
<h2>Streams</h2>
{_streams(view.streams)}
<h2>Pending messages</h2>
{_pairs(view.messages, "No message waiting.", "<th>Topic</th><th>Value</th><th>Sent at (UTC)</th>")}
"""
