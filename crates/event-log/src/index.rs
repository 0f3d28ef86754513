//! The in-memory index of the durable log: what answering requests needs,
//! not the event bodies, and no more of it than live work needs.
//!
//! Per stream it keeps the domain's folded state, its head, the positions of
//! its newest records (its *tail*) and its idempotency keys. Log-wide it
//! keeps the stream-creation keys. Everything here describes records that
//! are already durable: the writer only commits a batch into the index after
//! its `fdatasync` returned.
//!
//! Memory does not grow with history: the medium can locate the records it
//! has *archived* (the file medium: those in sealed segments, through their
//! on-disk indexes; a database: every record) by stream and seq itself, so
//! the index keeps positions only at or above the medium's archive floor
//! ([`Index::archive_below`]). Keys stay resident while a stream is live,
//! because every new append checks its key against all of them; once a
//! stream is sealed ([`StreamState::is_sealed`]) only a retry can ask, so
//! the keys of its archived records are dropped and the medium answers
//! such a retry from disk.
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
pub trait StreamState:
    Clone + Send + Sync + serde::Serialize + serde::de::DeserializeOwned + 'static
{
    /// Why a record does not fold.
    type Error: std::error::Error + Send + Sync + 'static;
    /// Builds the state from the stream's first record.
    fn open(first: &RecordRef<'_>) -> Result<Self, Self::Error>;
    /// Folds one later record into the state. On error the state must be
    /// left as it was.
    fn apply(&mut self, record: &RecordRef<'_>) -> Result<(), Self::Error>;
    /// Whether the stream accepts no further record (its fold refuses every
    /// one). The index then keeps only the idempotency keys of its newest
    /// records, and a retry's key is looked up in the medium.
    fn is_sealed(&self) -> bool {
        false
    }
}

/// Where the medium keeps a record. For the file: the byte offset of its
/// line and the line's length without its `\n`. A medium that finds records
/// by stream and seq (a database) keeps the record's lsn in `offset` and 0 in
/// `len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(from = "(u64, u32)", into = "(u64, u32)")]
pub struct RecordPos {
    /// Byte offset of the first byte of the line.
    pub offset: u64,
    /// Length of the line without its `\n`.
    pub len: u32,
}

// A snapshot holds many positions: a pair is a third of an object's bytes.
impl From<(u64, u32)> for RecordPos {
    fn from((offset, len): (u64, u32)) -> Self {
        RecordPos { offset, len }
    }
}

impl From<RecordPos> for (u64, u32) {
    fn from(pos: RecordPos) -> Self {
        (pos.offset, pos.len)
    }
}

/// One stream of the index.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StreamEntry<S> {
    state: S,
    head: u64,
    /// Positions of seqs `head - tail.len() + 1 ..= head`; older records
    /// are archived and located by the medium.
    tail: Vec<RecordPos>,
    keys: HashMap<Box<str>, u64>,
    /// Whether keys of archived records were dropped (only once sealed).
    keys_archived: bool,
    /// Every seq up to this one was moved to the cold store (0: none): the
    /// cold store serves them, and the medium's copies are dead.
    #[serde(default)]
    cold_base: u64,
    /// Whether the cold history kept some records as husks only, so the
    /// medium's dead copies hold content that must leave the disk.
    #[serde(default)]
    scrub: bool,
}

/// What the index knows of an idempotency key of one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyLookup {
    /// The key names this seq.
    Found(u64),
    /// No record of the stream used the key.
    Absent,
    /// The key is not resident: the stream is sealed and its older keys
    /// are archived, so the medium has to be asked.
    Archived,
}

impl<S> StreamEntry<S> {
    fn new(state: S) -> Self {
        StreamEntry {
            state,
            head: 0,
            tail: Vec::new(),
            keys: HashMap::new(),
            keys_archived: false,
            cold_base: 0,
            scrub: false,
        }
    }

    /// Whether the medium's dead copies of the stream's records hold
    /// content the cold store did not keep (an erased run's payloads): a
    /// compaction then rewrites every sealed segment holding one, however
    /// few.
    pub fn must_scrub(&self) -> bool {
        self.scrub
    }

    /// The newest seq whose record is served by the cold store (0: none).
    /// The cold store keeps what the stream's domain chose to keep of the
    /// seqs up to it; the medium's own copies of them are dead, and
    /// compaction drops them.
    pub fn cold_base(&self) -> u64 {
        self.cold_base
    }

    /// Moves seqs `..= base` to the cold store: their positions and keys
    /// leave memory, and a retry's key is looked up in the media.
    fn go_cold(&mut self, base: u64, scrub: bool) {
        if base <= self.cold_base {
            return;
        }
        self.scrub |= scrub;
        debug_assert!(base <= self.head, "only durable records go cold");
        self.cold_base = base;
        let dead = usize::try_from(base.saturating_sub(self.tail_start() - 1))
            .unwrap_or(usize::MAX)
            .min(self.tail.len());
        self.tail.drain(..dead);
        let before = self.keys.len();
        self.keys.retain(|_, seq| *seq > base);
        if self.keys.len() < before {
            self.keys_archived = true;
            self.keys.shrink_to_fit();
        }
    }

    /// The domain state folded over every durable record of the stream.
    pub fn state(&self) -> &S {
        &self.state
    }

    /// The stream's last sequence number (its number of records).
    pub fn head(&self) -> u64 {
        self.head
    }

    /// The first seq whose position the index holds (`head + 1` when it
    /// holds none): every seq below it is archived.
    pub fn tail_start(&self) -> u64 {
        self.head - self.tail.len() as u64 + 1
    }

    /// What the index knows of the record that used this idempotency key.
    pub fn key(&self, key: &str) -> KeyLookup {
        match self.keys.get(key) {
            Some(seq) => KeyLookup::Found(*seq),
            None if self.keys_archived => KeyLookup::Archived,
            None => KeyLookup::Absent,
        }
    }

    /// Positions of the tail records with `after_seq < seq <= after_seq +
    /// limit`, and the seq of the first of them.
    pub(crate) fn tail_after(&self, after_seq: u64, limit: usize) -> (u64, &[RecordPos]) {
        let first = (after_seq + 1).max(self.tail_start());
        let start = usize::try_from(first - self.tail_start()).unwrap_or(usize::MAX);
        let start = start.min(self.tail.len());
        let wanted = after_seq
            .saturating_add(limit as u64)
            .saturating_sub(first - 1);
        let end = start
            .saturating_add(usize::try_from(wanted).unwrap_or(usize::MAX))
            .min(self.tail.len());
        (first, &self.tail[start..end])
    }

    /// Records the stream's next record: its position when the medium does
    /// not locate it by itself (at or above `floor`), and its key. The caller
    /// checked the record against [`StreamEntry::check_next`].
    fn record(&mut self, record: &RecordRef<'_>, pos: RecordPos, floor: u64) {
        if pos.offset >= floor {
            self.tail.push(pos);
        } else {
            // Positions grow along a stream, so an archived record has no
            // tail record before it.
            assert!(self.tail.is_empty(), "the tail follows the archive");
        }
        self.head = record.seq;
        if let Some(key) = &record.key {
            let earlier = self.keys.insert(key.as_ref().into(), record.seq);
            assert!(earlier.is_none(), "an idempotency key names one record");
        }
    }

    /// Drops the positions below `floor`, and the archived keys once the
    /// stream is sealed.
    fn archive_below(&mut self, floor: u64)
    where
        S: StreamState,
    {
        let archived = self.tail.partition_point(|pos| pos.offset < floor);
        self.tail.drain(..archived);
        self.drop_archived_keys();
    }

    fn drop_archived_keys(&mut self)
    where
        S: StreamState,
    {
        if !self.state.is_sealed() {
            return;
        }
        let tail_start = self.tail_start();
        let before = self.keys.len();
        self.keys.retain(|_, seq| *seq >= tail_start);
        if self.keys.len() < before {
            self.keys_archived = true;
            self.keys.shrink_to_fit();
        }
    }

    /// The stream-order rules for `record` as the stream's next record: the
    /// next seq, and a key no earlier record of the stream used. Only a
    /// live stream takes records, and a live stream holds all its keys.
    fn check_next(&self, stream: &str, record: &RecordRef<'_>) -> Result<(), IndexError> {
        check_next_seq(stream, self.head(), record.seq)?;
        match record.key.as_deref().map(|key| self.key(key)) {
            Some(KeyLookup::Found(seq)) => Err(IndexError::DuplicateKey {
                stream: stream.to_owned(),
                key: record.key.as_deref().unwrap_or_default().to_owned(),
                seq,
            }),
            _ => Ok(()),
        }
    }
}

/// Where a range of one stream's records is: the cold part, read from the
/// cold store, the archived part, read through the medium by seq, and the
/// tail part, by position. Taken under the index lock and read after it is
/// released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReadPlan {
    after_seq: u64,
    /// The last seq read from the cold store.
    cold_end: u64,
    first_hot: u64,
    archived: u64,
    tail: Vec<RecordPos>,
}

impl ReadPlan {
    /// The plan for `after_seq < seq <= after_seq + limit` of `entry`: seqs
    /// up to its cold base from the cold store (which may not have kept
    /// each of them), the rest from the medium.
    pub(crate) fn of<S>(entry: &StreamEntry<S>, after_seq: u64, limit: usize) -> Self {
        let hot_after = after_seq.max(entry.cold_base);
        let last_wanted = after_seq.saturating_add(limit as u64).min(entry.head);
        let archived_end = (entry.tail_start() - 1).min(last_wanted);
        let hot_limit =
            usize::try_from(last_wanted.saturating_sub(hot_after)).unwrap_or(usize::MAX);
        let (_, tail) = entry.tail_after(hot_after, hot_limit);
        ReadPlan {
            after_seq,
            cold_end: entry.cold_base.min(last_wanted),
            first_hot: hot_after + 1,
            archived: archived_end.saturating_sub(hot_after),
            tail: tail.to_vec(),
        }
    }

    /// How many records of the medium the plan reads.
    pub(crate) fn len(&self) -> usize {
        self.archived as usize + self.tail.len()
    }

    /// Reads the planned records of `stream` in seq order.
    pub(crate) fn read(
        &self,
        readers: &crate::Readers,
        stream: &str,
        each: &mut dyn FnMut(RecordRef<'_>),
    ) -> Result<(), crate::ReadError> {
        if self.after_seq < self.cold_end {
            let cold = readers
                .cold
                .as_deref()
                .ok_or_else(|| crate::ReadError::Damaged {
                    offset: 0,
                    reason: format!("{stream} has an archived history but the log has no archive"),
                })?;
            cold.read(stream, self.after_seq, self.cold_end, usize::MAX, each)?;
        }
        if self.archived > 0 {
            readers
                .source
                .read_archived(stream, self.first_hot, self.archived, each)?;
        }
        if !self.tail.is_empty() {
            readers
                .source
                .read(stream, self.first_hot + self.archived, &self.tail, each)?;
        }
        Ok(())
    }
}

/// Every durable stream, by name.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Index<S> {
    streams: HashMap<String, StreamEntry<S>>,
    create_keys: HashMap<String, String>,
    last_lsn: u64,
    records: u64,
    /// Positions below this offset are located by the medium.
    archive_floor: u64,
    /// Where the newest record is, so a snapshot can be checked against the
    /// log it is loaded with.
    last_pos: Option<RecordPos>,
}

impl<S> Default for Index<S> {
    fn default() -> Self {
        Index {
            streams: HashMap::new(),
            create_keys: HashMap::new(),
            last_lsn: 0,
            records: 0,
            archive_floor: 0,
            last_pos: None,
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

    /// How many record positions the index holds: the records the medium
    /// does not locate by itself yet.
    pub fn tail_positions(&self) -> usize {
        self.streams.values().map(|entry| entry.tail.len()).sum()
    }

    /// Checks one durable record's order against what precedes it, folds it
    /// into its stream and records where it is: one map lookup, since this
    /// runs once per record at every start. Media use it to rebuild the
    /// index, and the writer to take in other processes' appends. A record
    /// its stream has already moved to the cold store is dead: it keeps the
    /// log's order but is not folded again.
    pub fn recover(&mut self, record: &RecordRef<'_>, pos: RecordPos) -> Result<(), IndexError> {
        let expected_lsn = self.last_lsn + 1;
        if record.lsn != expected_lsn {
            return Err(IndexError::LsnOutOfOrder {
                expected: expected_lsn,
                found: record.lsn,
            });
        }
        if self.is_dead(&record.stream, record.seq) {
            self.last_lsn = record.lsn;
            self.last_pos = Some(pos);
            return Ok(());
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
        let floor = self.archive_floor;
        let entry = match self.streams.get_mut(name) {
            Some(entry) => {
                entry.check_next(name, record)?;
                entry.state.apply(record).map_err(fold_error)?;
                entry
            }
            None => {
                check_next_seq(name, 0, record.seq)?;
                let entry = StreamEntry::new(S::open(record).map_err(fold_error)?);
                self.streams.entry(name.to_owned()).or_insert(entry)
            }
        };
        entry.record(record, pos, floor);
        entry.drop_archived_keys();
        self.count(record, pos);
        Ok(())
    }

    /// Installs a stream's state as folded by the writer, creating the stream
    /// when it is new.
    pub(crate) fn set_state(&mut self, name: &str, state: S) {
        match self.streams.get_mut(name) {
            Some(entry) => {
                entry.state = state;
                entry.drop_archived_keys();
            }
            None => {
                self.streams
                    .insert(name.to_owned(), StreamEntry::new(state));
            }
        }
    }

    /// Records a durable record's position and keys. Its stream must exist
    /// (the writer installs the state first), and the record must be the
    /// stream's next: a record pushed out of order would misplace every
    /// later read, so this holds in release builds too.
    pub(crate) fn push(&mut self, record: &RecordRef<'_>, pos: RecordPos) {
        let name = record.stream.as_ref();
        let floor = self.archive_floor;
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
        entry.record(record, pos, floor);
        self.count(record, pos);
    }

    /// The medium now locates every record below `floor` by itself: drops
    /// their positions, and the keys of sealed streams with them. One pass
    /// over the streams, so the medium raises its floor rarely (once per
    /// sealed segment).
    pub fn archive_below(&mut self, floor: u64) {
        if floor <= self.archive_floor {
            return;
        }
        self.archive_floor = floor;
        for entry in self.streams.values_mut() {
            entry.archive_below(floor);
        }
    }

    /// Whether record `seq` of `stream` was moved to the cold store, so
    /// the medium's copy is dead.
    pub fn is_dead(&self, stream: &str, seq: u64) -> bool {
        self.streams
            .get(stream)
            .is_some_and(|entry| seq <= entry.cold_base)
    }

    /// Seqs `..= base` of `stream` are served by the cold store from now on.
    pub(crate) fn go_cold(&mut self, stream: &str, base: u64, scrub: bool) {
        if let Some(entry) = self.streams.get_mut(stream) {
            entry.go_cold(base, scrub);
        }
    }

    /// Accepts that records up to `lsn` are not in the medium any more (a
    /// compacted stretch of it dropped the dead ones): the next record may
    /// follow a gap up to it. Positions never go back.
    pub fn skip_dead_to(&mut self, lsn: u64) {
        self.last_lsn = self.last_lsn.max(lsn);
    }

    /// Applies one entry of the cold store's catalog: seqs `..= entry.base`
    /// of its stream are served by the cold store from now on. A stream the
    /// index already holds up to that seq (or beyond) keeps its state; one
    /// it holds less of, or not at all (a start that scans a log whose dead
    /// records were compacted away), takes the state the entry recorded,
    /// and the medium's records up to the base are skipped by
    /// [`Index::recover`]. Returns the head the index had when the state
    /// was taken from the entry, so the caller can replay the cold records
    /// after it into derived state.
    pub fn apply_cold(
        &mut self,
        stream: &str,
        base: u64,
        scrub: bool,
        state: S,
        create_key: Option<&str>,
    ) -> Option<u64> {
        let entry = self
            .streams
            .entry(stream.to_owned())
            .or_insert_with(|| StreamEntry::new(state.clone()));
        let previous_head = entry.head;
        let installed = entry.head < base;
        if installed {
            entry.state = state;
            entry.head = base;
            entry.tail.clear();
            entry.keys.clear();
            entry.keys_archived = true;
        }
        entry.go_cold(base, scrub);
        if let Some(key) = create_key {
            self.create_keys.insert(key.to_owned(), stream.to_owned());
        }
        installed.then_some(previous_head)
    }

    /// Where the newest record is (`None` for an empty log).
    pub fn last_pos(&self) -> Option<RecordPos> {
        self.last_pos
    }

    /// The offset below which the medium locates records by itself.
    pub fn archive_floor(&self) -> u64 {
        self.archive_floor
    }

    /// The log-wide bookkeeping of one more durable record.
    fn count(&mut self, record: &RecordRef<'_>, pos: RecordPos) {
        if let Some(key) = &record.create_key {
            self.create_keys
                .insert(key.to_string(), record.stream.to_string());
        }
        self.last_lsn = record.lsn;
        self.last_pos = Some(pos);
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
