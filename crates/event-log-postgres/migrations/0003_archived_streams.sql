-- The cold store (the event log's `cold` module): one row per stream whose
-- seqs 1..=base left the hot log. `archive` holds the same bytes the file
-- store writes as `streams/<stream>.zst` (zstd frames of the stream's kept
-- records, with their checksums); the other columns are its catalog entry.
-- Writing a row deletes the `events` rows it covers in the same
-- transaction: that is how this medium reclaims space (autovacuum then
-- reuses the dead rows' pages).
CREATE TABLE archived_streams (
    stream text PRIMARY KEY,
    base bigint NOT NULL CHECK (base >= 1),
    records bigint NOT NULL CHECK (records >= 0),
    bytes bigint NOT NULL CHECK (bytes >= 0),
    create_key text,
    -- The stream's folded state at `base`; `json` keeps the text as written.
    state json NOT NULL,
    archive bytea NOT NULL,
    -- The newest `recorded_at` of the rows the archive replaced, so a start
    -- whose newest rows all went cold still never hands out earlier times.
    last_recorded_at text,
    written_at timestamptz NOT NULL DEFAULT now()
);

-- Rows of a cold history are gone from `events`, so a record's predecessor
-- may no longer be a row: the foreign keys that held contiguity would
-- refuse the delete. The lsn rule moves into the append statement (a batch
-- must be numbered head+1 .. head+n, see `rows::APPEND_SQL`); the seq rule
-- becomes this check, once per inserted batch: a record's predecessor is a
-- row of its stream or is covered by the stream's archive.
ALTER TABLE events DROP CONSTRAINT events_stream_prev_seq_fkey;
ALTER TABLE events DROP CONSTRAINT events_prev_lsn_fkey;

CREATE FUNCTION events_follow_their_stream() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Scalar subqueries, not NOT EXISTS: they stay one primary-key probe
    -- per inserted row whatever plan the table's size suggested when the
    -- function's plan was cached.
    IF EXISTS (
        SELECT 1 FROM inserted i
        WHERE i.seq > 1
          AND (SELECT true FROM events e WHERE e.stream = i.stream AND e.seq = i.seq - 1) IS NULL
          AND (SELECT true FROM archived_streams a
               WHERE a.stream = i.stream AND a.base >= i.seq - 1) IS NULL
    ) THEN
        RAISE EXCEPTION 'a record of events follows no record of its stream'
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER events_follow_their_stream AFTER INSERT ON events
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION events_follow_their_stream();
