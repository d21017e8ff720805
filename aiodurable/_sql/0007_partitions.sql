-- Partitioned queues: a queue's limits apply to each partition key on its own.
ALTER TABLE {schema}.workflows ADD COLUMN partition_key text;
-- The dispatcher's walk over the partitions with queued work (one probe per partition: the
-- next key and its first workflow), and each partition's queued workflows in dispatch order.
-- Running counts and rate windows use the queue's indexes of 0001 and 0002.
CREATE INDEX workflows_partition_order
    ON {schema}.workflows (queue_name, partition_key, priority, created_at)
    WHERE status = 'ENQUEUED' AND partition_key IS NOT NULL;
