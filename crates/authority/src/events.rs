//! The event-list fold: the rules a whole list of one run's events keeps,
//! as the authority appended them. Imports are checked with it before
//! anything is staged, and fixture runs are checked with it when loaded.

use openagents_run_state::{Applied, RunEvent, RunStateError, RunStatus};

/// Why a list of events is not a run the authority could have appended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventListError {
    /// The list is empty or does not begin with `run.started`.
    #[error("a run's first event is run.started")]
    NotStarted,
    /// The seqs are not 1, 2, 3, … in order.
    #[error("event {index} has seq {found}; expected {expected}")]
    SeqGap {
        /// Position of the event in the list, from 0.
        index: usize,
        /// The seq it should have.
        expected: u64,
        /// The seq it has.
        found: u64,
    },
    /// A transition that had already happened, repeated.
    #[error("event {seq} repeats a transition")]
    RepeatedTransition {
        /// The event's seq.
        seq: u64,
    },
    /// The state machine refuses the event after the ones before it.
    #[error("event {seq}: {source}")]
    Rejected {
        /// The event's seq.
        seq: u64,
        /// The state machine's reason.
        source: RunStateError,
    },
}

/// Folds `events` through the state machine from `created`: seqs 1, 2, 3, …,
/// a first `run.started`, every transition allowed and none repeated.
/// Returns the status the run ends in.
pub fn fold_events(events: &[RunEvent]) -> Result<RunStatus, EventListError> {
    match events.first() {
        Some(first) if first.event_type == openagents_run_state::RUN_STARTED => {}
        _ => return Err(EventListError::NotStarted),
    }
    let mut status = RunStatus::Created;
    for (index, event) in events.iter().enumerate() {
        let expected = index as u64 + 1;
        if event.seq != expected {
            return Err(EventListError::SeqGap {
                index,
                expected,
                found: event.seq,
            });
        }
        let seq = event.seq;
        match status.decide(&event.event_type, &event.payload) {
            Ok(Some(Applied::Moved(next))) => status = next,
            Ok(None) => {}
            Ok(Some(Applied::AlreadyApplied)) => {
                return Err(EventListError::RepeatedTransition { seq });
            }
            Err(source) => return Err(EventListError::Rejected { seq, source }),
        }
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn event(seq: u64, event_type: &str, payload: Value) -> RunEvent {
        RunEvent {
            seq,
            event_type: event_type.into(),
            payload,
            idempotency_key: None,
            recorded_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn folds_a_run_to_its_final_status() {
        let events = [
            event(1, "run.started", json!({})),
            event(2, "tool.call.completed", json!({})),
            event(3, "run.finished", json!({"status": "succeeded"})),
        ];
        assert_eq!(fold_events(&events), Ok(RunStatus::Succeeded));
    }

    #[test]
    fn refuses_what_the_authority_would_not_append() {
        assert_eq!(fold_events(&[]), Err(EventListError::NotStarted));
        let gap = [event(1, "run.started", json!({})), event(3, "x", json!({}))];
        assert!(matches!(
            fold_events(&gap),
            Err(EventListError::SeqGap { index: 1, .. })
        ));
        let repeated = [
            event(1, "run.started", json!({})),
            event(2, "run.started", json!({})),
        ];
        assert_eq!(
            fold_events(&repeated),
            Err(EventListError::RepeatedTransition { seq: 2 })
        );
        let after_end = [
            event(1, "run.started", json!({})),
            event(2, "run.finished", json!({"status": "failed"})),
            event(3, "tool.call.completed", json!({})),
        ];
        assert!(matches!(
            fold_events(&after_end),
            Err(EventListError::Rejected { seq: 3, .. })
        ));
    }
}
