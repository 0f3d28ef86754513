//! Worker decisions: register, heartbeat and status change, each appended as
//! one lifecycle event with the worker's status and heartbeat state right
//! after it (so projections and live delivery read them off the record
//! instead of folding the stream again).
//!
//! The lifecycle rules themselves (status table, owner match, metadata
//! merge) are `openagents-workers`'; this module applies them to the log.

use crate::error::{DecisionError, FoldError};
use crate::stream::Stream;
use crate::stream_id::StreamId;
use openagents_event_log::{NewRecord, RecordRef, Txn};
use openagents_workers::{
    HeartbeatState, LifecycleEvent, Liveness, Owner, Registration, WorkerEvent, WorkerId,
    WorkerState, WorkerStatus, decide_register, liveness,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::time::{SystemTime, UNIX_EPOCH};

/// What a worker record says about the worker right after it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct WorkerAfter {
    /// Status after the event.
    pub status: WorkerStatus,
    /// Heartbeat state after the event, at the event's time.
    pub heartbeat_state: HeartbeatState,
}

impl WorkerAfter {
    /// Reads the attributes of a worker record.
    pub fn of(record: &RecordRef<'_>) -> Result<Self, FoldError> {
        record
            .attrs
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
            .ok_or_else(|| FoldError::WorkerAttributes {
                stream: record.stream.to_string(),
                seq: record.seq,
            })
    }
}

/// A worker write, validated.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum WorkerCommand {
    /// Register or re-register.
    Register(Registration),
    /// Heartbeat with a metadata patch.
    Heartbeat {
        /// Who asks.
        owner: Owner,
        /// Merged into the metadata.
        metadata_patch: Map<String, Value>,
    },
    /// Status change.
    Status {
        /// Who asks.
        owner: Owner,
        /// Requested status.
        status: WorkerStatus,
        /// Why, as the caller says.
        reason: Option<String>,
    },
}

/// The clock and liveness setting a worker decision needs: decisions read no
/// clock of their own.
#[derive(Debug, Clone, Copy)]
pub struct WorkerClock {
    /// The time of the decision.
    pub now: SystemTime,
    /// Heartbeat age after which a worker is stale.
    pub stale_after_ms: u64,
}

/// Decides a worker write and appends its lifecycle event, recording
/// `written_by` (the name of the credential that asks) on it.
pub fn decide_worker(
    txn: &mut Txn<'_, Stream>,
    worker_id: &WorkerId,
    command: WorkerCommand,
    clock: WorkerClock,
    written_by: Option<String>,
) -> Result<WorkerState, DecisionError> {
    let stream = StreamId::Worker(worker_id.clone()).to_string();
    let view = txn.stream(&stream);
    let existing = view.and_then(|view| view.state.as_worker());
    let head = view.map_or(0, |view| view.head);
    let missing = || DecisionError::WorkerNotFound(worker_id.to_string());
    let event = match command {
        WorkerCommand::Register(registration) => decide_register(existing, registration)?,
        WorkerCommand::Heartbeat {
            owner,
            metadata_patch,
        } => existing
            .ok_or_else(missing)?
            .decide_heartbeat(&owner, metadata_patch)?,
        WorkerCommand::Status {
            owner,
            status,
            reason,
        } => existing
            .ok_or_else(missing)?
            .decide_status(&owner, status, reason)?,
    };
    let after = state_after(existing, head, &event, clock)?;
    txn.append(NewRecord {
        stream: stream.clone(),
        event_type: event.event_type().as_str().to_owned(),
        payload: serde_json::value::to_raw_value(&event.payload()).expect("payloads serialize"),
        idempotency_key: None,
        content_hash: None,
        create_key: None,
        attrs: Some(serde_json::value::to_raw_value(&after).expect("attributes serialize")),
        written_by,
    })?;
    txn.stream(&stream)
        .and_then(|view| view.state.as_worker().cloned())
        .ok_or_else(missing)
}

/// Folds the event into a copy of the worker to learn its status and
/// heartbeat state after it, with the worker crate's own rules.
fn state_after(
    existing: Option<&WorkerState>,
    head: u64,
    event: &WorkerEvent,
    clock: WorkerClock,
) -> Result<WorkerAfter, DecisionError> {
    let mut next = existing.cloned();
    let lifecycle = LifecycleEvent {
        seq: head + 1,
        recorded_at: humantime::format_rfc3339_micros(clock.now).to_string(),
        event: event.clone(),
    };
    WorkerState::apply(&mut next, &lifecycle)
        .map_err(|e| DecisionError::InvalidRequest(e.to_string()))?;
    let next = next.expect("applying a decided event leaves a worker");
    let live = worker_liveness(&next, unix_ms(clock.now), clock.stale_after_ms);
    Ok(WorkerAfter {
        status: next.status(),
        heartbeat_state: live.heartbeat_state,
    })
}

/// The liveness of a worker at `now_ms`.
pub fn worker_liveness(worker: &WorkerState, now_ms: u64, stale_after_ms: u64) -> Liveness {
    let last_heartbeat = worker
        .last_heartbeat_at()
        .and_then(|at| humantime::parse_rfc3339(at).ok())
        .map(unix_ms);
    liveness(worker.status(), last_heartbeat, now_ms, stale_after_ms)
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
