//! The in-memory index of the durable log: what answering requests needs,
//! not the event bodies.
//!
//! Per stream it keeps the domain's folded state, the file position of every
//! record (so bodies are read from the file on demand) and the stream's
//! idempotency keys. Log-wide it keeps the stream-creation keys. Everything
//! here describes records that are already durable: the writer only commits a
//! batch into the index after its `fdatasync` returned.
//!
//! The order rules of the log live here ([`IndexError`]): log positions
//! follow each other, a stream's seqs follow each other, and an idempotency
//! key names one record of its stream. Recovery refuses a log that breaks
//! one; the writer checks the key rule before it stages a record, so every
//! medium keeps it by construction.

use crate::record::RecordRef;
use std::collections::HashMap;

/// Why a record cannot follow the ones the index holds.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// The record's log position is not the next one.
    #[error("log position {found} where {expected} was expected")]
    LsnOutOfOrder {
        /// The next position.
        expected: u64,
        /// The record's position.
        found: u64,
    },
    /// The record repeats a seq its stream already has.
    #[error("duplicate sequence {seq} in stream {stream} (head is {head})")]
    DuplicateSeq {
        /// The stream.
        stream: String,
        /// The record's seq.
        seq: u64,
        /// The stream's last seq.
        head: u64,
    },
    /// The record skips seqs of its stream.
    #[error("sequence gap in stream {stream}: {seq} follows {head}")]
    SeqGap {
        /// The stream.
        stream: String,
        /// The record's seq.
        seq: u64,
        /// The stream's last seq.
        head: u64,
    },
    /// The record's idempotency key already names another record of its stream.
    #[error("idempotency key {key:?} of stream {stream} already names seq {seq}")]
    DuplicateKey {
        /// The stream.
        stream: String,
        /// The key.
        key: String,
        /// The seq it already names.
        seq: u64,
    },
    /// The record's creation key already names another stream.
    #[error("creation key {key:?} already names stream {stream}")]
    DuplicateCreateKey {
        /// The key.
        key: String,
        /// The stream it already names.
        stream: String,
    },
    /// The stream's fold refused the record.
    #[error("stream {stream} record {seq}: {source}")]
    Fold {
        /// The stream.
        stream: String,
        /// The record's seq.
        seq: u64,
        /// What the fold said.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The domain state of one stream, rebuilt by folding its records in order.
///
/// The log calls [`StreamState::open`] for a stream's first record and
/// [`StreamState::apply`] for every later one, both at recovery and when a
/// batch is appended, so the state after a restart is the state before it.
/// Records reaching these functions were validated when they were appended,
/// so a fold error means the log and the domain disagree: recovery refuses to
/// open, and the writer refuses to stage the record.
pub trait StreamState: Clone + Send + Sync + 'static {
    /// Why a record does not fold.
    type Error: std::error::Error + Send + Sync + 'static;
    /// Builds the state from the stream's first record.
    fn open(first: &RecordRef<'_>) -> Result<Self, Self::Error>;
    /// Folds one later record into the state. On error the state must be
    /// left as it was.
    fn apply(&mut self, record: &RecordRef<'_>) -> Result<(), Self::Error>;
}

/// Where the medium keeps a record. For the file: the byte offset of its
/// line and the line's length without its `\n`. A medium that finds records
/// by stream and seq (a database) keeps the record's lsn in `offset` and 0 in
/// `len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordPos {
    /// Byte offset of the first byte of the line.
    pub offset: u64,
    /// Length of the line without its `\n`.
    pub len: u32,
}

/// One stream of the index.
#[derive(Debug)]
pub struct StreamEntry<S> {
    state: S,
    positions: Vec<RecordPos>,
    keys: HashMap<Box<str>, u64>,
}

impl<S> StreamEntry<S> {
    /// The domain state folded over every durable record of the stream.
    pub fn state(&self) -> &S {
        &self.state
    }

    /// The stream's last sequence number (its number of records).
    pub fn head(&self) -> u64 {
        self.positions.len() as u64
    }

    /// The sequence number of the record that used this idempotency key.
    pub fn seq_for_key(&self, key: &str) -> Option<u64> {
        self.keys.get(key).copied()
    }

    /// Where the record with this sequence number is, if it exists.
    pub fn position(&self, seq: u64) -> Option<RecordPos> {
        let index = usize::try_from(seq.checked_sub(1)?).ok()?;
        self.positions.get(index).copied()
    }

    /// Records where the stream's next record is and the key it used. The
    /// caller checked the record against [`StreamEntry::check_next`].
    fn record(&mut self, record: &RecordRef<'_>, pos: RecordPos) {
        self.positions.push(pos);
        if let Some(key) = &record.key {
            let earlier = self.keys.insert(key.as_ref().into(), record.seq);
            assert!(earlier.is_none(), "an idempotency key names one record");
        }
    }

    /// The stream-order rules for `record` as the stream's next record: the
    /// next seq, and a key no earlier record of the stream used.
    fn check_next(&self, stream: &str, record: &RecordRef<'_>) -> Result<(), IndexError> {
        check_next_seq(stream, self.head(), record.seq)?;
        match record.key.as_deref().and_then(|key| self.seq_for_key(key)) {
            Some(seq) => Err(IndexError::DuplicateKey {
                stream: stream.to_owned(),
                key: record.key.as_deref().unwrap_or_default().to_owned(),
                seq,
            }),
            None => Ok(()),
        }
    }

    /// Positions of the records with `after_seq < seq <= after_seq + limit`.
    pub(crate) fn positions_after(&self, after_seq: u64, limit: usize) -> &[RecordPos] {
        let start = usize::try_from(after_seq)
            .unwrap_or(usize::MAX)
            .min(self.positions.len());
        let end = start.saturating_add(limit).min(self.positions.len());
        &self.positions[start..end]
    }
}

/// Every durable stream, by name.
#[derive(Debug)]
pub struct Index<S> {
    streams: HashMap<String, StreamEntry<S>>,
    create_keys: HashMap<String, String>,
    last_lsn: u64,
    records: u64,
}

impl<S> Default for Index<S> {
    fn default() -> Self {
        Index {
            streams: HashMap::new(),
            create_keys: HashMap::new(),
            last_lsn: 0,
            records: 0,
        }
    }
}

impl<S: StreamState> Index<S> {
    /// The stream with this name.
    pub fn stream(&self, name: &str) -> Option<&StreamEntry<S>> {
        self.streams.get(name)
    }

    /// Every stream, in no particular order.
    pub fn streams(&self) -> impl Iterator<Item = (&str, &StreamEntry<S>)> {
        self.streams
            .iter()
            .map(|(name, entry)| (name.as_str(), entry))
    }

    /// The stream created under this log-wide key.
    pub fn stream_for_create_key(&self, key: &str) -> Option<&str> {
        self.create_keys.get(key).map(String::as_str)
    }

    /// The log position of the newest durable record (0 for an empty log).
    pub fn last_lsn(&self) -> u64 {
        self.last_lsn
    }

    /// How many records the log holds.
    pub fn record_count(&self) -> u64 {
        self.records
    }

    /// Checks one durable record's order against what precedes it, folds it
    /// into its stream and records where it is: one map lookup, since this
    /// runs once per record at every start. Media use it to rebuild the
    /// index, and the writer to take in other processes' appends.
    pub fn recover(&mut self, record: &RecordRef<'_>, pos: RecordPos) -> Result<(), IndexError> {
        let expected_lsn = self.last_lsn + 1;
        if record.lsn != expected_lsn {
            return Err(IndexError::LsnOutOfOrder {
                expected: expected_lsn,
                found: record.lsn,
            });
        }
        if let Some(stream) = record
            .create_key
            .as_deref()
            .and_then(|key| self.stream_for_create_key(key))
        {
            return Err(IndexError::DuplicateCreateKey {
                key: record.create_key.as_deref().unwrap_or_default().to_owned(),
                stream: stream.to_owned(),
            });
        }
        let name = record.stream.as_ref();
        let fold_error = |source: S::Error| IndexError::Fold {
            stream: name.to_owned(),
            seq: record.seq,
            source: Box::new(source),
        };
        let entry = match self.streams.get_mut(name) {
            Some(entry) => {
                entry.check_next(name, record)?;
                entry.state.apply(record).map_err(fold_error)?;
                entry
            }
            None => {
                check_next_seq(name, 0, record.seq)?;
                let entry = StreamEntry {
                    state: S::open(record).map_err(fold_error)?,
                    positions: Vec::new(),
                    keys: HashMap::new(),
                };
                self.streams.entry(name.to_owned()).or_insert(entry)
            }
        };
        entry.record(record, pos);
        self.count(record);
        Ok(())
    }

    /// Installs a stream's state as folded by the writer, creating the stream
    /// when it is new.
    pub(crate) fn set_state(&mut self, name: &str, state: S) {
        match self.streams.get_mut(name) {
            Some(entry) => entry.state = state,
            None => {
                let entry = StreamEntry {
                    state,
                    positions: Vec::new(),
                    keys: HashMap::new(),
                };
                self.streams.insert(name.to_owned(), entry);
            }
        }
    }

    /// Records a durable record's position and keys. Its stream must exist
    /// (the writer installs the state first), and the record must be the
    /// stream's next: a record pushed out of order would misplace every
    /// later read, so this holds in release builds too.
    pub(crate) fn push(&mut self, record: &RecordRef<'_>, pos: RecordPos) {
        let name = record.stream.as_ref();
        let entry = self
            .streams
            .get_mut(name)
            .expect("stream state is installed first");
        assert_eq!(entry.head() + 1, record.seq, "records are pushed in order");
        assert_eq!(
            self.last_lsn + 1,
            record.lsn,
            "records are pushed in log order"
        );
        entry.record(record, pos);
        self.count(record);
    }

    /// The log-wide bookkeeping of one more durable record.
    fn count(&mut self, record: &RecordRef<'_>) {
        if let Some(key) = &record.create_key {
            self.create_keys
                .insert(key.to_string(), record.stream.to_string());
        }
        self.last_lsn = record.lsn;
        self.records += 1;
    }
}

/// The stream-order rule: a record's seq is its stream's head + 1.
fn check_next_seq(stream: &str, head: u64, seq: u64) -> Result<(), IndexError> {
    if seq == head + 1 {
        return Ok(());
    }
    let stream = stream.to_owned();
    if seq <= head {
        Err(IndexError::DuplicateSeq { stream, seq, head })
    } else {
        Err(IndexError::SeqGap { stream, seq, head })
    }
}
