//! Fixture event logs: the `run.json` files under `fixtures/runs/<name>/` that
//! the golden receipts and replays are built from.
//!
//! A fixture is one JSON object `{"run": RunHeader, "events": [RunEvent...]}`
//! holding a whole run in memory (fixtures are small by design). Loading one
//! checks that it is a log the service could have written (the authority's
//! event-list fold: a first `run.started`, seqs 1, 2, 3, … without gaps,
//! every event accepted by the state machine) and that the declared status
//! is the one the events fold to. The xtask and the snapshot
//! tests both load fixtures here, so the format has one home.

use crate::header::RunHeader;
use crate::receipt::{Receipt, build_receipt};
use crate::replay::write_replay;
use openagents_authority::{EventListError, fold_events};
use openagents_run_state::{RunEvent, RunStatus};
use serde::Deserialize;
use std::convert::Infallible;

/// A run and all its events, checked to be a log the service could write.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureRun {
    /// The run's attributes.
    run: RunHeader,
    /// Every event of the run, in seq order.
    events: Vec<RunEvent>,
}

/// Why a `run.json` is not a usable fixture.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FixtureError {
    /// The file is not JSON of the fixture shape.
    #[error("not a fixture run: {0}")]
    Json(#[from] serde_json::Error),
    /// The events are not a run the authority could have appended (see
    /// `openagents_authority::fold_events`).
    #[error("the events are not a run the service could write: {0}")]
    Events(#[from] EventListError),
    /// `run.status` is not the status the events fold to.
    #[error("run.status is {declared} but the events fold to {folded}")]
    StatusMismatch {
        /// The status the fixture declares.
        declared: RunStatus,
        /// The status the events lead to.
        folded: RunStatus,
    },
}

impl FixtureRun {
    /// Parses a `run.json` and checks it (see the module documentation).
    pub fn from_json(bytes: &[u8]) -> Result<Self, FixtureError> {
        let fixture: Self = serde_json::from_slice(bytes)?;
        let folded = fold_events(&fixture.events)?;
        if folded != fixture.run.status {
            return Err(FixtureError::StatusMismatch {
                declared: fixture.run.status,
                folded,
            });
        }
        Ok(fixture)
    }

    /// The run's receipt.
    pub fn receipt(&self) -> Receipt {
        build_receipt(&self.run, self.infallible_events())
            .expect("seqs were checked when the fixture was loaded")
    }

    /// The run's replay, as bytes.
    pub fn replay(&self) -> Vec<u8> {
        let mut out = Vec::new();
        write_replay(&mut out, &self.run, self.infallible_events())
            .expect("seqs were checked when the fixture was loaded and a Vec accepts every write");
        out
    }

    /// The events as the builders read them, from a source that cannot fail.
    fn infallible_events(&self) -> impl Iterator<Item = Result<RunEvent, Infallible>> + '_ {
        self.events.iter().cloned().map(Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn fixture(status: &str, events: Value) -> Vec<u8> {
        json!({
            "run": {"id": "r", "created_at": "t0", "metadata": {}, "status": status},
            "events": events,
        })
        .to_string()
        .into_bytes()
    }

    fn event(seq: u64, event_type: &str, payload: Value) -> Value {
        json!({"seq": seq, "event_type": event_type, "payload": payload, "idempotency_key": null, "recorded_at": "t"})
    }

    #[test]
    fn a_consistent_fixture_loads() {
        let events = json!([
            event(1, "run.started", json!({})),
            event(2, "run.finished", json!({"status": "cancelled"}))
        ]);
        assert!(FixtureRun::from_json(&fixture("canceled", events)).is_ok());
    }

    #[test]
    fn a_declared_status_the_events_do_not_reach_is_refused() {
        let events = json!([event(1, "run.started", json!({}))]);
        let error = FixtureRun::from_json(&fixture("succeeded", events)).unwrap_err();
        assert!(matches!(
            error,
            FixtureError::StatusMismatch {
                declared: RunStatus::Succeeded,
                folded: RunStatus::Running
            }
        ));
    }

    #[test]
    fn a_seq_gap_is_refused() {
        let events = json!([
            event(1, "run.started", json!({})),
            event(3, "note", json!({}))
        ]);
        let error = FixtureRun::from_json(&fixture("running", events)).unwrap_err();
        assert!(matches!(
            error,
            FixtureError::Events(EventListError::SeqGap {
                index: 1,
                expected: 2,
                found: 3
            })
        ));
    }

    #[test]
    fn events_the_authority_would_not_append_are_refused() {
        let repeated = json!([
            event(1, "run.started", json!({})),
            event(2, "run.started", json!({}))
        ]);
        let error = FixtureRun::from_json(&fixture("running", repeated)).unwrap_err();
        assert!(matches!(
            error,
            FixtureError::Events(EventListError::RepeatedTransition { seq: 2 })
        ));
        let after_seal = json!([
            event(1, "run.started", json!({})),
            event(2, "run.finished", json!({"status": "failed"})),
            event(3, "note", json!({}))
        ]);
        let error = FixtureRun::from_json(&fixture("failed", after_seal)).unwrap_err();
        assert!(matches!(
            error,
            FixtureError::Events(EventListError::Rejected { seq: 3, .. })
        ));
        let unstarted = json!([event(1, "run.finished", json!({"status": "failed"}))]);
        let error = FixtureRun::from_json(&fixture("failed", unstarted)).unwrap_err();
        assert!(matches!(
            error,
            FixtureError::Events(EventListError::NotStarted)
        ));
    }
}
