//! Small exports shared by the unit tests.

use crate::export::{CheckpointFacts, ReceiptFacts, ReplayFacts, RunExport, SummaryFacts};
use std::fs;
use std::path::{Path, PathBuf};

/// A two-event replay of `run-1`.
pub(crate) const REPLAY: &str = concat!(
    r#"{"type":"ReplayHeader","replay_version":1,"producer":"openagents-runtime","created_at":"t0"}"#,
    "\n",
    r#"{"type":"SessionStart","ts":"t0","session_id":"run-1","policy_bundle_id":"runtime.default"}"#,
    "\n",
    r#"{"type":"RuntimeEvent","ts":"t1","session_id":"run-1","seq":1,"runtime_event_type":"run.started","payload_hash":"h1","payload":{}}"#,
    "\n",
    r#"{"type":"RuntimeEvent","ts":"t2","session_id":"run-1","seq":2,"runtime_event_type":"run.finished","payload_hash":"h2","payload":{"status":"succeeded"}}"#,
    "\n",
    r#"{"type":"SessionEnd","ts":"t2","session_id":"run-1","status":"success","confidence":1.0,"total_tool_calls":0}"#,
    "\n",
);

/// Writes a small consistent export of `run-1` into `dir`; returns the
/// manifest's path.
pub(crate) fn write_export(dir: &Path) -> PathBuf {
    let files = [
        (
            "receipt.json",
            r#"{"schema":"openagents.receipt.v1","session_id":"run-1","trajectory_hash":"sha256:t","policy_bundle_id":"runtime.default","created_at":"t0","event_count":2,"first_seq":1,"last_seq":2,"tool_calls":[],"verification":[]}"#,
        ),
        ("replay.jsonl", REPLAY),
        (
            "summary.json",
            r#"{"summary":{"run_id":"run-1","status":"succeeded","last_seq":2,"event_count":2,"projection_hash":"sha256:p","updated_at":"t2"}}"#,
        ),
        (
            "checkpoint.json",
            r#"{"checkpoint":{"topic":"run:run-1:events","last_seq":2,"last_event_type":"run.finished","updated_at":"t2"}}"#,
        ),
        (
            "manifest.json",
            r#"{"receipt":"receipt.json","replay":"replay.jsonl","summary":"summary.json","checkpoint":"checkpoint.json"}"#,
        ),
    ];
    for (name, text) in files {
        fs::write(dir.join(name), text).unwrap();
    }
    dir.join("manifest.json")
}

/// The facts of the export [`write_export`] writes, built in memory.
pub(crate) fn sample_export() -> RunExport {
    RunExport {
        receipt: ReceiptFacts {
            session_id: "run-1".to_owned(),
            trajectory_hash: "sha256:t".to_owned(),
            event_count: 2,
            last_seq: 2,
            canonical_json_sha256: Some("c".repeat(64)),
        },
        replay: ReplayFacts {
            session_id: "run-1".to_owned(),
            hash: openagents_canonical::digest_bytes(REPLAY.as_bytes()),
            event_count: 2,
        },
        summary: SummaryFacts {
            run_id: "run-1".to_owned(),
            status: "succeeded".to_owned(),
            last_seq: 2,
            event_count: 2,
            projection_hash: "sha256:p".to_owned(),
        },
        checkpoint: CheckpointFacts {
            last_seq: 2,
            last_event_type: "run.finished".to_owned(),
        },
    }
}
