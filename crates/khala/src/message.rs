//! The message a Khala topic delivers, in its wire shape.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One message of one topic, exactly as a poll response lists it.
///
/// On a run topic it is one run event (`kind` = `event_type`, `published_at` =
/// `recorded_at`); on a worker topic or the aggregate lane it is one lifecycle
/// event. The field names are wire contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// The canonical topic name the message belongs to.
    pub topic: String,
    /// Position in the topic: 1, 2, 3, … without gaps.
    pub sequence: u64,
    /// What happened, e.g. `run.started` or `worker.heartbeat`.
    pub kind: String,
    /// The event's body.
    pub payload: Value,
    /// When the event became durable (RFC 3339 UTC).
    pub published_at: String,
}

impl Message {
    /// The length of the message's JSON encoding, as a poll response carries
    /// it: what the byte budgets of windows and responses count.
    pub fn wire_len(&self) -> usize {
        /// Counts bytes instead of keeping them.
        struct Counter(usize);
        impl std::io::Write for Counter {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0 += bytes.len();
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut counter = Counter(0);
        serde_json::to_writer(&mut counter, self).expect("a message always serializes");
        counter.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wire_field_names() {
        let message = Message {
            topic: "runtime.codex_worker_events".into(),
            sequence: 3,
            kind: "worker.heartbeat".into(),
            payload: json!({"worker_id": "w"}),
            published_at: "2025-01-01T00:00:00Z".into(),
        };
        let wire = json!({
            "topic": "runtime.codex_worker_events",
            "sequence": 3,
            "kind": "worker.heartbeat",
            "payload": {"worker_id": "w"},
            "published_at": "2025-01-01T00:00:00Z",
        });
        assert_eq!(serde_json::to_value(&message).unwrap(), wire);
        assert_eq!(message.wire_len(), wire.to_string().len());
        assert_eq!(serde_json::from_value::<Message>(wire).unwrap(), message);
    }
}
