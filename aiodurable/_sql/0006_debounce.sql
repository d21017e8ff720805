-- Debouncing: the open burst of calls per (workflow name, key). The burst's workflow waits
-- ENQUEUED (its inputs those of the latest call) until the burst closes: `period` after its last
-- call, or `max_wait` after its first. Closing deletes the row and makes the workflow PENDING for
-- any runtime that has its code, in one statement.
CREATE TABLE IF NOT EXISTS {schema}.debounces (
    name          text   NOT NULL,
    key           text   NOT NULL,
    workflow_id   text   NOT NULL,
    first_at      bigint NOT NULL,
    last_at       bigint NOT NULL,
    period_ms     bigint NOT NULL,
    max_wait_ms   bigint,
    PRIMARY KEY (name, key)
);
