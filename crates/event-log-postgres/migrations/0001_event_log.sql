-- The event log: one row per record, and the single row that orders appends.

-- The newest log position. Every append locks this row first, so appends
-- from all instances are decided and committed one batch at a time, in lsn
-- order; its update wakes listening instances (see the trigger below).
CREATE TABLE log_head (
    id smallint PRIMARY KEY CHECK (id = 1),
    lsn bigint NOT NULL CHECK (lsn >= 0)
);
INSERT INTO log_head (id, lsn) VALUES (1, 0);

CREATE TABLE events (
    stream text NOT NULL,
    seq bigint NOT NULL CHECK (seq >= 1),
    lsn bigint NOT NULL UNIQUE CHECK (lsn >= 1),
    event_type text NOT NULL,
    -- RFC 3339 UTC with microseconds, kept as written so reads are byte-identical.
    recorded_at text NOT NULL,
    idempotency_key text,
    content_hash text,
    create_key text,
    -- `json`, not `jsonb`: the text is kept exactly as appended.
    attrs json,
    payload json NOT NULL,
    -- Every record but a stream's first has its predecessor in the stream,
    -- and every record but the log's first has its predecessor in the log:
    -- with the keys above, seqs and lsns are contiguous from 1.
    prev_seq bigint GENERATED ALWAYS AS (CASE WHEN seq > 1 THEN seq - 1 END) STORED,
    prev_lsn bigint GENERATED ALWAYS AS (CASE WHEN lsn > 1 THEN lsn - 1 END) STORED,
    PRIMARY KEY (stream, seq),
    FOREIGN KEY (stream, prev_seq) REFERENCES events (stream, seq),
    FOREIGN KEY (prev_lsn) REFERENCES events (lsn)
);

-- Keys are unique where present. Partial indexes, so that they hold only
-- the keyed rows and the foreign-key checks above can only use the primary
-- key: a full index led by `stream` lets the check's plan, made while the
-- table is empty, scan every earlier event of the stream.
CREATE UNIQUE INDEX events_idempotency_key ON events (stream, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE UNIQUE INDEX events_create_key ON events (create_key)
    WHERE create_key IS NOT NULL;

CREATE FUNCTION notify_log_head() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('openagents_log', TG_TABLE_SCHEMA || ' ' || NEW.lsn::text);
    RETURN NEW;
END
$$;

CREATE TRIGGER log_head_notify AFTER UPDATE ON log_head
    FOR EACH ROW EXECUTE FUNCTION notify_log_head();

-- The projections' checkpoint: one snapshot shared by every instance, since
-- every instance folds the same log into the same projections.
CREATE TABLE projection_checkpoint (
    id smallint PRIMARY KEY CHECK (id = 1),
    applied_lsn bigint NOT NULL,
    snapshot bytea NOT NULL,
    written_at timestamptz NOT NULL DEFAULT now()
);
