"""Queue positions of the workflows a page shows, and of no others."""

from __future__ import annotations

from collections.abc import Iterable

from .._runtime import Runtime

__all__ = ["queue_positions"]


async def queue_positions(
    rt: Runtime, queue_name: str, workflow_ids: Iterable[str]
) -> dict[str, int]:
    """The position (1 = next, in dispatch order) of each of ``workflow_ids`` that waits ENQUEUED
    in ``queue_name``. The database ranks the queue; only the asked-for rows come back, so a
    queue of 100,000 costs a page 50 rows, not 100,000."""
    ids = list(workflow_ids)
    if not ids:
        return {}
    rows = await rt.store.pool.fetch(
        "SELECT workflow_id, position FROM (SELECT workflow_id, row_number() OVER"
        " (ORDER BY priority, created_at, workflow_id) AS position"
        f" FROM {rt.schema}.workflows WHERE queue_name = $1 AND status = 'ENQUEUED') ranked"
        " WHERE workflow_id = ANY($2::text[])",
        queue_name,
        ids,
    )
    return {r["workflow_id"]: r["position"] for r in rows}
