//! The single writer: group commit over the log's medium.
//!
//! Jobs arrive over a bounded queue. The writer takes the first waiting job,
//! then every job that is already queued (up to a batch limit). It asks the
//! medium's [`Sink`] for the right to append, folding in whatever other
//! processes appended meanwhile, then runs each job's decision against a
//! [`Txn`]: the committed index plus what earlier jobs of the same batch
//! staged. The staged records are made durable in one step (one `write` and
//! one `fdatasync` for the file); only then are they committed to the index,
//! shown to the observer and acknowledged. While one batch is being synced
//! the next one queues up, so the cost of a sync is shared by every append
//! that waited for it.
//!
//! Because decisions run one at a time on this thread, in log order, while
//! the writer holds the right to append, a check and the append it allows
//! are one atomic step.
//!
//! If the medium fails in a way that may have mangled a write, the log is
//! poisoned: the batch is answered with the failure, nothing of it enters the
//! index, and every later job is refused. If it is only unreachable, the
//! batch is refused and the next one tries again.
//!
//! The writer is supervised: a panic in a decision or in the commit observer
//! (a bug) poisons the log with the panic's message instead of killing the
//! thread. The batch it happened in is answered with that failure and
//! nothing of a batch whose decision panicked is written, so a process that
//! can no longer write says so instead of looking ready.

use crate::error::{LogFailure, ReadError};
use crate::index::{Index, KeyLookup, ReadPlan, RecordPos, StreamState};
use crate::record::{NewRecord, RecordRef};
use crate::storage::{OwnedRecord, Sink, SinkFailure, StagedBatch};
use crate::{BatchStats, CommitObserver, Readers, Shared};
use std::any::Any;
use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::{Instant, SystemTime};

/// Most jobs decided into one batch.
pub(crate) const MAX_BATCH_JOBS: usize = 4096;
/// Most bytes written by one batch; a batch stops taking jobs past this.
pub(crate) const MAX_BATCH_BYTES: usize = 16 << 20;
/// Longest line the format allows (positions store lengths as `u32`, and no
/// request body comes near it).
const MAX_RECORD_BYTES: usize = 64 << 20;

/// Called once a decided job's batch is durable (or failed).
pub(crate) type Ack = Box<dyn FnOnce(Result<(), LogFailure>) + Send>;

/// A unit of work for the writer: a decision and the reply it owes.
pub(crate) trait Job<S>: Send {
    /// Runs the decision against the batch and returns the acknowledgement
    /// to call once the batch is durable.
    fn decide(self: Box<Self>, txn: &mut Txn<'_, S>) -> Ack;
    /// Answers without deciding (the log is poisoned or closing).
    fn refuse(self: Box<Self>, failure: LogFailure);
}

/// A decision closure and the reply closure that receives its outcome.
pub(crate) struct Submitted<D, F> {
    pub(crate) decide: D,
    pub(crate) reply: F,
}

impl<S, R, D, F> Job<S> for Submitted<D, F>
where
    S: StreamState,
    R: Send + 'static,
    D: FnOnce(&mut Txn<'_, S>) -> R + Send,
    F: FnOnce(Result<R, LogFailure>) + Send + 'static,
{
    fn decide(self: Box<Self>, txn: &mut Txn<'_, S>) -> Ack {
        let Submitted { decide, reply } = *self;
        match catch_unwind(AssertUnwindSafe(|| decide(txn))) {
            Ok(outcome) => Box::new(move |durable| reply(durable.map(|()| outcome))),
            Err(panic) => {
                let reason = panic_reason("a decision", &*panic);
                txn.panicked = Some(reason.clone());
                // The writer fails the whole batch; this reply never succeeds.
                Box::new(move |durable: Result<(), LogFailure>| {
                    reply(Err(durable.err().unwrap_or(LogFailure::Poisoned(reason))))
                })
            }
        }
    }

    fn refuse(self: Box<Self>, failure: LogFailure) {
        (self.reply)(Err(failure))
    }
}

/// Told when a refresh has taken in other processes' appends.
pub(crate) type RefreshReply = Box<dyn FnOnce(Result<(), LogFailure>) + Send>;

/// A consistent copy of the index and the observer's state, taken between
/// two batches.
pub(crate) struct SnapshotCut<S> {
    pub(crate) index: Index<S>,
    pub(crate) extension: Option<crate::ExtensionEncoder>,
}

/// Receives a snapshot cut, or why none was taken.
pub(crate) type SnapshotReply<S> = Box<dyn FnOnce(Result<SnapshotCut<S>, String>) + Send>;

/// What the writer thread receives.
pub(crate) enum Message<S> {
    /// Copy the index for a snapshot, between two batches.
    Snapshot(SnapshotReply<S>),
    /// Decide, stage, sync, acknowledge.
    Job(Box<dyn Job<S>>),
    /// Take in other processes' appends; reply when done, if asked to.
    Refresh(Option<RefreshReply>),
    /// Finish the jobs queued before this message, then stop.
    Stop,
}

impl From<SinkFailure> for LogFailure {
    fn from(failure: SinkFailure) -> Self {
        match failure {
            SinkFailure::Fatal(reason) => LogFailure::Poisoned(reason),
            SinkFailure::Unavailable(reason) => LogFailure::Unavailable(reason),
            SinkFailure::OutcomeUnknown(reason) => LogFailure::OutcomeUnknown(reason),
        }
    }
}

/// A stream as the batch sees it: its state and head after the staged records.
#[derive(Clone)]
struct Draft<S> {
    state: S,
    head: u64,
}

/// The view a decision works against: the committed index plus everything
/// earlier decisions of the same batch staged.
pub struct Txn<'a, S> {
    index: &'a Index<S>,
    readers: &'a Readers,
    drafts: HashMap<String, Draft<S>>,
    staged: Vec<OwnedRecord>,
    buffer: Vec<u8>,
    last_at: SystemTime,
    /// Set when a decision of this batch panicked: the batch is abandoned.
    panicked: Option<String>,
}

/// What a panic on the writer thread poisons the log with.
fn panic_reason(place: &str, panic: &(dyn Any + Send)) -> String {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message");
    format!("{place} panicked on the log's writer: {message}")
}

/// Runs an observer callback; a panic in it becomes the reason to poison.
fn observe(call: impl FnOnce()) -> Result<(), String> {
    catch_unwind(AssertUnwindSafe(call))
        .map_err(|panic| panic_reason("the commit observer", &*panic))
}

/// A stream as a decision sees it.
#[derive(Debug)]
pub struct StreamView<'t, S> {
    /// The stream's state after every committed and staged record.
    pub state: &'t S,
    /// The stream's last sequence number, staged records included.
    pub head: u64,
}

// Copy whatever `S` is: the view only borrows the state.
impl<S> Clone for StreamView<'_, S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S> Copy for StreamView<'_, S> {}

/// Where an appended record landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// Its position in the log.
    pub lsn: u64,
    /// Its position in its stream.
    pub seq: u64,
    /// The time the writer recorded for it (RFC 3339 UTC).
    pub recorded_at: String,
}

/// Why a decision's append was refused by the log itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// The encoded record is larger than the format allows.
    #[error("record of {0} bytes exceeds the largest record the log stores")]
    TooLarge(usize),
    /// The log-wide creation key already names a stream.
    #[error("creation key already names stream {0}")]
    CreateKeyTaken(String),
    /// A creation key on a record that is not its stream's first.
    #[error("creation key on a record of existing stream {0}")]
    CreateKeyOnExistingStream(String),
    /// The idempotency key already names a record of the stream.
    #[error("idempotency key already names record {seq} of stream {stream}")]
    KeyTaken {
        /// The stream.
        stream: String,
        /// The record the key names.
        seq: u64,
    },
    /// The stream's fold refused the record.
    #[error("the stream state refused the record: {0}")]
    Refused(String),
    /// Whether the idempotency key was used before could not be read from
    /// the medium.
    #[error("looking up the idempotency key: {0}")]
    KeyUnreadable(String),
}

impl<'a, S: StreamState> Txn<'a, S> {
    /// The stream named `name`, with this batch's staged records applied.
    pub fn stream(&self, name: &str) -> Option<StreamView<'_, S>> {
        if let Some(draft) = self.drafts.get(name) {
            return Some(StreamView {
                state: &draft.state,
                head: draft.head,
            });
        }
        self.index.stream(name).map(|entry| StreamView {
            state: entry.state(),
            head: entry.head(),
        })
    }

    /// The sequence number of the record of `stream` that used `key`. Reads
    /// the medium only for a sealed stream whose older keys are archived
    /// (a retry, since a sealed stream takes no new record).
    pub fn seq_for_key(&self, stream: &str, key: &str) -> Result<Option<u64>, ReadError> {
        let staged = self.staged.iter().rev().find(|staged| {
            staged.record.stream == stream && staged.record.idempotency_key.as_deref() == Some(key)
        });
        if let Some(staged) = staged {
            return Ok(Some(staged.seq));
        }
        let Some(entry) = self.index.stream(stream) else {
            return Ok(None);
        };
        match entry.key(key) {
            KeyLookup::Found(seq) => Ok(Some(seq)),
            KeyLookup::Absent => Ok(None),
            KeyLookup::Archived => match self.readers.source.archived_key(stream, key)? {
                Some(seq) => Ok(Some(seq)),
                None => match &self.readers.cold {
                    Some(cold) if entry.cold_base() > 0 => cold.key(stream, key),
                    _ => Ok(None),
                },
            },
        }
    }

    /// The stream created under the log-wide key `key`.
    pub fn stream_for_create_key(&self, key: &str) -> Option<&str> {
        let staged = self
            .staged
            .iter()
            .find(|staged| staged.record.create_key.as_deref() == Some(key));
        match staged {
            Some(staged) => Some(&staged.record.stream),
            None => self.index.stream_for_create_key(key),
        }
    }

    /// Runs `f` on record `seq` of `stream`, staged or durable.
    pub fn with_record<R>(
        &self,
        stream: &str,
        seq: u64,
        f: impl FnOnce(RecordRef<'_>) -> R,
    ) -> Result<Option<R>, ReadError> {
        let staged = self
            .staged
            .iter()
            .find(|staged| staged.seq == seq && staged.record.stream == stream);
        if let Some(staged) = staged {
            return Ok(Some(f(staged.as_ref())));
        }
        let plan = match self.index.stream(stream) {
            Some(entry) if (1..=entry.head()).contains(&seq) => ReadPlan::of(entry, seq - 1, 1),
            _ => return Ok(None),
        };
        let mut f = Some(f);
        let mut out = None;
        plan.read(self.readers, stream, &mut |record| {
            // A seq the archive did not keep reads as the next one.
            if record.seq != seq {
                return;
            }
            if let Some(f) = f.take() {
                out = Some(f(record));
            }
        })?;
        Ok(out)
    }

    /// Stages `record` as the next record of its stream and folds it into the
    /// stream's state. It becomes durable with the rest of the batch.
    pub fn append(&mut self, record: NewRecord) -> Result<Appended, AppendError> {
        let at = self.next_timestamp();
        self.stage(record, at)
    }

    /// Like [`Txn::append`], but with the time the record was first recorded
    /// elsewhere, for importing history from another runtime; the wall clock
    /// is not read.
    pub fn append_recorded_at(
        &mut self,
        record: NewRecord,
        recorded_at: String,
    ) -> Result<Appended, AppendError> {
        self.stage(record, recorded_at)
    }

    fn stage(&mut self, record: NewRecord, at: String) -> Result<Appended, AppendError> {
        self.check_create_key(&record)?;
        self.check_key(&record)?;
        let head = self.stream(&record.stream).map_or(0, |view| view.head);
        let lsn = self.index.last_lsn() + self.staged.len() as u64 + 1;
        let start = self.buffer.len();
        let proposed = RecordRef::proposed(&record, lsn, head + 1, &at);
        proposed.encode_into(&mut self.buffer);
        let len = self.buffer.len() - start - 1;
        if len > MAX_RECORD_BYTES {
            self.buffer.truncate(start);
            return Err(AppendError::TooLarge(len));
        }
        if let Err(reason) = self.fold(&proposed) {
            self.buffer.truncate(start);
            return Err(AppendError::Refused(reason.to_string()));
        }
        // Relative to the batch's lines until the sink says where they landed.
        let pos = RecordPos {
            offset: start as u64,
            len: len as u32,
        };
        let appended = Appended {
            lsn,
            seq: head + 1,
            recorded_at: at.clone(),
        };
        self.staged.push(OwnedRecord {
            record,
            lsn,
            seq: head + 1,
            at,
            pos,
        });
        Ok(appended)
    }

    fn check_create_key(&self, record: &NewRecord) -> Result<(), AppendError> {
        let Some(key) = &record.create_key else {
            return Ok(());
        };
        if let Some(stream) = self.stream_for_create_key(key) {
            return Err(AppendError::CreateKeyTaken(stream.to_owned()));
        }
        if self.stream(&record.stream).is_some() {
            return Err(AppendError::CreateKeyOnExistingStream(
                record.stream.clone(),
            ));
        }
        Ok(())
    }

    /// The idempotency-key rule, for every medium alike: a key names at most
    /// one record of its stream.
    fn check_key(&self, record: &NewRecord) -> Result<(), AppendError> {
        let Some(key) = &record.idempotency_key else {
            return Ok(());
        };
        match self.seq_for_key(&record.stream, key) {
            Ok(Some(seq)) => Err(AppendError::KeyTaken {
                stream: record.stream.clone(),
                seq,
            }),
            Ok(None) => Ok(()),
            Err(error) => Err(AppendError::KeyUnreadable(error.to_string())),
        }
    }

    fn fold(&mut self, record: &RecordRef<'_>) -> Result<(), S::Error> {
        let name = record.stream.as_ref();
        if let Some(draft) = self.drafts.get_mut(name) {
            draft.state.apply(record)?;
            draft.head = record.seq;
            return Ok(());
        }
        let state = match self.index.stream(name) {
            Some(entry) => {
                let mut state = entry.state().clone();
                state.apply(record)?;
                state
            }
            None => S::open(record)?,
        };
        self.drafts.insert(
            name.to_owned(),
            Draft {
                state,
                head: record.seq,
            },
        );
        Ok(())
    }

    /// Wall-clock time, never earlier than the previous record's, so
    /// `recorded_at` never goes backwards along the log.
    fn next_timestamp(&mut self) -> String {
        let now = SystemTime::now().max(self.last_at);
        self.last_at = now;
        humantime::format_rfc3339_micros(now).to_string()
    }
}

/// The writer thread's own state.
pub(crate) struct Writer<S> {
    pub(crate) shared: Arc<Shared<S>>,
    pub(crate) sink: Box<dyn Sink>,
    pub(crate) readers: Readers,
    pub(crate) last_at: SystemTime,
    pub(crate) observer: Option<Arc<dyn CommitObserver<S>>>,
}

/// What the writer took off its queue in one go.
struct Batch<S> {
    jobs: Vec<Box<dyn Job<S>>>,
    refreshes: Vec<RefreshReply>,
    refresh: bool,
    snapshots: Vec<SnapshotReply<S>>,
}

impl<S: StreamState> Writer<S> {
    /// Serves batches until a `Stop` message or until every sender is gone.
    pub(crate) fn run(mut self, queue: Receiver<Message<S>>) {
        let mut stopping = false;
        while !stopping {
            let Ok(first) = queue.recv() else { return };
            let mut batch = Batch {
                jobs: Vec::new(),
                refreshes: Vec::new(),
                refresh: false,
                snapshots: Vec::new(),
            };
            let mut next = Some(first);
            while let Some(message) = next.take() {
                match message {
                    Message::Job(job) => batch.jobs.push(job),
                    Message::Refresh(reply) => {
                        batch.refresh = true;
                        batch.refreshes.extend(reply);
                    }
                    Message::Snapshot(reply) => batch.snapshots.push(reply),
                    Message::Stop => {
                        stopping = true;
                        break;
                    }
                }
                if batch.jobs.len() < MAX_BATCH_JOBS {
                    next = queue.try_recv().ok();
                }
            }
            if batch.refresh {
                self.shared.clear_refresh_queued();
            }
            // A batch of jobs takes in other processes' appends first anyway.
            let jobs = batch.jobs;
            let refresh = batch.refresh;
            let served = catch_unwind(AssertUnwindSafe(|| {
                if !jobs.is_empty() {
                    self.serve(jobs)
                } else if refresh {
                    self.refresh()
                } else {
                    Ok(())
                }
            }));
            // A panic outside the decisions and the observer (an assertion
            // of the log's own invariants) poisons the log too; the replies
            // it dropped are answered by the handle with the same reason.
            let refreshed = served
                .unwrap_or_else(|panic| Err(self.poison(panic_reason("the writer", &*panic))));
            for reply in batch.refreshes {
                reply(refreshed.clone());
            }
            for reply in batch.snapshots {
                reply(self.snapshot_cut());
            }
        }
    }

    /// Copies the index and asks the observer for its extension: both are
    /// as of the last batch.
    fn snapshot_cut(&self) -> Result<SnapshotCut<S>, String> {
        let index = self
            .shared
            .index
            .read()
            .expect("index lock poisoned")
            .clone();
        let mut extension = None;
        if let Some(observer) = &self.observer {
            observe(|| extension = observer.snapshot_extension())?;
        }
        Ok(SnapshotCut { index, extension })
    }

    /// Takes in other processes' appends without taking the right to append.
    fn refresh(&mut self) -> Result<(), LogFailure> {
        let pulled = self.sink.pull(self.last_lsn());
        let foreign = self.answered(pulled)?;
        self.take_in(foreign)
    }

    fn last_lsn(&self) -> u64 {
        self.shared
            .index
            .read()
            .expect("index lock poisoned")
            .last_lsn()
    }

    /// Notes whether the medium answered: a fatal failure poisons the log,
    /// an unavailable medium is reported until it answers again.
    fn answered<T>(&self, outcome: Result<T, SinkFailure>) -> Result<T, LogFailure> {
        match outcome {
            Ok(value) => {
                self.shared.set_unavailable(None);
                Ok(value)
            }
            Err(SinkFailure::Fatal(reason)) => Err(self.poison(reason)),
            Err(SinkFailure::Unavailable(reason)) => {
                tracing::warn!(%reason, "event log storage is unavailable");
                self.shared.set_unavailable(Some(reason.clone()));
                Err(LogFailure::Unavailable(reason))
            }
            Err(SinkFailure::OutcomeUnknown(reason)) => {
                tracing::warn!(%reason, "event log storage was lost during a commit");
                self.shared.set_unavailable(Some(reason.clone()));
                Err(LogFailure::OutcomeUnknown(reason))
            }
        }
    }

    /// Folds records other processes made durable into the index and shows
    /// them to the observer, in log order, as if this writer had written them.
    fn take_in(&mut self, foreign: Vec<OwnedRecord>) -> Result<(), LogFailure> {
        if foreign.is_empty() {
            return Ok(());
        }
        let mut index = self.shared.index.write().expect("index lock poisoned");
        for record in &foreign {
            if let Err(problem) = index.recover(&record.as_ref(), record.pos) {
                // The medium's own constraints make this unreachable; a
                // writer that went on would decide against a wrong index.
                drop(index);
                let reason = format!(
                    "{}: records appended by another process do not follow the log: {problem}",
                    self.shared.location
                );
                return Err(self.poison(reason));
            }
        }
        index.archive_below(self.readers.source.archive_floor());
        drop(index);
        if let Some(at) = foreign
            .last()
            .and_then(|record| humantime::parse_rfc3339(&record.at).ok())
        {
            self.last_at = self.last_at.max(at);
        }
        self.show(&foreign).map_err(|reason| self.poison(reason))
    }

    /// Decides and commits `jobs`; returns whether the index caught up with
    /// the medium first.
    fn serve(&mut self, jobs: Vec<Box<dyn Job<S>>>) -> Result<(), LogFailure> {
        if let Some(reason) = self.shared.poison_reason() {
            let failure = LogFailure::Poisoned(reason);
            for job in jobs {
                job.refuse(failure.clone());
            }
            return Err(failure);
        }
        let begun = self.sink.begin(self.last_lsn());
        let taken_in = self
            .answered(begun)
            .and_then(|foreign| self.take_in(foreign));
        if let Err(failure) = taken_in {
            let _ = self.sink.release();
            for job in jobs {
                job.refuse(failure.clone());
            }
            return Err(failure);
        }
        let index = self.shared.index.read().expect("index lock poisoned");
        let mut txn = Txn {
            index: &index,
            readers: &self.readers,
            drafts: HashMap::new(),
            staged: Vec::new(),
            buffer: Vec::new(),
            last_at: self.last_at,
            panicked: None,
        };
        let mut acks = Vec::with_capacity(jobs.len());
        let mut jobs = jobs.into_iter();
        for job in jobs.by_ref() {
            acks.push(job.decide(&mut txn));
            if txn.panicked.is_some() || txn.buffer.len() >= MAX_BATCH_BYTES {
                break;
            }
        }
        let Txn {
            drafts,
            mut staged,
            buffer,
            last_at,
            panicked,
            ..
        } = txn;
        drop(index);
        if let Some(reason) = panicked {
            // What the batch staged may rest on a half-made decision: none
            // of it is written.
            let _ = self.sink.release();
            let failure = self.poison(reason);
            for ack in acks {
                ack(Err(failure.clone()));
            }
            for job in jobs {
                job.refuse(failure.clone());
            }
            return Err(failure);
        }
        self.last_at = last_at;
        let started = Instant::now();
        let mut durable = if staged.is_empty() {
            let released = self.sink.release();
            self.answered(released)
        } else {
            let committed = self.sink.commit(StagedBatch {
                records: &staged,
                lines: &buffer,
            });
            self.answered(committed).map(|positions| {
                for (record, pos) in staged.iter_mut().zip(positions) {
                    record.pos = pos;
                }
            })
        };
        if durable.is_ok() && !staged.is_empty() {
            let stats = BatchStats {
                records: staged.len(),
                bytes: buffer.len(),
                write_and_sync: started.elapsed(),
            };
            if let Err(reason) = self.commit(drafts, &staged, &stats) {
                durable = Err(self.poison(reason));
            }
        }
        for ack in acks {
            ack(durable.clone());
        }
        // Jobs left over when the batch filled up go into the next batch.
        let rest: Vec<_> = jobs.collect();
        if !rest.is_empty() {
            // Their outcome reaches them through their own replies.
            let _ = self.serve(rest);
        }
        Ok(())
    }

    /// Poisons the log for good, logging why.
    fn poison(&self, reason: String) -> LogFailure {
        tracing::error!(%reason, "the event log's writer failed; refusing all further writes");
        self.shared.poison(reason.clone());
        LogFailure::Poisoned(reason)
    }

    /// Commits a durable batch to the index and shows it to the observer;
    /// an observer that panicked is the error.
    fn commit(
        &self,
        drafts: HashMap<String, Draft<S>>,
        staged: &[OwnedRecord],
        stats: &BatchStats,
    ) -> Result<(), String> {
        if let Some(observer) = &self.observer {
            observe(|| observer.synced(stats))?;
        }
        let mut index = self.shared.index.write().expect("index lock poisoned");
        for (name, draft) in drafts {
            index.set_state(&name, draft.state);
        }
        for record in staged {
            index.push(&record.as_ref(), record.pos);
        }
        index.archive_below(self.readers.source.archive_floor());
        drop(index);
        self.show(staged)
    }

    /// Shows records that are in the index to the observer, in log order.
    fn show(&self, records: &[OwnedRecord]) -> Result<(), String> {
        let Some(observer) = &self.observer else {
            return Ok(());
        };
        let records: Vec<RecordRef<'_>> = records.iter().map(OwnedRecord::as_ref).collect();
        let index = self.shared.index.read().expect("index lock poisoned");
        observe(|| observer.committed(&records, &index))
    }
}
