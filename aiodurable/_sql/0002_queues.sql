-- Queues: priority (lower first), deduplication while queued or running, and the time a
-- workflow left its queue (for rate limits).
ALTER TABLE {schema}.workflows ADD COLUMN priority integer NOT NULL DEFAULT 0;
ALTER TABLE {schema}.workflows ADD COLUMN deduplication_id text;
ALTER TABLE {schema}.workflows ADD COLUMN started_at bigint;
CREATE UNIQUE INDEX workflows_deduplication ON {schema}.workflows (queue_name, deduplication_id)
    WHERE deduplication_id IS NOT NULL AND status IN ('ENQUEUED', 'PENDING');
CREATE INDEX workflows_queue_order ON {schema}.workflows (queue_name, priority, created_at)
    WHERE status = 'ENQUEUED';
CREATE INDEX workflows_queue_started ON {schema}.workflows (queue_name, started_at)
    WHERE started_at IS NOT NULL;
