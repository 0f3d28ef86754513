//! Worker statuses and the one table of allowed status changes.
//!
//! The status route, the lifecycle fold and every test ask
//! [`WorkerStatus::transition`]; no other code decides whether a worker may
//! move from one status to another.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where a worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerStatus {
    /// Registered and booting; not yet taking work.
    Starting,
    /// Taking work.
    Running,
    /// Asked to stop; finishing what it has.
    Stopping,
    /// Stopped cleanly; may be started again.
    Stopped,
    /// Died or gave up; may be started again.
    Failed,
}

/// A status change the table does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("worker status cannot change from {from} to {to}")]
pub struct TransitionError {
    /// Status of the worker when the change was asked for.
    pub from: WorkerStatus,
    /// Status that was asked for.
    pub to: WorkerStatus,
}

impl TransitionError {
    /// The contract's `reason_code` for this rejection.
    pub fn reason_code(&self) -> &'static str {
        "invalid_transition"
    }
}

/// A status name that is not one of the contract's five.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown worker status {0:?}; expected starting, running, stopping, stopped or failed")]
pub struct UnknownStatus(pub String);

impl WorkerStatus {
    /// Every status, for exhaustive tests and documentation.
    pub const ALL: [WorkerStatus; 5] = [
        Self::Starting,
        Self::Running,
        Self::Stopping,
        Self::Stopped,
        Self::Failed,
    ];

    /// The contract's name of the status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
        }
    }

    /// Whether a worker in this status is expected to send heartbeats.
    pub fn is_live(self) -> bool {
        matches!(self, Self::Starting | Self::Running | Self::Stopping)
    }

    /// The transition table of the contract: `Ok(to)` when a worker in
    /// `self` may move to `to`.
    ///
    /// Asking for the status the worker already has is always allowed, so a
    /// worker that repeats its last report is not punished for the retry.
    pub fn transition(self, to: WorkerStatus) -> Result<WorkerStatus, TransitionError> {
        use WorkerStatus::*;
        let allowed = self == to
            || matches!(
                (self, to),
                (Starting, Running | Stopping | Failed)
                    | (Running, Stopping | Stopped | Failed)
                    | (Stopping, Stopped | Failed)
                    | (Stopped | Failed, Starting | Running)
            );
        if allowed {
            Ok(to)
        } else {
            Err(TransitionError { from: self, to })
        }
    }
}

impl FromStr for WorkerStatus {
    type Err = UnknownStatus;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
            .ok_or_else(|| UnknownStatus(text.to_owned()))
    }
}

impl fmt::Display for WorkerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The contract's list written out pair by pair, independent of
    /// `transition`.
    fn contract_allows(from: WorkerStatus, to: WorkerStatus) -> bool {
        let allowed: &[(&str, &[&str])] = &[
            ("starting", &["starting", "running", "stopping", "failed"]),
            ("running", &["running", "stopping", "stopped", "failed"]),
            ("stopping", &["stopping", "stopped", "failed"]),
            ("stopped", &["stopped", "starting", "running"]),
            ("failed", &["failed", "starting", "running"]),
        ];
        allowed
            .iter()
            .any(|(f, tos)| *f == from.as_str() && tos.contains(&to.as_str()))
    }

    fn arb_status() -> impl Strategy<Value = WorkerStatus> {
        prop::sample::select(WorkerStatus::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn every_pair_matches_the_contract(from in arb_status(), to in arb_status()) {
            let result = from.transition(to);
            if contract_allows(from, to) {
                prop_assert_eq!(result, Ok(to));
            } else {
                let error = result.unwrap_err();
                prop_assert_eq!(error, TransitionError { from, to });
                prop_assert_eq!(error.reason_code(), "invalid_transition");
            }
        }

        #[test]
        fn same_status_is_always_allowed(status in arb_status()) {
            prop_assert_eq!(status.transition(status), Ok(status));
        }

        #[test]
        fn names_round_trip_through_text_and_serde(status in arb_status()) {
            prop_assert_eq!(status.as_str().parse::<WorkerStatus>(), Ok(status));
            let json = serde_json::to_value(status).unwrap();
            prop_assert_eq!(json, serde_json::Value::from(status.as_str()));
        }
    }

    #[test]
    fn the_table_allows_exactly_the_contract_pairs() {
        let allowed = WorkerStatus::ALL
            .into_iter()
            .flat_map(|from| WorkerStatus::ALL.map(|to| (from, to)))
            .filter(|(from, to)| from.transition(*to).is_ok())
            .inspect(|(from, to)| assert!(contract_allows(*from, *to), "{from} -> {to}"))
            .count();
        // Five same-status pairs plus 3 + 3 + 2 + 2 + 2 changes.
        assert_eq!(allowed, 17);
    }

    #[test]
    fn unknown_names_are_rejected() {
        assert_eq!(
            "Running".parse::<WorkerStatus>(),
            Err(UnknownStatus("Running".into()))
        );
    }

    #[test]
    fn only_starting_running_and_stopping_are_live() {
        let live: Vec<_> = WorkerStatus::ALL
            .into_iter()
            .filter(|s| s.is_live())
            .collect();
        assert_eq!(
            live,
            [
                WorkerStatus::Starting,
                WorkerStatus::Running,
                WorkerStatus::Stopping
            ]
        );
    }
}
