//! Heartbeat liveness: how long ago a worker last reported, and whether
//! that is recent enough.
//!
//! Time comes in as unix milliseconds from the caller; this module reads no
//! clock, so the same inputs always give the same answer.

use crate::status::WorkerStatus;
use serde::{Deserialize, Serialize};

/// What a worker's heartbeat history says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeartbeatState {
    /// A live worker whose last heartbeat is at most the stale limit old.
    Fresh,
    /// A live worker whose last heartbeat is older than the stale limit.
    Stale,
    /// A live worker that has never sent a heartbeat.
    Missing,
    /// The worker is `stopped`; heartbeats are not expected.
    Stopped,
    /// The worker is `failed`; heartbeats are not expected.
    Failed,
}

/// The liveness block the worker routes return next to the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Liveness {
    /// Milliseconds since the last heartbeat; `None` (JSON `null`) when there
    /// was never one.
    pub heartbeat_age_ms: Option<u64>,
    /// The stale limit this answer was computed with.
    pub heartbeat_stale_after_ms: u64,
    /// The verdict.
    pub heartbeat_state: HeartbeatState,
}

/// Computes a worker's liveness at `now_ms`.
///
/// The age is reported whenever there was a heartbeat, also for stopped and
/// failed workers, because it is still useful to an operator. A heartbeat
/// stamped after `now_ms` (clock skew between writers) counts as age 0
/// rather than wrapping around.
pub fn liveness(
    status: WorkerStatus,
    last_heartbeat_ms: Option<u64>,
    now_ms: u64,
    stale_after_ms: u64,
) -> Liveness {
    let heartbeat_age_ms = last_heartbeat_ms.map(|at| now_ms.saturating_sub(at));
    let heartbeat_state = match (status, heartbeat_age_ms) {
        (WorkerStatus::Stopped, _) => HeartbeatState::Stopped,
        (WorkerStatus::Failed, _) => HeartbeatState::Failed,
        (_, None) => HeartbeatState::Missing,
        (_, Some(age)) if age <= stale_after_ms => HeartbeatState::Fresh,
        (_, Some(_)) => HeartbeatState::Stale,
    };
    Liveness {
        heartbeat_age_ms,
        heartbeat_stale_after_ms: stale_after_ms,
        heartbeat_state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LIMIT: u64 = 120_000;
    const NOW: u64 = 1_700_000_000_000;

    fn state(status: WorkerStatus, last: Option<u64>) -> HeartbeatState {
        liveness(status, last, NOW, LIMIT).heartbeat_state
    }

    #[test]
    fn the_stale_limit_itself_is_still_fresh() {
        assert_eq!(
            state(WorkerStatus::Running, Some(NOW - LIMIT)),
            HeartbeatState::Fresh
        );
        assert_eq!(
            state(WorkerStatus::Running, Some(NOW - LIMIT - 1)),
            HeartbeatState::Stale
        );
        assert_eq!(
            state(WorkerStatus::Running, Some(NOW)),
            HeartbeatState::Fresh
        );
    }

    #[test]
    fn every_live_status_is_judged_by_its_heartbeat() {
        for status in WorkerStatus::ALL.into_iter().filter(|s| s.is_live()) {
            assert_eq!(state(status, None), HeartbeatState::Missing);
            assert_eq!(state(status, Some(NOW - 1)), HeartbeatState::Fresh);
            assert_eq!(state(status, Some(0)), HeartbeatState::Stale);
        }
    }

    #[test]
    fn stopped_and_failed_workers_are_not_judged() {
        assert_eq!(state(WorkerStatus::Stopped, None), HeartbeatState::Stopped);
        assert_eq!(
            state(WorkerStatus::Stopped, Some(0)),
            HeartbeatState::Stopped
        );
        assert_eq!(
            state(WorkerStatus::Failed, Some(NOW)),
            HeartbeatState::Failed
        );
    }

    #[test]
    fn a_heartbeat_from_the_future_has_age_zero() {
        let live = liveness(WorkerStatus::Running, Some(NOW + 5), NOW, LIMIT);
        assert_eq!(live.heartbeat_age_ms, Some(0));
        assert_eq!(live.heartbeat_state, HeartbeatState::Fresh);
    }

    #[test]
    fn the_wire_shape_has_the_contract_fields() {
        let missing = liveness(WorkerStatus::Starting, None, NOW, LIMIT);
        assert_eq!(
            serde_json::to_value(missing).unwrap(),
            json!({"heartbeat_age_ms": null, "heartbeat_stale_after_ms": LIMIT, "heartbeat_state": "missing"})
        );
        let stale = liveness(WorkerStatus::Running, Some(NOW - LIMIT - 1), NOW, LIMIT);
        assert_eq!(
            serde_json::to_value(stale).unwrap(),
            json!({"heartbeat_age_ms": LIMIT + 1, "heartbeat_stale_after_ms": LIMIT, "heartbeat_state": "stale"})
        );
    }
}
