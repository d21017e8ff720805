-- Executor liveness: each runtime records a heartbeat here; a runtime that sees another executor
-- of its application version silent past the lease (and its session lock free) takes over that
-- executor's PENDING workflows. Times are the database server's clock, in epoch milliseconds.
CREATE TABLE {schema}.executors (
    executor_id  text PRIMARY KEY,
    host         text NOT NULL,
    pid          integer NOT NULL,
    app_version  text NOT NULL,
    started_at   bigint NOT NULL,
    last_seen    bigint NOT NULL
);

-- When an idempotency key was first used, so keys the runtime made itself can be forgotten.
ALTER TABLE {schema}.message_keys ADD COLUMN created_at bigint NOT NULL DEFAULT 0;
