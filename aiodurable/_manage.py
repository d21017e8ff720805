"""Managing workflows: list, steps, cancel, resume, restart, fork, recover another executor.

Each operation is a function of a runtime's engine; :class:`Runtime` exposes them as methods and
the package as module-level functions. Operations that need a workflow's function (resume, restart,
fork) run it on this runtime when it has the function registered; otherwise (the command line,
say) they leave it PENDING with no executor, and any live runtime that has the function and a
matching application version takes it at once (it is told by a notification).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

from ._exceptions import DurableError, WorkflowNotResumable
from ._handle import WorkflowHandle
from ._ids import new_workflow_id as make_workflow_id
from ._models import StepInfo, WorkflowInfo, WorkflowStatus
from ._records import NewWorkflow, WorkflowQuery, storable
from ._validate import check_epoch
from ._workflow import check_id, lookup

if TYPE_CHECKING:
    from ._engine import Engine
    from ._reach import Reach

__all__ = [
    "StatusFilter",
    "TimeFilter",
    "WorkflowFilter",
    "cancel_workflow",
    "fork_workflow",
    "list_steps",
    "list_workflows",
    "log_other_versions",
    "recover_executor",
    "restart_workflow",
    "resume_workflow",
]

logger = logging.getLogger("aiodurable")

StatusFilter = str | WorkflowStatus | Sequence[str | WorkflowStatus] | None
TimeFilter = datetime | float | None


class WorkflowFilter(TypedDict, total=False):
    """The filters of ``list_workflows``, all optional; a workflow is listed when it matches
    every filter given.

    - ``status``: one status or several (default: any).
    - ``name``, ``app_version``, ``executor_id``, ``queue_name``: equal to;
      ``workflow_id_prefix``: the workflow ID starts with it.
    - ``start_time``/``end_time``: bounds of the creation time, as aware datetimes or POSIX
      timestamps.
    - ``limit``, ``offset``: a page of the listing; ``sort_desc``: newest first (default
      False: oldest first).
    - ``load_input``/``load_output`` (default True): False leaves inputs and outputs out
      (``None``) of a long listing.
    """

    status: StatusFilter
    name: str | None
    workflow_id_prefix: str | None
    app_version: str | None
    executor_id: str | None
    queue_name: str | None
    start_time: TimeFilter
    end_time: TimeFilter
    limit: int | None
    offset: int | None
    sort_desc: bool
    load_input: bool
    load_output: bool


def _statuses(status: StatusFilter) -> tuple[str, ...]:
    if status is None:
        return ()
    values = [status] if isinstance(status, str) else list(status)
    known = {s.value for s in WorkflowStatus}
    result: list[str] = []
    for value in values:
        text = str(value).upper()
        if text not in known:
            raise ValueError(f"unknown workflow status {value!r}; use one of {sorted(known)}")
        result.append(text)
    return tuple(result)


def _seconds(name: str, value: TimeFilter) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"{name} must be an aware datetime (with a tzinfo), not {value!r}")
        return value.timestamp()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a datetime or a POSIX timestamp, not {value!r}")
    return check_epoch(name, value)  # finite, and within the tables' bigint milliseconds


_INT64_MAX = 2**63 - 1


def _count(name: str, value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _INT64_MAX:
        raise ValueError(f"{name} must be an int from 0 to {_INT64_MAX:,} (64 bits), not {value!r}")
    return value


def _text(name: str, value: str | None) -> str | None:
    """A text filter, checked: one PostgreSQL text cannot hold could match nothing."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, not {value!r:.80}")
    if not storable(value):
        problem = "a NUL character" if "\x00" in value else "a lone surrogate"
        raise ValueError(
            f"{name} {value!r:.80} holds {problem}, which PostgreSQL text cannot store, so it"
            " matches no workflow; remove it"
        )
    return value


def _query(filters: WorkflowFilter) -> WorkflowQuery:
    """The store's query for ``filters``, each checked, with the defaults of ``list_workflows``."""
    unknown = sorted(set(filters) - WorkflowFilter.__optional_keys__)
    if unknown:
        raise TypeError(
            f"list_workflows() got an unexpected keyword argument {unknown[0]!r}; its filters"
            f" are {', '.join(sorted(WorkflowFilter.__optional_keys__))}"
        )
    return WorkflowQuery(
        statuses=_statuses(filters.get("status")),
        name=_text("name", filters.get("name")),
        workflow_id_prefix=_text("workflow_id_prefix", filters.get("workflow_id_prefix")),
        app_version=_text("app_version", filters.get("app_version")),
        executor_id=_text("executor_id", filters.get("executor_id")),
        queue_name=_text("queue_name", filters.get("queue_name")),
        start_time=_seconds("start_time", filters.get("start_time")),
        end_time=_seconds("end_time", filters.get("end_time")),
        limit=_count("limit", filters.get("limit")),
        offset=_count("offset", filters.get("offset")),
        sort_desc=filters.get("sort_desc", False),
        load_input=filters.get("load_input", True),
        load_output=filters.get("load_output", True),
    )


async def list_workflows(engine: Reach, **filters: Unpack[WorkflowFilter]) -> list[WorkflowInfo]:
    """Workflows matching every filter given (see :class:`WorkflowFilter`), oldest first.

    A filter that no workflow could match (text with NUL, a time or count beyond 64 bits)
    raises ``ValueError``; a row whose values cannot be decoded is listed with ``decode_error``.
    """
    query = _query(filters)
    rows = await engine.store.list_workflows(query)
    return [engine.codec.info(row, load_data=query.load_input or query.load_output) for row in rows]


async def list_steps(engine: Reach, workflow_id: str) -> list[StepInfo]:
    """The journal of a workflow in function-ID order; :class:`WorkflowNotFound` if unknown."""
    await engine.store.require_workflow(workflow_id)
    journal = await engine.store.load_journal(workflow_id)
    return [engine.codec.step_info(workflow_id, entry) for entry in journal.values()]


async def cancel_workflow(engine: Engine, workflow_id: str) -> None:
    """Cancel a PENDING or ENQUEUED workflow: it stops at its next checkpoint (at once if it is
    waiting in recv, sleep or get_event), is never recovered, and its waiters get
    :class:`WorkflowCancelled`. A finished workflow is left as it is."""
    await engine.store.require_workflow(workflow_id)
    await engine.store.set_status(
        workflow_id, "CANCELLED", only_from=["PENDING", "ENQUEUED"], now=engine.clock.now()
    )
    engine.executor.cancel_local(workflow_id)


async def resume_workflow(engine: Engine, workflow_id: str) -> WorkflowHandle[Any]:
    """Continue a CANCELLED or MAX_RECOVERY_ATTEMPTS_EXCEEDED workflow from its last completed
    step, on the current application version (an ENQUEUED one starts at once, bypassing its
    queue). A SUCCESS, ERROR or PENDING workflow is left as it is; a PENDING one of another
    application version raises :class:`WorkflowNotResumable`, which says what to do instead.
    Returns its handle."""
    row = await engine.store.require_workflow(workflow_id)
    if row.status == WorkflowStatus.PENDING and row.app_version not in ("", engine.app_version):
        raise WorkflowNotResumable(
            workflow_id,
            f"workflow {workflow_id!r} is PENDING on application version {row.app_version!r}"
            f" (executor {row.executor_id or 'none'!r}), and resume changed nothing: a runtime"
            f" of that version runs it, and one running it now must not be raced. To finish it"
            f" on the current code instead, adopt it once its executor has stopped"
            f" (upgrade_workflows(), or aiodurable workflow upgrade --import MODULE), which"
            f" first checks that the current code replays its journal; or cancel it, then"
            f" resume it (aiodurable workflow cancel {workflow_id} && aiodurable workflow resume"
            f" {workflow_id}); it continues from its last completed step",
        )
    wdef = lookup(row.name)
    if wdef is not None:
        resumed = await engine.store.resume(
            workflow_id, engine.executor_id, engine.app_version, engine.clock.now()
        )
        if resumed is not None:
            await engine.executor.relaunch(resumed)
    else:
        await engine.store.resume(workflow_id, "", "", engine.clock.now())
    return engine.handle(workflow_id, row.name)


async def restart_workflow(engine: Engine, workflow_id: str) -> WorkflowHandle[Any]:
    """Start the workflow again from the beginning under a new ID, with the same inputs."""
    return await fork_workflow(engine, workflow_id, 1)


async def fork_workflow(
    engine: Engine,
    workflow_id: str,
    start_step: int,
    *,
    new_workflow_id: str | None = None,
    app_version: str | None = None,
) -> WorkflowHandle[Any]:
    """Start a new workflow with the same inputs that reuses the journal entries of
    ``workflow_id`` whose function ID is below ``start_step`` and runs the rest again.

    ``start_step`` may be at most one past the last recorded function ID (0 or 1: nothing is
    reused, a restart). The fork runs on ``app_version`` (default: the current one).
    """
    if isinstance(start_step, bool) or not isinstance(start_step, int) or start_step < 0:
        raise ValueError(
            f"start_step must be a function ID >= 0 (function IDs count from 1), not {start_step!r}"
        )
    row = await engine.store.require_workflow(workflow_id)
    last = await engine.store.last_function_id(workflow_id)
    if start_step > last + 1:
        raise ValueError(
            f"start_step {start_step} is past the journal of {workflow_id!r}, whose last function"
            f" ID is {last}; use at most {last + 1}"
        )
    new_id = (
        make_workflow_id() if new_workflow_id is None else check_id("workflow ID", new_workflow_id)
    )
    wdef = lookup(row.name)
    version = app_version or (engine.app_version if wdef is not None else "")
    runs_here = wdef is not None and version == engine.app_version
    new = NewWorkflow(
        workflow_id=new_id,
        name=row.name,
        format=row.format,
        inputs=row.inputs or b"",
        created_at=engine.clock.now(),
        app_version=version,
        executor_id=engine.executor_id if runs_here else "",
    )
    await engine.store.fork(workflow_id, new, start_step)
    if runs_here:
        forked = await engine.store.require_workflow(new_id)
        await engine.executor.relaunch(forked)
    return engine.handle(new_id, row.name)


async def recover_executor(engine: Engine, executor_id: str) -> list[str]:
    """Hand the PENDING workflows of another executor, which must be gone, to the live runtimes
    of their application version (this one included); return their IDs."""
    check_id("executor ID", executor_id)
    if executor_id == engine.executor_id:
        return await engine.recover()
    if await engine.store.executor_alive(executor_id):
        raise DurableError(
            f"executor {executor_id!r} is still alive (a runtime holds its lock); stop that"
            " process first, or let it recover its own workflows"
        )
    released = await engine.store.release_executor(executor_id, engine.clock.now())
    engine.recovery.wake_claimer()
    return released


async def log_other_versions(engine: Engine) -> None:
    """Log one WARNING when PENDING or ENQUEUED workflows of other application versions exist:
    they will not run here, and nothing else would say so."""
    counts = await engine.store.other_version_counts(engine.app_version)
    if not counts:
        return
    per_version: dict[str, list[str]] = {}
    for version, status, n in counts:
        per_version.setdefault(version, []).append(f"{n} {status}")
    total = sum(n for _, _, n in counts)
    listing = "; ".join(f"{v!r}: {', '.join(parts)}" for v, parts in per_version.items())
    first = next(iter(per_version))
    logger.warning(
        "%d unfinished workflow(s) belong to other application versions and will not run on"
        " this one (%r): %s. A runtime of their version finishes them; to see them run"
        " 'aiodurable workflow list --app-version %s --status PENDING --status ENQUEUED'; to move"
        " to this version those whose journal the current code replays cleanly, run"
        " 'aiodurable workflow upgrade --import MODULE' (or upgrade_workflows(), or open with"
        " Runtime(auto_upgrade=True)); add --dry-run to see which first. Pin app_version= (or"
        " AIODURABLE_APP_VERSION) if your edits keep in-flight workflows compatible.",
        total,
        engine.app_version,
        listing,
        first,
    )
