//! The projection snapshot: every checkpoint, summary and drift report, and
//! its versioned byte encoding.
//!
//! The service writes these bytes to `RUNTIME_CHECKPOINT_PATH` (atomically,
//! by rename) and reads them back at start; this module only turns a
//! snapshot into bytes and back, refusing bytes that are not exactly what
//! [`ProjectionSnapshot::to_bytes`] wrote.

use crate::checkpoint::{Checkpoint, DriftReport};
use crate::run::RunSummary;
use crate::worker::WorkerSummary;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// The `format` field of every snapshot file, so that pointing the path at
/// some other JSON file fails with a clear message.
pub const SNAPSHOT_FORMAT: &str = "openagents.projection_snapshot";

/// The snapshot encoding this crate writes and reads.
pub const SNAPSHOT_VERSION: u64 = 1;

/// All projection state, keyed by topic. `BTreeMap`s keep the encoding
/// byte-identical for the same state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectionSnapshot {
    /// Every topic's checkpoint.
    pub checkpoints: BTreeMap<String, Checkpoint>,
    /// Run summaries, keyed by `run:{run_id}:events`.
    pub run_summaries: BTreeMap<String, RunSummary>,
    /// Worker summaries, keyed by `worker:{worker_id}:lifecycle`.
    pub worker_summaries: BTreeMap<String, WorkerSummary>,
    /// The latest drift report of each topic that has seen a gap.
    pub drift_reports: BTreeMap<String, DriftReport>,
}

/// Why snapshot bytes cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The bytes end before the JSON document does (a torn or partial
    /// write).
    #[error("projection snapshot is truncated: {0}")]
    Truncated(#[source] serde_json::Error),
    /// The bytes are not a well-formed snapshot document.
    #[error("projection snapshot is corrupt: {0}")]
    Corrupt(String),
    /// The document is JSON but not a projection snapshot.
    #[error("not a projection snapshot: format is {0:?}, expected {SNAPSHOT_FORMAT:?}")]
    WrongFormat(String),
    /// A snapshot version this build cannot read.
    #[error(
        "projection snapshot version {0} is not supported (this build reads {SNAPSHOT_VERSION})"
    )]
    UnsupportedVersion(u64),
    /// The state does not hash to the recorded `content_hash`.
    #[error("projection snapshot content hash is {actual}, recorded {recorded}")]
    ContentHashMismatch {
        /// The hash the file recorded.
        recorded: String,
        /// The hash of the state the file holds.
        actual: String,
    },
    /// Entries that cannot all be true at once.
    #[error("projection snapshot entry {topic}: {problem}")]
    Inconsistent {
        /// The topic whose entries disagree.
        topic: String,
        /// What disagrees.
        problem: &'static str,
    },
}

/// The file as written: a header, then the state and its hash.
#[derive(Serialize)]
struct Envelope<'a> {
    format: &'static str,
    version: u64,
    content_hash: String,
    state: &'a ProjectionSnapshot,
}

impl ProjectionSnapshot {
    /// Encodes the snapshot: one JSON document and a newline. The same
    /// snapshot always gives the same bytes.
    ///
    /// `content_hash` is `sha256:` of the canonical JSON of `state`, so a
    /// damaged file that still parses (a flipped digit) is refused too.
    pub fn to_bytes(&self) -> Vec<u8> {
        let state = serde_json::to_value(self).expect("snapshot maps have string keys");
        let envelope = Envelope {
            format: SNAPSHOT_FORMAT,
            version: SNAPSHOT_VERSION,
            content_hash: openagents_canonical::digest(&state),
            state: self,
        };
        let mut bytes = serde_json::to_vec(&envelope).expect("snapshot maps have string keys");
        bytes.push(b'\n');
        bytes
    }

    /// Decodes bytes written by [`ProjectionSnapshot::to_bytes`].
    ///
    /// The header is checked before the state, so a file from a newer
    /// version is reported as such rather than as corrupt. Agreement between
    /// entries is checked by [`crate::Projections::from_snapshot`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let mut document: Value = serde_json::from_slice(bytes).map_err(|error| {
            if error.is_eof() {
                SnapshotError::Truncated(error)
            } else {
                SnapshotError::Corrupt(error.to_string())
            }
        })?;
        let format = document
            .get("format")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if format != SNAPSHOT_FORMAT {
            return Err(SnapshotError::WrongFormat(format.to_owned()));
        }
        match document.get("version").and_then(Value::as_u64) {
            Some(SNAPSHOT_VERSION) => {}
            Some(other) => return Err(SnapshotError::UnsupportedVersion(other)),
            None => return Err(corrupt("version is missing or not an integer")),
        }
        let recorded = match document.get("content_hash").and_then(Value::as_str) {
            Some(hash) => hash.to_owned(),
            None => return Err(corrupt("content_hash is missing")),
        };
        let state = document
            .get_mut("state")
            .map(Value::take)
            .ok_or_else(|| corrupt("state is missing"))?;
        let actual = openagents_canonical::digest(&state);
        if actual != recorded {
            return Err(SnapshotError::ContentHashMismatch { recorded, actual });
        }
        serde_json::from_value(state).map_err(|error| corrupt(&error.to_string()))
    }
}

/// A [`SnapshotError::Corrupt`] with this explanation.
fn corrupt(problem: &str) -> SnapshotError {
    SnapshotError::Corrupt(problem.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Projections;
    use crate::test_support::{heartbeat, run_event, run_stream};
    use openagents_workers::WorkerStatus;
    use proptest::prelude::*;
    use serde_json::json;

    fn sample() -> ProjectionSnapshot {
        let mut projections = Projections::new();
        for event in run_stream(4) {
            projections.apply_run_event("r-1", &event);
        }
        projections.apply_run_event("r-2", &run_event(3, "run.started", json!({})));
        projections.apply_worker_event("w-1", &heartbeat(1), WorkerStatus::Running);
        projections.snapshot()
    }

    #[test]
    fn bytes_round_trip_and_are_deterministic() {
        let snapshot = sample();
        let bytes = snapshot.to_bytes();
        assert_eq!(bytes, snapshot.clone().to_bytes());
        assert_eq!(bytes.last(), Some(&b'\n'));
        assert!(bytes.starts_with(
            br#"{"format":"openagents.projection_snapshot","version":1,"content_hash":"sha256:"#
        ));
        assert_eq!(ProjectionSnapshot::from_bytes(&bytes).unwrap(), snapshot);
    }

    #[test]
    fn an_empty_snapshot_round_trips() {
        let bytes = ProjectionSnapshot::default().to_bytes();
        assert_eq!(
            ProjectionSnapshot::from_bytes(&bytes).unwrap(),
            ProjectionSnapshot::default()
        );
    }

    #[test]
    fn every_truncation_is_reported_as_truncated() {
        let bytes = sample().to_bytes();
        // The last byte is the newline; every shorter prefix cuts the JSON.
        for len in 0..bytes.len() - 1 {
            let result = ProjectionSnapshot::from_bytes(&bytes[..len]);
            assert!(
                matches!(result, Err(SnapshotError::Truncated(_))),
                "prefix of {len} bytes: {result:?}"
            );
        }
    }

    #[test]
    fn a_changed_digit_fails_the_content_hash() {
        let text = String::from_utf8(sample().to_bytes()).unwrap();
        let damaged = text.replacen(r#""last_seq":4"#, r#""last_seq":5"#, 1);
        assert_ne!(damaged, text);
        assert!(matches!(
            ProjectionSnapshot::from_bytes(damaged.as_bytes()),
            Err(SnapshotError::ContentHashMismatch { .. })
        ));
    }

    #[test]
    fn garbage_is_corrupt() {
        for bytes in [&b"not json"[..], b"{\"format\":}", b"\xff\xfe", b"[1,2]x"] {
            assert!(
                matches!(
                    ProjectionSnapshot::from_bytes(bytes),
                    Err(SnapshotError::Corrupt(_))
                ),
                "{bytes:?}"
            );
        }
    }

    /// The sample's encoding after `edit` changed the document.
    fn edited(edit: impl FnOnce(&mut Value)) -> Vec<u8> {
        let mut document: Value = serde_json::from_slice(&sample().to_bytes()).unwrap();
        edit(&mut document);
        serde_json::to_vec(&document).unwrap()
    }

    #[test]
    fn header_problems_have_their_own_errors() {
        let other_format = edited(|d| d["format"] = json!("openagents.event_log"));
        assert!(matches!(
            ProjectionSnapshot::from_bytes(&other_format),
            Err(SnapshotError::WrongFormat(format)) if format == "openagents.event_log"
        ));
        let newer = edited(|d| d["version"] = json!(2));
        assert!(matches!(
            ProjectionSnapshot::from_bytes(&newer),
            Err(SnapshotError::UnsupportedVersion(2))
        ));
        for field in ["version", "content_hash", "state"] {
            let missing = edited(|d| drop(d.as_object_mut().unwrap().remove(field)));
            assert!(
                matches!(
                    ProjectionSnapshot::from_bytes(&missing),
                    Err(SnapshotError::Corrupt(_))
                ),
                "{field}"
            );
        }
    }

    #[test]
    fn a_state_of_the_wrong_shape_is_corrupt_even_with_a_matching_hash() {
        let bytes = edited(|d| {
            d["state"]["unexpected"] = json!(1);
            d["content_hash"] = json!(openagents_canonical::digest(&d["state"]));
        });
        assert!(matches!(
            ProjectionSnapshot::from_bytes(&bytes),
            Err(SnapshotError::Corrupt(_))
        ));
    }

    proptest! {
        #[test]
        fn any_projection_state_round_trips_through_bytes(
            runs in prop::collection::vec((0u8..4, prop::collection::vec(1u64..10, 0..12)), 0..6),
        ) {
            let mut projections = Projections::new();
            for (run, seqs) in &runs {
                let run_id = format!("r-{run}");
                for seq in seqs {
                    projections.apply_run_event(&run_id, &run_stream(*seq)[*seq as usize - 1]);
                }
            }
            let bytes = projections.snapshot().to_bytes();
            let decoded = ProjectionSnapshot::from_bytes(&bytes).unwrap();
            prop_assert_eq!(decoded.to_bytes(), bytes);
            prop_assert_eq!(Projections::from_snapshot(decoded).unwrap(), projections);
        }
    }
}
