//! The shadow scenarios under `fixtures/shadow/<scenario>/` are consistent:
//!
//! - each legacy export is exactly what its `scenario.json` says: the
//!   artifacts the real builders make from `rust/events.json`, with the
//!   scenario's `legacy_edits` applied (so no legacy file is edited by hand);
//! - comparing the legacy export with the Rust side built from
//!   `rust/events.json` gives the scenario's `expected_gate` and exactly its
//!   `expected_diffs`;
//! - every legacy summary hashes its own fields, and every legacy replay
//!   passes the replay validator, as a real runtime's would.
//!
//! After changing a scenario, regenerate its legacy export with
//! `cargo test -p openagents-shadow --test fixtures -- --ignored regenerate`.

use openagents_artifacts::validate_replay;
use openagents_projectors::run_projection_hash;
use openagents_shadow::{Decision, ExportFiles, Field, GatePolicy, check_parity};
use serde::Deserialize;
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};

/// What a scenario declares, from its `scenario.json`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Scenario {
    /// What the scenario shows, for the reader.
    #[serde(rename = "description")]
    _description: String,
    /// The gate policy the scenario is judged by.
    policy: Policy,
    /// The gate's expected verdict.
    expected_gate: Decision,
    /// The fields expected to differ, in report order.
    expected_diffs: Vec<Field>,
    /// How the legacy export departs from what the builders make.
    legacy_edits: Vec<Edit>,
}

/// The gate policy as written in a scenario.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Policy {
    /// `--max-warnings`.
    max_warnings: u64,
    /// `--block-on-critical`.
    block_on_critical: bool,
}

/// One change the legacy runtime made compared to the builders' output.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Edit {
    /// Where: `events` (the run log, before the artifacts are built),
    /// `receipt`, `replay`, `summary` or `checkpoint`.
    file: String,
    /// For `replay`: the 1-based line to edit.
    line: Option<usize>,
    /// JSON pointer of the value to replace (or remove).
    pointer: String,
    /// The legacy value; ignored with `remove`.
    #[serde(default)]
    value: Value,
    /// Remove the field at `pointer` instead: the legacy runtime does not
    /// write it.
    #[serde(default)]
    remove: bool,
    /// Why the legacy runtime differs, for the reader.
    #[serde(rename = "why")]
    _why: String,
}

/// `fixtures/shadow`.
fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/shadow")
}

/// Every scenario folder, by name.
fn scenarios() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(scenarios_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_dir())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 8, "scenarios missing under {dirs:?}");
    dirs
}

/// Reads a scenario's `scenario.json`.
fn load_scenario(dir: &Path) -> Scenario {
    let bytes = fs::read(dir.join("scenario.json")).unwrap();
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

/// Replaces (or removes) the value at `pointer` in `document`, which must
/// exist.
fn replace(document: &mut Value, edit: &Edit) {
    if edit.remove {
        let (parent, key) = edit
            .pointer
            .rsplit_once('/')
            .expect("a pointer starts with /");
        let removed = document
            .pointer_mut(parent)
            .and_then(Value::as_object_mut)
            .and_then(|object| object.remove(key));
        assert!(removed.is_some(), "{} has no {}", edit.file, edit.pointer);
        return;
    }
    let slot = document
        .pointer_mut(&edit.pointer)
        .unwrap_or_else(|| panic!("{} has no {}", edit.file, edit.pointer));
    *slot = edit.value.clone();
}

/// Applies `edit` to the JSON document `bytes`, written back compact.
fn edit_json(bytes: &[u8], edit: &Edit) -> Vec<u8> {
    let mut document: Value = serde_json::from_slice(bytes).unwrap();
    replace(&mut document, edit);
    serde_json::to_vec(&document).unwrap()
}

/// Applies `edit` to one line of the replay `bytes`.
fn edit_replay(bytes: &[u8], edit: &Edit) -> Vec<u8> {
    let text = std::str::from_utf8(bytes).unwrap();
    let index = edit.line.expect("a replay edit names its line") - 1;
    text.lines()
        .enumerate()
        .map(|(at, line)| {
            let line = if at == index {
                String::from_utf8(edit_json(line.as_bytes(), edit)).unwrap()
            } else {
                line.to_owned()
            };
            line + "\n"
        })
        .collect::<String>()
        .into_bytes()
}

/// The legacy export a scenario declares.
fn legacy_files(dir: &Path, scenario: &Scenario) -> ExportFiles {
    let mut log: Value =
        serde_json::from_slice(&fs::read(dir.join("rust/events.json")).unwrap()).unwrap();
    let (event_edits, artifact_edits): (Vec<&Edit>, Vec<&Edit>) = scenario
        .legacy_edits
        .iter()
        .partition(|edit| edit.file == "events");
    for edit in event_edits {
        replace(&mut log, edit);
    }
    let mut files = ExportFiles::from_run_log(&serde_json::to_vec(&log).unwrap()).unwrap();
    for edit in artifact_edits {
        match edit.file.as_str() {
            "receipt" => files.receipt = edit_json(&files.receipt, edit),
            "replay" => files.replay = edit_replay(&files.replay, edit),
            "summary" => files.summary = edit_json(&files.summary, edit),
            "checkpoint" => files.checkpoint = edit_json(&files.checkpoint, edit),
            other => panic!("unknown edit target {other}"),
        }
    }
    files
}

/// The Rust side of a scenario, written into `out`; returns its manifest.
fn write_rust_side(dir: &Path, out: &Path) -> PathBuf {
    let log = fs::read(dir.join("rust/events.json")).unwrap();
    ExportFiles::from_run_log(&log)
        .unwrap()
        .write_dir(out)
        .unwrap()
}

#[test]
fn legacy_exports_are_what_their_scenarios_declare() {
    for dir in scenarios() {
        let scenario = load_scenario(&dir);
        let scratch = tempfile::tempdir().unwrap();
        legacy_files(&dir, &scenario)
            .write_dir(scratch.path())
            .unwrap();
        for name in [
            "manifest.json",
            "receipt.json",
            "replay.jsonl",
            "summary.json",
            "checkpoint.json",
        ] {
            let expected = fs::read(scratch.path().join(name)).unwrap();
            let found = fs::read(dir.join("legacy").join(name)).unwrap_or_default();
            assert!(
                expected == found,
                "{}/legacy/{name} is stale; regenerate it (see the top of this file)",
                dir.display()
            );
        }
    }
}

#[test]
fn every_scenario_gates_as_it_expects() {
    for dir in scenarios() {
        let scenario = load_scenario(&dir);
        let scratch = tempfile::tempdir().unwrap();
        let rust = write_rust_side(&dir, scratch.path());
        let policy = GatePolicy {
            max_warnings: scenario.policy.max_warnings,
            block_on_critical: scenario.policy.block_on_critical,
        };
        let report = check_parity(&dir.join("legacy/manifest.json"), &rust, policy).unwrap();
        let fields: Vec<Field> = report.diffs.iter().map(|diff| diff.field).collect();
        assert_eq!(fields, scenario.expected_diffs, "{}", dir.display());
        assert_eq!(
            report.gate.decision,
            scenario.expected_gate,
            "{}: {}",
            dir.display(),
            report.gate.reason
        );
    }
}

#[test]
fn legacy_summaries_hash_their_own_fields() {
    for dir in scenarios() {
        let bytes = fs::read(dir.join("legacy/summary.json")).unwrap();
        let document: Value = serde_json::from_slice(&bytes).unwrap();
        let summary = &document["summary"];
        let status = serde_json::from_value(summary["status"].clone()).unwrap();
        let expected = run_projection_hash(
            summary["run_id"].as_str().unwrap(),
            status,
            summary["last_seq"].as_u64().unwrap(),
            summary["event_count"].as_u64().unwrap(),
        );
        assert_eq!(summary["projection_hash"], expected, "{}", dir.display());
    }
}

#[test]
fn legacy_replays_are_valid() {
    for dir in scenarios() {
        let bytes = fs::read(dir.join("legacy/replay.jsonl")).unwrap();
        if let Err(error) = validate_replay(bytes.as_slice()) {
            panic!("{}/legacy/replay.jsonl: {error}", dir.display());
        }
    }
}

/// Rewrites every legacy export from its scenario. Ignored so that a normal
/// run only checks; run it by name after changing a scenario.
#[test]
#[ignore = "writes fixtures; run by name to regenerate"]
fn regenerate() {
    for dir in scenarios() {
        let scenario = load_scenario(&dir);
        legacy_files(&dir, &scenario)
            .write_dir(&dir.join("legacy"))
            .unwrap();
    }
}
