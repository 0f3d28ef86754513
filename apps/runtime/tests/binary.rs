//! The real binary on a loopback port: it serves over TCP, survives SIGKILL
//! between an append and the checkpoint write with every acknowledged event
//! and a summary that matches the log, and exits 0 on SIGTERM.

use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(data: &Path) -> Self {
        // Ask the OS for a free port, then hand it to the binary.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_openagents-runtime-service"))
            .env("RUNTIME_BIND_ADDR", &addr)
            .env("RUNTIME_EVENT_LOG_PATH", data.join("events.jsonl"))
            .env("RUNTIME_CHECKPOINT_PATH", data.join("projections.json"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = Server { child, addr };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if let Ok((200, _)) = self.try_call("GET", "/readyz", None) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the service did not become ready");
    }

    fn try_call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> std::io::Result<(u16, Value)> {
        let mut stream = TcpStream::connect(&self.addr)?;
        let body = body.map(Value::to_string).unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        )?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        let text = String::from_utf8_lossy(&response);
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        let json = text
            .split_once("\r\n\r\n")
            .and_then(|(_, body)| serde_json::from_str(body).ok());
        Ok((status, json.unwrap_or(Value::Null)))
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.try_call(method, path, body.as_ref()).unwrap()
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

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
