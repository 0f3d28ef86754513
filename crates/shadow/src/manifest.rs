//! The manifest: one small JSON file that names the four artifacts of one run
//! export, so that a legacy export and a Rust export can live anywhere and
//! still be compared by the same command.
//!
//! ```json
//! {"receipt": "receipt.json", "replay": "replay.jsonl",
//!  "summary": "summary.json", "checkpoint": "checkpoint.json"}
//! ```
//!
//! A relative path is taken relative to the folder that holds the manifest,
//! not to the working directory, so an export folder can be moved or checked
//! in as a whole. An absolute path is used as it is. Other keys are ignored, so
//! an exporter may annotate its manifest.
//!
//! The reference implementation writes its exports with `_path` names and
//! the run id, and those legacy exports are read as they are:
//!
//! ```json
//! {"run_id": "…", "receipt_path": "receipt.json", "replay_path": "replay.jsonl",
//!  "summary_path": "summary.json", "checkpoint_path": "checkpoint.json"}
//! ```
//!
//! Each artifact is looked up under its short name first, then under the
//! `_path` name; a missing one is reported under its short name.

use crate::error::LoadError;
use crate::json::{parse_json, require_str};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// File name of the manifest inside an export folder written by this crate.
pub const MANIFEST_FILE_NAME: &str = "manifest.json";

/// The four artifacts of one run export, by path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Manifest {
    /// The receipt, `openagents.receipt.v1` JSON.
    pub(crate) receipt: PathBuf,
    /// The replay, `REPLAY.jsonl` v1.
    pub(crate) replay: PathBuf,
    /// The run summary, `{summary: {...}}` or the bare inner object.
    pub(crate) summary: PathBuf,
    /// The run checkpoint, `{checkpoint: {...}}` or the bare inner object.
    pub(crate) checkpoint: PathBuf,
}

impl Manifest {
    /// The manifest of an export folder written by this crate: fixed file
    /// names, relative to the manifest.
    pub(crate) fn standard() -> Self {
        Self {
            receipt: PathBuf::from("receipt.json"),
            replay: PathBuf::from("replay.jsonl"),
            summary: PathBuf::from("summary.json"),
            checkpoint: PathBuf::from("checkpoint.json"),
        }
    }

    /// Reads the manifest at `path` and resolves its four paths against the
    /// manifest's folder.
    pub(crate) fn load(path: &Path) -> Result<Self, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        let value = parse_json(path, &bytes)?;
        let base = path.parent().unwrap_or(Path::new(""));
        let entry = |field: &str| {
            let legacy = format!("{field}_path");
            let name = if value.get(field).is_none() && value.get(&legacy).is_some() {
                legacy.as_str()
            } else {
                field
            };
            require_str(path, &value, name).map(|name| base.join(name))
        };
        Ok(Self {
            receipt: entry("receipt")?,
            replay: entry("replay")?,
            summary: entry("summary")?,
            checkpoint: entry("checkpoint")?,
        })
    }

    /// The manifest as written into an export folder: pretty JSON and a
    /// final newline, because people read and diff these files.
    pub(crate) fn to_json_bytes(&self) -> Vec<u8> {
        let mut bytes =
            serde_json::to_vec_pretty(self).expect("a manifest holds only UTF-8 path strings");
        bytes.push(b'\n');
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write_manifest(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("manifest.json");
        fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn relative_paths_resolve_against_the_manifest_folder() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_manifest(
            dir.path(),
            r#"{"receipt":"r.json","replay":"sub/replay.jsonl","summary":"s.json","checkpoint":"c.json"}"#,
        );
        let manifest = Manifest::load(&path).unwrap();
        assert_eq!(manifest.receipt, dir.path().join("r.json"));
        assert_eq!(manifest.replay, dir.path().join("sub/replay.jsonl"));
    }

    #[test]
    fn absolute_paths_are_used_as_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let receipt = elsewhere.path().join("receipt.json");
        let text = serde_json::json!({
            "receipt": receipt,
            "replay": "replay.jsonl",
            "summary": "summary.json",
            "checkpoint": "checkpoint.json",
            "note": "unknown keys are ignored",
        });
        let path = write_manifest(dir.path(), &text.to_string());
        let manifest = Manifest::load(&path).unwrap();
        assert_eq!(manifest.receipt, receipt);
        assert_eq!(manifest.summary, dir.path().join("summary.json"));
    }

    #[test]
    fn the_reference_manifest_with_path_names_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_manifest(
            dir.path(),
            r#"{"run_id":"019a0000-0000-7000-8000-000000000000","receipt_path":"r.json",
                "replay_path":"p.jsonl","summary_path":"s.json","checkpoint_path":"c.json"}"#,
        );
        let manifest = Manifest::load(&path).unwrap();
        assert_eq!(manifest.receipt, dir.path().join("r.json"));
        assert_eq!(manifest.replay, dir.path().join("p.jsonl"));
        assert_eq!(manifest.summary, dir.path().join("s.json"));
        assert_eq!(manifest.checkpoint, dir.path().join("c.json"));
    }

    #[test]
    fn a_missing_entry_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_manifest(
            dir.path(),
            r#"{"receipt":"r.json","replay":"p.jsonl","summary":"s.json"}"#,
        );
        let error = Manifest::load(&path).unwrap_err();
        assert!(
            matches!(&error, LoadError::MissingField { field, .. } if field == "checkpoint"),
            "{error}"
        );
        assert!(error.to_string().contains("manifest.json"), "{error}");
    }

    #[test]
    fn the_standard_manifest_round_trips_through_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = Manifest::standard().to_json_bytes();
        let path = write_manifest(dir.path(), std::str::from_utf8(&bytes).unwrap());
        let loaded = Manifest::load(&path).unwrap();
        assert_eq!(loaded.checkpoint, dir.path().join("checkpoint.json"));
        assert!(bytes.ends_with(b"}\n"));
    }
}
