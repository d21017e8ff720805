"""Read-only queries the console needs beyond the runtime's management calls.

Each is one read of the runtime's store (whose SQL lives in ``aiodurable._store``), retried like
every other statement while the database is briefly out of reach; none of them writes anything.
The rows are frozen dataclasses of ``aiodurable._records``.
"""

from __future__ import annotations

from collections.abc import Iterable

from .._engine import Engine
from .._records import EventRow, MessageRow, WorkflowBrief
from .._stream_records import StreamSummary

__all__ = [
    "STREAM_VALUE_LIMIT",
    "EventRow",
    "MessageRow",
    "StreamSummary",
    "WorkflowBrief",
    "events",
    "list_watermark",
    "messages",
    "queue_positions",
    "streams",
    "workflow_briefs",
    "workflow_watermark",
]

# Values larger than this are shown clipped: a console page must stay small.
_VALUE_LIMIT = 64 * 1024


async def events(rt: Engine, workflow_id: str) -> list[EventRow]:
    """The events a workflow has set, by key."""
    return await rt.store.workflow_events(workflow_id, clip=_VALUE_LIMIT)


# A stream's last values are shown shorter: a page may show several of each of many streams.
STREAM_VALUE_LIMIT = 4 * 1024


async def streams(rt: Engine, workflow_id: str, last: int, limit: int) -> list[StreamSummary]:
    """The streams a workflow wrote (the first ``limit`` keys): each one's count of values,
    whether it was closed, and its ``last`` values."""
    return await rt.store.workflow_streams(
        workflow_id, last=last, clip=STREAM_VALUE_LIMIT, limit=limit
    )


async def messages(rt: Engine, workflow_id: str, limit: int = 100) -> list[MessageRow]:
    """The first ``limit`` messages sent to a workflow and not yet received, oldest first."""
    return await rt.store.workflow_messages(workflow_id, limit, clip=_VALUE_LIMIT)


async def workflow_briefs(rt: Engine, workflow_ids: list[str]) -> dict[str, WorkflowBrief]:
    """Name and status of the given workflows (the unknown ones are missing)."""
    return await rt.store.workflow_briefs(workflow_ids)


async def list_watermark(rt: Engine) -> object:
    """Something that changes when a workflow is created (the newest creation time and how many
    workflows share it)."""
    return await rt.store.list_watermark()


async def workflow_watermark(rt: Engine, workflow_id: str) -> object:
    """Something that changes when a workflow's status changes or its journal grows."""
    return await rt.store.workflow_watermark(workflow_id)


async def queue_positions(
    rt: Engine, queue_name: str, workflow_ids: Iterable[str]
) -> dict[str, int]:
    """The position (1 = next, in dispatch order) of each of ``workflow_ids`` that waits ENQUEUED
    in ``queue_name``. The database ranks the queue; only the asked-for rows come back, so a
    queue of 100,000 costs a page 50 rows, not 100,000."""
    ids = list(workflow_ids)
    if not ids:
        return {}
    return await rt.store.enqueued_positions(queue_name, ids)
