//! Projections kept behind the log: applied to every committed batch on the
//! writer thread, persisted in the background, and caught up from the log at
//! start. On the embedded log they are persisted inside the log's index
//! snapshot (at `RUNTIME_CHECKPOINT_PATH`), cut at the same log position as
//! the index; on PostgreSQL, in the shared checkpoint table.
//!
//! They are written whole but rarely (at most once per
//! `RUNTIME_CHECKPOINT_FLUSH_MS`, and at shutdown), atomically; the
//! per-event cost is the projector step alone, whatever the number of runs.
//! A missing, unreadable or inconsistent checkpoint is replaced by a rebuild
//! from the log, with a warning; a projection that claims more than the log
//! holds is rebuilt too, so a summary never disagrees with the log.

use openagents_authority::{
    Stream, StreamId, WorkerAfter, is_tombstone, lifecycle_event, transition_event,
};
use openagents_event_log::{
    CommitObserver, EventLog, ExtensionEncoder, Index, RecordRef, SnapshotWritten,
};
use openagents_projectors::{Checkpoint, DriftReport, ProjectionSnapshot, Projections, RunSummary};
use serde_json::value::RawValue;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Records read per page while catching up.
const CATCH_UP_PAGE: usize = 1024;
/// Longest time between two progress lines of a long catch-up (start-up
/// recovery, `reproject`).
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// The service's projections; they are persisted inside the log's
/// snapshot.
#[derive(Default)]
pub struct ProjectionStore {
    projections: Mutex<Projections>,
    /// Set when projections changed since the last write of the file.
    dirty: AtomicBool,
    /// Log position of the newest record applied, for the lag metric.
    applied_lsn: AtomicU64,
    /// Set when the snapshot's projections were unusable and ignored.
    discarded: AtomicBool,
    /// Whether to keep a copy of the projections as the snapshot held them
    /// (only `reproject` compares with it; the service does not pay for it).
    keeps_restored: bool,
    /// That copy.
    restored: Mutex<Option<ProjectionSnapshot>>,
    /// Records replayed into the projections while the log opened.
    replayed: AtomicU64,
}

/// What a catch-up did, for the start-up log line and `reproject`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CatchUp {
    /// Whether the checkpoint file was unusable and ignored.
    pub(crate) rebuilt_from_scratch: bool,
    /// Streams whose projection was still behind the log after the open
    /// (on PostgreSQL, or after unusable saved projections).
    pub(crate) streams_caught_up: usize,
    /// Records applied: replayed while the log opened, then caught up.
    pub(crate) records_applied: u64,
}

impl ProjectionStore {
    fn lock(&self) -> MutexGuard<'_, Projections> {
        self.projections.lock().expect("projections lock poisoned")
    }

    /// A store that keeps the snapshot's projections aside, for
    /// [`ProjectionStore::reproject`] to compare with.
    pub fn for_reproject() -> Self {
        ProjectionStore {
            keeps_restored: true,
            ..ProjectionStore::default()
        }
    }

    /// Applies every record of the log the projections do not cover. The
    /// saved projections were loaded and the replayed records applied while
    /// the log opened (see the `CommitObserver` hooks below); this checks
    /// every stream and catches up what unusable saved projections missed.
    pub(crate) fn recover(&self, log: &EventLog<Stream>) -> Result<CatchUp, String> {
        let rebuilt_from_scratch = self.discarded.load(Ordering::Acquire);
        let mut outcome = self.catch_up(log)?;
        outcome.rebuilt_from_scratch = rebuilt_from_scratch;
        outcome.records_applied += self.replayed.load(Ordering::Acquire);
        self.applied_lsn
            .store(log.index().last_lsn(), Ordering::Release);
        if outcome.streams_caught_up > 0 || rebuilt_from_scratch {
            self.dirty.store(true, Ordering::Release);
        }
        Ok(outcome)
    }

    /// Applies, for every stream of the log, the records its projection has
    /// not seen; a projection ahead of the log is rebuilt from the start.
    fn catch_up(&self, log: &EventLog<Stream>) -> Result<CatchUp, String> {
        let mut outcome = CatchUp::default();
        let (heads, erased): (Vec<_>, Vec<_>) = log
            .index()
            .streams()
            .map(|(name, entry)| {
                let erased = entry
                    .state()
                    .as_run()
                    .and_then(|run| run.erasure())
                    .is_some();
                (name.to_owned(), entry.head(), erased)
            })
            .partition(|(_, _, erased)| !erased);
        // An erased run projects nothing: its derived data went with it,
        // and its records are not read again (a compaction deletes them).
        for (stream, _, _) in &erased {
            self.forget(stream);
        }
        let heads: Vec<(String, u64)> = heads
            .into_iter()
            .map(|(stream, head, _)| (stream, head))
            .collect();
        let mut reported = Instant::now();
        for (done, (stream, head)) in heads.iter().enumerate() {
            if reported.elapsed() >= PROGRESS_EVERY {
                reported = Instant::now();
                tracing::info!(
                    streams_done = done,
                    streams = heads.len(),
                    records_applied = outcome.records_applied,
                    "catching up projections"
                );
            }
            let (stream, head) = (stream.as_str(), *head);
            let projected = self.projected_seq(stream);
            let from = if projected > head {
                tracing::warn!(%stream, projected, head, "projection is ahead of the log; rebuilding it");
                self.forget(stream);
                0
            } else {
                projected
            };
            if from < head {
                outcome.streams_caught_up += 1;
                outcome.records_applied +=
                    self.catch_up_stream(log, stream, from, head, &mut reported)?;
            }
        }
        Ok(outcome)
    }

    /// Drops every projection, rebuilds them from the log and writes the
    /// checkpoint file; returns the old and new snapshots so the caller can
    /// say what changed. The log must not be in use by a running service.
    pub fn reproject(
        &self,
        log: &EventLog<Stream>,
    ) -> Result<(ProjectionSnapshot, ProjectionSnapshot), String> {
        let before = self
            .restored
            .lock()
            .expect("restored lock")
            .take()
            .unwrap_or_default();
        *self.lock() = Projections::new();
        self.catch_up(log)?;
        self.dirty.store(true, Ordering::Release);
        self.flush(log)?;
        Ok((before, self.snapshot()))
    }

    fn projected_seq(&self, stream: &str) -> u64 {
        let projections = self.lock();
        let checkpoint = match stream.parse() {
            Ok(StreamId::Run(id)) => projections
                .run(&id.to_string())
                .and_then(|p| p.checkpoint()),
            Ok(StreamId::Worker(id)) => {
                projections.worker(id.as_str()).and_then(|p| p.checkpoint())
            }
            Err(_) => None,
        };
        checkpoint.map_or(0, |c| c.last_seq)
    }

    fn forget(&self, stream: &str) {
        let mut projections = self.lock();
        match stream.parse() {
            Ok(StreamId::Run(id)) => projections.forget_run(&id.to_string()),
            Ok(StreamId::Worker(id)) => projections.forget_worker(id.as_str()),
            Err(_) => {}
        }
    }

    fn catch_up_stream(
        &self,
        log: &EventLog<Stream>,
        stream: &str,
        from: u64,
        head: u64,
        reported: &mut Instant,
    ) -> Result<u64, String> {
        let mut after = from;
        let mut applied = 0;
        while after < head {
            let limit = usize::try_from(head - after)
                .unwrap_or(usize::MAX)
                .min(CATCH_UP_PAGE);
            let results = log
                .read_stream(stream, after, limit, |record| {
                    let mut projections = self.lock();
                    apply_record(&mut projections, &record).map(|()| record.seq)
                })
                .map_err(|e| e.to_string())?;
            for result in results {
                after = result?;
                applied += 1;
            }
            if reported.elapsed() >= PROGRESS_EVERY {
                *reported = Instant::now();
                tracing::info!(%stream, seq = after, head, "catching up projections");
            }
        }
        Ok(applied)
    }

    /// Writes a new snapshot of the log (which carries the projections) if
    /// they changed since the last one, and returns it.
    pub(crate) fn flush(&self, log: &EventLog<Stream>) -> Result<Option<SnapshotWritten>, String> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(None);
        }
        log.write_snapshot().map(Some).map_err(|error| {
            self.dirty.store(true, Ordering::Release);
            let location = log.snapshot_location().unwrap_or_default();
            format!("writing the snapshot to {location}: {error}")
        })
    }

    /// A copy of the projections as of the last batch, encoded later: the
    /// extension of the log's snapshot.
    pub(crate) fn snapshot_extension(&self) -> ExtensionEncoder {
        let projections = self.lock().clone();
        Box::new(move || {
            let json = serde_json::to_string(&projections.snapshot())
                .expect("projection snapshots serialize");
            RawValue::from_string(json).expect("serde_json writes valid JSON")
        })
    }

    /// Log position of the newest record the projections applied.
    pub(crate) fn applied_lsn(&self) -> u64 {
        self.applied_lsn.load(Ordering::Acquire)
    }

    /// The checkpoint of a topic.
    pub fn checkpoint(&self, topic: &str) -> Option<Checkpoint> {
        self.lock().checkpoint(topic).cloned()
    }

    /// The summary of a run.
    pub fn run_summary(&self, run_id: &str) -> Option<RunSummary> {
        self.lock().run(run_id).and_then(|p| p.summary())
    }

    /// The latest drift report of a topic.
    pub(crate) fn drift(&self, topic: &str) -> Option<DriftReport> {
        self.lock().drift(topic).cloned()
    }

    /// A copy of every projection, for `reproject` to compare.
    pub(crate) fn snapshot(&self) -> ProjectionSnapshot {
        self.lock().snapshot()
    }
}

impl CommitObserver<Stream> for ProjectionStore {
    fn committed(&self, records: &[RecordRef<'_>], _index: &Index<Stream>) {
        self.apply_records(records);
    }

    fn snapshot_extension(&self) -> Option<ExtensionEncoder> {
        Some(ProjectionStore::snapshot_extension(self))
    }

    /// The projections of the snapshot the log opens from; unusable ones
    /// are dropped (the catch-up of `recover` rebuilds what they covered).
    fn restoring(&self, extension: Option<&RawValue>) {
        let restored = extension.map(|raw| {
            let snapshot: ProjectionSnapshot =
                serde_json::from_str(raw.get()).map_err(|e| e.to_string())?;
            if self.keeps_restored {
                *self.restored.lock().expect("restored lock") = Some(snapshot.clone());
            }
            Projections::from_snapshot(snapshot).map_err(|e| e.to_string())
        });
        *self.lock() = match restored {
            Some(Ok(projections)) => projections,
            Some(Err(reason)) => {
                tracing::warn!(%reason, "the snapshot's projections are unusable; rebuilding them from the event log");
                self.discarded.store(true, Ordering::Release);
                Projections::new()
            }
            None => Projections::new(),
        };
    }

    fn replayed(&self, record: &RecordRef<'_>) {
        self.apply_records(std::slice::from_ref(record));
        self.replayed.fetch_add(1, Ordering::Relaxed);
    }
}

impl ProjectionStore {
    /// Applies durable records, in log order.
    fn apply_records(&self, records: &[RecordRef<'_>]) {
        let mut projections = self.lock();
        for record in records {
            if let Err(reason) = apply_record(&mut projections, record) {
                // The record is durable; the projection will be rebuilt from
                // it at the next start.
                tracing::error!(stream = %record.stream, seq = record.seq, %reason, "projection failed");
            }
        }
        if let Some(last) = records.last() {
            self.applied_lsn.store(last.lsn, Ordering::Release);
        }
        self.dirty.store(true, Ordering::Release);
    }
}

/// Applies one record to the projection of its stream.
fn apply_record(projections: &mut Projections, record: &RecordRef<'_>) -> Result<(), String> {
    match record.stream.parse() {
        // The tombstone drops everything derived from the run's events.
        Ok(StreamId::Run(run_id)) if is_tombstone(record) => {
            projections.forget_run(&run_id.to_string());
        }
        Ok(StreamId::Run(run_id)) => {
            let event = transition_event(record).map_err(|e| e.to_string())?;
            let applied = projections.apply_run_event(&run_id.to_string(), &event);
            if let Some(rejected) = applied.rejected_transition {
                tracing::warn!(%run_id, seq = record.seq, ?rejected, "run projection refused a transition");
            }
        }
        Ok(StreamId::Worker(worker_id)) => {
            let lifecycle = lifecycle_event(record).map_err(|e| e.to_string())?;
            let status = WorkerAfter::of(record).map_err(|e| e.to_string())?.status;
            projections.apply_worker_event(worker_id.as_str(), &lifecycle, status);
        }
        Err(_) => {}
    }
    Ok(())
}

/// One line per topic whose projection differs between two snapshots.
pub fn describe_changes(before: &ProjectionSnapshot, after: &ProjectionSnapshot) -> Vec<String> {
    let mut topics: Vec<&String> = before
        .checkpoints
        .keys()
        .chain(after.checkpoints.keys())
        .collect();
    topics.sort();
    topics.dedup();
    topics
        .into_iter()
        .filter_map(|topic| {
            let old = (
                before.checkpoints.get(topic),
                before.run_summaries.get(topic),
                before.worker_summaries.get(topic),
            );
            let new = (
                after.checkpoints.get(topic),
                after.run_summaries.get(topic),
                after.worker_summaries.get(topic),
            );
            match (old.0, new.0) {
                (None, Some(c)) => Some(format!("added {topic} (last_seq {})", c.last_seq)),
                (Some(c), None) => Some(format!("removed {topic} (was last_seq {})", c.last_seq)),
                (Some(a), Some(b)) if old != new => Some(format!(
                    "changed {topic} (last_seq {} -> {})",
                    a.last_seq, b.last_seq
                )),
                _ => None,
            }
        })
        .collect()
}
