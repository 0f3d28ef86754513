//! A durable, multi-stream, append-only event log in one JSONL file.
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
//!
//! The crate knows nothing of runs, workers or HTTP: the meaning of a stream
//! comes from the [`StreamState`] the caller folds records into.

mod error;
mod index;
mod record;
mod recovery;
mod writer;

pub use error::{LogFailure, OpenError, ReadError};
pub use index::{Index, RecordPos, StreamEntry, StreamState};
pub use record::{DecodeError, NewRecord, RECORD_VERSION, RecordRef};
pub use writer::{AppendError, Appended, StreamView, Txn};

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard};
use std::thread::JoinHandle;
use std::time::SystemTime;
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
}

impl<S> Default for LogOptions<S> {
    fn default() -> Self {
        LogOptions {
            max_queued_jobs: 65_536,
            observer: None,
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
}

/// State shared by the handle, the readers and the writer thread.
pub(crate) struct Shared<S> {
    pub(crate) path: PathBuf,
    pub(crate) index: RwLock<Index<S>>,
    poisoned: OnceLock<String>,
}

impl<S> Shared<S> {
    pub(crate) fn poison(&self, reason: String) {
        let _ = self.poisoned.set(reason);
    }

    pub(crate) fn poison_reason(&self) -> Option<String> {
        self.poisoned.get().cloned()
    }
}

/// A handle to an open log. Cheap to share behind an `Arc`.
pub struct EventLog<S: StreamState> {
    shared: Arc<Shared<S>>,
    reader: File,
    queue: SyncSender<Message<S>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl<S: StreamState> EventLog<S> {
    /// Opens (creating if needed) the log at `path`, recovers its index and
    /// starts the writer thread.
    pub fn open(path: &Path, options: LogOptions<S>) -> Result<(Self, OpenReport), OpenError> {
        let io_error = |source| OpenError::Io {
            path: path.to_owned(),
            source,
        };
        let folder = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(folder).map_err(io_error)?;
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io_error)?;
        file.try_lock().map_err(|error| match error {
            std::fs::TryLockError::WouldBlock => OpenError::Locked {
                path: path.to_owned(),
            },
            std::fs::TryLockError::Error(source) => io_error(source),
        })?;
        if !existed {
            File::open(folder)
                .and_then(|dir| dir.sync_all())
                .map_err(io_error)?;
        }
        let recovered = recovery::scan::<S>(&file, path)?;
        if recovered.torn_bytes > 0 {
            tracing::warn!(
                path = %path.display(),
                offset = recovered.valid_len,
                bytes = recovered.torn_bytes,
                "cutting off a torn final write of the event log"
            );
            file.set_len(recovered.valid_len).map_err(io_error)?;
            file.sync_all().map_err(io_error)?;
        }
        let report = OpenReport {
            records: recovered.index.record_count(),
            streams: recovered.index.streams().count(),
            truncated_bytes: recovered.torn_bytes,
        };
        let shared = Arc::new(Shared {
            path: path.to_owned(),
            index: RwLock::new(recovered.index),
            poisoned: OnceLock::new(),
        });
        let reader = file.try_clone().map_err(io_error)?;
        let (queue, jobs) = sync_channel(options.max_queued_jobs.max(1));
        let writer = Writer {
            shared: Arc::clone(&shared),
            file,
            end_offset: recovered.valid_len,
            last_at: recovered.last_at.unwrap_or(SystemTime::UNIX_EPOCH),
            observer: options.observer,
        };
        let handle = std::thread::Builder::new()
            .name("event-log-writer".into())
            .spawn(move || writer.run(jobs))
            .map_err(io_error)?;
        let log = EventLog {
            shared,
            reader,
            queue,
            writer: Mutex::new(Some(handle)),
        };
        Ok((log, report))
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

    /// Reads the committed index. Keep the guard briefly: the writer needs
    /// the write lock to commit each batch.
    pub fn index(&self) -> RwLockReadGuard<'_, Index<S>> {
        self.shared.index.read().expect("index lock poisoned")
    }

    /// Why the log refuses writes, if it does.
    pub fn poison_reason(&self) -> Option<String> {
        self.shared.poison_reason()
    }

    /// The log file's path.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Reads the records of `stream` with `after_seq < seq <= after_seq +
    /// limit` from the file and maps each one while its line is in memory.
    pub fn read_stream<T>(
        &self,
        stream: &str,
        after_seq: u64,
        limit: usize,
        mut map: impl FnMut(RecordRef<'_>) -> T,
    ) -> Result<Vec<T>, ReadError> {
        let positions: Vec<RecordPos> = match self.index().stream(stream) {
            Some(entry) => entry.positions_after(after_seq, limit).to_vec(),
            None => return Ok(Vec::new()),
        };
        let mut out = Vec::with_capacity(positions.len());
        for chunk in coalesce(&positions) {
            let span = read_span(&self.reader, chunk)?;
            let base = chunk[0].offset;
            for pos in chunk {
                let start = (pos.offset - base) as usize;
                let line = &span[start..start + pos.len as usize];
                let record = RecordRef::decode(line).map_err(|error| ReadError::Damaged {
                    offset: pos.offset,
                    reason: error.to_string(),
                })?;
                out.push(map(record));
            }
        }
        Ok(out)
    }

    /// Lets the writer finish every job queued so far, then stops it. Later
    /// submissions are refused with [`LogFailure::Closed`].
    pub fn shutdown(&self) {
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

/// Largest gap between two records that is still read in one go rather than
/// skipped, and largest span read at once.
const COALESCE_GAP_BYTES: u64 = 16 << 10;
const COALESCE_SPAN_BYTES: u64 = 4 << 20;

/// Splits positions (in seq order) into runs close enough in the file to be
/// read with one `pread` each.
fn coalesce(positions: &[RecordPos]) -> impl Iterator<Item = &[RecordPos]> {
    let mut rest = positions;
    std::iter::from_fn(move || {
        let first = *rest.first()?;
        let mut end = first.offset + u64::from(first.len);
        let mut taken = 1;
        for pos in &rest[1..] {
            let near = pos.offset >= end && pos.offset - end <= COALESCE_GAP_BYTES;
            let new_end = pos.offset + u64::from(pos.len);
            if !near || new_end - first.offset > COALESCE_SPAN_BYTES {
                break;
            }
            end = new_end;
            taken += 1;
        }
        let (chunk, tail) = rest.split_at(taken);
        rest = tail;
        Some(chunk)
    })
}

fn read_span(file: &File, chunk: &[RecordPos]) -> std::io::Result<Vec<u8>> {
    let first = chunk[0];
    let last = chunk[chunk.len() - 1];
    let len = (last.offset + u64::from(last.len) - first.offset) as usize;
    let mut span = vec![0; len];
    file.read_exact_at(&mut span, first.offset)?;
    Ok(span)
}

/// Reads one record's line (without its `\n`).
pub(crate) fn read_line(file: &File, pos: RecordPos) -> std::io::Result<Vec<u8>> {
    read_span(file, &[pos])
}
