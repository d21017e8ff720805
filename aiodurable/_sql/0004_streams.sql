-- Streams: the values a workflow writes under a key, read in order by anyone. Each row commits in
-- the same statement as the journal entry (at function_id) of the write_stream or close_stream
-- that made it. Offsets count 0, 1, 2... per key, in call order. close_stream writes a marker
-- row at the offset after the stream's last value: its format and value are NULL.
CREATE TABLE {schema}.streams (
    workflow_id  text NOT NULL REFERENCES {schema}.workflows (workflow_id) ON DELETE CASCADE,
    key          text NOT NULL,
    "offset"     integer NOT NULL,
    function_id  integer NOT NULL,
    format       text,
    value        bytea,
    created_at   bigint NOT NULL,
    PRIMARY KEY (workflow_id, key, "offset"),
    CHECK ((format IS NULL) = (value IS NULL))
);
