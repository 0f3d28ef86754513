//! The cold store on PostgreSQL: the `archived_streams` table, one row per
//! stream whose seqs `1 ..= base` left the hot log (migration 3).
//!
//! A row is the stream's catalog entry (`base`, `records`, `bytes`,
//! `create_key`, `state`) and, in `archive`, the very bytes the file store
//! would write for it (`openagents_event_log::encode_archive`: zstd frames
//! of the kept records with their checksums), read back with
//! `read_archive_bytes`. The row is the durable word that the history is
//! cold.
//!
//! This medium does not compact: [`PgColdStore::put`] deletes the `events`
//! rows the history covers in the same transaction that writes the row, so
//! either both happen or neither does. The deleted rows leave lsn gaps,
//! which a start accepts (see `load_index` in the crate root); autovacuum
//! reuses their space.
//!
//! Reads go through the reader threads (see `source`); a write opens a
//! connection of its own, as snapshot writes do, since moves are rare.

use crate::connect::{Connector, error_text, off_runtime};
use crate::rows::to_i64;
use crate::source::PgSource;
use openagents_event_log::{
    ColdBody, ColdEntry, ColdError, ColdStore, ReadError, RecordRef, encode_archive,
    read_archive_bytes,
};
use postgres::{Client, Row};
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The archive bytes and base of one stream (`$1`).
pub(crate) const ARCHIVE_SQL: &str = "SELECT base, archive FROM archived_streams WHERE stream = $1";

/// The catalog columns [`entry_of`] reads, in its order.
const ENTRY_COLUMNS: &str = "stream, base, records, bytes, create_key, state::text";

/// Writes a history: replaces the stream's row unless the stored one
/// covers more (another instance moved it further meanwhile).
const UPSERT_SQL: &str = "
INSERT INTO archived_streams (stream, base, records, bytes, create_key, state, archive,
                              last_recorded_at)
VALUES ($1, $2, $3, $4, $5, $6::text::json, $7, $8)
ON CONFLICT (stream) DO UPDATE
SET base = EXCLUDED.base, records = EXCLUDED.records, bytes = EXCLUDED.bytes,
    create_key = EXCLUDED.create_key, state = EXCLUDED.state, archive = EXCLUDED.archive,
    last_recorded_at = GREATEST(archived_streams.last_recorded_at, EXCLUDED.last_recorded_at),
    written_at = now()
WHERE archived_streams.base <= EXCLUDED.base";

/// Deletes the rows a history covers; answers how many and the newest
/// time among them.
const DELETE_SQL: &str = "
WITH gone AS (DELETE FROM events WHERE stream = $1 AND seq <= $2 RETURNING recorded_at)
SELECT count(*), max(recorded_at) FROM gone";

/// One stream's archive as stored.
pub(crate) struct ArchiveRow {
    pub(crate) base: u64,
    pub(crate) archive: Vec<u8>,
}

impl ArchiveRow {
    /// A row of [`ARCHIVE_SQL`].
    pub(crate) fn decode(row: &Row) -> Result<Self, String> {
        Ok(ArchiveRow {
            base: number(row.get(0))?,
            archive: row.get(1),
        })
    }
}

fn number(value: i64) -> Result<u64, String> {
    u64::try_from(value).map_err(|_| "a negative number in archived_streams".to_string())
}

/// The catalog entries of `stream`, or of every stream (`None`).
pub(crate) fn entries(client: &mut Client, stream: Option<&str>) -> Result<Vec<ColdEntry>, String> {
    let rows = match stream {
        Some(stream) => client.query(
            &format!("SELECT {ENTRY_COLUMNS} FROM archived_streams WHERE stream = $1"),
            &[&stream],
        ),
        None => client.query(
            &format!("SELECT {ENTRY_COLUMNS} FROM archived_streams"),
            &[],
        ),
    }
    .map_err(|e| error_text(&e))?;
    rows.iter().map(entry_of).collect()
}

fn entry_of(row: &Row) -> Result<ColdEntry, String> {
    Ok(ColdEntry {
        stream: row.get(0),
        base: number(row.get(1))?,
        records: number(row.get(2))?,
        bytes: number(row.get(3))?,
        create_key: row.get(4),
        state: RawValue::from_string(row.get(5)).map_err(|e| e.to_string())?,
        // A move deletes the covered rows itself: nothing is left to scrub.
        scrub: false,
    })
}

/// The newest time of any record an archive replaced, so that a start whose
/// newest rows all went cold never hands out an earlier time.
pub(crate) fn newest_time(client: &mut Client) -> Result<Option<String>, String> {
    client
        .query_one("SELECT max(last_recorded_at) FROM archived_streams", &[])
        .map(|row| row.get(0))
        .map_err(|e| error_text(&e))
}

/// The seq of the first kept record of `stream` in `archive` that used
/// idempotency key `key`.
pub(crate) fn key_in(archive: &[u8], stream: &str, key: &str) -> Result<Option<u64>, ReadError> {
    let mut found = None;
    read_archive_bytes(archive, stream, 0, u64::MAX, usize::MAX, &mut |record| {
        if found.is_none() && record.key.as_deref() == Some(key) {
            found = Some(record.seq);
        }
    })?;
    Ok(found)
}

/// The `archived_streams` table as a cold store.
pub(crate) struct PgColdStore {
    connector: Connector,
    source: Arc<PgSource>,
    /// The newest entry seen of each stream (at start, by a put, by a look
    /// up): what [`ColdStore::entry`] answers when the database does not.
    known: Mutex<HashMap<String, ColdEntry>>,
}

impl PgColdStore {
    pub(crate) fn new(connector: Connector, source: Arc<PgSource>) -> Self {
        PgColdStore {
            connector,
            source,
            known: Mutex::new(HashMap::new()),
        }
    }

    /// Takes in the entries a start read.
    pub(crate) fn remember(&self, entries: &[ColdEntry]) {
        let mut known = self.known.lock().expect("cold entries lock");
        for entry in entries {
            known.insert(entry.stream.clone(), entry.clone());
        }
    }

    fn medium(&self, reason: String) -> ColdError {
        ColdError::Medium(format!(
            "PostgreSQL at {}: {reason}",
            self.connector.location()
        ))
    }

    /// One transaction: the covered rows leave `events` and the row takes
    /// their place. Any failure before `COMMIT` rolls both back.
    fn write(&self, entry: &ColdEntry, archive: &[u8]) -> Result<(), ColdError> {
        let unavailable =
            |e: postgres::Error| self.medium(format!("{}; nothing was archived", error_text(&e)));
        let mut client = self.connector.connect().map_err(unavailable)?;
        let mut txn = client.transaction().map_err(unavailable)?;
        let gone = txn
            .query_one(DELETE_SQL, &[&entry.stream, &to_i64(entry.base)])
            .map_err(unavailable)?;
        let (deleted, newest): (i64, Option<String>) = (gone.get(0), gone.get(1));
        let written = txn
            .execute(
                UPSERT_SQL,
                &[
                    &entry.stream,
                    &to_i64(entry.base),
                    &to_i64(entry.records),
                    &to_i64(entry.bytes),
                    &entry.create_key,
                    &entry.state.get(),
                    &archive,
                    &newest,
                ],
            )
            .map_err(unavailable)?;
        if written != 1 {
            // Dropping `txn` rolls the delete back.
            return Err(self.medium(format!(
                "another instance archived more of {} than seq {}; nothing was archived",
                entry.stream, entry.base
            )));
        }
        match txn.commit() {
            Ok(()) => {
                tracing::info!(stream = %entry.stream, base = entry.base, deleted, bytes = entry.bytes, "moved a history to archived_streams");
                Ok(())
            }
            Err(error) => self.learn_outcome(entry, archive, error_text(&error)),
        }
    }

    /// After the answer to `COMMIT` was lost: the write committed if the
    /// row now holds these very bytes. If it does not, the lost transaction
    /// may still be ending on its backend, so the outcome stays unknown;
    /// either way reads are right (they fall back to the archive row) and
    /// moving the history again is safe.
    fn learn_outcome(
        &self,
        entry: &ColdEntry,
        archive: &[u8],
        lost: String,
    ) -> Result<(), ColdError> {
        let found = self.connector.connect().and_then(|mut client| {
            client
                .query_opt(
                    "SELECT archive = $2 FROM archived_streams WHERE stream = $1 AND base = $3",
                    &[&entry.stream, &archive, &to_i64(entry.base)],
                )
                .map(|row| row.is_some_and(|row| row.get::<_, bool>(0)))
        });
        match found {
            Ok(true) => {
                tracing::warn!(reason = %lost, stream = %entry.stream, "the answer to COMMIT was lost; the history was archived");
                Ok(())
            }
            _ => Err(self.medium(format!(
                "{lost}; whether the history of {} was archived is unknown (moving it again is safe)",
                entry.stream
            ))),
        }
    }
}

impl ColdStore for PgColdStore {
    fn put(&self, mut entry: ColdEntry, body: ColdBody) -> Result<ColdEntry, ColdError> {
        let archive = encode_archive(&mut entry, body).map_err(|e| {
            ColdError::Medium(format!("encoding the history of {}: {e}", entry.stream))
        })?;
        off_runtime(|| self.write(&entry, &archive))?;
        self.remember(std::slice::from_ref(&entry));
        Ok(entry)
    }

    fn read(
        &self,
        stream: &str,
        after_seq: u64,
        upto: u64,
        limit: usize,
        each: &mut dyn FnMut(RecordRef<'_>),
    ) -> Result<usize, ReadError> {
        match self.source.archive(stream)? {
            Some(row) => read_archive_bytes(&row.archive, stream, after_seq, upto, limit, each),
            None => Err(ReadError::Damaged {
                offset: 0,
                reason: format!(
                    "the archived history of {stream} is missing from archived_streams; \
                     restore the table from its backup"
                ),
            }),
        }
    }

    fn key(&self, stream: &str, key: &str) -> Result<Option<u64>, ReadError> {
        match self.source.archive(stream)? {
            Some(row) => key_in(&row.archive, stream, key),
            None => Ok(None),
        }
    }

    /// Asked of the database, since another instance may have moved the
    /// stream since this one started; the last entry seen when it does not
    /// answer (a move then fails at its write anyway).
    fn entry(&self, stream: &str) -> Option<ColdEntry> {
        match self.source.entries(Some(stream)) {
            Ok(mut found) => {
                let entry = found.pop();
                self.remember(entry.as_slice());
                entry
            }
            Err(error) => {
                tracing::warn!(%error, stream, "reading an archive entry; using the last one seen");
                self.known
                    .lock()
                    .expect("cold entries lock")
                    .get(stream)
                    .cloned()
            }
        }
    }

    fn catalog(&self) -> Result<Vec<ColdEntry>, ColdError> {
        let entries = self
            .source
            .entries(None)
            .map_err(|error| self.medium(error.to_string()))?;
        self.remember(&entries);
        Ok(entries)
    }

    /// The sum of the histories' sizes (the `bytes` column), as the file
    /// store counts them, not `pg_total_relation_size`: that also counts
    /// indexes, TOAST overhead and dead rows autovacuum has yet to reuse.
    /// The sum of the entries last seen when the database does not answer.
    fn bytes(&self) -> u64 {
        match self.source.archive_bytes() {
            Ok(bytes) => bytes,
            Err(_) => {
                let known = self.known.lock().expect("cold entries lock");
                known.values().map(|entry| entry.bytes).sum()
            }
        }
    }

    fn describe(&self) -> String {
        format!(
            "the archived_streams table at {}",
            self.connector.location()
        )
    }
}

/// The store as a start sees it: the catalog it read in the start's own
/// snapshot (so the rows it scans next agree with it), and reads through
/// the store itself.
pub(crate) struct AtStart {
    pub(crate) entries: Vec<ColdEntry>,
    pub(crate) store: Arc<PgColdStore>,
}

impl ColdStore for AtStart {
    fn put(&self, entry: ColdEntry, body: ColdBody) -> Result<ColdEntry, ColdError> {
        self.store.put(entry, body)
    }

    fn read(
        &self,
        stream: &str,
        after_seq: u64,
        upto: u64,
        limit: usize,
        each: &mut dyn FnMut(RecordRef<'_>),
    ) -> Result<usize, ReadError> {
        self.store.read(stream, after_seq, upto, limit, each)
    }

    fn key(&self, stream: &str, key: &str) -> Result<Option<u64>, ReadError> {
        self.store.key(stream, key)
    }

    fn entry(&self, stream: &str) -> Option<ColdEntry> {
        self.entries.iter().find(|e| e.stream == stream).cloned()
    }

    fn catalog(&self) -> Result<Vec<ColdEntry>, ColdError> {
        Ok(self.entries.clone())
    }

    fn bytes(&self) -> u64 {
        self.entries.iter().map(|entry| entry.bytes).sum()
    }

    fn describe(&self) -> String {
        self.store.describe()
    }
}
