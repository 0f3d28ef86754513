//! A log written by the single-file release (`fixtures/logs/single-file/`,
//! written over HTTP by the release before segments) opens in place with
//! `RUNTIME_EVENT_LOG_PATH` unchanged, serves every run and receipt byte for
//! byte as that release did, and keeps working: appends roll it into
//! segments, and a SIGKILL and restart lose nothing acknowledged.

mod support;

use serde_json::{Value, json};
use std::path::Path;
use support::process::Server;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../fixtures/logs/single-file"
);

fn start(data: &Path) -> Server {
    Server::start_with(&[
        (
            "RUNTIME_EVENT_LOG_PATH",
            data.join("events.jsonl").display().to_string(),
        ),
        (
            "RUNTIME_CHECKPOINT_PATH",
            data.join("projections.json").display().to_string(),
        ),
        ("RUNTIME_EVENT_LOG_SEGMENT_BYTES", (64 << 10).to_string()),
    ])
}

/// What the single-file release served for each run of the fixture.
fn expected() -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(Path::new(FIXTURE).join("expected.json")).unwrap();
    let expected: Value = serde_json::from_str(&text).unwrap();
    expected["runs"].as_object().unwrap().clone()
}

fn assert_served_as_before(server: &Server, runs: &serde_json::Map<String, Value>) {
    for (id, before) in runs {
        let (status, mut run) = server.call("GET", &format!("/internal/v1/runs/{id}"), None);
        assert_eq!(status, 200, "{run}");
        // Events now show who wrote them; records of that release name no
        // one. Everything else is served as before.
        for event in run["run"]["events"].as_array_mut().unwrap() {
            let written_by = event.as_object_mut().unwrap().remove("written_by");
            assert_eq!(written_by, Some(Value::Null), "run {id}");
        }
        assert_eq!(run, before["run"], "run {id}");
        let (status, mut receipt) =
            server.call("GET", &format!("/internal/v1/runs/{id}/receipt"), None);
        assert_eq!(status, 200, "{receipt}");
        // Receipts now end with the digest of their fields; the fields are
        // those that release served.
        let fields = receipt.as_object_mut().unwrap();
        let digest = fields.remove("canonical_json_sha256");
        assert_eq!(
            digest,
            Some(hex::encode(openagents_artifacts::canonical_receipt_digest(fields)).into()),
            "receipt of {id}"
        );
        assert_eq!(receipt, before["receipt"], "receipt of {id}");
    }
}

#[test]
fn a_single_file_log_opens_in_place_and_grows_into_segments() {
    if support::skip_unless_jsonl("a_single_file_log_opens_in_place_and_grows_into_segments") {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("events.jsonl");
    std::fs::copy(Path::new(FIXTURE).join("events.jsonl"), &log).unwrap();
    let runs = expected();
    assert!(!runs.is_empty());

    let server = start(data.path());
    assert_served_as_before(&server, &runs);

    // Enough appends to fill several 64 KiB segments.
    let (status, created) = server.call("POST", "/internal/v1/runs", Some(json!({})));
    assert_eq!(status, 201, "{created}");
    let run = created["run"]["id"].as_str().unwrap().to_owned();
    let pad = "p".repeat(300);
    for n in 0..800 {
        let body = json!({"event_type": "note", "payload": {"n": n, "pad": pad}});
        let (status, answer) = server.call(
            "POST",
            &format!("/internal/v1/runs/{run}/events"),
            Some(body),
        );
        assert_eq!(status, 200, "{answer}");
    }
    let segments = std::fs::read_dir(data.path())
        .unwrap()
        .filter(|entry| {
            let name = entry.as_ref().unwrap().file_name();
            let name = name.to_str().unwrap();
            name.starts_with("events.jsonl.") && name.len() == "events.jsonl.".len() + 20
        })
        .count();
    assert!(segments >= 3, "only {segments} segments after the appends");

    server.signal("-KILL");
    let mut server = server;
    server.child.wait().unwrap();
    let server = start(data.path());
    assert_served_as_before(&server, &runs);
    let (_, body) = server.call("GET", &format!("/internal/v1/runs/{run}"), None);
    let events = body["run"]["events"].as_array().unwrap();
    assert_eq!(events.len(), 801);
    for (index, event) in events.iter().enumerate().skip(1) {
        assert_eq!(event["seq"], index as u64 + 1);
        assert_eq!(event["payload"]["n"], index as u64 - 1);
    }
}

/// The projection checkpoint file that release kept at
/// `RUNTIME_CHECKPOINT_PATH`, where the index snapshot now lives: its
/// format's header over an empty state.
const OLD_CHECKPOINT: &str = concat!(
    r#"{"format":"openagents.projection_snapshot","version":1,"#,
    r#""content_hash":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","#,
    r#""state":{"checkpoints":{},"run_summaries":{},"worker_summaries":{},"drift_reports":{}}}"#,
    "\n"
);

#[test]
fn the_old_checkpoint_file_is_ignored_then_replaced_by_a_snapshot() {
    if support::skip_unless_jsonl("the_old_checkpoint_file_is_ignored_then_replaced_by_a_snapshot")
    {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    std::fs::copy(
        Path::new(FIXTURE).join("events.jsonl"),
        data.path().join("events.jsonl"),
    )
    .unwrap();
    let checkpoint = data.path().join("projections.json");
    std::fs::write(&checkpoint, OLD_CHECKPOINT).unwrap();
    let runs = expected();

    // The start scans the log (the file is not a snapshot), serves as
    // before, and replaces the file with the index snapshot at once.
    let mut server = start(data.path());
    assert_served_as_before(&server, &runs);
    let written = std::fs::read_to_string(&checkpoint).unwrap();
    assert!(
        written.starts_with(r#"{"format":"openagents-event-log-snapshot""#),
        "{written}"
    );
    for id in runs.keys() {
        let (status, summary) = server.call(
            "GET",
            &format!("/internal/v1/projectors/run-summary/{id}"),
            None,
        );
        assert_eq!(status, 200, "{summary}");
    }
    server.signal("-TERM");
    server.child.wait().unwrap();
    let server = start(data.path());
    assert_served_as_before(&server, &runs);
}
