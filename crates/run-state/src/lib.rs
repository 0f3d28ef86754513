//! The run state machine of the runtime contract.
//!
//! This crate owns three rules and nothing else:
//!
//! - which event types are transitions ([`RunTransition::from_event`]),
//! - the transition table ([`RunStatus::apply`]),
//! - which statuses seal a run ([`RunStatus::is_terminal`]).
//!
//! It does no I/O and holds no state; callers fold events through
//! [`RunStatus::apply`] in sequence order.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

/// Event type that starts a run.
pub const RUN_STARTED: &str = "run.started";
/// Event type that asks a run to cancel.
pub const RUN_CANCEL_REQUESTED: &str = "run.cancel_requested";
/// Event type that ends a run; `payload.status` says how.
pub const RUN_FINISHED: &str = "run.finished";

/// One event of a run, exactly as the HTTP contract shows it.
///
/// Field order is the wire order; receipts and replays hash this shape, so it
/// must not change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEvent {
    /// Position in the run's stream: 1, 2, 3, … without gaps.
    pub seq: u64,
    /// The event's type, e.g. `run.started` or `tool.call.completed`.
    pub event_type: String,
    /// The event's body as the client sent it (`{}` when it sent none).
    pub payload: Value,
    /// The client's idempotency key, trimmed; `None` when it sent none.
    pub idempotency_key: Option<String>,
    /// When the authority accepted the event (RFC 3339 UTC).
    pub recorded_at: String,
}

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Created but not started.
    Created,
    /// Started and not yet asked to stop.
    Running,
    /// Asked to cancel; may still finish as failed or canceled.
    Canceling,
    /// Ended with a cancellation (terminal).
    Canceled,
    /// Ended successfully (terminal).
    Succeeded,
    /// Ended with a failure (terminal).
    Failed,
}

/// The transitions an event can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RunTransition {
    /// `run.started`.
    Start,
    /// `run.cancel_requested`.
    RequestCancel,
    /// `run.finished` with status `succeeded`.
    FinishSucceeded,
    /// `run.finished` with status `failed`.
    FinishFailed,
    /// `run.finished` with status `canceled` (or `cancelled`).
    FinishCanceled,
}

/// What applying a transition to a status does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The status changes (or is confirmed for the first time) to this one;
    /// the event is appended.
    Moved(RunStatus),
    /// The run already made this transition: the request is answered with the
    /// event that first made it, and nothing is appended.
    AlreadyApplied,
}

/// Why an event is not accepted by the state machine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunStateError {
    /// `run.finished` without a string `payload.status`.
    #[error("run.finished requires payload.status (succeeded, failed or canceled)")]
    MissingTerminalStatus,
    /// `run.finished` with a status that is not terminal.
    #[error("run.finished payload.status {0:?} is not one of succeeded, failed, canceled")]
    InvalidTerminalStatus(String),
    /// The table has no entry for this status and transition.
    #[error("transition {transition:?} is not allowed from status {from}")]
    InvalidTransition {
        /// Status of the run when the event arrived.
        from: RunStatus,
        /// Transition the event asked for.
        transition: RunTransition,
    },
    /// The run is sealed and accepts no further event of this kind.
    #[error("run is {0} and accepts no further events")]
    RunTerminal(RunStatus),
}

impl RunStateError {
    /// The contract's `reason_code` for this rejection.
    pub fn reason_code(&self) -> &'static str {
        match self {
            Self::MissingTerminalStatus => "missing_terminal_status",
            Self::InvalidTerminalStatus(_) => "invalid_terminal_status",
            Self::InvalidTransition { .. } => "invalid_transition",
            Self::RunTerminal(_) => "run_terminal",
        }
    }
}

impl RunTransition {
    /// Classifies an event: `Ok(None)` for a non-transition event,
    /// `Ok(Some(_))` for a transition, an error for a malformed `run.finished`.
    pub fn from_event(event_type: &str, payload: &Value) -> Result<Option<Self>, RunStateError> {
        match event_type {
            RUN_STARTED => Ok(Some(Self::Start)),
            RUN_CANCEL_REQUESTED => Ok(Some(Self::RequestCancel)),
            RUN_FINISHED => match payload.get("status").and_then(Value::as_str) {
                None => Err(RunStateError::MissingTerminalStatus),
                Some("succeeded") => Ok(Some(Self::FinishSucceeded)),
                Some("failed") => Ok(Some(Self::FinishFailed)),
                Some("canceled" | "cancelled") => Ok(Some(Self::FinishCanceled)),
                Some(other) => Err(RunStateError::InvalidTerminalStatus(other.to_owned())),
            },
            _ => Ok(None),
        }
    }
}

impl RunStatus {
    /// Every status, for exhaustive tests and documentation.
    pub const ALL: [RunStatus; 6] = [
        Self::Created,
        Self::Running,
        Self::Canceling,
        Self::Canceled,
        Self::Succeeded,
        Self::Failed,
    ];

    /// A sealed run accepts no new events and its receipt never changes.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Canceled | Self::Succeeded | Self::Failed)
    }

    /// The contract's name of the status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Running => "running",
            Self::Canceling => "canceling",
            Self::Canceled => "canceled",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    /// The transition table of the contract.
    pub fn apply(self, transition: RunTransition) -> Result<Applied, RunStateError> {
        use RunStatus::*;
        use RunTransition::*;
        let moved = |to| Ok(Applied::Moved(to));
        match (self, transition) {
            (Created, Start) => moved(Running),
            (Created | Running, RequestCancel) => moved(Canceling),
            (Created | Running, FinishSucceeded) => moved(Succeeded),
            (Created | Running | Canceling, FinishFailed) => moved(Failed),
            (Created | Running | Canceling, FinishCanceled) => moved(Canceled),
            (Running, Start)
            | (Canceling, RequestCancel)
            | (Succeeded, FinishSucceeded)
            | (Failed, FinishFailed)
            | (Canceled, FinishCanceled) => Ok(Applied::AlreadyApplied),
            (from, transition) => Err(RunStateError::InvalidTransition { from, transition }),
        }
    }

    /// Checks whether a non-transition event may be appended: only while the
    /// run is not sealed.
    pub fn accepts_plain_event(self) -> Result<(), RunStateError> {
        if self.is_terminal() {
            Err(RunStateError::RunTerminal(self))
        } else {
            Ok(())
        }
    }

    /// Decides an event of any kind against this status: the one entry point
    /// the authority uses, so the order of the checks lives here.
    ///
    /// `Ok(None)` means a non-transition event that may be appended.
    pub fn decide(
        self,
        event_type: &str,
        payload: &Value,
    ) -> Result<Option<Applied>, RunStateError> {
        match RunTransition::from_event(event_type, payload)? {
            None => self.accepts_plain_event().map(|()| None),
            Some(transition) => match self.apply(transition) {
                Err(RunStateError::InvalidTransition { from, .. }) if from.is_terminal() => {
                    Err(RunStateError::RunTerminal(from))
                }
                other => other.map(Some),
            },
        }
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const TRANSITIONS: [RunTransition; 5] = [
        RunTransition::Start,
        RunTransition::RequestCancel,
        RunTransition::FinishSucceeded,
        RunTransition::FinishFailed,
        RunTransition::FinishCanceled,
    ];

    /// The contract's table written out cell by cell, independent of `apply`.
    fn expected(from: RunStatus, t: RunTransition) -> Option<Applied> {
        use Applied::*;
        use RunStatus::*;
        let row: [Option<Applied>; 5] = match from {
            Created => [
                Some(Moved(Running)),
                Some(Moved(Canceling)),
                Some(Moved(Succeeded)),
                Some(Moved(Failed)),
                Some(Moved(Canceled)),
            ],
            Running => [
                Some(AlreadyApplied),
                Some(Moved(Canceling)),
                Some(Moved(Succeeded)),
                Some(Moved(Failed)),
                Some(Moved(Canceled)),
            ],
            Canceling => [
                None,
                Some(AlreadyApplied),
                None,
                Some(Moved(Failed)),
                Some(Moved(Canceled)),
            ],
            Succeeded => [None, None, Some(AlreadyApplied), None, None],
            Failed => [None, None, None, Some(AlreadyApplied), None],
            Canceled => [None, None, None, None, Some(AlreadyApplied)],
        };
        row[TRANSITIONS.iter().position(|x| *x == t).unwrap()]
    }

    fn event_for(t: RunTransition) -> (&'static str, Value) {
        match t {
            RunTransition::Start => (RUN_STARTED, json!({})),
            RunTransition::RequestCancel => (RUN_CANCEL_REQUESTED, json!({})),
            RunTransition::FinishSucceeded => (RUN_FINISHED, json!({"status": "succeeded"})),
            RunTransition::FinishFailed => (RUN_FINISHED, json!({"status": "failed"})),
            RunTransition::FinishCanceled => (RUN_FINISHED, json!({"status": "cancelled"})),
        }
    }

    fn arb_status() -> impl Strategy<Value = RunStatus> {
        prop::sample::select(RunStatus::ALL.to_vec())
    }

    fn arb_transition() -> impl Strategy<Value = RunTransition> {
        prop::sample::select(TRANSITIONS.to_vec())
    }

    proptest! {
        #[test]
        fn every_cell_of_the_table_matches_the_contract(from in arb_status(), t in arb_transition()) {
            let (event_type, payload) = event_for(t);
            let decided = from.decide(event_type, &payload);
            match expected(from, t) {
                Some(applied) => prop_assert_eq!(decided, Ok(Some(applied))),
                None if from.is_terminal() => prop_assert_eq!(decided, Err(RunStateError::RunTerminal(from))),
                None => prop_assert_eq!(
                    decided.map_err(|e| e.reason_code()),
                    Err("invalid_transition")
                ),
            }
        }

        #[test]
        fn terminal_statuses_absorb_every_event_sequence(
            start in arb_status(),
            events in prop::collection::vec(arb_transition(), 0..20),
        ) {
            let mut status = start;
            let mut sealed = status.is_terminal();
            for t in events {
                let (event_type, payload) = event_for(t);
                if let Ok(Some(Applied::Moved(next))) = status.decide(event_type, &payload) {
                    prop_assert!(!sealed, "a sealed run moved again");
                    status = next;
                }
                sealed |= status.is_terminal();
                if sealed {
                    let plain = status.decide("note", &Value::Null);
                    prop_assert!(plain.is_err());
                }
            }
        }

        #[test]
        fn repeating_an_applied_transition_is_idempotent(from in arb_status(), t in arb_transition()) {
            if let Ok(Applied::Moved(next)) = from.apply(t) {
                prop_assert_eq!(next.apply(t), Ok(Applied::AlreadyApplied));
            }
        }
    }

    #[test]
    fn finish_payload_errors_carry_their_reason_codes() {
        let missing = RunStatus::Running.decide(RUN_FINISHED, &json!({}));
        assert_eq!(
            missing.unwrap_err().reason_code(),
            "missing_terminal_status"
        );
        let invalid = RunStatus::Running.decide(RUN_FINISHED, &json!({"status": "done"}));
        assert_eq!(
            invalid.unwrap_err().reason_code(),
            "invalid_terminal_status"
        );
    }

    #[test]
    fn plain_events_do_not_change_status() {
        assert_eq!(
            RunStatus::Running.decide("tool.call.completed", &json!({})),
            Ok(None)
        );
    }
}
