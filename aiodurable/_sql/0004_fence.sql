-- Fencing: a journal entry is written only by the executor that owns its workflow.
--
-- Each runtime's pooled connections carry its executor ID in the session setting
-- aiodurable.owner. When another executor has taken a workflow over (this one was paused, or cut
-- off from PostgreSQL for longer than the lease), the stale owner's next journal write fails with
-- SQLSTATE AD001 instead of merging into the new owner's journal, and the effects written in the
-- same statement or transaction (a message sent, a message consumed, an event, a @transaction
-- body) roll back with it. Connections without the setting (tools, the command line, a separate
-- application database) are not fenced.
CREATE FUNCTION {schema}.fence_journal() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    me text := current_setting('aiodurable.owner', true);
    owner text;
BEGIN
    IF me IS NULL OR me = '' THEN
        RETURN NEW;
    END IF;
    SELECT executor_id INTO owner FROM {schema}.workflows WHERE workflow_id = NEW.workflow_id;
    IF owner IS DISTINCT FROM me THEN
        RAISE EXCEPTION USING
            ERRCODE = 'AD001',
            DETAIL = NEW.workflow_id,
            MESSAGE = format('workflow %s is owned by executor %s, not %s',
                             NEW.workflow_id, coalesce(owner, '(none)'), me);
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER steps_fence BEFORE INSERT ON {schema}.steps
    FOR EACH ROW EXECUTE FUNCTION {schema}.fence_journal();
