"""Read-only queries the console needs beyond the runtime's management calls.

They run on the runtime's pool against its schema's tables and return frozen dataclasses; none of
them writes anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._runtime import Runtime

__all__ = [
    "EventRow",
    "MessageRow",
    "WorkflowBrief",
    "events",
    "list_watermark",
    "messages",
    "workflow_briefs",
    "workflow_watermark",
]

# Values larger than this are shown clipped: a console page must stay small.
_VALUE_LIMIT = 64 * 1024


@dataclass(frozen=True, slots=True)
class EventRow:
    """The latest value of one event of a workflow."""

    key: str
    format: str
    value: bytes
    updated_at: float
    clipped: bool


@dataclass(frozen=True, slots=True)
class MessageRow:
    """A message waiting for its workflow to ``recv`` it."""

    message_id: int
    topic: str
    format: str
    value: bytes
    created_at: float
    clipped: bool


@dataclass(frozen=True, slots=True)
class WorkflowBrief:
    """A workflow's ID, name and status (for links to children and parents)."""

    workflow_id: str
    name: str
    status: str


async def events(rt: Runtime, workflow_id: str) -> list[EventRow]:
    """The events a workflow has set, by key."""
    rows = await rt.store.pool.fetch(
        f"SELECT key, format, substring(value FROM 1 FOR {_VALUE_LIMIT}) AS value,"
        f" octet_length(value) > {_VALUE_LIMIT} AS clipped, updated_at"
        f" FROM {rt.schema}.events WHERE workflow_id = $1 ORDER BY key",
        workflow_id,
    )
    return [
        EventRow(r["key"], r["format"], r["value"], r["updated_at"] / 1000, r["clipped"])
        for r in rows
    ]


async def messages(rt: Runtime, workflow_id: str, limit: int = 100) -> list[MessageRow]:
    """The first ``limit`` messages sent to a workflow and not yet received, oldest first."""
    rows = await rt.store.pool.fetch(
        f"SELECT message_id, topic, format, substring(value FROM 1 FOR {_VALUE_LIMIT}) AS value,"
        f" octet_length(value) > {_VALUE_LIMIT} AS clipped, created_at"
        f" FROM {rt.schema}.messages WHERE destination_id = $1 ORDER BY message_id LIMIT $2",
        workflow_id,
        limit,
    )
    return [
        MessageRow(
            r["message_id"],
            r["topic"],
            r["format"],
            r["value"],
            r["created_at"] / 1000,
            r["clipped"],
        )
        for r in rows
    ]


async def workflow_briefs(rt: Runtime, workflow_ids: list[str]) -> dict[str, WorkflowBrief]:
    """Name and status of the given workflows (the unknown ones are missing)."""
    if not workflow_ids:
        return {}
    rows = await rt.store.pool.fetch(
        f"SELECT workflow_id, name, status FROM {rt.schema}.workflows"
        " WHERE workflow_id = ANY($1::text[])",
        workflow_ids,
    )
    return {r["workflow_id"]: WorkflowBrief(r["workflow_id"], r["name"], r["status"]) for r in rows}


async def list_watermark(rt: Runtime) -> object:
    """Something that changes when a workflow is created (the newest creation time and how many
    workflows share it): one backward step of the ``created_at`` index."""
    row = await rt.store.pool.fetchrow(
        f"SELECT created_at, count(*) FROM {rt.schema}.workflows"
        f" WHERE created_at = (SELECT max(created_at) FROM {rt.schema}.workflows)"
        " GROUP BY created_at"
    )
    return None if row is None else tuple(row.values())


async def workflow_watermark(rt: Runtime, workflow_id: str) -> object:
    """Something that changes when a workflow's status changes or its journal grows."""
    row = await rt.store.pool.fetchrow(
        f"SELECT w.status, w.updated_at, (SELECT count(*) FROM {rt.schema}.steps s"
        " WHERE s.workflow_id = w.workflow_id) AS steps,"
        f" (SELECT count(*) FROM {rt.schema}.messages m WHERE m.destination_id = w.workflow_id)"
        " AS messages,"
        f" (SELECT max(e.updated_at) FROM {rt.schema}.events e"
        " WHERE e.workflow_id = w.workflow_id) AS events"
        f" FROM {rt.schema}.workflows w WHERE w.workflow_id = $1",
        workflow_id,
    )
    return None if row is None else tuple(row.values())
