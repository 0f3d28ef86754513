//! Worker lifecycle event types and the payloads the log stores for them.
//!
//! Every change to a worker is one lifecycle event. Its payload carries
//! everything the fold in [`crate::state`] needs to rebuild the worker, so
//! the log alone is enough to recover workers after a restart.

use crate::owner::Owner;
use crate::status::WorkerStatus;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// The lifecycle event types of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LifecycleEventType {
    /// `worker.started`: a registration or re-registration.
    #[serde(rename = "worker.started")]
    Started,
    /// `worker.heartbeat`: the worker reported it is alive.
    #[serde(rename = "worker.heartbeat")]
    Heartbeat,
    /// `worker.starting`: status changed to `starting`.
    #[serde(rename = "worker.starting")]
    Starting,
    /// `worker.running`: status changed to `running`.
    #[serde(rename = "worker.running")]
    Running,
    /// `worker.stopping`: status changed to `stopping`.
    #[serde(rename = "worker.stopping")]
    Stopping,
    /// `worker.stopped`: status changed to `stopped`.
    #[serde(rename = "worker.stopped")]
    Stopped,
    /// `worker.failed`: status changed to `failed`.
    #[serde(rename = "worker.failed")]
    Failed,
}

impl LifecycleEventType {
    /// Every lifecycle event type, for exhaustive tests and documentation.
    pub const ALL: [LifecycleEventType; 7] = [
        Self::Started,
        Self::Heartbeat,
        Self::Starting,
        Self::Running,
        Self::Stopping,
        Self::Stopped,
        Self::Failed,
    ];

    /// The contract's name of the event type.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "worker.started",
            Self::Heartbeat => "worker.heartbeat",
            Self::Starting => "worker.starting",
            Self::Running => "worker.running",
            Self::Stopping => "worker.stopping",
            Self::Stopped => "worker.stopped",
            Self::Failed => "worker.failed",
        }
    }

    /// Parses a contract name; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    /// The event type a status change to `status` is recorded as
    /// (`worker.<status>`).
    pub fn for_status(status: WorkerStatus) -> Self {
        match status {
            WorkerStatus::Starting => Self::Starting,
            WorkerStatus::Running => Self::Running,
            WorkerStatus::Stopping => Self::Stopping,
            WorkerStatus::Stopped => Self::Stopped,
            WorkerStatus::Failed => Self::Failed,
        }
    }
}

impl fmt::Display for LifecycleEventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Payload of `worker.started`: the registration attributes.
///
/// It is both the register command and what the log stores, so a
/// re-registration replays exactly as it was decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    /// The worker's id (validated by [`crate::validate_worker_id`]).
    pub worker_id: String,
    /// Who owns the worker; fixed by the first registration.
    pub owner: Owner,
    /// Opaque reference to the worker's workspace; `None` keeps the
    /// previous value on re-registration.
    #[serde(default)]
    pub workspace_ref: Option<String>,
    /// Opaque reference to the worker's Codex home; `None` keeps the
    /// previous value on re-registration.
    #[serde(default)]
    pub codex_home_ref: Option<String>,
    /// Which adapter runs the worker; `None` keeps the previous value on
    /// re-registration.
    #[serde(default)]
    pub adapter: Option<String>,
    /// Metadata merged into the worker's metadata with
    /// [`crate::merge_metadata`].
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

/// Payload of `worker.heartbeat`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Metadata merged into the worker's metadata with
    /// [`crate::merge_metadata`].
    #[serde(default)]
    pub metadata_patch: Map<String, Value>,
}

/// Payload of the status events `worker.<status>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusChange {
    /// The status the worker moved to; always agrees with the event type.
    pub status: WorkerStatus,
    /// Why, as the caller said it; `None` when it said nothing.
    #[serde(default)]
    pub reason: Option<String>,
}

/// The body of one lifecycle event: its type and payload together.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerEvent {
    /// `worker.started`.
    Started(Registration),
    /// `worker.heartbeat`.
    Heartbeat(Heartbeat),
    /// `worker.<status>`.
    StatusChanged(StatusChange),
}

/// A lifecycle record that cannot be read back as a [`WorkerEvent`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// The event type is not one of the lifecycle event types.
    #[error("unknown worker lifecycle event type {0:?}")]
    UnknownEventType(String),
    /// The payload does not have the shape its event type requires.
    #[error("malformed payload for {event_type}: {source}")]
    Malformed {
        /// The record's event type.
        event_type: LifecycleEventType,
        /// What serde found wrong.
        source: serde_json::Error,
    },
    /// A status event whose payload names another status.
    #[error("{event_type} carries status {status}")]
    StatusMismatch {
        /// The record's event type.
        event_type: LifecycleEventType,
        /// The status in its payload.
        status: WorkerStatus,
    },
}

impl WorkerEvent {
    /// The event type this body is recorded under.
    pub fn event_type(&self) -> LifecycleEventType {
        match self {
            Self::Started(_) => LifecycleEventType::Started,
            Self::Heartbeat(_) => LifecycleEventType::Heartbeat,
            Self::StatusChanged(change) => LifecycleEventType::for_status(change.status),
        }
    }

    /// The payload the log stores for this body.
    pub fn payload(&self) -> Value {
        let value = match self {
            Self::Started(registration) => serde_json::to_value(registration),
            Self::Heartbeat(heartbeat) => serde_json::to_value(heartbeat),
            Self::StatusChanged(change) => serde_json::to_value(change),
        };
        // These types hold only strings, numbers and JSON maps with string
        // keys, which always serialize.
        value.expect("lifecycle payloads always serialize")
    }

    /// Reads a body back from a log record's event type and payload.
    pub fn from_record(event_type: &str, payload: Value) -> Result<Self, PayloadError> {
        let kind = LifecycleEventType::parse(event_type)
            .ok_or_else(|| PayloadError::UnknownEventType(event_type.to_owned()))?;
        let malformed = |source| PayloadError::Malformed {
            event_type: kind,
            source,
        };
        match kind {
            LifecycleEventType::Started => serde_json::from_value(payload)
                .map(Self::Started)
                .map_err(malformed),
            LifecycleEventType::Heartbeat => serde_json::from_value(payload)
                .map(Self::Heartbeat)
                .map_err(malformed),
            _ => {
                let change: StatusChange = serde_json::from_value(payload).map_err(malformed)?;
                if LifecycleEventType::for_status(change.status) != kind {
                    return Err(PayloadError::StatusMismatch {
                        event_type: kind,
                        status: change.status,
                    });
                }
                Ok(Self::StatusChanged(change))
            }
        }
    }
}

/// One lifecycle event as the log records it.
#[derive(Debug, Clone, PartialEq)]
pub struct LifecycleEvent {
    /// Position in the worker's lifecycle stream: 1, 2, 3, … without gaps.
    pub seq: u64,
    /// When the authority accepted the event (RFC 3339 UTC).
    pub recorded_at: String,
    /// What happened.
    pub event: WorkerEvent,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn registration() -> Registration {
        Registration {
            worker_id: "w-1".into(),
            owner: Owner::from_request(Some(7), None).unwrap(),
            workspace_ref: Some("ws".into()),
            codex_home_ref: None,
            adapter: Some("in_memory".into()),
            metadata: json!({"a": 1}).as_object().unwrap().clone(),
        }
    }

    #[test]
    fn status_events_are_named_after_their_status() {
        for status in WorkerStatus::ALL {
            let kind = LifecycleEventType::for_status(status);
            assert_eq!(kind.as_str(), format!("worker.{status}"));
            assert_eq!(serde_json::to_value(kind).unwrap(), json!(kind.as_str()));
            assert_eq!(LifecycleEventType::parse(kind.as_str()), Some(kind));
        }
    }

    #[test]
    fn every_body_round_trips_through_its_record() {
        let bodies = [
            WorkerEvent::Started(registration()),
            WorkerEvent::Heartbeat(Heartbeat {
                metadata_patch: json!({"load": 0.5}).as_object().unwrap().clone(),
            }),
            WorkerEvent::StatusChanged(StatusChange {
                status: WorkerStatus::Stopped,
                reason: Some("drained".into()),
            }),
        ];
        for body in bodies {
            let back = WorkerEvent::from_record(body.event_type().as_str(), body.payload());
            assert_eq!(back.unwrap(), body);
        }
    }

    #[test]
    fn the_started_payload_names_every_registration_attribute() {
        let payload = WorkerEvent::Started(registration()).payload();
        assert_eq!(
            payload,
            json!({
                "worker_id": "w-1",
                "owner": {"user_id": 7, "guest_scope": null},
                "workspace_ref": "ws",
                "codex_home_ref": null,
                "adapter": "in_memory",
                "metadata": {"a": 1},
            })
        );
    }

    #[test]
    fn bad_records_are_typed_errors() {
        assert!(matches!(
            WorkerEvent::from_record("worker.exploded", json!({})),
            Err(PayloadError::UnknownEventType(_))
        ));
        assert!(matches!(
            WorkerEvent::from_record("worker.stopped", json!({"status": "running"})),
            Err(PayloadError::StatusMismatch { .. })
        ));
        assert!(matches!(
            WorkerEvent::from_record("worker.started", json!({"worker_id": "w"})),
            Err(PayloadError::Malformed { .. })
        ));
        let both_owners = json!({"worker_id": "w", "owner": {"user_id": 1, "guest_scope": "g"}});
        assert!(matches!(
            WorkerEvent::from_record("worker.started", both_owners),
            Err(PayloadError::Malformed { .. })
        ));
    }

    #[test]
    fn missing_optional_fields_read_as_empty() {
        let heartbeat = WorkerEvent::from_record("worker.heartbeat", json!({})).unwrap();
        assert_eq!(heartbeat, WorkerEvent::Heartbeat(Heartbeat::default()));
        let running = WorkerEvent::from_record("worker.running", json!({"status": "running"}));
        assert_eq!(
            running.unwrap(),
            WorkerEvent::StatusChanged(StatusChange {
                status: WorkerStatus::Running,
                reason: None
            })
        );
    }
}
