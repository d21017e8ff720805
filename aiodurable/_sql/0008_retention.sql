-- Retention: garbage collection deletes finished workflows in order of their last update
-- (updated_at, then workflow_id), oldest first, in batches. A partial index keeps that order for
-- finished rows only: a workflow enters it once, when its final status is written (an update
-- that touches every index already, since status is indexed), and PENDING or ENQUEUED rows,
-- the ones the hot path writes again and again, never do. The statements that use it spell the
-- same status list, so the planner can prove the predicate.
-- (Built in the migration's transaction, not CONCURRENTLY: on a large existing table, writes to
-- workflows wait while it builds, once.)
CREATE INDEX IF NOT EXISTS workflows_finished ON {schema}.workflows (updated_at, workflow_id)
    WHERE status IN ('SUCCESS', 'ERROR', 'CANCELLED', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED');
