//! A durable, multi-stream, append-only event log in JSONL segment files.
//!
//! - Streams (`run:<id>`, `worker:<id>`, …) have sequence numbers 1, 2, 3, …
//!   without gaps; the whole log has positions (`lsn`) likewise.
//! - One writer thread owns the file. Callers [`EventLog::submit`] a decision
//!   closure; the writer runs decisions one at a time in log order against a
//!   [`Txn`], batches what they stage into one write and one `fdatasync`
//!   (group commit), and only then commits the batch to the index and calls
//!   each caller's reply. An acknowledged append is on disk.
//! - The in-memory [`Index`] holds per-stream state, record positions and
//!   idempotency keys; event bodies are read back from the file.
//! - Opening streams the file once and rebuilds the index (see `recovery`);
//!   an exclusive lock keeps a second process off the same file.
//! - A failed write or sync poisons the log: no more writes, and
//!   [`EventLog::poison_reason`] says why.
//! - The medium is a seam (see `storage`): the file is built in, and a shared
//!   database can start the same writer with [`EventLog::start`]. A medium
//!   that other processes append to hands their records to the writer before
//!   each batch, so decisions always see the whole log.
//!
//! The crate knows nothing of runs, workers or HTTP: the meaning of a stream
//! comes from the [`StreamState`] the caller folds records into.

mod archive;
mod cold;
mod compact;
mod error;
mod file;
mod index;
mod record;
mod recovery;
mod segments;
mod snapshot;
mod storage;
mod writer;

pub use cold::{
    COLD_VERSION, ColdBody, ColdDir, ColdEntry, ColdError, ColdStore, FRAME_RAW_BYTES, Keep,
    apply_catalog, encode_archive, read_archive_bytes,
};
pub use compact::{CompactionError, CompactionReport, CompactionStats};
pub use error::{ColdMoveError, LogFailure, OpenError, ReadError};
use index::ReadPlan;
pub use index::{Index, IndexError, KeyLookup, RecordPos, StreamEntry, StreamState};
pub use record::{DecodeError, NewRecord, RECORD_VERSION, RecordRef};
pub use snapshot::{ExtensionEncoder, SNAPSHOT_VERSION, Snapshot, SnapshotError, decode_snapshot};
pub use storage::{OwnedRecord, Sink, SinkFailure, SnapshotStore, Source, StagedBatch, Storage};
pub use writer::{AppendError, Appended, StreamView, Txn};

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard};
use std::thread::JoinHandle;
use writer::{Message, Submitted, Writer};

/// Sees every batch right after it became durable, on the writer thread, in
/// log order. Used to feed projections and live delivery in sequence order.
/// It must be quick: the next batch waits for it.
pub trait CommitObserver<S>: Send + Sync {
    /// `records` are the batch's records in log order; `index` already
    /// includes them.
    fn committed(&self, records: &[RecordRef<'_>], index: &Index<S>);

    /// Told how the batch's write went, just before [`committed`]: for
    /// metrics of batch sizes and sync latency.
    ///
    /// [`committed`]: CommitObserver::committed
    fn synced(&self, _batch: &BatchStats) {}

    /// A copy of the observer's derived state as of the records it has been
    /// shown, for a snapshot: called on the writer thread between batches,
    /// so it must only copy; the encoder it returns runs on another thread.
    fn snapshot_extension(&self) -> Option<ExtensionEncoder> {
        None
    }

    /// At open, before any record is replayed: the extension of the
    /// snapshot the index starts from, or `None` when the medium replays
    /// the log from its first record (no usable snapshot). Called only by
    /// media that keep snapshots.
    fn restoring(&self, _extension: Option<&serde_json::value::RawValue>) {}

    /// At open, every record replayed into the index after that snapshot
    /// (or from the first), in log order, so derived state is rebuilt in
    /// the same pass as the index.
    fn replayed(&self, _record: &RecordRef<'_>) {}
}

/// How one group-committed batch was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchStats {
    /// Records in the batch.
    pub records: usize,
    /// Bytes written.
    pub bytes: usize,
    /// Time of the `write` and `fdatasync` together.
    pub write_and_sync: std::time::Duration,
}

/// How the log is opened.
pub struct LogOptions<S> {
    /// Most jobs waiting for the writer; past it submissions are refused with
    /// [`LogFailure::Overloaded`] instead of queueing without bound.
    pub max_queued_jobs: usize,
    /// Told about every durable batch.
    pub observer: Option<Arc<dyn CommitObserver<S>>>,
    /// Size at which the file medium's active segment is full and the next
    /// batch starts a new one (see [`DEFAULT_SEGMENT_BYTES`]).
    pub segment_bytes: u64,
    /// Where the file medium keeps its index snapshot; `None`: beside the
    /// first segment, as `<file>.snapshot`.
    pub snapshot_path: Option<std::path::PathBuf>,
    /// The folder of the file medium's cold store (see [`ColdDir`]);
    /// `None`: the log keeps no archive, and nothing can go cold.
    pub archive_dir: Option<std::path::PathBuf>,
    /// The file medium rewrites a sealed segment without its dead records
    /// once they are at least this fraction of its bytes.
    pub compact_dead_fraction: f64,
    /// Bytes a second the background compaction reads and writes at most.
    pub compact_bytes_per_second: u64,
    /// Whether the file medium compacts in the background (after each
    /// move to the cold store, and every [`LogOptions::compact_interval`]);
    /// [`EventLog::compact_now`] works either way.
    pub compact_in_background: bool,
    /// How often the background compaction looks without being nudged.
    pub compact_interval: std::time::Duration,
}

/// The default segment size of the file medium: 128 MiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 128 << 20;

impl<S> Default for LogOptions<S> {
    fn default() -> Self {
        LogOptions {
            max_queued_jobs: 65_536,
            observer: None,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            snapshot_path: None,
            archive_dir: None,
            compact_dead_fraction: 0.5,
            compact_bytes_per_second: 32 << 20,
            compact_in_background: true,
            compact_interval: std::time::Duration::from_secs(60),
        }
    }
}

/// What opening found, for the start-up log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReport {
    /// Records recovered.
    pub records: u64,
    /// Streams recovered.
    pub streams: usize,
    /// Bytes of a torn final write that were cut off (0 when none).
    pub truncated_bytes: u64,
    /// The snapshot the index started from: its position, size and when it
    /// was written (`None`: a full scan).
    pub snapshot: Option<SnapshotWritten>,
    /// Records read from the medium to rebuild the index: those after the
    /// snapshot, or all of them.
    pub replayed: u64,
    /// Segment files of the log (0 for a medium without segments).
    pub segments: usize,
}

/// A snapshot that was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotWritten {
    /// The log position it describes.
    pub lsn: u64,
    /// Its size.
    pub bytes: u64,
    /// When it was written.
    pub at: std::time::SystemTime,
}

/// State shared by the handle, the readers and the writer thread.
/// What reads records back: the medium, and the cold store when the log
/// has one.
#[derive(Clone)]
pub(crate) struct Readers {
    pub(crate) source: Arc<dyn Source>,
    pub(crate) cold: Option<Arc<dyn ColdStore>>,
}

pub(crate) struct Shared<S> {
    pub(crate) index: RwLock<Index<S>>,
    location: String,
    poisoned: OnceLock<String>,
    unavailable: Mutex<Option<String>>,
    /// Set while a refresh without a reply is queued, so that a burst of
    /// nudges queues one.
    refresh_queued: AtomicBool,
    /// Set once the log is shut down.
    closed: AtomicBool,
}

impl<S> Shared<S> {
    pub(crate) fn poison(&self, reason: String) {
        let _ = self.poisoned.set(reason);
    }

    pub(crate) fn poison_reason(&self) -> Option<String> {
        self.poisoned.get().cloned()
    }

    /// Records whether the medium answered the writer's last request.
    pub(crate) fn set_unavailable(&self, reason: Option<String>) {
        *self.unavailable.lock().expect("unavailable lock poisoned") = reason;
    }

    pub(crate) fn clear_refresh_queued(&self) {
        self.refresh_queued.store(false, Ordering::Release);
    }
}

/// A handle to an open log. Cheap to share behind an `Arc`.
pub struct EventLog<S: StreamState> {
    shared: Arc<Shared<S>>,
    readers: Readers,
    queue: SyncSender<Message<S>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    snapshots: Option<Arc<dyn SnapshotStore>>,
    /// Held while a history moves to the cold store: one at a time.
    moving: Mutex<()>,
    /// The file medium's compaction (`None` for a medium without segments).
    compaction: Option<compact::Compaction>,
}

impl<S: StreamState> EventLog<S> {
    /// Opens (creating if needed) the log file at `path`, recovers its index
    /// and starts the writer thread.
    pub fn open(path: &Path, options: LogOptions<S>) -> Result<(Self, OpenReport), OpenError> {
        let snapshot_path = options
            .snapshot_path
            .clone()
            .unwrap_or_else(|| snapshot::snapshot_path(path));
        let cold = match &options.archive_dir {
            Some(dir) => Some(Arc::new(
                ColdDir::open(dir).map_err(|error| OpenError::Archive(error.to_string()))?,
            ) as Arc<dyn ColdStore>),
            None => None,
        };
        let (storage, report, medium) = file::open::<S>(
            path,
            &snapshot_path,
            options.segment_bytes,
            options.observer.as_deref(),
            cold,
        )?;
        let settings = compact::Settings {
            dead_fraction: options.compact_dead_fraction,
            bytes_per_second: options.compact_bytes_per_second,
            background: options.compact_in_background,
            interval: options.compact_interval,
        };
        let io_error = |source| OpenError::Io {
            path: path.to_owned(),
            source,
        };
        let mut log = Self::start(storage, options).map_err(io_error)?;
        let live = Arc::clone(&log.shared) as Arc<dyn compact::LiveView>;
        log.compaction =
            Some(compact::Compaction::start(medium, live, settings).map_err(io_error)?);
        Ok((log, report))
    }

    /// Starts the writer over an already recovered medium.
    pub fn start(storage: Storage<S>, options: LogOptions<S>) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            index: RwLock::new(storage.index),
            location: storage.location,
            poisoned: OnceLock::new(),
            unavailable: Mutex::new(None),
            refresh_queued: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        });
        let (queue, jobs) = sync_channel(options.max_queued_jobs.max(1));
        let readers = Readers {
            source: storage.source,
            cold: storage.cold,
        };
        let writer = Writer {
            shared: Arc::clone(&shared),
            sink: storage.sink,
            readers: readers.clone(),
            last_at: storage.last_at,
            observer: options.observer,
        };
        let handle = std::thread::Builder::new()
            .name("event-log-writer".into())
            .spawn(move || writer.run(jobs))?;
        Ok(EventLog {
            shared,
            readers,
            queue,
            writer: Mutex::new(Some(handle)),
            snapshots: storage.snapshots,
            moving: Mutex::new(()),
            compaction: None,
        })
    }

    /// Queues `decide` to run on the writer thread, in log order, against the
    /// committed index plus the records staged earlier in the same batch.
    /// `reply` receives its outcome once the batch is durable, or the failure
    /// that kept it from being durable. Rejections (decisions that stage
    /// nothing) are answered with the batch too, so a replayed answer never
    /// overtakes the durability of the record it names.
    pub fn submit<R, D, F>(&self, decide: D, reply: F)
    where
        R: Send + 'static,
        D: FnOnce(&mut Txn<'_, S>) -> R + Send + 'static,
        F: FnOnce(Result<R, LogFailure>) + Send + 'static,
    {
        if let Some(reason) = self.shared.poison_reason() {
            return reply(Err(LogFailure::Poisoned(reason)));
        }
        let job = Box::new(Submitted { decide, reply });
        let refused = match self.queue.try_send(Message::Job(job)) {
            Ok(()) => return,
            Err(TrySendError::Full(message)) => (message, LogFailure::Overloaded),
            Err(TrySendError::Disconnected(message)) => (message, LogFailure::Closed),
        };
        if let (Message::Job(job), failure) = refused {
            job.refuse(failure);
        }
    }

    /// Asks the writer to take in what other processes appended to a shared
    /// medium; `reply` is called once the index includes it.
    pub fn refresh(&self, reply: impl FnOnce(Result<(), LogFailure>) + Send + 'static) {
        let reply: writer::RefreshReply = Box::new(reply);
        match self.queue.try_send(Message::Refresh(Some(reply))) {
            Ok(()) => {}
            Err(TrySendError::Full(Message::Refresh(Some(reply)))) => {
                reply(Err(LogFailure::Overloaded))
            }
            Err(TrySendError::Disconnected(Message::Refresh(Some(reply)))) => {
                reply(Err(LogFailure::Closed))
            }
            Err(_) => {}
        }
    }

    /// A handle that nudges the writer to refresh, for a thread that learns
    /// of other processes' appends (a database notification listener).
    pub fn refresher(&self) -> Refresher<S> {
        Refresher {
            shared: Arc::clone(&self.shared),
            queue: self.queue.clone(),
        }
    }

    /// Reads the committed index. Keep the guard briefly: the writer needs
    /// the write lock to commit each batch.
    pub fn index(&self) -> RwLockReadGuard<'_, Index<S>> {
        self.shared.index.read().expect("index lock poisoned")
    }

    /// Why the log refuses writes for good, if it does.
    pub fn poison_reason(&self) -> Option<String> {
        self.shared.poison_reason()
    }

    /// Why the medium could not be reached at the writer's last attempt, if
    /// it could not; cleared by the next success.
    pub fn unavailable_reason(&self) -> Option<String> {
        self.shared
            .unavailable
            .lock()
            .expect("unavailable lock poisoned")
            .clone()
    }

    /// Where the records are (the file's path, the database's name).
    pub fn location(&self) -> &str {
        &self.shared.location
    }

    /// The newest position the medium holds when other processes append to
    /// it too (`None` for a medium this process writes alone). Blocks while
    /// the medium is asked.
    pub fn durable_lsn(&self) -> Result<Option<u64>, ReadError> {
        self.readers.source.durable_lsn()
    }

    /// Whether other processes append to the medium too (see
    /// [`EventLog::durable_lsn`]).
    pub fn is_shared(&self) -> bool {
        self.readers.source.is_shared()
    }

    /// Reads the records of `stream` with `after_seq < seq <= after_seq +
    /// limit` and maps each one while it is in memory. A seq whose record
    /// the archive did not keep (an old worker heartbeat) is left out, so a
    /// page can hold fewer records than it spans. Blocks while the medium
    /// is read.
    pub fn read_stream<T>(
        &self,
        stream: &str,
        after_seq: u64,
        limit: usize,
        mut map: impl FnMut(RecordRef<'_>) -> T,
    ) -> Result<Vec<T>, ReadError> {
        let plan_now = || {
            self.index()
                .stream(stream)
                .map(|entry| (ReadPlan::of(entry, after_seq, limit), entry.cold_base()))
        };
        let generation = self.compaction_generation();
        let Some((plan, cold_base)) = plan_now() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(plan.len());
        match plan.read(&self.readers, stream, &mut |record| out.push(map(record))) {
            Ok(()) => Ok(out),
            // The history went cold while it was read, and compaction
            // dropped the medium's copy, or compaction moved the records
            // the plan located: once more, from a new plan.
            Err(_)
                if plan_now().is_some_and(|(_, now)| now > cold_base)
                    || self.compaction_generation() != generation =>
            {
                out.clear();
                let (plan, _) = plan_now().expect("a stream is never removed");
                plan.read(&self.readers, stream, &mut |record| out.push(map(record)))?;
                Ok(out)
            }
            Err(error) => Err(error),
        }
    }

    /// Moves seqs `..= base` of `stream` to the cold store, keeping of each
    /// record what `keep` says (they are shown in seq order), so the hot
    /// log's copies become dead and compaction can drop them. Once it
    /// returns the cold store serves those seqs and the stream's state and
    /// every later record stay as they were. Earlier cold records of the
    /// stream are offered to `keep` again, so a smaller choice (an erased
    /// history) replaces a larger one. Returns the new catalog entry, or
    /// `None` when `base` is not past the stream's cold base. Blocks while
    /// the history is read and written.
    pub fn move_cold(
        &self,
        stream: &str,
        base: u64,
        mut keep: impl FnMut(&RecordRef<'_>) -> Keep,
    ) -> Result<Option<ColdEntry>, ColdMoveError> {
        let cold = self.readers.cold.as_ref().ok_or(ColdMoveError::NoArchive)?;
        let _one_at_a_time = self.moving.lock().expect("cold move lock");
        let (head, cold_base, state_at_head) = {
            let index = self.index();
            let entry = index
                .stream(stream)
                .filter(|entry| entry.head() >= base)
                .ok_or_else(|| ColdMoveError::BeyondHead {
                    stream: stream.to_owned(),
                    base,
                })?;
            (entry.head(), entry.cold_base(), entry.state().clone())
        };
        if base <= cold_base {
            return Ok(None);
        }
        let earlier = cold.entry(stream);
        let state_at_base = (base == head).then_some(state_at_head);
        let mut moved = cold::Mover::<S>::new(stream, earlier.as_ref(), state_at_base)?;
        let mut after = 0;
        while after < base {
            let page = (base - after).min(4096);
            let mut failure = None;
            self.read_stream(stream, after, page as usize, |record| {
                if failure.is_none() {
                    failure = moved.push(&record, &mut keep).err();
                }
            })?;
            if let Some(error) = failure {
                return Err(error);
            }
            after += page;
        }
        let (entry, body) = moved.finish(base)?;
        let entry = cold.put(entry, body)?;
        self.shared
            .index
            .write()
            .expect("index lock poisoned")
            .go_cold(stream, base, entry.scrub);
        if let Some(compaction) = &self.compaction {
            compaction.nudge();
        }
        Ok(Some(entry))
    }

    /// Runs one full compaction pass of the file medium now, without the
    /// byte budget (a background pass waits for it, or it for one), and
    /// says what it did. A medium without segments does nothing.
    pub fn compact_now(&self) -> Result<CompactionReport, CompactionError> {
        match &self.compaction {
            Some(compaction) => compaction.run_now(),
            None => Ok(CompactionReport::default()),
        }
    }

    /// The medium's compaction figures (zero for a medium without
    /// segments).
    pub fn compaction_stats(&self) -> CompactionStats {
        self.compaction
            .as_ref()
            .map(compact::Compaction::stats)
            .unwrap_or_default()
    }

    /// Rises each time compaction moves records: a snapshot written before
    /// it makes the next start scan the whole log, so whoever writes
    /// snapshots writes a fresh one when it changes.
    pub fn compaction_generation(&self) -> u64 {
        self.compaction
            .as_ref()
            .map_or(0, compact::Compaction::generation)
    }

    /// The cold store, when the log has one: its bytes and catalog.
    pub fn cold_store(&self) -> Option<&Arc<dyn ColdStore>> {
        self.readers.cold.as_ref()
    }

    /// Writes a snapshot of the index as of now: the writer copies the index
    /// (and asks the observer for its extension) between two batches, then
    /// this thread encodes and writes it. Blocks while it is written.
    pub fn write_snapshot(&self) -> Result<SnapshotWritten, SnapshotError> {
        let store = self.snapshots.as_ref().ok_or(SnapshotError::Unsupported)?;
        let (cut_sender, cut) = std::sync::mpsc::sync_channel(1);
        let reply: writer::SnapshotReply<S> = Box::new(move |taken| {
            let _ = cut_sender.send(taken);
        });
        let stopped = || SnapshotError::Writer("the log is closed".into());
        self.queue
            .send(Message::Snapshot(reply))
            .map_err(|_| stopped())?;
        let cut = cut
            .recv()
            .map_err(|_| stopped())?
            .map_err(SnapshotError::Writer)?;
        let extension = cut.extension.map(|encode| encode());
        let bytes = snapshot::encode(&cut.index, extension.as_deref());
        store
            .save(cut.index.last_lsn(), &bytes)
            .map_err(SnapshotError::Store)?;
        Ok(SnapshotWritten {
            lsn: cut.index.last_lsn(),
            bytes: bytes.len() as u64,
            at: std::time::SystemTime::now(),
        })
    }

    /// Where snapshots are written, when the medium keeps them.
    pub fn snapshot_location(&self) -> Option<String> {
        self.snapshots.as_ref().map(|store| store.describe())
    }

    /// How many segment files the medium keeps now.
    pub fn segment_count(&self) -> usize {
        self.readers.source.segment_count()
    }

    /// Lets the writer finish every job queued so far, then stops it. Later
    /// submissions are refused with [`LogFailure::Closed`].
    pub fn shutdown(&self) {
        if let Some(compaction) = &self.compaction {
            compaction.stop();
        }
        self.shared.closed.store(true, Ordering::Release);
        let _ = self.queue.send(Message::Stop);
        let handle = self.writer.lock().expect("writer handle lock").take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

impl<S: StreamState> Drop for EventLog<S> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Nudges a log's writer to take in other processes' appends.
pub struct Refresher<S> {
    shared: Arc<Shared<S>>,
    queue: SyncSender<Message<S>>,
}

impl<S: StreamState> Refresher<S> {
    /// Whether the log has been shut down.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Whether the writer's last attempt to reach the medium failed.
    pub fn medium_unavailable(&self) -> bool {
        self.shared
            .unavailable
            .lock()
            .expect("unavailable lock poisoned")
            .is_some()
    }

    /// Queues one refresh unless one is already queued or the index already
    /// reaches `lsn`.
    pub fn nudge(&self, lsn: Option<u64>) {
        let current = self
            .shared
            .index
            .read()
            .expect("index lock poisoned")
            .last_lsn();
        if lsn.is_some_and(|lsn| lsn <= current)
            || self.shared.refresh_queued.swap(true, Ordering::AcqRel)
        {
            return;
        }
        // A full queue has a batch coming, which takes in the same records;
        // a closed log has nothing left to refresh.
        if self.queue.try_send(Message::Refresh(None)).is_err() {
            self.shared.clear_refresh_queued();
        }
    }
}
