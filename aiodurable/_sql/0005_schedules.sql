-- Cron schedules: declared in code with @scheduled (declared = true; every runtime upserts them as
-- it begins, keeping paused and last_tick) or created at run time. Each tick starts the workflow
-- workflow_name under the ID 'sched-{name}-{tick}', so a tick runs once across processes.
-- last_tick is the latest tick started, or passed over while paused (epoch milliseconds); it only
-- ever moves forward (a conditional UPDATE), so two runtimes never move it back.
CREATE TABLE {schema}.schedules (
    name           text PRIMARY KEY,
    workflow_name  text NOT NULL,
    cron           text NOT NULL,
    tz             text NOT NULL,
    catch_up       boolean NOT NULL,
    paused         boolean NOT NULL DEFAULT false,
    declared       boolean NOT NULL DEFAULT false,
    last_tick      bigint,
    created_at     bigint NOT NULL,
    updated_at     bigint NOT NULL
);
