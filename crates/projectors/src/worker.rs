//! The worker projector: one worker's lifecycle checkpoint, summary and
//! latest drift report.

use crate::checkpoint::{Checkpoint, DriftReport, Incoming, Step, advance};
use crate::folded::Folded;
use openagents_authority::{StreamKind, topic_name};
use openagents_workers::{LifecycleEvent, WorkerStatus};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The read model of a worker lifecycle topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerSummary {
    /// The worker.
    pub worker_id: String,
    /// The worker's status after the last applied event.
    pub status: WorkerStatus,
    /// Seq of the last applied lifecycle event.
    pub last_seq: u64,
    /// How many lifecycle events were applied; below `last_seq` after a gap.
    pub event_count: u64,
    /// `sha256:` of the canonical JSON of
    /// `{worker_id, status, last_seq, event_count}`, built like the run
    /// summary's hash.
    pub projection_hash: String,
    /// `recorded_at` of the last applied event.
    pub updated_at: String,
}

/// The hash of a worker summary.
pub fn worker_projection_hash(
    worker_id: &str,
    status: WorkerStatus,
    last_seq: u64,
    event_count: u64,
) -> String {
    openagents_canonical::digest(&json!({
        "worker_id": worker_id,
        "status": status.as_str(),
        "last_seq": last_seq,
        "event_count": event_count,
    }))
}

/// Projects one worker's lifecycle (`worker:{worker_id}:lifecycle`).
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerProjector {
    worker_id: String,
    topic: String,
    checkpoint: Option<Checkpoint>,
    summary: Option<Folded<WorkerStatus>>,
    drift: Option<DriftReport>,
}

impl WorkerProjector {
    /// A projector for `worker_id` that has applied nothing yet.
    pub fn new(worker_id: &str) -> Self {
        Self {
            worker_id: worker_id.to_owned(),
            topic: topic_name(StreamKind::Worker, worker_id),
            checkpoint: None,
            summary: None,
            drift: None,
        }
    }

    /// Rebuilds a projector from parts the snapshot checked to agree.
    pub(crate) fn restore(
        checkpoint: Checkpoint,
        summary: WorkerSummary,
        drift: Option<DriftReport>,
    ) -> Self {
        Self {
            worker_id: summary.worker_id.clone(),
            topic: checkpoint.topic.clone(),
            checkpoint: Some(checkpoint),
            summary: Some(Folded {
                status: summary.status,
                last_seq: summary.last_seq,
                event_count: summary.event_count,
                updated_at: summary.updated_at,
            }),
            drift,
        }
    }

    /// Applies one lifecycle event through the checkpoint rule.
    ///
    /// `status_after` is the worker's status once the event is folded
    /// ([`openagents_workers::WorkerState::status`]). The worker fold owns
    /// the status rules; taking its answer keeps them in one place instead
    /// of re-deriving a status here.
    pub fn apply(&mut self, event: &LifecycleEvent, status_after: WorkerStatus) -> Step {
        let incoming = Incoming {
            seq: event.seq,
            event_type: event.event.event_type().as_str(),
            recorded_at: &event.recorded_at,
        };
        let step = advance(&mut self.checkpoint, &self.topic, incoming);
        if !step.is_applied() {
            return step;
        }
        if let Step::AppliedAfterGap(report) = &step {
            self.drift = Some(report.clone());
        }
        let folded = self
            .summary
            .get_or_insert_with(|| Folded::new(status_after));
        folded.status = status_after;
        folded.count(event.seq, &event.recorded_at);
        step
    }

    /// The worker this projector follows.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// The worker's topic, `worker:{worker_id}:lifecycle`.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The checkpoint; `None` until an event was applied.
    pub fn checkpoint(&self) -> Option<&Checkpoint> {
        self.checkpoint.as_ref()
    }

    /// The summary, with its hash; `None` until an event was applied.
    pub fn summary(&self) -> Option<WorkerSummary> {
        let folded = self.summary.as_ref()?;
        Some(WorkerSummary {
            worker_id: self.worker_id.clone(),
            status: folded.status,
            last_seq: folded.last_seq,
            event_count: folded.event_count,
            projection_hash: worker_projection_hash(
                &self.worker_id,
                folded.status,
                folded.last_seq,
                folded.event_count,
            ),
            updated_at: folded.updated_at.clone(),
        })
    }

    /// The latest drift report; `None` when no gap was seen.
    pub fn drift(&self) -> Option<&DriftReport> {
        self.drift.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{at, heartbeat};

    #[test]
    fn the_summary_follows_the_status_the_fold_reports() {
        let mut projector = WorkerProjector::new("w-1");
        assert_eq!(
            projector.apply(&heartbeat(1), WorkerStatus::Running),
            Step::Applied
        );
        assert_eq!(
            projector.apply(&heartbeat(1), WorkerStatus::Failed),
            Step::Skipped
        );
        assert!(matches!(
            projector.apply(&heartbeat(3), WorkerStatus::Stopped),
            Step::AppliedAfterGap(_)
        ));
        let summary = projector.summary().unwrap();
        assert_eq!(summary.status, WorkerStatus::Stopped);
        assert_eq!((summary.last_seq, summary.event_count), (3, 2));
        assert_eq!(summary.updated_at, at(3));
        assert_eq!(
            summary.projection_hash,
            worker_projection_hash("w-1", WorkerStatus::Stopped, 3, 2)
        );
        let checkpoint = projector.checkpoint().unwrap();
        assert_eq!(checkpoint.topic, "worker:w-1:lifecycle");
        assert_eq!(checkpoint.last_event_type, "worker.heartbeat");
        assert_eq!(projector.drift().unwrap().expected_next_seq, 2);
    }
}
