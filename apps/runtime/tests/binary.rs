//! The real binary on a loopback port: it serves over TCP, survives SIGKILL
//! between an append and the checkpoint write with every acknowledged event
//! and a summary that matches the log, and exits 0 on SIGTERM, answering a
//! waiting long-poll at once instead of holding the exit to the grace period.

mod support;

use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};
use support::process::Server;
use support::tokens::{KEY, user_token};

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

#[test]
fn sigterm_answers_a_waiting_long_poll_at_once_and_exits_promptly() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start_with(&[
        (
            "RUNTIME_EVENT_LOG_PATH",
            data.path().join("events.jsonl").display().to_string(),
        ),
        (
            "RUNTIME_CHECKPOINT_PATH",
            data.path().join("projections.json").display().to_string(),
        ),
        ("RUNTIME_SYNC_TOKEN_SIGNING_KEY", KEY.to_owned()),
        ("RUNTIME_SHUTDOWN_GRACE_MS", "10000".to_owned()),
    ]);
    let (_, created) = server.call("POST", "/internal/v1/runs", Some(json!({})));
    let run = created["run"]["id"].as_str().unwrap().to_owned();
    let addr = server.addr.clone();
    let uri =
        format!("/internal/v1/khala/topics/run:{run}:events/messages?after_seq=1&wait_ms=30000");
    let poll = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(&addr).unwrap();
        write!(
            stream,
            "GET {uri} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\nconnection: close\r\n\r\n",
            user_token(1)
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        (response, Instant::now())
    });
    // Let the poll reach its wait.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !poll.is_finished(),
        "the poll waits while nothing is published"
    );

    let signalled = Instant::now();
    server.signal("-TERM");
    let (response, answered) = poll.join().unwrap();
    let answered_after = answered.duration_since(signalled);
    assert!(
        answered_after < Duration::from_secs(2),
        "the long-poll was answered {answered_after:?} after SIGTERM"
    );
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let body: Value = serde_json::from_str(response.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(body["messages"], json!([]), "{body}");
    assert_eq!(
        (body["next_cursor"].clone(), body["head_cursor"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(body["replay_complete"], true);

    let deadline = signalled + Duration::from_secs(5);
    let exit = loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "still running 5 s after SIGTERM (grace is 10 s)"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "SIGTERM exits 0, got {exit}");
    let exited_after = signalled.elapsed();
    assert!(
        exited_after < Duration::from_secs(3),
        "exited {exited_after:?} after SIGTERM"
    );
}
