//! Snapshot tests over the fixture runs in `fixtures/runs/`: each fixture is a
//! log the service could have written, its receipt and replay match the
//! reviewed `insta` snapshots, and its replay passes the validator.
//!
//! The byte-exact golden files beside each `run.json` are kept in step by
//! `cargo xtask fixtures --check`; these snapshots are the readable review of
//! the same artifacts.

use openagents_artifacts::{FixtureRun, ReceiptSigner, validate_replay};
use std::fs;
use std::path::{Path, PathBuf};

/// Every fixture run, so a deleted or added directory is noticed.
const FIXTURES: [&str; 7] = [
    "cancel-pending",
    "cancellation",
    "failure",
    "happy-path",
    "in-progress",
    "tool-calls-with-verification",
    "unicode-nested",
];

fn fixture_runs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/runs")
}

fn load(name: &str) -> FixtureRun {
    let bytes = fs::read(fixture_runs().join(name).join("run.json")).unwrap();
    FixtureRun::from_json(&bytes).unwrap_or_else(|error| panic!("{name}: {error}"))
}

#[test]
fn the_fixture_list_names_every_fixture_directory() {
    let mut found: Vec<String> = fs::read_dir(fixture_runs())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    found.sort();
    assert_eq!(found, FIXTURES);
}

#[test]
fn every_fixture_declares_the_status_its_events_fold_to() {
    // `FixtureRun::from_json` folds the events through `RunStatus::decide`
    // and refuses a fixture whose declared status differs.
    for name in FIXTURES {
        load(name);
    }
}

#[test]
fn receipts_match_their_snapshots() {
    for name in FIXTURES {
        insta::assert_json_snapshot!(format!("{name}-receipt"), load(name).receipt());
    }
}

/// A signed receipt is pinned too: the signature is deterministic, so the
/// same run and key always give these bytes. The key is BIP-340's test key
/// 3, never a real one.
#[test]
fn a_signed_receipt_matches_its_snapshot() {
    let signer = ReceiptSigner::from_hex(&format!("{:064x}", 3)).unwrap();
    let signed = load("tool-calls-with-verification")
        .receipt()
        .signed(&signer);
    insta::assert_json_snapshot!("tool-calls-with-verification-receipt-signed", signed);
}

#[test]
fn replays_pass_the_validator_and_match_their_snapshots() {
    for name in FIXTURES {
        let replay = load(name).replay();
        validate_replay(&replay[..]).unwrap_or_else(|error| panic!("{name}: {error}"));
        insta::assert_snapshot!(format!("{name}-replay"), String::from_utf8(replay).unwrap());
    }
}
