//! Worker operations as the routes need them: request validation, the
//! decision on the log's writer, and liveness at read time.
//!
//! The lifecycle rules (status table, owner match, metadata merge) live in
//! `openagents-workers`; this module only wires them to the log. Every worker
//! record also carries, in its attributes, the worker's status and heartbeat
//! state right after it, so projections and live delivery read them from the
//! record instead of folding the stream again.

use crate::authority::{Authority, AuthorityError, Stream, worker_stream};
use openagents_event_log::{NewRecord, RecordRef, Txn};
use openagents_workers::{
    HeartbeatState, LifecycleEvent, Liveness, Owner, Registration, WorkerError, WorkerEvent,
    WorkerState, WorkerStatus, decide_register, generated_worker_id, liveness, validate_worker_id,
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
    pub fn of(record: &RecordRef<'_>) -> Result<Self, String> {
        let raw = record.attrs.ok_or_else(|| {
            format!(
                "worker record {} #{} has no attributes",
                record.stream, record.seq
            )
        })?;
        serde_json::from_str(raw.get()).map_err(|e| e.to_string())
    }
}

/// A worker write, validated.
#[derive(Debug, Clone)]
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

impl From<WorkerError> for AuthorityError {
    fn from(error: WorkerError) -> Self {
        match error {
            WorkerError::OwnerMismatch { .. } => AuthorityError::OwnerMismatch,
            WorkerError::InvalidTransition(rule) => AuthorityError::WorkerTransition(rule),
            other => AuthorityError::InvalidRequest(other.to_string()),
        }
    }
}

/// Decides a worker write and appends its lifecycle event.
pub fn decide_worker(
    txn: &mut Txn<'_, Stream>,
    worker_id: &str,
    command: WorkerCommand,
    stale_after_ms: u64,
) -> Result<WorkerState, AuthorityError> {
    let stream = worker_stream(worker_id);
    let view = txn.stream(&stream);
    let existing = view.and_then(|view| view.state.as_worker());
    let head = view.map_or(0, |view| view.head);
    let missing = || AuthorityError::WorkerNotFound(worker_id.to_owned());
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
    let after = state_after(existing, head, &event, stale_after_ms)?;
    txn.append(NewRecord {
        stream: stream.clone(),
        event_type: event.event_type().as_str().to_owned(),
        payload: serde_json::value::to_raw_value(&event.payload()).expect("payloads serialize"),
        idempotency_key: None,
        content_hash: None,
        create_key: None,
        attrs: Some(serde_json::value::to_raw_value(&after).expect("attributes serialize")),
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
    stale_after_ms: u64,
) -> Result<WorkerAfter, AuthorityError> {
    let now = SystemTime::now();
    let mut next = existing.cloned();
    let lifecycle = LifecycleEvent {
        seq: head + 1,
        recorded_at: humantime::format_rfc3339_micros(now).to_string(),
        event: event.clone(),
    };
    WorkerState::apply(&mut next, &lifecycle)
        .map_err(|e| AuthorityError::InvalidRequest(e.to_string()))?;
    let next = next.expect("applying a decided event leaves a worker");
    let live = worker_liveness(&next, unix_ms(now), stale_after_ms);
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

/// Body of `POST /internal/v1/workers`.
#[derive(Debug, Deserialize)]
pub struct RegisterBody {
    worker_id: Option<String>,
    owner_user_id: Option<u64>,
    owner_guest_scope: Option<String>,
    workspace_ref: Option<String>,
    codex_home_ref: Option<String>,
    adapter: Option<String>,
    metadata: Option<Value>,
}

/// The owner fields of worker routes (body or query).
#[derive(Debug, Deserialize)]
pub struct OwnerFields {
    owner_user_id: Option<u64>,
    owner_guest_scope: Option<String>,
}

impl OwnerFields {
    /// The owner these fields name (exactly one of the two).
    pub fn owner(&self) -> Result<Owner, AuthorityError> {
        Ok(Owner::from_request(
            self.owner_user_id,
            self.owner_guest_scope.as_deref(),
        )?)
    }

    /// Whether no owner field was given.
    pub fn is_empty(&self) -> bool {
        self.owner_user_id.is_none() && self.owner_guest_scope.is_none()
    }
}

/// Body of `POST /internal/v1/workers/{id}/heartbeat`.
#[derive(Debug, Deserialize)]
pub struct HeartbeatBody {
    #[serde(flatten)]
    owner: OwnerFields,
    metadata_patch: Option<Value>,
}

/// Body of `POST /internal/v1/workers/{id}/status`.
#[derive(Debug, Deserialize)]
pub struct StatusBody {
    #[serde(flatten)]
    owner: OwnerFields,
    status: WorkerStatus,
    reason: Option<String>,
}

/// A worker and its liveness now, as the worker routes answer.
#[derive(Debug, Serialize)]
pub struct WorkerView {
    worker: WorkerState,
    liveness: Liveness,
}

impl WorkerView {
    /// The worker with its liveness at this moment.
    pub fn now(worker: WorkerState, stale_after_ms: u64) -> Self {
        let liveness = worker_liveness(&worker, unix_ms(SystemTime::now()), stale_after_ms);
        WorkerView { worker, liveness }
    }
}

/// Validates a worker id from a path or body.
pub fn checked_worker_id(worker_id: &str) -> Result<(), AuthorityError> {
    validate_worker_id(worker_id).map_err(|e| AuthorityError::InvalidRequest(e.to_string()))
}

fn object(field: &str, value: Option<Value>) -> Result<Map<String, Value>, AuthorityError> {
    match value {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(map)) => Ok(map),
        Some(_) => Err(AuthorityError::InvalidRequest(format!(
            "{field} must be a JSON object"
        ))),
    }
}

/// Decides `command` on the log's writer and waits until it is durable.
async fn execute(
    authority: &Authority,
    worker_id: String,
    command: WorkerCommand,
    stale_after_ms: u64,
) -> Result<WorkerState, AuthorityError> {
    authority
        .execute(move |txn| decide_worker(txn, &worker_id, command, stale_after_ms))
        .await
}

/// Registers (or re-registers) a worker.
pub async fn register(
    authority: &Authority,
    body: RegisterBody,
    stale_after_ms: u64,
) -> Result<WorkerState, AuthorityError> {
    let worker_id = body
        .worker_id
        .unwrap_or_else(|| generated_worker_id(uuid::Uuid::now_v7()));
    checked_worker_id(&worker_id)?;
    let registration = Registration {
        owner: Owner::from_request(body.owner_user_id, body.owner_guest_scope.as_deref())?,
        workspace_ref: body.workspace_ref,
        codex_home_ref: body.codex_home_ref,
        adapter: body.adapter,
        metadata: object("metadata", body.metadata)?,
        worker_id: worker_id.clone(),
    };
    let command = WorkerCommand::Register(registration);
    execute(authority, worker_id, command, stale_after_ms).await
}

/// Records a heartbeat.
pub async fn heartbeat(
    authority: &Authority,
    worker_id: String,
    body: HeartbeatBody,
    stale_after_ms: u64,
) -> Result<WorkerState, AuthorityError> {
    checked_worker_id(&worker_id)?;
    let command = WorkerCommand::Heartbeat {
        owner: body.owner.owner()?,
        metadata_patch: object("metadata_patch", body.metadata_patch)?,
    };
    execute(authority, worker_id, command, stale_after_ms).await
}

/// Changes a worker's status.
pub async fn set_status(
    authority: &Authority,
    worker_id: String,
    body: StatusBody,
    stale_after_ms: u64,
) -> Result<WorkerState, AuthorityError> {
    checked_worker_id(&worker_id)?;
    let command = WorkerCommand::Status {
        owner: body.owner.owner()?,
        status: body.status,
        reason: body.reason,
    };
    execute(authority, worker_id, command, stale_after_ms).await
}

/// Reads a worker on behalf of `caller`.
pub fn read_owned(
    authority: &Authority,
    worker_id: &str,
    caller: &Owner,
) -> Result<WorkerState, AuthorityError> {
    checked_worker_id(worker_id)?;
    let worker = authority.worker(worker_id)?;
    if !worker.is_owned_by(caller) {
        return Err(AuthorityError::OwnerMismatch);
    }
    Ok(worker)
}
