//! All projectors of the service in one value, and its conversion to and
//! from a [`ProjectionSnapshot`].

use crate::checkpoint::{Checkpoint, DriftReport, Step};
use crate::run::{RunApplied, RunProjector, RunSummary, run_projection_hash};
use crate::snapshot::{ProjectionSnapshot, SnapshotError};
use crate::worker::{WorkerProjector, WorkerSummary, worker_projection_hash};
use openagents_authority::{StreamKind, split_topic};
use openagents_run_state::RunEvent;
use openagents_workers::{LifecycleEvent, WorkerStatus};
use std::collections::{BTreeMap, HashMap};

/// Every run and worker projector, keyed by run id and worker id.
///
/// A projector is kept only once it has applied an event, so the projectors
/// and the snapshot always describe the same topics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Projections {
    // Hash maps: every append looks its run up here; the snapshot sorts.
    runs: HashMap<String, RunProjector>,
    workers: HashMap<String, WorkerProjector>,
}

impl Projections {
    /// Projections that have applied nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one event of run `run_id` (see [`RunProjector::apply`]).
    pub fn apply_run_event(&mut self, run_id: &str, event: &RunEvent) -> RunApplied {
        if let Some(projector) = self.runs.get_mut(run_id) {
            return projector.apply(event);
        }
        let mut projector = RunProjector::new(run_id);
        let applied = projector.apply(event);
        if applied.step.is_applied() {
            self.runs.insert(run_id.to_owned(), projector);
        }
        applied
    }

    /// Drops the projection of run `run_id`, so it can be rebuilt from its
    /// first event.
    pub fn forget_run(&mut self, run_id: &str) {
        self.runs.remove(run_id);
    }

    /// Drops the projection of worker `worker_id`, so it can be rebuilt from
    /// its first event.
    pub fn forget_worker(&mut self, worker_id: &str) {
        self.workers.remove(worker_id);
    }

    /// Applies one lifecycle event of worker `worker_id` (see
    /// [`WorkerProjector::apply`]).
    pub fn apply_worker_event(
        &mut self,
        worker_id: &str,
        event: &LifecycleEvent,
        status_after: WorkerStatus,
    ) -> Step {
        if let Some(projector) = self.workers.get_mut(worker_id) {
            return projector.apply(event, status_after);
        }
        let mut projector = WorkerProjector::new(worker_id);
        let step = projector.apply(event, status_after);
        if step.is_applied() {
            self.workers.insert(worker_id.to_owned(), projector);
        }
        step
    }

    /// The projector of run `run_id`, once it applied an event.
    pub fn run(&self, run_id: &str) -> Option<&RunProjector> {
        self.runs.get(run_id)
    }

    /// The projector of worker `worker_id`, once it applied an event.
    pub fn worker(&self, worker_id: &str) -> Option<&WorkerProjector> {
        self.workers.get(worker_id)
    }

    /// The checkpoint of a run or worker topic.
    pub fn checkpoint(&self, topic: &str) -> Option<&Checkpoint> {
        match split_topic(topic)? {
            (StreamKind::Run, run_id) => self.run(run_id)?.checkpoint(),
            (StreamKind::Worker, worker_id) => self.worker(worker_id)?.checkpoint(),
        }
    }

    /// The latest drift report of a run or worker topic.
    pub fn drift(&self, topic: &str) -> Option<&DriftReport> {
        match split_topic(topic)? {
            (StreamKind::Run, run_id) => self.run(run_id)?.drift(),
            (StreamKind::Worker, worker_id) => self.worker(worker_id)?.drift(),
        }
    }

    /// A copy of all state, with every summary's hash, to serialize (the
    /// copy lets the caller encode and write without holding the
    /// projections).
    pub fn snapshot(&self) -> ProjectionSnapshot {
        let mut snapshot = ProjectionSnapshot::default();
        for projector in self.runs.values() {
            let topic = projector.topic();
            file_topic(
                &mut snapshot,
                topic,
                projector.checkpoint(),
                projector.drift(),
            );
            if let Some(summary) = projector.summary() {
                snapshot.run_summaries.insert(topic.to_owned(), summary);
            }
        }
        for projector in self.workers.values() {
            let topic = projector.topic();
            file_topic(
                &mut snapshot,
                topic,
                projector.checkpoint(),
                projector.drift(),
            );
            if let Some(summary) = projector.summary() {
                snapshot.worker_summaries.insert(topic.to_owned(), summary);
            }
        }
        snapshot
    }

    /// Rebuilds projections from a decoded snapshot, checking that its
    /// entries agree: each summary has its topic's checkpoint at the same
    /// seq and time and its own hash, each checkpoint has a summary, and each
    /// drift report belongs to a checkpoint it is consistent with.
    pub fn from_snapshot(snapshot: ProjectionSnapshot) -> Result<Self, SnapshotError> {
        let ProjectionSnapshot {
            mut checkpoints,
            run_summaries,
            worker_summaries,
            mut drift_reports,
        } = snapshot;
        let mut projections = Self::new();
        for (topic, summary) in run_summaries {
            let checkpoint = take_checkpoint(&mut checkpoints, &topic)?;
            check_run_summary(&topic, &checkpoint, &summary)?;
            let drift = take_drift(&mut drift_reports, &checkpoint)?;
            let projector = RunProjector::restore(checkpoint, summary, drift);
            projections
                .runs
                .insert(projector.run_id().to_owned(), projector);
        }
        for (topic, summary) in worker_summaries {
            let checkpoint = take_checkpoint(&mut checkpoints, &topic)?;
            check_worker_summary(&topic, &checkpoint, &summary)?;
            let drift = take_drift(&mut drift_reports, &checkpoint)?;
            let projector = WorkerProjector::restore(checkpoint, summary, drift);
            projections
                .workers
                .insert(projector.worker_id().to_owned(), projector);
        }
        if let Some(topic) = checkpoints.into_keys().next() {
            return Err(inconsistent(topic, "checkpoint without a summary"));
        }
        if let Some(topic) = drift_reports.into_keys().next() {
            return Err(inconsistent(topic, "drift report without a summary"));
        }
        Ok(projections)
    }
}

/// Copies a topic's checkpoint and drift report into the snapshot.
fn file_topic(
    snapshot: &mut ProjectionSnapshot,
    topic: &str,
    checkpoint: Option<&Checkpoint>,
    drift: Option<&DriftReport>,
) {
    if let Some(checkpoint) = checkpoint {
        snapshot
            .checkpoints
            .insert(topic.to_owned(), checkpoint.clone());
    }
    if let Some(drift) = drift {
        snapshot
            .drift_reports
            .insert(topic.to_owned(), drift.clone());
    }
}

/// A [`SnapshotError::Inconsistent`] for `topic`.
fn inconsistent(topic: impl Into<String>, problem: &'static str) -> SnapshotError {
    SnapshotError::Inconsistent {
        topic: topic.into(),
        problem,
    }
}

/// Fails with `problem` unless `holds`.
fn ensure(holds: bool, topic: &str, problem: &'static str) -> Result<(), SnapshotError> {
    if holds {
        Ok(())
    } else {
        Err(inconsistent(topic, problem))
    }
}

/// Removes the checkpoint of a summary's topic.
fn take_checkpoint(
    checkpoints: &mut BTreeMap<String, Checkpoint>,
    topic: &str,
) -> Result<Checkpoint, SnapshotError> {
    let checkpoint = checkpoints
        .remove(topic)
        .ok_or_else(|| inconsistent(topic, "summary without a checkpoint"))?;
    ensure(
        checkpoint.topic == topic,
        topic,
        "checkpoint is filed under another topic",
    )?;
    Ok(checkpoint)
}

/// Removes the drift report of a checkpoint's topic, if any, and checks it
/// describes a gap the checkpoint has moved past.
fn take_drift(
    drift_reports: &mut BTreeMap<String, DriftReport>,
    checkpoint: &Checkpoint,
) -> Result<Option<DriftReport>, SnapshotError> {
    let topic = checkpoint.topic.as_str();
    let Some(drift) = drift_reports.remove(topic) else {
        return Ok(None);
    };
    ensure(
        drift.topic == topic,
        topic,
        "drift report is filed under another topic",
    )?;
    ensure(
        drift.expected_next_seq == drift.last_seen_seq + 1
            && drift.incoming_seq > drift.expected_next_seq
            && drift.incoming_seq <= checkpoint.last_seq,
        topic,
        "drift report does not describe a gap before the checkpoint",
    )?;
    Ok(Some(drift))
}

/// The agreement every summary owes its checkpoint.
fn check_counts(
    topic: &str,
    checkpoint: &Checkpoint,
    last_seq: u64,
    event_count: u64,
    updated_at: &str,
) -> Result<(), SnapshotError> {
    ensure(
        last_seq == checkpoint.last_seq && updated_at == checkpoint.updated_at,
        topic,
        "summary and checkpoint disagree",
    )?;
    ensure(
        (1..=last_seq).contains(&event_count),
        topic,
        "event_count is not between 1 and last_seq",
    )
}

/// Checks a run summary against its key, checkpoint and hash.
fn check_run_summary(
    topic: &str,
    checkpoint: &Checkpoint,
    summary: &RunSummary,
) -> Result<(), SnapshotError> {
    ensure(
        split_topic(topic) == Some((StreamKind::Run, summary.run_id.as_str())),
        topic,
        "run summary is filed under another topic",
    )?;
    check_counts(
        topic,
        checkpoint,
        summary.last_seq,
        summary.event_count,
        &summary.updated_at,
    )?;
    let hash = run_projection_hash(
        &summary.run_id,
        summary.status,
        summary.last_seq,
        summary.event_count,
    );
    ensure(
        hash == summary.projection_hash,
        topic,
        "projection_hash does not match the summary",
    )
}

/// Checks a worker summary against its key, checkpoint and hash.
fn check_worker_summary(
    topic: &str,
    checkpoint: &Checkpoint,
    summary: &WorkerSummary,
) -> Result<(), SnapshotError> {
    ensure(
        split_topic(topic) == Some((StreamKind::Worker, summary.worker_id.as_str())),
        topic,
        "worker summary is filed under another topic",
    )?;
    check_counts(
        topic,
        checkpoint,
        summary.last_seq,
        summary.event_count,
        &summary.updated_at,
    )?;
    let hash = worker_projection_hash(
        &summary.worker_id,
        summary.status,
        summary.last_seq,
        summary.event_count,
    );
    ensure(
        hash == summary.projection_hash,
        topic,
        "projection_hash does not match the summary",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{heartbeat, run_event, run_stream};
    use openagents_run_state::RunStatus;
    use serde_json::json;

    /// Projections with two runs (one with a gap) and a worker.
    fn sample() -> Projections {
        let mut projections = Projections::new();
        for event in run_stream(3) {
            projections.apply_run_event("r-1", &event);
        }
        projections.apply_run_event("r-2", &run_event(1, "run.started", json!({})));
        projections.apply_run_event("r-2", &run_event(4, "note", json!({"n": 1})));
        projections.apply_worker_event("w-1", &heartbeat(1), WorkerStatus::Running);
        projections
    }

    #[test]
    fn lookups_by_topic_reach_the_right_projector() {
        let projections = sample();
        assert_eq!(
            projections.checkpoint("run:r-1:events").unwrap().last_seq,
            3
        );
        assert_eq!(
            projections
                .checkpoint("worker:w-1:lifecycle")
                .unwrap()
                .last_seq,
            1
        );
        assert_eq!(projections.drift("run:r-2:events").unwrap().incoming_seq, 4);
        assert_eq!(projections.drift("run:r-1:events"), None);
        assert_eq!(projections.checkpoint("run:unknown:events"), None);
        assert_eq!(projections.checkpoint("runtime.codex_worker_events"), None);
        assert_eq!(
            projections
                .run("r-2")
                .unwrap()
                .summary()
                .unwrap()
                .event_count,
            2
        );
    }

    #[test]
    fn a_skipped_first_event_creates_no_projector() {
        let mut projections = Projections::new();
        let applied = projections.apply_run_event("r-0", &run_event(0, "note", json!({})));
        assert_eq!(applied.step, Step::Skipped);
        assert_eq!(projections, Projections::new());
    }

    #[test]
    fn a_snapshot_restores_the_same_projections() {
        let projections = sample();
        let snapshot = projections.snapshot();
        assert_eq!(snapshot.checkpoints.len(), 3);
        assert_eq!(
            snapshot.drift_reports.keys().collect::<Vec<_>>(),
            ["run:r-2:events"]
        );
        assert_eq!(Projections::from_snapshot(snapshot).unwrap(), projections);
    }

    fn refused(snapshot: ProjectionSnapshot) -> (String, &'static str) {
        match Projections::from_snapshot(snapshot) {
            Err(SnapshotError::Inconsistent { topic, problem }) => (topic, problem),
            other => panic!("expected an inconsistency, got {other:?}"),
        }
    }

    /// A change that breaks one rule of a snapshot.
    type Edit = fn(&mut ProjectionSnapshot);

    #[test]
    fn inconsistent_snapshots_are_refused_naming_the_topic() {
        let topic = "run:r-1:events".to_owned();
        let edits: [(Edit, &str); 7] = [
            (
                |s| drop(s.checkpoints.remove("run:r-1:events")),
                "summary without a checkpoint",
            ),
            (
                |s| drop(s.run_summaries.remove("run:r-1:events")),
                "checkpoint without a summary",
            ),
            (
                |s| s.checkpoints.get_mut("run:r-1:events").unwrap().last_seq = 9,
                "summary and checkpoint disagree",
            ),
            (
                |s| s.run_summaries.get_mut("run:r-1:events").unwrap().status = RunStatus::Failed,
                "projection_hash does not match the summary",
            ),
            (
                |s| s.run_summaries.get_mut("run:r-1:events").unwrap().run_id = "r-9".into(),
                "run summary is filed under another topic",
            ),
            (
                |s| {
                    let mut drift = s.drift_reports.remove("run:r-2:events").unwrap();
                    drift.topic = "run:r-1:events".into();
                    drift.incoming_seq = 7;
                    s.drift_reports.insert("run:r-1:events".into(), drift);
                },
                "drift report does not describe a gap before the checkpoint",
            ),
            (
                |s| {
                    let summary = s.run_summaries.get_mut("run:r-1:events").unwrap();
                    summary.event_count = 0;
                    summary.projection_hash =
                        run_projection_hash("r-1", summary.status, summary.last_seq, 0);
                },
                "event_count is not between 1 and last_seq",
            ),
        ];
        for (edit, problem) in edits {
            let mut snapshot = sample().snapshot();
            edit(&mut snapshot);
            assert_eq!(refused(snapshot), (topic.clone(), problem));
        }
    }

    #[test]
    fn orphan_drift_reports_are_refused() {
        let mut snapshot = sample().snapshot();
        let drift = snapshot.drift_reports["run:r-2:events"].clone();
        snapshot.drift_reports.insert("run:zz:events".into(), drift);
        assert_eq!(
            refused(snapshot),
            ("run:zz:events".into(), "drift report without a summary")
        );
    }
}
