//! The run projector: one run's checkpoint, summary and latest drift report.

use crate::checkpoint::{Checkpoint, DriftReport, Incoming, Step, advance};
use crate::folded::Folded;
use openagents_authority::{StreamKind, topic_name};
use openagents_run_state::{Applied, RunEvent, RunStateError, RunStatus};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The run read model of `GET /internal/v1/projectors/run-summary/{run_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSummary {
    /// The run.
    pub run_id: String,
    /// Status folded from the applied events.
    pub status: RunStatus,
    /// Seq of the last applied event (the checkpoint's `last_seq`).
    pub last_seq: u64,
    /// How many events were applied; below `last_seq` after a gap.
    pub event_count: u64,
    /// `sha256:` of the canonical JSON of
    /// `{run_id, status, last_seq, event_count}`.
    pub projection_hash: String,
    /// `recorded_at` of the last applied event.
    pub updated_at: String,
}

/// The hash the contract defines for a run summary.
pub fn run_projection_hash(
    run_id: &str,
    status: RunStatus,
    last_seq: u64,
    event_count: u64,
) -> String {
    openagents_canonical::digest(&json!({
        "run_id": run_id,
        "status": status.as_str(),
        "last_seq": last_seq,
        "event_count": event_count,
    }))
}

/// What applying one run event did.
#[derive(Debug, Clone, PartialEq)]
pub struct RunApplied {
    /// What the checkpoint rule decided.
    pub step: Step,
    /// Set when the event was applied but the state machine refused it, so
    /// the status did not change. Log events were validated when appended,
    /// so this only happens after a gap hid an earlier transition or when
    /// the log and the state machine disagree; the caller should log it.
    pub rejected_transition: Option<RunStateError>,
}

/// Projects one run's events (`run:{run_id}:events`).
#[derive(Debug, Clone, PartialEq)]
pub struct RunProjector {
    run_id: String,
    topic: String,
    checkpoint: Option<Checkpoint>,
    summary: Option<Folded<RunStatus>>,
    drift: Option<DriftReport>,
}

impl RunProjector {
    /// A projector for `run_id` that has applied nothing yet.
    pub fn new(run_id: &str) -> Self {
        Self {
            run_id: run_id.to_owned(),
            topic: topic_name(StreamKind::Run, run_id),
            checkpoint: None,
            summary: None,
            drift: None,
        }
    }

    /// Rebuilds a projector from parts the snapshot checked to agree.
    pub(crate) fn restore(
        checkpoint: Checkpoint,
        summary: RunSummary,
        drift: Option<DriftReport>,
    ) -> Self {
        Self {
            run_id: summary.run_id.clone(),
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

    /// Applies one event through the checkpoint rule and folds its status.
    ///
    /// A transition the state machine refuses leaves the status as it was
    /// and still counts as applied: the event is in the log, and the
    /// projection must not stall or panic on it.
    pub fn apply(&mut self, event: &RunEvent) -> RunApplied {
        let incoming = Incoming {
            seq: event.seq,
            event_type: &event.event_type,
            recorded_at: &event.recorded_at,
        };
        let step = advance(&mut self.checkpoint, &self.topic, incoming);
        if !step.is_applied() {
            return RunApplied {
                step,
                rejected_transition: None,
            };
        }
        if let Step::AppliedAfterGap(report) = &step {
            self.drift = Some(report.clone());
        }
        let folded = self
            .summary
            .get_or_insert_with(|| Folded::new(RunStatus::Created));
        let rejected_transition = match folded.status.decide(&event.event_type, &event.payload) {
            Ok(Some(Applied::Moved(next))) => {
                folded.status = next;
                None
            }
            Ok(Some(Applied::AlreadyApplied) | None) => None,
            Err(error) => Some(error),
        };
        folded.count(event.seq, &event.recorded_at);
        RunApplied {
            step,
            rejected_transition,
        }
    }

    /// The run this projector follows.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The run's topic, `run:{run_id}:events`.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The checkpoint; `None` until an event was applied.
    pub fn checkpoint(&self) -> Option<&Checkpoint> {
        self.checkpoint.as_ref()
    }

    /// The summary, with its hash; `None` until an event was applied.
    pub fn summary(&self) -> Option<RunSummary> {
        let folded = self.summary.as_ref()?;
        Some(RunSummary {
            run_id: self.run_id.clone(),
            status: folded.status,
            last_seq: folded.last_seq,
            event_count: folded.event_count,
            projection_hash: run_projection_hash(
                &self.run_id,
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
    use crate::test_support::{at, run_event, run_stream};
    use proptest::prelude::*;

    fn project(events: &[RunEvent]) -> RunProjector {
        let mut projector = RunProjector::new("r-1");
        for event in events {
            projector.apply(event);
        }
        projector
    }

    #[test]
    fn a_finished_run_is_summarised_with_the_contract_hash() {
        let projector = project(&run_stream(3));
        let summary = projector.summary().unwrap();
        assert_eq!(summary.status, RunStatus::Succeeded);
        assert_eq!((summary.last_seq, summary.event_count), (3, 3));
        assert_eq!(summary.updated_at, at(3));
        let canonical = r#"{"event_count":3,"last_seq":3,"run_id":"r-1","status":"succeeded"}"#;
        assert_eq!(
            summary.projection_hash,
            openagents_canonical::digest_bytes(canonical.as_bytes())
        );
        let checkpoint = projector.checkpoint().unwrap();
        assert_eq!(checkpoint.topic, "run:r-1:events");
        assert_eq!(checkpoint.last_event_type, "run.finished");
        assert_eq!(projector.drift(), None);
    }

    #[test]
    fn a_refused_transition_keeps_the_status_and_counts_the_event() {
        let mut projector = project(&run_stream(2));
        let applied = projector.apply(&run_event(3, "note", json!({})));
        assert_eq!(applied.step, Step::Applied);
        assert_eq!(
            applied.rejected_transition,
            Some(RunStateError::RunTerminal(RunStatus::Succeeded))
        );
        let summary = projector.summary().unwrap();
        assert_eq!(
            (summary.status, summary.event_count, summary.last_seq),
            (RunStatus::Succeeded, 3, 3)
        );
    }

    #[test]
    fn a_gap_is_applied_counted_and_reported() {
        let stream = run_stream(5);
        let projector = project(&[stream[0].clone(), stream[3].clone(), stream[1].clone()]);
        let summary = projector.summary().unwrap();
        assert_eq!((summary.last_seq, summary.event_count), (4, 2));
        assert_eq!(summary.status, RunStatus::Running);
        let drift = projector.drift().unwrap();
        assert_eq!((drift.expected_next_seq, drift.incoming_seq), (2, 4));
        assert_eq!(drift.detected_at, at(4));
    }

    fn arb_stream() -> impl Strategy<Value = Vec<RunEvent>> {
        (1u64..12).prop_map(run_stream)
    }

    proptest! {
        /// Any delivery (reordered, duplicated, partial): the checkpoint ends
        /// at the highest seq delivered, a drift report comes exactly with
        /// each delivery past `last_seq + 1`, and the summary counts exactly
        /// the applied deliveries.
        #[test]
        fn any_delivery_ends_at_the_max_and_reports_exactly_the_gaps(
            (stream, picks) in arb_stream().prop_flat_map(|stream| {
                let len = stream.len();
                (Just(stream), prop::collection::vec(0..len, 0..30))
            }),
        ) {
            let mut projector = RunProjector::new("r-1");
            let (mut last_seq, mut applied) = (0, 0);
            for event in picks.iter().map(|&i| &stream[i]) {
                let step = projector.apply(event).step;
                let gap = event.seq > last_seq + 1;
                prop_assert_eq!(matches!(step, Step::AppliedAfterGap(_)), gap);
                prop_assert_eq!(step.is_applied(), event.seq > last_seq);
                applied += u64::from(step.is_applied());
                last_seq = last_seq.max(event.seq);
            }
            let max = picks.iter().map(|&i| stream[i].seq).max();
            prop_assert_eq!(projector.checkpoint().map(|c| c.last_seq), max);
            prop_assert_eq!(projector.summary().map(|s| s.event_count), max.map(|_| applied));
        }

        /// In-order delivery with any duplicates injected projects exactly
        /// what a single in-order delivery does.
        #[test]
        fn duplicates_in_an_in_order_delivery_change_nothing(
            (stream, repeats) in arb_stream().prop_flat_map(|stream| {
                let len = stream.len();
                (Just(stream), prop::collection::vec((0..len, 0..len), 0..20))
            }),
        ) {
            let once = project(&stream);
            let mut projector = RunProjector::new("r-1");
            for (index, event) in stream.iter().enumerate() {
                projector.apply(event);
                // Redeliver any already-delivered event, any number of times.
                for &(after, which) in &repeats {
                    if after == index && which <= index {
                        let step = projector.apply(&stream[which]).step;
                        prop_assert_eq!(step, Step::Skipped);
                    }
                }
            }
            prop_assert_eq!(projector, once);
        }
    }
}
