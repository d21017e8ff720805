"""The SQL of queues: enqueueing, deduplication, and the dispatch that starts queued workflows,
of plain queues and of partitioned ones.

Split from :mod:`._texts` (whose shared fragments it uses) to keep each texts module short.
"""

from __future__ import annotations

from .._signals import Signal
from ._texts import WF_COLUMNS, _notify

__all__ = ["queue_texts"]


def queue_texts(s: str, ch: str) -> dict[str, str]:
    """Enqueueing, deduplication, and the dispatch that starts queued workflows."""
    queued = (
        f"INSERT INTO {s}.workflows (workflow_id, status, name, format, inputs, created_at,"
        " updated_at, app_version, executor_id, parent_workflow_id, deadline_at, queue_name,"
        " priority, deduplication_id, partition_key)"
    )
    notify_queue = _notify(ch, Signal.QUEUE, "queue_name")
    # The rows to start are picked once, in a CTE read as one array (an index probe per row):
    # as a subquery joined to the UPDATE they could be picked again for each row it scans, each
    # pick skipping the rows this very statement has locked, and so take more than the limit.
    start = (
        f" UPDATE {s}.workflows SET status = 'PENDING', executor_id = $2, app_version = $3,"
        " started_at = $4, updated_at = $4 WHERE workflow_id = ANY(ARRAY(SELECT id FROM picked))"
        f" AND status = 'ENQUEUED' RETURNING {WF_COLUMNS}"
    )
    # What a runtime may start: the workflows it has registered, of its version or of none.
    runnable = "status = 'ENQUEUED' AND name = ANY($5) AND app_version IN ('', $3)"

    def dequeue(order: str) -> str:
        return (
            f"WITH picked(id) AS MATERIALIZED (SELECT workflow_id FROM {s}.workflows"
            f" WHERE queue_name = $1 AND {runnable} ORDER BY {order} LIMIT $6"
            f" FOR UPDATE SKIP LOCKED){start}"
        )

    return {
        "enqueue": (
            f"WITH ins AS ({queued} VALUES ($1, 'ENQUEUED', $2, $3, $4, $5, $5, $6, '', $7, $8,"
            " $9, $10, $11, $12) ON CONFLICT (workflow_id) DO NOTHING RETURNING queue_name)"
            f" SELECT {notify_queue} FROM ins"
        ),
        "enqueue_many": (
            f"WITH ins AS ({queued} SELECT i, 'ENQUEUED', n, f, inp, c, c, v, '', p, d, q, pr,"
            " dd, pk FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::bigint[],"
            " $6::text[], $7::text[], $8::bigint[], $9::text[], $10::integer[], $11::text[],"
            " $12::text[]) AS t(i, n, f, inp, c, v, p, d, q, pr, dd, pk)"
            " ON CONFLICT (workflow_id) DO NOTHING RETURNING workflow_id, queue_name)"
            f" SELECT workflow_id, {notify_queue} FROM ins"
        ),
        "deduplicated": (
            f"SELECT workflow_id FROM {s}.workflows WHERE queue_name = $1"
            " AND deduplication_id = $2 AND status IN ('ENQUEUED', 'PENDING')"
        ),
        "queue_lock": "SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))",
        "queue_running": (
            "SELECT count(*) AS everywhere, count(*) FILTER (WHERE executor_id = $2)"
            f" AS here FROM {s}.workflows WHERE queue_name = $1 AND status = 'PENDING'"
        ),
        "queue_window": (
            f"SELECT started_at FROM {s}.workflows WHERE queue_name = $1"
            " AND started_at > $2 ORDER BY started_at DESC LIMIT $3"
        ),
        "dequeue_by_priority": dequeue("priority, created_at"),
        "dequeue_by_age": dequeue("created_at"),
        # Each partition with queued work, found by a skip scan of workflows_partition_order
        # (one index probe per partition, whatever its backlog): its next workflow's priority
        # and age, what runs ($2: here), its starts since $6 (the latest $7, none when $7 is 0),
        # and its queued workflows this runtime can run ($4 names, $3 version), up to $5.
        "partition_loads": (
            "WITH RECURSIVE heads AS ((SELECT partition_key, priority, created_at"
            f" FROM {s}.workflows WHERE queue_name = $1 AND status = 'ENQUEUED'"
            " AND partition_key IS NOT NULL ORDER BY partition_key, priority, created_at"
            " LIMIT 1) UNION ALL SELECT n.* FROM heads h CROSS JOIN LATERAL"
            f" (SELECT partition_key, priority, created_at FROM {s}.workflows"
            " WHERE queue_name = $1 AND status = 'ENQUEUED' AND partition_key > h.partition_key"
            " ORDER BY partition_key, priority, created_at LIMIT 1) n),"
            " running AS (SELECT partition_key, count(*) AS everywhere,"
            f" count(*) FILTER (WHERE executor_id = $2) AS here FROM {s}.workflows"
            " WHERE queue_name = $1 AND status = 'PENDING' AND partition_key IS NOT NULL"
            " GROUP BY partition_key),"
            " starts AS (SELECT partition_key, (array_agg(started_at ORDER BY started_at DESC))"
            f"[1:$7] AS recent FROM {s}.workflows WHERE $7 > 0 AND queue_name = $1"
            " AND started_at > $6 AND partition_key IS NOT NULL GROUP BY partition_key)"
            " SELECT h.partition_key, h.priority, h.created_at,"
            " coalesce(r.everywhere, 0) AS everywhere, coalesce(r.here, 0) AS here,"
            " coalesce(t.recent, '{}'::bigint[]) AS recent,"
            f" (SELECT count(*) FROM (SELECT FROM {s}.workflows w WHERE w.queue_name = $1"
            " AND w.partition_key = h.partition_key AND w.status = 'ENQUEUED'"
            " AND w.name = ANY($4) AND w.app_version IN ('', $3) LIMIT $5) x) AS waiting"
            " FROM heads h LEFT JOIN running r USING (partition_key)"
            " LEFT JOIN starts t USING (partition_key)"
        ),
        # How many to start ($7) from each partition ($6), as the policy shared them, each
        # partition's in the order of workflows_partition_order (on a queue without
        # priority_enabled every priority is 0: that is its age).
        "dequeue_partitions": (
            "WITH picked(id) AS MATERIALIZED (SELECT c.workflow_id FROM unnest($6::text[],"
            " $7::integer[]) AS p(key, take) CROSS JOIN LATERAL (SELECT workflow_id"
            f" FROM {s}.workflows WHERE queue_name = $1 AND partition_key = p.key AND {runnable}"
            f" ORDER BY priority, created_at LIMIT p.take FOR UPDATE SKIP LOCKED) c){start}"
        ),
        "queue_positions": (
            f"SELECT workflow_id FROM {s}.workflows WHERE queue_name = $1"
            " AND status = 'ENQUEUED' ORDER BY priority, created_at"
        ),
    }
