//! The request and response bodies of the routes the client calls, as the
//! contract (`docs/CONTRACT.md`) spells them.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// `POST /internal/v1/runs`: every field optional.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CreateRun {
    /// The worker the run is for; without an owner, the run inherits its.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// Creation metadata (an object).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// The owning user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_user_id: Option<u64>,
    /// The owning guest scope.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_guest_scope: Option<String>,
    /// Log-wide key of the creation; generated (UUIDv7) when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// `POST /internal/v1/runs/{run_id}/events`.
#[derive(Debug, Clone, Serialize)]
pub struct AppendEvent {
    /// The event's type; must not be empty.
    pub event_type: String,
    /// The event's body.
    pub payload: Value,
    /// Per-run key of the append; generated (UUIDv7) when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Refuse the append (409) unless the run's last seq is this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_previous_seq: Option<u64>,
}

impl AppendEvent {
    /// An event of `event_type` with `payload`, keyed by the client.
    pub fn new(event_type: impl Into<String>, payload: Value) -> Self {
        AppendEvent {
            event_type: event_type.into(),
            payload,
            idempotency_key: None,
            expected_previous_seq: None,
        }
    }

    /// The same event under the caller's own idempotency key.
    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// The same event, appended only if the run's last seq is `seq`.
    pub fn expecting_previous_seq(mut self, seq: u64) -> Self {
        self.expected_previous_seq = Some(seq);
        self
    }
}

/// Who owns a run.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Owner {
    /// The owning user.
    pub user_id: Option<u64>,
    /// The owning guest scope.
    pub guest_scope: Option<String>,
}

/// A run as the service shows it.
#[derive(Debug, Clone, Deserialize)]
pub struct Run {
    /// The run's id.
    pub id: Uuid,
    /// The worker it was created for.
    pub worker_id: Option<String>,
    /// `running`, `canceling`, `succeeded`, `failed` or `canceled`.
    pub status: String,
    /// The creation metadata.
    pub metadata: Value,
    /// Who owns it.
    pub owner: Option<Owner>,
    /// Its last event's seq.
    pub latest_seq: u64,
    /// Its events (only on `GET /internal/v1/runs/{id}`).
    #[serde(default)]
    pub events: Vec<Event>,
    /// When it was created.
    pub created_at: String,
    /// When its last event was recorded.
    pub updated_at: String,
}

/// One event of a run.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Event {
    /// Its place in the run: 1, 2, 3, …
    pub seq: u64,
    /// Its type.
    pub event_type: String,
    /// Its body.
    pub payload: Value,
    /// The key it was appended under.
    pub idempotency_key: Option<String>,
    /// When it became durable.
    pub recorded_at: String,
    /// The credential that appended it.
    pub written_by: Option<String>,
}

/// The answer to an append.
#[derive(Debug, Clone, Deserialize)]
pub struct Appended {
    /// The run after the append (without its event list).
    pub run: Run,
    /// The event appended, or the original one on a replay.
    pub event: Event,
    /// Whether the key had been seen: nothing was appended.
    pub idempotent_replay: bool,
}

/// A page of a run's events.
#[derive(Debug, Clone, Deserialize)]
pub struct EventsPage {
    /// The events after the cursor, in seq order.
    pub events: Vec<Event>,
    /// The cursor of the next page.
    pub next_cursor: u64,
    /// The run's last seq.
    pub head_seq: u64,
}

/// One message of a Khala topic.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Message {
    /// The topic.
    pub topic: String,
    /// Its place in the topic.
    pub sequence: u64,
    /// What happened (the event type).
    pub kind: String,
    /// The event's body.
    pub payload: Value,
    /// When it became durable.
    pub published_at: String,
}

/// The details of a `stale_cursor` answer: the cursor is below the topic's
/// retained window, and the client must re-bootstrap from another source.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StaleCursor {
    /// The topic.
    pub topic: String,
    /// The cursor the client asked from.
    pub requested_cursor: u64,
    /// The oldest cursor the topic can serve.
    pub oldest_available_cursor: u64,
    /// The topic's newest sequence.
    pub head_cursor: u64,
    /// What the service advises.
    pub recovery: String,
}
