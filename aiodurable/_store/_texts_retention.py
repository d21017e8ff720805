"""The SQL of retention: finding where garbage collection stops, and deleting one batch.

Finished workflows are taken in order of their *key*, ``(updated_at, workflow_id)``, oldest
first, through the partial index ``workflows_finished`` (migration ``0008_retention.sql``); every
statement here spells the index's status list as it is, so the planner can use the index.

What goes with a workflow: its row and every row keyed by its ID. ``messages`` (to it),
``events`` and ``streams`` go by their foreign keys' ``ON DELETE CASCADE``; ``steps``,
``event_history``, ``waits`` and ``message_keys`` have no foreign key and are deleted in the same
statement. ``debounces`` rows point at ENQUEUED workflows (one cancelled meanwhile is dropped at
the burst's next call or when it closes), ``schedules`` and ``executors`` at none.
"""

from __future__ import annotations

__all__ = ["FINISHED", "retention_texts"]

FINISHED = "('SUCCESS', 'ERROR', 'CANCELLED', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED')"
"""The finished statuses, in SQL: exactly the predicate of the ``workflows_finished`` index."""


def retention_texts(s: str) -> dict[str, str]:
    """The newest finished workflows' boundary, and one batch of deletion."""
    of_doomed = "IN (SELECT workflow_id FROM doomed)"
    return {
        # The key of the ($1 + 1)-th newest finished workflow: those below it are beyond the
        # newest $1 + 1. No row when there are not that many.
        "retention_nth": (
            f"SELECT updated_at, workflow_id FROM {s}.workflows WHERE status IN {FINISHED}"
            " ORDER BY updated_at DESC, workflow_id DESC OFFSET $1 LIMIT 1"
        ),
        # One batch, one statement (so one short transaction): up to $5 finished workflows whose
        # key lies strictly between ($1, $2) and ($3, $4), oldest first, each locked with SKIP
        # LOCKED (a row another transaction holds, such as a resume or a send, waits for the next
        # collection; a concurrent collection takes other rows), are deleted with their rows.
        # A child whose parent is still PENDING or ENQUEUED stays: the parent reads its outcome,
        # on every replay too. Returns the count deleted and the key of the last one.
        "collect_finished": (
            f"WITH doomed AS MATERIALIZED (SELECT w.workflow_id FROM {s}.workflows w"
            f" WHERE w.status IN {FINISHED}"
            " AND (w.updated_at, w.workflow_id) > ($1::bigint, $2::text)"
            " AND (w.updated_at, w.workflow_id) < ($3::bigint, $4::text)"
            f" AND NOT EXISTS (SELECT FROM {s}.workflows p"
            " WHERE p.workflow_id = w.parent_workflow_id AND p.status IN ('PENDING', 'ENQUEUED'))"
            " ORDER BY w.updated_at, w.workflow_id LIMIT $5 FOR UPDATE OF w SKIP LOCKED),"
            f" steps AS (DELETE FROM {s}.steps WHERE workflow_id {of_doomed}),"
            f" history AS (DELETE FROM {s}.event_history WHERE workflow_id {of_doomed}),"
            f" waits AS (DELETE FROM {s}.waits WHERE workflow_id {of_doomed}),"
            f" keys AS (DELETE FROM {s}.message_keys WHERE destination_id {of_doomed}),"
            f" gone AS (DELETE FROM {s}.workflows w USING doomed d"
            " WHERE w.workflow_id = d.workflow_id RETURNING w.updated_at, w.workflow_id)"
            " SELECT (SELECT count(*) FROM gone) AS deleted, last.updated_at, last.workflow_id"
            " FROM (SELECT) one LEFT JOIN LATERAL (SELECT updated_at, workflow_id FROM gone"
            " ORDER BY updated_at DESC, workflow_id DESC LIMIT 1) last ON true"
        ),
    }
