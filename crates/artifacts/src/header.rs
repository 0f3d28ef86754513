//! The run attributes the artifacts need besides the events, and the
//! `policy_bundle_id` rule that reads one of them.

use openagents_run_state::RunStatus;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Policy bundle named when the run's metadata does not name one as a string.
const DEFAULT_POLICY_BUNDLE_ID: &str = "runtime.default";

/// What the artifacts need to know about a run besides its events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunHeader {
    /// The run id; receipts and replays call it `session_id`.
    pub id: String,
    /// When the run was created (RFC 3339 UTC): the receipt's `created_at`
    /// and the timestamp of the replay's first two lines.
    pub created_at: String,
    /// The run's metadata; only `policy_bundle_id` is read from it.
    pub metadata: Value,
    /// The run's status; a terminal one ends the replay with a SessionEnd.
    pub status: RunStatus,
}

impl RunHeader {
    /// `metadata.policy_bundle_id` if it is a string, else `runtime.default`.
    pub(crate) fn policy_bundle_id(&self) -> &str {
        self.metadata
            .get("policy_bundle_id")
            .and_then(Value::as_str)
            .unwrap_or(DEFAULT_POLICY_BUNDLE_ID)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn header(metadata: Value) -> RunHeader {
        RunHeader {
            id: "run".to_owned(),
            created_at: "2026-01-02T03:04:05.000000Z".to_owned(),
            metadata,
            status: RunStatus::Running,
        }
    }

    #[test]
    fn a_string_policy_bundle_id_is_used() {
        assert_eq!(
            header(json!({"policy_bundle_id": "bundle.7"})).policy_bundle_id(),
            "bundle.7"
        );
    }

    #[test]
    fn a_missing_or_non_string_policy_bundle_id_falls_back_to_the_default() {
        for metadata in [
            json!({}),
            json!({"policy_bundle_id": 7}),
            json!({"policy_bundle_id": null}),
            json!([]),
        ] {
            assert_eq!(header(metadata).policy_bundle_id(), "runtime.default");
        }
    }
}
