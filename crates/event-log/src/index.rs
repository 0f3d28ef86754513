//! The in-memory index of the durable log: what answering requests needs,
//! not the event bodies.
//!
//! Per stream it keeps the domain's folded state, the file position of every
//! record (so bodies are read from the file on demand) and the stream's
//! idempotency keys. Log-wide it keeps the stream-creation keys. Everything
//! here describes records that are already durable: the writer only commits a
//! batch into the index after its `fdatasync` returned.

use crate::record::RecordRef;
use std::collections::HashMap;

/// The domain state of one stream, rebuilt by folding its records in order.
///
/// The log calls [`StreamState::open`] for a stream's first record and
/// [`StreamState::apply`] for every later one, both at recovery and when a
/// batch is appended, so the state after a restart is the state before it.
/// Records reaching these functions were validated when they were appended,
/// so a fold error means the log and the domain disagree: recovery refuses to
/// open, and the writer refuses to stage the record.
pub trait StreamState: Clone + Send + Sync + 'static {
    /// Builds the state from the stream's first record.
    fn open(first: &RecordRef<'_>) -> Result<Self, String>;
    /// Folds one later record into the state. On error the state must be
    /// left as it was.
    fn apply(&mut self, record: &RecordRef<'_>) -> Result<(), String>;
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

    /// Records where the stream's next record is and the key it used.
    fn record(&mut self, record: &RecordRef<'_>, pos: RecordPos) {
        self.positions.push(pos);
        if let Some(key) = &record.key {
            self.keys.insert(key.as_ref().into(), record.seq);
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
    pub fn recover(&mut self, record: &RecordRef<'_>, pos: RecordPos) -> Result<(), String> {
        let expected_lsn = self.last_lsn + 1;
        if record.lsn != expected_lsn {
            return Err(format!(
                "log position {} where {expected_lsn} was expected",
                record.lsn
            ));
        }
        let name = record.stream.as_ref();
        let entry = match self.streams.get_mut(name) {
            Some(entry) => {
                check_next_seq(name, entry.head(), record.seq)?;
                entry.state.apply(record)?;
                entry
            }
            None => {
                check_next_seq(name, 0, record.seq)?;
                let entry = StreamEntry {
                    state: S::open(record)?,
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
    /// (the writer installs the state first).
    pub(crate) fn push(&mut self, record: &RecordRef<'_>, pos: RecordPos) {
        let name = record.stream.as_ref();
        let entry = self
            .streams
            .get_mut(name)
            .expect("stream state is installed first");
        debug_assert_eq!(entry.head() + 1, record.seq, "records are pushed in order");
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
fn check_next_seq(stream: &str, head: u64, seq: u64) -> Result<(), String> {
    if seq == head + 1 {
        Ok(())
    } else if seq <= head {
        Err(format!(
            "duplicate sequence {seq} in stream {stream} (head is {head})"
        ))
    } else {
        Err(format!(
            "sequence gap in stream {stream}: {seq} follows {head}"
        ))
    }
}
