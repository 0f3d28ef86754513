//! Worker operations as the routes need them: request bodies, validation,
//! and the decision on the log's writer.
//!
//! The decision and the record attributes are `openagents-authority`'s, the
//! lifecycle rules `openagents-workers`'; this module parses what clients
//! send and hands it over.

use crate::authority::{Authority, AuthorityError};
use openagents_authority::{
    DecisionError, WorkerClock, WorkerCommand, decide_worker, unix_ms, worker_liveness,
};
use openagents_workers::{
    Liveness, Owner, Registration, WorkerId, WorkerState, WorkerStatus, generated_worker_id,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::time::SystemTime;

/// Body of `POST /internal/v1/workers`.
#[derive(Debug, Deserialize)]
pub(crate) struct RegisterBody {
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
pub(crate) struct OwnerFields {
    owner_user_id: Option<u64>,
    owner_guest_scope: Option<String>,
}

impl OwnerFields {
    /// The owner these fields name (exactly one of the two).
    pub(crate) fn owner(&self) -> Result<Owner, AuthorityError> {
        owner(self.owner_user_id, self.owner_guest_scope.as_deref())
    }

    /// Whether no owner field was given.
    pub(crate) fn is_empty(&self) -> bool {
        self.owner_user_id.is_none() && self.owner_guest_scope.is_none()
    }
}

/// Body of `POST /internal/v1/workers/{id}/heartbeat`.
#[derive(Debug, Deserialize)]
pub(crate) struct HeartbeatBody {
    #[serde(flatten)]
    owner: OwnerFields,
    metadata_patch: Option<Value>,
}

/// Body of `POST /internal/v1/workers/{id}/status`.
#[derive(Debug, Deserialize)]
pub(crate) struct StatusBody {
    #[serde(flatten)]
    owner: OwnerFields,
    status: WorkerStatus,
    reason: Option<String>,
}

/// A worker and its liveness now, as the worker routes answer.
#[derive(Debug, Serialize)]
pub(crate) struct WorkerView {
    worker: WorkerState,
    liveness: Liveness,
}

impl WorkerView {
    /// The worker with its liveness at this moment.
    pub(crate) fn now(worker: WorkerState, stale_after_ms: u64) -> Self {
        Self::at(worker, unix_ms(SystemTime::now()), stale_after_ms)
    }

    /// The worker with its liveness at `now_ms`, for answers that show
    /// many workers at one instant.
    pub(crate) fn at(worker: WorkerState, now_ms: u64, stale_after_ms: u64) -> Self {
        let liveness = worker_liveness(&worker, now_ms, stale_after_ms);
        WorkerView { worker, liveness }
    }
}

/// Validates a worker id from a path or body.
pub(crate) fn checked_worker_id(worker_id: &str) -> Result<WorkerId, AuthorityError> {
    worker_id
        .parse()
        .map_err(|error| DecisionError::from(error).into())
}

/// The owner that owner fields name (exactly one of the two).
fn owner(user_id: Option<u64>, guest_scope: Option<&str>) -> Result<Owner, AuthorityError> {
    Owner::from_request(user_id, guest_scope).map_err(|error| DecisionError::from(error).into())
}

fn object(field: &str, value: Option<Value>) -> Result<Map<String, Value>, AuthorityError> {
    match value {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(map)) => Ok(map),
        Some(_) => Err(AuthorityError::invalid(format!(
            "{field} must be a JSON object"
        ))),
    }
}

/// Decides `command` on the log's writer and waits until it is durable.
async fn execute(
    authority: &Authority,
    worker_id: WorkerId,
    command: WorkerCommand,
    stale_after_ms: u64,
    written_by: Option<String>,
) -> Result<WorkerState, AuthorityError> {
    authority
        .execute(move |txn| {
            let clock = WorkerClock {
                now: SystemTime::now(),
                stale_after_ms,
            };
            decide_worker(txn, &worker_id, command, clock, written_by)
        })
        .await
}

/// Registers (or re-registers) a worker; `written_by` names the credential
/// that asks, as on every worker write below.
pub(crate) async fn register(
    authority: &Authority,
    body: RegisterBody,
    stale_after_ms: u64,
    written_by: Option<String>,
) -> Result<WorkerState, AuthorityError> {
    let worker_id = body
        .worker_id
        .unwrap_or_else(|| generated_worker_id(uuid::Uuid::now_v7()));
    let checked = checked_worker_id(&worker_id)?;
    let registration = Registration {
        owner: owner(body.owner_user_id, body.owner_guest_scope.as_deref())?,
        workspace_ref: body.workspace_ref,
        codex_home_ref: body.codex_home_ref,
        adapter: body.adapter,
        metadata: object("metadata", body.metadata)?,
        worker_id,
    };
    let command = WorkerCommand::Register(registration);
    execute(authority, checked, command, stale_after_ms, written_by).await
}

/// Records a heartbeat.
pub(crate) async fn heartbeat(
    authority: &Authority,
    worker_id: String,
    body: HeartbeatBody,
    stale_after_ms: u64,
    written_by: Option<String>,
) -> Result<WorkerState, AuthorityError> {
    let worker_id = checked_worker_id(&worker_id)?;
    let command = WorkerCommand::Heartbeat {
        owner: body.owner.owner()?,
        metadata_patch: object("metadata_patch", body.metadata_patch)?,
    };
    execute(authority, worker_id, command, stale_after_ms, written_by).await
}

/// Changes a worker's status.
pub(crate) async fn set_status(
    authority: &Authority,
    worker_id: String,
    body: StatusBody,
    stale_after_ms: u64,
    written_by: Option<String>,
) -> Result<WorkerState, AuthorityError> {
    let worker_id = checked_worker_id(&worker_id)?;
    let command = WorkerCommand::Status {
        owner: body.owner.owner()?,
        status: body.status,
        reason: body.reason,
    };
    execute(authority, worker_id, command, stale_after_ms, written_by).await
}

/// Reads a worker on behalf of `caller`.
pub(crate) fn read_owned(
    authority: &Authority,
    worker_id: &str,
    caller: &Owner,
) -> Result<WorkerState, AuthorityError> {
    let worker = authority.worker(&checked_worker_id(worker_id)?)?;
    if !worker.is_owned_by(caller) {
        return Err(DecisionError::OwnerMismatch.into());
    }
    Ok(worker)
}
