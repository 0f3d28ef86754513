//! The built `runtime-shadow-harness` binary: exit codes 0 (allow), 2
//! (block) and 1 (unreadable input, bad arguments), the report and record
//! files, and `capture` against a small HTTP server run by the test.

use openagents_shadow::{Decision, ExportFiles, ParityReport};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// `fixtures/shadow/<scenario>`.
fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/shadow")
        .join(name)
}

/// The Rust side of `name`, built from its events into `out`.
fn rust_side(name: &str, out: &Path) -> PathBuf {
    rust_files(name).write_dir(out).unwrap()
}

/// The Rust side's files of scenario `name`.
fn rust_files(name: &str) -> ExportFiles {
    let log = fs::read(scenario(name).join("rust/events.json")).unwrap();
    ExportFiles::from_run_log(&log).unwrap()
}

/// Runs the harness with `args` in `cwd`.
fn harness_in(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_runtime-shadow-harness"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

/// Runs the harness with `args`.
fn harness(args: &[&str]) -> Output {
    harness_in(Path::new(env!("CARGO_MANIFEST_DIR")), args)
}

/// Compares scenario `name`'s legacy export with its Rust side under
/// `extra` flags; returns the exit code and the report.
fn compare(name: &str, extra: &[&str]) -> (i32, ParityReport) {
    let scratch = tempfile::tempdir().unwrap();
    let rust = rust_side(name, &scratch.path().join("rust"));
    let legacy = scenario(name).join("legacy/manifest.json");
    let output = scratch.path().join("report.json");
    let mut args = vec![
        "--legacy-manifest",
        legacy.to_str().unwrap(),
        "--rust-manifest",
        rust.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let run = harness(&args);
    let report = serde_json::from_slice(&fs::read(&output).unwrap()).unwrap();
    (run.status.code().unwrap(), report)
}

/// The process's stderr as text.
fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn an_allowing_gate_exits_0_and_prints_one_line() {
    let scratch = tempfile::tempdir().unwrap();
    let rust = rust_side("happy-path", &scratch.path().join("rust"));
    let legacy = scenario("happy-path").join("legacy/manifest.json");
    let output = scratch.path().join("out/report.json");
    let run = harness(&[
        "--legacy-manifest",
        legacy.to_str().unwrap(),
        "--rust-manifest",
        rust.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    let stdout = String::from_utf8(run.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.starts_with("shadow parity allow"), "{stdout}");
    let report: ParityReport = serde_json::from_slice(&fs::read(&output).unwrap()).unwrap();
    assert_eq!(report.gate.decision, Decision::Allow);
    assert!(report.diffs.is_empty());
}

/// A legacy export as the reference implementation writes it: a manifest
/// with `run_id` and `_path` names, here beside copies of the artifacts.
#[test]
fn a_legacy_manifest_with_path_names_is_compared() {
    let scratch = tempfile::tempdir().unwrap();
    let rust = rust_side("happy-path", &scratch.path().join("rust"));
    let legacy = scratch.path().join("legacy");
    fs::create_dir_all(&legacy).unwrap();
    for file in [
        "receipt.json",
        "replay.jsonl",
        "summary.json",
        "checkpoint.json",
    ] {
        fs::copy(
            scenario("happy-path").join("legacy").join(file),
            legacy.join(file),
        )
        .unwrap();
    }
    let receipt: serde_json::Value =
        serde_json::from_slice(&fs::read(legacy.join("receipt.json")).unwrap()).unwrap();
    let manifest = serde_json::json!({
        "run_id": receipt["session_id"],
        "receipt_path": "receipt.json",
        "replay_path": "replay.jsonl",
        "summary_path": "summary.json",
        "checkpoint_path": "checkpoint.json",
    });
    let manifest_path = legacy.join("manifest.json");
    fs::write(&manifest_path, manifest.to_string()).unwrap();
    let output = scratch.path().join("report.json");
    let run = harness(&[
        "--legacy-manifest",
        manifest_path.to_str().unwrap(),
        "--rust-manifest",
        rust.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    let report: ParityReport = serde_json::from_slice(&fs::read(&output).unwrap()).unwrap();
    assert_eq!(report.gate.decision, Decision::Allow);
    assert!(report.diffs.is_empty());
}

#[test]
fn a_blocking_gate_exits_2() {
    let (code, report) = compare("trajectory-divergence", &["--max-warnings", "2"]);
    assert_eq!(code, 2);
    assert_eq!(report.gate.decision, Decision::Block);
    assert_eq!(report.totals.critical, 1);
}

#[test]
fn critical_differences_pass_when_block_on_critical_is_false() {
    let (code, report) = compare(
        "trajectory-divergence",
        &["--max-warnings", "2", "--block-on-critical", "false"],
    );
    assert_eq!(code, 0, "{}", report.gate.reason);
    assert_eq!(report.totals.critical, 1);
}

#[test]
fn max_warnings_boundaries() {
    // The scenario has exactly 3 warnings and no critical difference.
    for (max, expected) in [("2", 2), ("3", 0), ("4", 0)] {
        let (code, report) = compare("warnings-over-threshold", &["--max-warnings", max]);
        assert_eq!(report.totals.warning, 3);
        assert_eq!(
            code, expected,
            "--max-warnings {max}: {}",
            report.gate.reason
        );
    }
    let (code, _) = compare("warnings-over-threshold", &[]);
    assert_eq!(code, 2, "the default maximum is 0");
}

#[test]
fn record_writes_the_same_report_and_generated_at_is_stamped() {
    let scratch = tempfile::tempdir().unwrap();
    let record = scratch.path().join("state/last-parity.json");
    let (code, report) = compare(
        "happy-path",
        &[
            "--record",
            record.to_str().unwrap(),
            "--generated-at",
            "2026-02-03T12:00:00Z",
        ],
    );
    assert_eq!(code, 0);
    assert_eq!(report.generated_at.as_deref(), Some("2026-02-03T12:00:00Z"));
    let recorded: ParityReport = serde_json::from_slice(&fs::read(&record).unwrap()).unwrap();
    assert_eq!(recorded, report);
}

#[test]
fn manifest_paths_are_relative_to_the_manifest_not_the_working_directory() {
    let scratch = tempfile::tempdir().unwrap();
    let rust = rust_side("cancellation", &scratch.path().join("rust"));
    let run = harness_in(
        &scenario("cancellation"),
        &[
            "--legacy-manifest",
            "legacy/manifest.json",
            "--rust-manifest",
            rust.to_str().unwrap(),
            "--output",
            scratch.path().join("report.json").to_str().unwrap(),
        ],
    );
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    let report: ParityReport =
        serde_json::from_slice(&fs::read(scratch.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(report.legacy_manifest, "legacy/manifest.json");
}

#[test]
fn unreadable_inputs_exit_1_naming_the_file() {
    let scratch = tempfile::tempdir().unwrap();
    let rust = rust_side("happy-path", &scratch.path().join("rust"));
    fs::write(scratch.path().join("rust/checkpoint.json"), "{not json").unwrap();
    let legacy = scenario("happy-path").join("legacy/manifest.json");
    let missing = scratch.path().join("nowhere/manifest.json");
    let output = scratch.path().join("report.json");
    let cases = [
        (missing.to_str().unwrap(), rust.to_str().unwrap(), "nowhere"),
        (
            legacy.to_str().unwrap(),
            rust.to_str().unwrap(),
            "checkpoint.json",
        ),
    ];
    for (legacy, rust, named) in cases {
        let run = harness(&[
            "--legacy-manifest",
            legacy,
            "--rust-manifest",
            rust,
            "--output",
            output.to_str().unwrap(),
        ]);
        assert_eq!(run.status.code(), Some(1));
        assert!(stderr(&run).contains(named), "{}", stderr(&run));
        assert!(!output.exists(), "no report for unreadable input");
    }
}

#[test]
fn bad_arguments_exit_1() {
    for args in [
        &["--legacy-manifest", "a"][..],
        &["--bogus", "x"],
        &[
            "--legacy-manifest",
            "a",
            "--rust-manifest",
            "b",
            "--output",
            "c",
            "--block-on-critical",
            "maybe",
        ],
        &[
            "capture",
            "--base-url",
            "http://127.0.0.1:1",
            "--run-id",
            "../x",
            "--out",
            "d",
        ],
    ] {
        let run = harness(args);
        assert_eq!(run.status.code(), Some(1), "{args:?}");
        assert!(!stderr(&run).is_empty());
    }
    assert_eq!(harness(&["--help"]).status.code(), Some(0));
}

/// One canned answer of the test server.
struct Route {
    /// Request path.
    path: String,
    /// Response body.
    body: Vec<u8>,
}

/// Serves `routes` on a loopback port, one connection per request, for at
/// most `routes.len()` requests; unknown paths get 404. Returns the base URL.
fn serve(routes: Vec<Route>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().take(routes.len()) {
            answer(stream.unwrap(), &routes);
        }
    });
    base
}

/// Reads one request from `stream` and answers it from `routes`.
fn answer(mut stream: TcpStream, routes: &[Route]) {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    reader.read_line(&mut request_line).unwrap();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).unwrap();
        if header.trim_end().is_empty() {
            break;
        }
    }
    let path = request_line.split(' ').nth(1).unwrap_or_default();
    let (status, body) = match routes.iter().find(|route| route.path == path) {
        Some(route) => ("200 OK", route.body.as_slice()),
        None => ("404 Not Found", &br#"{"error":"not_found"}"#[..]),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
}

/// The four routes of `run_id` answering with `files`.
fn routes(run_id: &str, files: &ExportFiles) -> Vec<Route> {
    let route = |path: String, body: &Vec<u8>| Route {
        path: format!("/internal/v1/{path}"),
        body: body.clone(),
    };
    vec![
        route(format!("runs/{run_id}/receipt"), &files.receipt),
        route(format!("runs/{run_id}/replay"), &files.replay),
        route(format!("projectors/run-summary/{run_id}"), &files.summary),
        route(
            format!("projectors/checkpoints/{run_id}"),
            &files.checkpoint,
        ),
    ]
}

#[test]
fn capture_writes_an_export_that_compares_equal() {
    let run_id = "019c2a10-7e00-7b00-9a00-000000000001";
    let files = rust_files("happy-path");
    let base = serve(routes(run_id, &files));
    let scratch = tempfile::tempdir().unwrap();
    let out = scratch.path().join("captured");
    let run = harness(&[
        "capture",
        "--base-url",
        &format!("{base}/"),
        "--run-id",
        run_id,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    assert_eq!(fs::read(out.join("replay.jsonl")).unwrap(), files.replay);
    assert_eq!(fs::read(out.join("summary.json")).unwrap(), files.summary);

    let legacy = scenario("happy-path").join("legacy/manifest.json");
    let compared = harness(&[
        "--legacy-manifest",
        legacy.to_str().unwrap(),
        "--rust-manifest",
        out.join("manifest.json").to_str().unwrap(),
        "--output",
        scratch.path().join("report.json").to_str().unwrap(),
    ]);
    assert_eq!(compared.status.code(), Some(0), "{}", stderr(&compared));
}

#[test]
fn capture_of_an_unknown_run_exits_1_naming_the_url() {
    let files = rust_files("happy-path");
    let base = serve(routes("019c2a10-7e00-7b00-9a00-000000000001", &files));
    let scratch = tempfile::tempdir().unwrap();
    let run = harness(&[
        "capture",
        "--base-url",
        &base,
        "--run-id",
        "019c2a10-7e00-7b00-9a00-0000000000ff",
        "--out",
        scratch.path().join("captured").to_str().unwrap(),
    ]);
    assert_eq!(run.status.code(), Some(1));
    let message = stderr(&run);
    assert!(
        message.contains("/internal/v1/runs/019c2a10-7e00-7b00-9a00-0000000000ff/receipt"),
        "{message}"
    );
    assert!(message.contains("404"), "{message}");
}
