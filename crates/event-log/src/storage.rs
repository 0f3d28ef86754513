//! The seam between the log's writer and the medium that keeps its records.
//!
//! The writer, its group commit, the [`Txn`](crate::Txn) decisions run
//! against and the in-memory [`Index`](crate::Index) are the same whatever
//! keeps the records. A medium supplies two halves:
//!
//! - a [`Sink`], owned by the writer thread: it takes the right to append
//!   before a batch is decided, makes a decided batch durable, and hands back
//!   records that other processes appended in the meantime (a shared
//!   database), so that every decision runs against the whole log;
//! - a [`Source`], shared by readers: it reads durable records back.
//!
//! The file medium lives in `file`; a database medium lives in its own crate
//! and starts the log with [`EventLog::start`](crate::EventLog::start).

use crate::error::ReadError;
use crate::index::{Index, RecordPos};
use crate::record::{NewRecord, RecordRef};
use std::time::SystemTime;

/// A durable record held whole in memory: one another process appended, or
/// one the writer staged.
#[derive(Debug, Clone)]
pub struct OwnedRecord {
    /// The record as proposed.
    pub record: NewRecord,
    /// Its position in the log.
    pub lsn: u64,
    /// Its position in its stream.
    pub seq: u64,
    /// When it was recorded (RFC 3339 UTC).
    pub at: String,
    /// Where the medium keeps it.
    pub pos: RecordPos,
}

impl OwnedRecord {
    /// Copies a decoded record, kept at `pos`.
    pub fn from_ref(record: &RecordRef<'_>, pos: RecordPos) -> Self {
        OwnedRecord {
            record: NewRecord {
                stream: record.stream.to_string(),
                event_type: record.event_type.to_string(),
                payload: record.payload.to_owned(),
                idempotency_key: record.key.as_deref().map(str::to_owned),
                content_hash: record.hash.as_deref().map(str::to_owned),
                create_key: record.create_key.as_deref().map(str::to_owned),
                attrs: record.attrs.map(ToOwned::to_owned),
                written_by: record.by.as_deref().map(str::to_owned),
            },
            lsn: record.lsn,
            seq: record.seq,
            at: record.at.to_string(),
            pos,
        }
    }

    /// Borrows the record in the form decisions and observers see.
    pub fn as_ref(&self) -> RecordRef<'_> {
        RecordRef::proposed(&self.record, self.lsn, self.seq, &self.at)
    }
}

/// A batch the writer decided, ready to be made durable.
pub struct StagedBatch<'a> {
    /// The records, in log order.
    pub records: &'a [OwnedRecord],
    /// The records encoded as checksummed lines, back to back; each record's
    /// `pos.offset` is relative to the start of this buffer until the sink
    /// says where the batch landed.
    pub lines: &'a [u8],
}

/// Why a sink could not do what the writer asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkFailure {
    /// The medium failed in a way that may have lost or mangled a write (a
    /// failed `write` or `fdatasync`): the log refuses every later write.
    #[error("{0}")]
    Fatal(String),
    /// The medium cannot be reached now (a lost database connection); nothing
    /// was acknowledged, and a later batch may succeed.
    #[error("{0}")]
    Unavailable(String),
    /// The connection was lost while the batch committed, and whether it did
    /// could not be learned in time. Nothing was acknowledged; if the batch
    /// did commit, the next `begin` hands its records back with the rest.
    #[error("{0}")]
    OutcomeUnknown(String),
}

/// The writer thread's half of a medium.
pub trait Sink: Send + 'static {
    /// Takes the right to append the next batch (a no-op when this process
    /// is the only writer) and returns the records appended by others after
    /// `after_lsn`, in log order.
    fn begin(&mut self, after_lsn: u64) -> Result<Vec<OwnedRecord>, SinkFailure>;

    /// Makes `batch` durable and gives back the right to append; returns
    /// where each record landed, in order. Only after it returns `Ok` is the
    /// batch acknowledged.
    fn commit(&mut self, batch: StagedBatch<'_>) -> Result<Vec<RecordPos>, SinkFailure>;

    /// Gives back the right to append without appending (the batch staged
    /// nothing).
    fn release(&mut self) -> Result<(), SinkFailure>;

    /// The records appended by others after `after_lsn`, without taking the
    /// right to append: how a reader's view of a shared medium catches up.
    fn pull(&mut self, after_lsn: u64) -> Result<Vec<OwnedRecord>, SinkFailure>;
}

/// The readers' half of a medium.
pub trait Source: Send + Sync + 'static {
    /// Reads the records of `stream` kept at `positions`, which are the
    /// positions of seqs `first_seq`, `first_seq + 1`, … in order, and calls
    /// `each` for every one. Blocks the calling thread while it reads.
    fn read(
        &self,
        stream: &str,
        first_seq: u64,
        positions: &[RecordPos],
        each: &mut dyn FnMut(RecordRef<'_>),
    ) -> Result<(), ReadError>;

    /// Reads `count` records of `stream` from seq `first_seq` on, all below
    /// the archive floor (so the index holds no position for them), and
    /// calls `each` for every one, in order.
    fn read_archived(
        &self,
        stream: &str,
        first_seq: u64,
        count: u64,
        each: &mut dyn FnMut(RecordRef<'_>),
    ) -> Result<(), ReadError>;

    /// The seq of the archived record of `stream` that used the idempotency
    /// key `key`, if one did.
    fn archived_key(&self, stream: &str, key: &str) -> Result<Option<u64>, ReadError>;

    /// The position below which the medium locates records by stream and
    /// seq itself. It only rises; the writer drops the index's positions
    /// below it (see [`Index::archive_below`]).
    fn archive_floor(&self) -> u64;

    /// How many segment files the medium keeps (0 for a medium without
    /// segments).
    fn segment_count(&self) -> usize {
        0
    }

    /// The newest log position the medium holds, when other processes may
    /// append to it; `None` when this process is its only writer, so the
    /// index is always current.
    fn durable_lsn(&self) -> Result<Option<u64>, ReadError> {
        Ok(None)
    }

    /// Whether other processes may append to the medium, so that a reader
    /// has to ask [`Source::durable_lsn`] to know it is current.
    fn is_shared(&self) -> bool {
        false
    }
}

/// Where a medium keeps the log's index snapshot (see `snapshot`).
pub trait SnapshotStore: Send + Sync + 'static {
    /// Replaces the snapshot, which describes the log up to `lsn`,
    /// atomically: after a crash the old one or the new one is there, never
    /// a mix. A shared medium may keep a newer one another process wrote.
    fn save(&self, lsn: u64, bytes: &[u8]) -> Result<(), String>;

    /// Where the snapshot is, for messages.
    fn describe(&self) -> String;
}

/// Everything [`EventLog::start`](crate::EventLog::start) needs: a recovered
/// index and the two halves of the medium it came from.
pub struct Storage<S> {
    /// The index of every durable record.
    pub index: Index<S>,
    /// The writer's half.
    pub sink: Box<dyn Sink>,
    /// The readers' half.
    pub source: std::sync::Arc<dyn Source>,
    /// Time of the newest durable record, so new records never get an
    /// earlier one.
    pub last_at: SystemTime,
    /// Where the records are, for messages (a path, a database name).
    pub location: String,
    /// Where snapshots are written, when the medium keeps them.
    pub snapshots: Option<std::sync::Arc<dyn SnapshotStore>>,
    /// Where cold histories are kept, when the log has an archive.
    pub cold: Option<std::sync::Arc<dyn crate::ColdStore>>,
}
