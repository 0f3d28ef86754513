//! Wire shapes of the HTTP contract that are not owned by a domain crate:
//! request bodies as clients send them, and the views responses are built
//! from. Field names and orders here are the contract's.

use openagents_authority::{Erasure, RunHead};
use openagents_run_state::RunEvent;
use openagents_workers::Owner;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

/// Body of `POST /internal/v1/runs`; the default is a run with nothing
/// given.
#[derive(Debug, Default, Deserialize)]
pub struct CreateRunBody {
    /// The worker the run is for.
    pub worker_id: Option<String>,
    /// Creation metadata; must be an object.
    pub metadata: Option<Value>,
    /// Owner by user id.
    pub owner_user_id: Option<u64>,
    /// Owner by guest scope.
    pub owner_guest_scope: Option<String>,
    /// Log-wide idempotency key of the creation.
    pub idempotency_key: Option<String>,
}

/// Body of `POST /internal/v1/runs/{run_id}/events`.
#[derive(Debug, Deserialize)]
pub struct AppendEventBody {
    /// The event's type.
    pub event_type: String,
    /// The event's body; must be an object when given.
    pub payload: Option<Value>,
    /// Run-local idempotency key.
    pub idempotency_key: Option<String>,
    /// The last seq the client saw.
    pub expected_previous_seq: Option<u64>,
}

/// Body of `DELETE /internal/v1/runs/{run_id}`. Unknown fields are refused:
/// a misspelt `force` must not erase less carefully than asked.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EraseRunBody {
    /// Why the run is erased (required, 1..=1024 characters).
    pub(crate) reason: String,
    /// Erase a run that is not sealed.
    #[serde(default)]
    pub(crate) force: bool,
}

/// A tombstone as responses show it: the run, then the erasure's fields.
pub(crate) fn tombstone_view(run_id: uuid::Uuid, erasure: &Erasure) -> Value {
    let mut view = serde_json::Map::new();
    view.insert("run_id".into(), Value::String(run_id.to_string()));
    if let Ok(Value::Object(fields)) = serde_json::to_value(erasure) {
        view.extend(fields);
    }
    Value::Object(view)
}

/// Status a run view shows for an erased run.
const ERASED_STATUS: &str = "erased";

/// Query of `GET /internal/v1/runs/{run_id}/events`.
#[derive(Debug, Deserialize)]
pub(crate) struct EventsPageQuery {
    /// Return events after this seq.
    #[serde(default)]
    pub(crate) after_seq: u64,
    /// Most events to return (1..=1000, default 100).
    pub(crate) limit: Option<usize>,
}

/// An event as the run routes show it: the five fields receipts hash and,
/// beside them, `written_by`, the name of the credential that appended it
/// (`null` when it was appended without one). Receipts never include
/// `written_by`.
#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    /// The event.
    #[serde(flatten)]
    pub event: RunEvent,
    /// Who appended it.
    pub written_by: Option<String>,
}

/// A run as responses show it.
#[derive(Debug, Serialize)]
pub(crate) struct RunView<'a> {
    id: String,
    worker_id: Option<&'a str>,
    status: &'static str,
    metadata: &'a RawValue,
    owner: Option<&'a Owner>,
    latest_seq: u64,
    created_at: &'a str,
    updated_at: &'a str,
}

impl<'a> RunView<'a> {
    /// The run without its events, as write responses show it (a response
    /// that never grows with the history); `GET /internal/v1/runs/{id}` adds
    /// the events as it streams (`orchestration::write_run`).
    pub(crate) fn of(head: &'a RunHead) -> Self {
        RunView {
            id: head.id.to_string(),
            worker_id: head.worker_id.as_deref(),
            status: match head.erasure() {
                Some(_) => ERASED_STATUS,
                None => head.status.as_str(),
            },
            metadata: &head.metadata,
            owner: head.owner.as_ref(),
            latest_seq: head.latest_seq,
            created_at: &head.created_at,
            updated_at: &head.updated_at,
        }
    }
}
