-- Workflows, their journal of steps, messages and events. Times are epoch milliseconds.
CREATE TABLE {schema}.workflows (
    workflow_id         text PRIMARY KEY,
    status              text NOT NULL,
    name                text NOT NULL,
    format              text NOT NULL,
    inputs              bytea,
    output              bytea,
    error               bytea,
    created_at          bigint NOT NULL,
    updated_at          bigint NOT NULL,
    app_version         text NOT NULL,
    executor_id         text NOT NULL,
    recovery_attempts   integer NOT NULL DEFAULT 0,
    queue_name          text,
    parent_workflow_id  text,
    deadline_at         bigint
);
CREATE INDEX workflows_created_at ON {schema}.workflows (created_at);
CREATE INDEX workflows_status_created_at ON {schema}.workflows (status, created_at);
CREATE INDEX workflows_name_created_at ON {schema}.workflows (name, created_at);
CREATE INDEX workflows_pending_executor ON {schema}.workflows (executor_id, app_version)
    WHERE status = 'PENDING';

CREATE TABLE {schema}.steps (
    workflow_id        text NOT NULL,
    function_id        integer NOT NULL,
    name               text NOT NULL,
    format             text NOT NULL,
    output             bytea,
    error              bytea,
    child_workflow_id  text,
    started_at         bigint NOT NULL,
    completed_at       bigint NOT NULL,
    PRIMARY KEY (workflow_id, function_id)
);

CREATE TABLE {schema}.messages (
    message_id       bigserial PRIMARY KEY,
    destination_id   text NOT NULL REFERENCES {schema}.workflows (workflow_id) ON DELETE CASCADE,
    topic            text NOT NULL,  -- '' when sent without a topic
    format           text NOT NULL,
    value            bytea NOT NULL,
    created_at       bigint NOT NULL
);
CREATE INDEX messages_destination_topic ON {schema}.messages (destination_id, topic, message_id);
-- Idempotency keys stay taken after their message is consumed.
CREATE TABLE {schema}.message_keys (
    destination_id   text NOT NULL,
    idempotency_key  text NOT NULL,
    PRIMARY KEY (destination_id, idempotency_key)
);

CREATE TABLE {schema}.events (
    workflow_id  text NOT NULL REFERENCES {schema}.workflows (workflow_id) ON DELETE CASCADE,
    key          text NOT NULL,
    format       text NOT NULL,
    value        bytea NOT NULL,
    updated_at   bigint NOT NULL,
    PRIMARY KEY (workflow_id, key)
);
CREATE TABLE {schema}.event_history (
    workflow_id  text NOT NULL,
    function_id  integer NOT NULL,
    key          text NOT NULL,
    format       text NOT NULL,
    value        bytea NOT NULL,
    PRIMARY KEY (workflow_id, function_id)
);

-- The deadline of a wait (recv, get_event) in progress, so a recovered workflow waits only what
-- remains.
CREATE TABLE {schema}.waits (
    workflow_id  text NOT NULL,
    function_id  integer NOT NULL,
    deadline_at  bigint NOT NULL,
    PRIMARY KEY (workflow_id, function_id)
);

-- ID-prefix filters in listings use this index whatever the database's collation.
CREATE INDEX workflows_id_pattern ON {schema}.workflows (workflow_id text_pattern_ops);
-- Workflows waiting for any live runtime to take them (resumed or forked from the CLI, or
-- released from a dead executor) have executor_id = ''.
CREATE INDEX workflows_unassigned ON {schema}.workflows (name)
    WHERE status = 'PENDING' AND executor_id = '';
CREATE INDEX workflows_queue ON {schema}.workflows (queue_name, status, created_at)
    WHERE queue_name IS NOT NULL;
