//! One side of a comparison: the facts read from the four artifacts one
//! runtime published for one run.
//!
//! Only the compared facts are kept, not the files: a replay of any size is
//! read once, hashed and counted.

use crate::error::LoadError;
use crate::json::{optional_str, parse_json, require_str, require_u64, unwrap_envelope};
use crate::manifest::Manifest;
use openagents_artifacts::RECEIPT_SCHEMA;
use serde_json::Value;
use std::path::Path;

/// Replay line type that opens the session and names it.
const SESSION_START: &str = "SessionStart";
/// Replay line type of one runtime event.
const RUNTIME_EVENT: &str = "RuntimeEvent";

/// The compared facts of one run export, loaded through its manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunExport {
    /// Facts of the receipt.
    pub(crate) receipt: ReceiptFacts,
    /// Facts of the replay.
    pub(crate) replay: ReplayFacts,
    /// Facts of the run summary.
    pub(crate) summary: SummaryFacts,
    /// Facts of the run checkpoint.
    pub(crate) checkpoint: CheckpointFacts,
}

/// What the comparison reads from a receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReceiptFacts {
    /// `session_id`, the run id.
    pub(crate) session_id: String,
    /// `trajectory_hash`, the hash of the whole event list.
    pub(crate) trajectory_hash: String,
    /// `event_count`.
    pub(crate) event_count: u64,
    /// `last_seq`.
    pub(crate) last_seq: u64,
    /// `canonical_json_sha256`, absent from receipts older than the field.
    /// The `signature` is not read: each runtime signs with its own key.
    pub(crate) canonical_json_sha256: Option<String>,
}

/// What the comparison reads from a replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReplayFacts {
    /// `session_id` of the SessionStart line.
    pub(crate) session_id: String,
    /// `sha256:<hex>` of the file's bytes.
    pub(crate) hash: String,
    /// How many RuntimeEvent lines the file has.
    pub(crate) event_count: u64,
}

/// What the comparison reads from a run summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SummaryFacts {
    /// `run_id`.
    pub(crate) run_id: String,
    /// `status`, kept as text so that a status this build does not know is
    /// reported as a difference instead of refused as unreadable.
    pub(crate) status: String,
    /// `last_seq`.
    pub(crate) last_seq: u64,
    /// `event_count`.
    pub(crate) event_count: u64,
    /// `projection_hash`.
    pub(crate) projection_hash: String,
}

/// What the comparison reads from a run checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CheckpointFacts {
    /// `last_seq`.
    pub(crate) last_seq: u64,
    /// `last_event_type`.
    pub(crate) last_event_type: String,
}

impl RunExport {
    /// Loads the export whose manifest is at `manifest_path`.
    ///
    /// Fails on the first file that is missing, is not JSON, or lacks a
    /// compared field; the error names that file.
    pub fn load(manifest_path: &Path) -> Result<Self, LoadError> {
        let manifest = Manifest::load(manifest_path)?;
        Ok(Self {
            receipt: ReceiptFacts::load(&manifest.receipt)?,
            replay: ReplayFacts::load(&manifest.replay)?,
            summary: SummaryFacts::load(&manifest.summary)?,
            checkpoint: CheckpointFacts::load(&manifest.checkpoint)?,
        })
    }
}

/// Reads the whole file at `path`.
fn read(path: &Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Reads the file at `path` as one JSON document.
fn read_json(path: &Path) -> Result<Value, LoadError> {
    parse_json(path, &read(path)?)
}

impl ReceiptFacts {
    /// Loads the receipt at `path`; it must declare `openagents.receipt.v1`,
    /// since the fields of another schema would not mean the same thing.
    fn load(path: &Path) -> Result<Self, LoadError> {
        let value = read_json(path)?;
        let schema = require_str(path, &value, "schema")?;
        if schema != RECEIPT_SCHEMA {
            return Err(LoadError::WrongSchema {
                path: path.to_owned(),
                found: schema.to_owned(),
            });
        }
        Ok(Self {
            session_id: require_str(path, &value, "session_id")?.to_owned(),
            trajectory_hash: require_str(path, &value, "trajectory_hash")?.to_owned(),
            event_count: require_u64(path, &value, "event_count")?,
            last_seq: require_u64(path, &value, "last_seq")?,
            canonical_json_sha256: optional_str(path, &value, "canonical_json_sha256")?
                .map(str::to_owned),
        })
    }
}

impl ReplayFacts {
    /// Loads the replay at `path`.
    ///
    /// Every line must be a JSON object with a string `type`, and a
    /// SessionStart line must name the session. The format's other rules are
    /// the replay validator's business (`cargo xtask replay-validate`): a
    /// replay that breaks them still has a hash and a count to compare.
    fn load(path: &Path) -> Result<Self, LoadError> {
        let bytes = read(path)?;
        let mut session_id = None;
        let mut event_count = 0;
        for (index, line) in bytes.split(|&byte| byte == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let line = ReplayRecord::parse(path, index as u64 + 1, line)?;
            match line.kind()? {
                RUNTIME_EVENT => event_count += 1,
                SESSION_START if session_id.is_none() => session_id = Some(line.session_id()?),
                _ => {}
            }
        }
        let session_id = session_id.ok_or_else(|| LoadError::MissingField {
            path: path.to_owned(),
            field: "SessionStart.session_id".to_owned(),
        })?;
        Ok(Self {
            session_id,
            hash: openagents_canonical::digest_bytes(&bytes),
            event_count,
        })
    }
}

/// One parsed line of a replay file, with what its errors must name.
struct ReplayRecord<'a> {
    /// The replay file.
    path: &'a Path,
    /// The 1-based line number.
    line: u64,
    /// The line's JSON.
    value: Value,
}

impl<'a> ReplayRecord<'a> {
    /// Parses line `line` of the replay at `path`.
    fn parse(path: &'a Path, line: u64, bytes: &[u8]) -> Result<Self, LoadError> {
        let value = serde_json::from_slice(bytes).map_err(|source| LoadError::ReplayLine {
            path: path.to_owned(),
            line,
            source,
        })?;
        Ok(Self { path, line, value })
    }

    /// The line's `type`.
    fn kind(&self) -> Result<&str, LoadError> {
        self.string("type")
    }

    /// The line's `session_id`.
    fn session_id(&self) -> Result<String, LoadError> {
        self.string("session_id").map(str::to_owned)
    }

    /// The string field `field`; errors name it with the line number.
    fn string(&self, field: &str) -> Result<&str, LoadError> {
        self.value
            .get(field)
            .and_then(Value::as_str)
            .ok_or_else(|| LoadError::MissingField {
                path: self.path.to_owned(),
                field: format!("{field} (line {})", self.line),
            })
    }
}

impl SummaryFacts {
    /// Loads the run summary at `path`, wrapped in `{summary: ...}` or bare.
    fn load(path: &Path) -> Result<Self, LoadError> {
        let document = read_json(path)?;
        let value = unwrap_envelope(&document, "summary");
        Ok(Self {
            run_id: require_str(path, value, "run_id")?.to_owned(),
            status: require_str(path, value, "status")?.to_owned(),
            last_seq: require_u64(path, value, "last_seq")?,
            event_count: require_u64(path, value, "event_count")?,
            projection_hash: require_str(path, value, "projection_hash")?.to_owned(),
        })
    }
}

impl CheckpointFacts {
    /// Loads the run checkpoint at `path`, wrapped in `{checkpoint: ...}` or
    /// bare.
    fn load(path: &Path) -> Result<Self, LoadError> {
        let document = read_json(path)?;
        let value = unwrap_envelope(&document, "checkpoint");
        Ok(Self {
            last_seq: require_u64(path, value, "last_seq")?,
            last_event_type: require_str(path, value, "last_event_type")?.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{REPLAY, write_export};
    use std::fs;

    #[test]
    fn an_export_loads_its_facts() {
        let dir = tempfile::tempdir().unwrap();
        let export = RunExport::load(&write_export(dir.path())).unwrap();
        assert_eq!(export.receipt.session_id, "run-1");
        assert_eq!(export.receipt.trajectory_hash, "sha256:t");
        assert_eq!(export.replay.session_id, "run-1");
        assert_eq!(export.replay.event_count, 2);
        assert_eq!(
            export.replay.hash,
            openagents_canonical::digest_bytes(REPLAY.as_bytes())
        );
        assert_eq!(export.summary.status, "succeeded");
        assert_eq!(export.checkpoint.last_event_type, "run.finished");
    }

    #[test]
    fn bare_projector_objects_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = write_export(dir.path());
        let wrapped = RunExport::load(&manifest).unwrap();
        fs::write(
            dir.path().join("summary.json"),
            r#"{"run_id":"run-1","status":"succeeded","last_seq":2,"event_count":2,"projection_hash":"sha256:p","updated_at":"t2"}"#,
        )
        .unwrap();
        fs::write(
            dir.path().join("checkpoint.json"),
            r#"{"topic":"run:run-1:events","last_seq":2,"last_event_type":"run.finished","updated_at":"t2"}"#,
        )
        .unwrap();
        assert_eq!(RunExport::load(&manifest).unwrap(), wrapped);
    }

    #[test]
    fn a_missing_artifact_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = write_export(dir.path());
        fs::remove_file(dir.path().join("replay.jsonl")).unwrap();
        let error = RunExport::load(&manifest).unwrap_err();
        assert!(matches!(error, LoadError::Read { .. }), "{error}");
        assert!(error.to_string().contains("replay.jsonl"), "{error}");
    }

    #[test]
    fn a_missing_manifest_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let error = RunExport::load(&dir.path().join("absent.json")).unwrap_err();
        assert!(error.to_string().contains("absent.json"), "{error}");
    }

    #[test]
    fn bad_json_is_named_with_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = write_export(dir.path());
        fs::write(dir.path().join("summary.json"), "{\"summary\": ").unwrap();
        let error = RunExport::load(&manifest).unwrap_err();
        assert!(matches!(error, LoadError::Json { .. }), "{error}");
        assert!(error.to_string().contains("summary.json"), "{error}");
    }

    #[test]
    fn a_bad_replay_line_is_named_with_its_number() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = write_export(dir.path());
        let broken = REPLAY.replacen("{\"type\":\"RuntimeEvent\"", "{oops", 1);
        fs::write(dir.path().join("replay.jsonl"), broken).unwrap();
        let error = RunExport::load(&manifest).unwrap_err();
        assert!(
            matches!(error, LoadError::ReplayLine { line: 3, .. }),
            "{error}"
        );
        assert!(error.to_string().contains("replay.jsonl"), "{error}");
    }

    #[test]
    fn a_replay_without_session_start_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = write_export(dir.path());
        let headless: String = REPLAY
            .lines()
            .filter(|line| !line.contains(SESSION_START))
            .map(|line| format!("{line}\n"))
            .collect();
        fs::write(dir.path().join("replay.jsonl"), headless).unwrap();
        let error = RunExport::load(&manifest).unwrap_err();
        assert!(
            matches!(&error, LoadError::MissingField { field, .. } if field == "SessionStart.session_id"),
            "{error}"
        );
    }

    #[test]
    fn missing_compared_fields_are_named() {
        let cases = [
            (
                "receipt.json",
                r#"{"schema":"openagents.receipt.v1","session_id":"run-1","event_count":2,"last_seq":2}"#,
                "trajectory_hash",
            ),
            (
                "summary.json",
                r#"{"summary":{"run_id":"run-1","last_seq":2,"event_count":2,"projection_hash":"p"}}"#,
                "status",
            ),
            (
                "checkpoint.json",
                r#"{"checkpoint":{"last_seq":2}}"#,
                "last_event_type",
            ),
        ];
        for (file, text, missing) in cases {
            let dir = tempfile::tempdir().unwrap();
            let manifest = write_export(dir.path());
            fs::write(dir.path().join(file), text).unwrap();
            let error = RunExport::load(&manifest).unwrap_err();
            assert!(
                matches!(&error, LoadError::MissingField { field, .. } if field == missing),
                "{file}: {error}"
            );
            assert!(error.to_string().contains(file), "{error}");
        }
    }

    #[test]
    fn a_receipt_of_another_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = write_export(dir.path());
        fs::write(
            dir.path().join("receipt.json"),
            r#"{"schema":"openagents.receipt.v2","session_id":"run-1","trajectory_hash":"t","event_count":2,"last_seq":2}"#,
        )
        .unwrap();
        let error = RunExport::load(&manifest).unwrap_err();
        assert!(matches!(error, LoadError::WrongSchema { .. }), "{error}");
    }
}
