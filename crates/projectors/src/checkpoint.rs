//! Checkpoints, drift reports and the one checkpoint rule every projector
//! applies events through.

use serde::{Deserialize, Serialize};

/// How far a projector has applied one topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The topic, e.g. `run:{run_id}:events`.
    pub topic: String,
    /// Seq of the last applied event; later events with a seq at or below
    /// it are no-ops.
    pub last_seq: u64,
    /// Type of the last applied event.
    pub last_event_type: String,
    /// `recorded_at` of the last applied event (RFC 3339 UTC).
    pub updated_at: String,
}

/// Why a drift report was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftReason {
    /// An event arrived whose seq skipped past the next expected one.
    SequenceGap,
}

/// A sequence gap seen on a topic: the event was applied, the events in
/// between never were.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftReport {
    /// The topic the gap was seen on.
    pub topic: String,
    /// The seq that should have come next (`last_seen_seq + 1`).
    pub expected_next_seq: u64,
    /// The checkpoint's seq when the gap was seen (0 before any event).
    pub last_seen_seq: u64,
    /// The seq that arrived instead.
    pub incoming_seq: u64,
    /// Always `sequence_gap`.
    pub reason: DriftReason,
    /// The incoming event's `recorded_at`, so the same delivery always
    /// produces the same report.
    pub detected_at: String,
}

/// The position of an event offered to a projector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incoming<'a> {
    /// The event's seq in its topic.
    pub seq: u64,
    /// The event's type.
    pub event_type: &'a str,
    /// When the log recorded the event (RFC 3339 UTC).
    pub recorded_at: &'a str,
}

/// What the checkpoint rule decided for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `seq <= last_seq`: already applied or older; nothing changes.
    Skipped,
    /// `seq == last_seq + 1`: applied.
    Applied,
    /// `seq > last_seq + 1`: applied, and this gap was seen.
    AppliedAfterGap(DriftReport),
}

impl Step {
    /// Whether the event was applied (the projection must fold it).
    pub fn is_applied(&self) -> bool {
        !matches!(self, Self::Skipped)
    }
}

/// The checkpoint rule of the contract. `checkpoint` is `None` before the
/// topic's first event, which is the same as `last_seq = 0`.
///
/// On [`Step::Skipped`] `checkpoint` is unchanged; otherwise it moves to
/// `incoming`. A gap is applied rather than held back, because the log is the
/// source of truth: waiting for seqs that will never come would stall the
/// projection for good, while the drift report tells an operator to look.
pub fn advance(checkpoint: &mut Option<Checkpoint>, topic: &str, incoming: Incoming<'_>) -> Step {
    let last_seq = checkpoint.as_ref().map_or(0, |c| c.last_seq);
    if incoming.seq <= last_seq {
        return Step::Skipped;
    }
    let step = if incoming.seq == last_seq + 1 {
        Step::Applied
    } else {
        Step::AppliedAfterGap(DriftReport {
            topic: topic.to_owned(),
            expected_next_seq: last_seq + 1,
            last_seen_seq: last_seq,
            incoming_seq: incoming.seq,
            reason: DriftReason::SequenceGap,
            detected_at: incoming.recorded_at.to_owned(),
        })
    };
    move_to(checkpoint, topic, incoming);
    step
}

/// Moves the checkpoint to `incoming`, reusing its strings' buffers.
fn move_to(checkpoint: &mut Option<Checkpoint>, topic: &str, incoming: Incoming<'_>) {
    match checkpoint {
        Some(current) => {
            debug_assert_eq!(current.topic, topic);
            current.last_seq = incoming.seq;
            incoming.event_type.clone_into(&mut current.last_event_type);
            incoming.recorded_at.clone_into(&mut current.updated_at);
        }
        None => {
            *checkpoint = Some(Checkpoint {
                topic: topic.to_owned(),
                last_seq: incoming.seq,
                last_event_type: incoming.event_type.to_owned(),
                updated_at: incoming.recorded_at.to_owned(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const TOPIC: &str = "run:r:events";

    fn at(seq: u64) -> String {
        format!("2025-01-01T00:00:{seq:02}Z")
    }

    fn offer(checkpoint: &mut Option<Checkpoint>, seq: u64) -> Step {
        let recorded_at = at(seq);
        let event_type = format!("e{seq}");
        advance(
            checkpoint,
            TOPIC,
            Incoming {
                seq,
                event_type: &event_type,
                recorded_at: &recorded_at,
            },
        )
    }

    #[test]
    fn in_order_duplicate_and_gap() {
        let mut checkpoint = None;
        assert_eq!(offer(&mut checkpoint, 0), Step::Skipped);
        assert_eq!(checkpoint, None);
        assert_eq!(offer(&mut checkpoint, 1), Step::Applied);
        assert_eq!(offer(&mut checkpoint, 1), Step::Skipped);
        let gap = offer(&mut checkpoint, 4);
        assert_eq!(
            gap,
            Step::AppliedAfterGap(DriftReport {
                topic: TOPIC.into(),
                expected_next_seq: 2,
                last_seen_seq: 1,
                incoming_seq: 4,
                reason: DriftReason::SequenceGap,
                detected_at: at(4),
            })
        );
        assert_eq!(offer(&mut checkpoint, 2), Step::Skipped);
        assert_eq!(
            checkpoint,
            Some(Checkpoint {
                topic: TOPIC.into(),
                last_seq: 4,
                last_event_type: "e4".into(),
                updated_at: at(4),
            })
        );
    }

    #[test]
    fn the_drift_report_has_the_contract_shape() {
        let Step::AppliedAfterGap(report) = offer(&mut None, 3) else {
            panic!("a first event at seq 3 is a gap");
        };
        assert_eq!(
            serde_json::to_value(report).unwrap(),
            json!({
                "topic": TOPIC,
                "expected_next_seq": 1,
                "last_seen_seq": 0,
                "incoming_seq": 3,
                "reason": "sequence_gap",
                "detected_at": at(3),
            })
        );
    }

    proptest! {
        /// For any delivery order, duplicates included: the checkpoint ends at
        /// the highest seq delivered, and a drift report comes exactly with
        /// each delivery that skipped past `last_seq + 1`.
        #[test]
        fn any_delivery_ends_at_the_max_and_reports_exactly_the_gaps(
            deliveries in prop::collection::vec(1u64..30, 0..60),
        ) {
            let mut checkpoint = None;
            let mut last_seq = 0;
            for seq in &deliveries {
                let step = offer(&mut checkpoint, *seq);
                match step {
                    Step::Skipped => prop_assert!(*seq <= last_seq),
                    Step::Applied => prop_assert_eq!(*seq, last_seq + 1),
                    Step::AppliedAfterGap(report) => {
                        prop_assert!(*seq > last_seq + 1);
                        prop_assert_eq!(report.last_seen_seq, last_seq);
                        prop_assert_eq!(report.incoming_seq, *seq);
                    }
                }
                last_seq = last_seq.max(*seq);
            }
            let max = deliveries.iter().copied().max();
            prop_assert_eq!(checkpoint.map(|c| c.last_seq), max);
        }
    }
}
