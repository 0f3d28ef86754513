//! The four artifact files of one run export as bytes, and writing them into
//! an export folder with its manifest.
//!
//! Two producers share this: the `capture` command, which fetches the bytes
//! from a running service, and [`ExportFiles::from_run_log`], which builds
//! them from a run's events with the same builders the service uses (the
//! receipt and replay of `openagents-artifacts`, the projector of
//! `openagents-projectors`). The fixtures use the latter, so a fixture's Rust
//! side is exactly what the service would serve for those events.

use crate::manifest::{MANIFEST_FILE_NAME, Manifest};
use openagents_artifacts::{FixtureError, FixtureRun};
use openagents_projectors::{Checkpoint, RunProjector, RunSummary};
use openagents_run_state::RunEvent;
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};

/// The bytes of the four artifacts of one run export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportFiles {
    /// The receipt, as `GET /internal/v1/runs/{id}/receipt` serves it.
    pub receipt: Vec<u8>,
    /// The replay, as `GET /internal/v1/runs/{id}/replay` serves it.
    pub replay: Vec<u8>,
    /// `{summary: {...}}`, as `GET /internal/v1/projectors/run-summary/{id}`
    /// serves it.
    pub summary: Vec<u8>,
    /// `{checkpoint: {...}}`, as `GET /internal/v1/projectors/checkpoints/{id}`
    /// serves it.
    pub checkpoint: Vec<u8>,
}

/// Why a run log cannot be turned into an export.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunLogError {
    /// The run log is not a log the service could have written.
    #[error("not a run log the service could have written")]
    Invalid(#[from] FixtureError),
}

/// A file of an export folder could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {}", path.display())]
pub struct WriteError {
    /// The file or folder.
    path: PathBuf,
    /// The operating system's error.
    #[source]
    source: io::Error,
}

/// The events of a run log; the log was checked by [`FixtureRun`] first.
#[derive(Deserialize)]
struct RunEvents {
    /// Every event, in seq order.
    events: Vec<RunEvent>,
}

/// The summary route's body.
#[derive(Serialize)]
struct SummaryBody<'a> {
    /// The run summary.
    summary: &'a RunSummary,
}

/// The checkpoint route's body.
#[derive(Serialize)]
struct CheckpointBody<'a> {
    /// The run checkpoint.
    checkpoint: &'a Checkpoint,
}

impl ExportFiles {
    /// Builds what the service would serve for the run log `bytes`, a
    /// `run.json` of the shape of `fixtures/runs/*/run.json`:
    /// `{"run": {id, created_at, metadata, status}, "events": [...]}`.
    pub fn from_run_log(bytes: &[u8]) -> Result<Self, RunLogError> {
        let run = FixtureRun::from_json(bytes)?;
        let RunEvents { events } = serde_json::from_slice(bytes)
            .expect("FixtureRun::from_json accepted the same bytes with a stricter shape");
        let receipt = run.receipt();
        let mut projector = RunProjector::new(&receipt.session_id);
        for event in &events {
            projector.apply(event);
        }
        // A loaded run log begins with `run.started`, so the projector has
        // applied at least that event.
        let summary = projector.summary().expect("a run log has events");
        let checkpoint = projector.checkpoint().expect("a run log has events");
        Ok(Self {
            receipt: receipt.to_json_bytes(),
            replay: run.replay(),
            summary: to_json(&SummaryBody { summary: &summary }),
            checkpoint: to_json(&CheckpointBody { checkpoint }),
        })
    }

    /// Writes the four files and a `manifest.json` naming them into `dir`
    /// (created if needed); returns the manifest's path.
    pub fn write_dir(&self, dir: &Path) -> Result<PathBuf, WriteError> {
        std::fs::create_dir_all(dir).map_err(|source| WriteError {
            path: dir.to_owned(),
            source,
        })?;
        let manifest = Manifest::standard();
        let files = [
            (&manifest.receipt, self.receipt.as_slice()),
            (&manifest.replay, self.replay.as_slice()),
            (&manifest.summary, self.summary.as_slice()),
            (&manifest.checkpoint, self.checkpoint.as_slice()),
        ];
        for (name, bytes) in files {
            write(&dir.join(name), bytes)?;
        }
        let manifest_path = dir.join(MANIFEST_FILE_NAME);
        write(&manifest_path, &manifest.to_json_bytes())?;
        Ok(manifest_path)
    }
}

/// Compact JSON, as the service's JSON routes answer.
fn to_json<T: Serialize>(body: &T) -> Vec<u8> {
    serde_json::to_vec(body).expect("projector records hold only strings and numbers")
}

/// Writes `bytes` to `path`, naming the file on failure.
fn write(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    std::fs::write(path, bytes).map_err(|source| WriteError {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::RunExport;
    use serde_json::{Value, json};

    fn run_log(status: &str, events: Value) -> Vec<u8> {
        json!({
            "run": {"id": "run-7", "created_at": "t0", "metadata": {}, "status": status},
            "events": events,
        })
        .to_string()
        .into_bytes()
    }

    fn event(seq: u64, event_type: &str, payload: Value) -> Value {
        json!({"seq": seq, "event_type": event_type, "payload": payload,
               "idempotency_key": null, "recorded_at": format!("t{seq}")})
    }

    #[test]
    fn a_run_log_becomes_the_export_the_service_would_serve() {
        let log = run_log(
            "failed",
            json!([
                event(1, "run.started", json!({})),
                event(2, "run.finished", json!({"status": "failed"}))
            ]),
        );
        let files = ExportFiles::from_run_log(&log).unwrap();
        let summary: Value = serde_json::from_slice(&files.summary).unwrap();
        assert_eq!(summary["summary"]["status"], "failed");
        assert_eq!(summary["summary"]["event_count"], 2);
        let checkpoint: Value = serde_json::from_slice(&files.checkpoint).unwrap();
        assert_eq!(
            checkpoint,
            json!({"checkpoint": {"topic": "run:run-7:events", "last_seq": 2,
                   "last_event_type": "run.finished", "updated_at": "t2"}})
        );

        let dir = tempfile::tempdir().unwrap();
        let manifest = files.write_dir(&dir.path().join("export")).unwrap();
        let export = RunExport::load(&manifest).unwrap();
        assert_eq!(export.receipt.session_id, "run-7");
        assert_eq!(export.replay.event_count, 2);
        assert_eq!(
            std::fs::read(dir.path().join("export/replay.jsonl")).unwrap(),
            files.replay
        );
    }

    #[test]
    fn a_run_log_without_events_is_not_one_the_service_could_write() {
        let log = run_log("created", json!([]));
        assert!(matches!(
            ExportFiles::from_run_log(&log),
            Err(RunLogError::Invalid(_))
        ));
    }

    #[test]
    fn an_invalid_run_log_is_refused() {
        let log = run_log("succeeded", json!([event(1, "run.started", json!({}))]));
        assert!(matches!(
            ExportFiles::from_run_log(&log),
            Err(RunLogError::Invalid(_))
        ));
    }

    #[test]
    fn a_write_failure_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "not a folder").unwrap();
        let files = ExportFiles {
            receipt: vec![],
            replay: vec![],
            summary: vec![],
            checkpoint: vec![],
        };
        let error = files.write_dir(&blocker.join("export")).unwrap_err();
        assert!(error.to_string().contains("file"), "{error}");
    }
}
