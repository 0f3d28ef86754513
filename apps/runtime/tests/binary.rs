//! The real binary on a loopback port: it serves over TCP, survives SIGKILL
//! between an append and the checkpoint write with every acknowledged event
//! and a summary that matches the log, and exits 0 on SIGTERM.

mod support;

use serde_json::json;
use std::process::Command;
use support::process::Server;

#[test]
fn the_binary_serves_survives_sigkill_and_stops_cleanly_on_sigterm() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start(data.path());
    let (status, created) = server.call(
        "POST",
        "/internal/v1/runs",
        Some(json!({"metadata": {"k": "v"}})),
    );
    assert_eq!(status, 201, "{created}");
    let run = created["run"]["id"].as_str().unwrap().to_owned();
    let mut acknowledged = Vec::new();
    for n in 0..25 {
        let (status, body) = server.call(
            "POST",
            &format!("/internal/v1/runs/{run}/events"),
            Some(json!({"event_type": "note", "payload": {"n": n}})),
        );
        assert_eq!(status, 200, "{body}");
        acknowledged.push(body["event"].clone());
    }
    // SIGKILL right after the appends: the checkpoint file is written every
    // few seconds, so the projection on disk is behind the log.
    server.signal("-KILL");
    server.child.wait().unwrap();

    let mut server = Server::start(data.path());
    let (_, body) = server.call("GET", &format!("/internal/v1/runs/{run}"), None);
    let events = body["run"]["events"].as_array().unwrap();
    assert_eq!(
        &events[1..],
        acknowledged.as_slice(),
        "every acknowledged append is back, unchanged"
    );
    let (status, summary) = server.call(
        "GET",
        &format!("/internal/v1/projectors/run-summary/{run}"),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(
        (
            summary["summary"]["last_seq"].clone(),
            summary["summary"]["event_count"].clone()
        ),
        (json!(26), json!(26))
    );

    server.signal("-TERM");
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "SIGTERM exits 0, got {exit}");
    assert!(
        data.path().join("projections.json").exists(),
        "a clean stop writes the checkpoint"
    );
}

#[test]
fn reproject_rebuilds_projections_and_says_what_changed() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start(data.path());
    let (_, created) = server.call("POST", "/internal/v1/runs", Some(json!({})));
    let run = created["run"]["id"].as_str().unwrap().to_owned();
    server.call(
        "POST",
        &format!("/internal/v1/runs/{run}/events"),
        Some(json!({"event_type": "note"})),
    );

    let reproject = || {
        Command::new(env!("CARGO_BIN_EXE_openagents-runtime-service"))
            .arg("reproject")
            .env("RUNTIME_EVENT_LOG_PATH", data.path().join("events.jsonl"))
            .env(
                "RUNTIME_CHECKPOINT_PATH",
                data.path().join("projections.json"),
            )
            .output()
            .unwrap()
    };
    let locked = reproject();
    assert!(
        !locked.status.success(),
        "the running service holds the log"
    );

    server.signal("-TERM");
    server.child.wait().unwrap();
    std::fs::remove_file(data.path().join("projections.json")).unwrap();
    let output = reproject();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("added run:{run}:events (last_seq 2)")),
        "{stdout}"
    );
    assert!(stdout.contains("1 topics changed"), "{stdout}");

    let unchanged = reproject();
    assert!(String::from_utf8_lossy(&unchanged.stdout).contains("0 topics changed"));
}
