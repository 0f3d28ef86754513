//! The binary's command line and start-up checks, run as an operator runs
//! them: `--help` and `--version` before the environment is read, and every
//! setting that cannot work refused with one line on stderr naming its
//! variable, even with `RUST_BACKTRACE=1`.

mod support;

use std::process::{Command, Output, Stdio};
use support::process::Server;

fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_openagents-runtime-service"));
    command
        .env_clear()
        .env("RUST_BACKTRACE", "1")
        .env("RUNTIME_BIND_ADDR", "127.0.0.1:0");
    command
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    binary()
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// The variables of README's configuration table.
fn readme_variables() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let table = readme.split_once("## Configuration").unwrap().1;
    table
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split_once('`'))
        .map(|(name, _)| name.to_owned())
        .collect()
}

#[test]
fn help_and_version_are_answered_before_the_environment_is_read() {
    // Settings that would refuse to start: the answers do not read them.
    let broken = [("RUNTIME_BIND_ADDR", "nowhere"), ("RUST_LOG", "x=y=z")];
    for flag in ["--help", "-h"] {
        let output = run(&[flag], &broken);
        assert!(output.status.success(), "{output:?}");
        let help = String::from_utf8(output.stdout).unwrap();
        for needed in ["reproject", "import-log", "--version", "RUST_LOG"] {
            assert!(help.contains(needed), "{needed} missing from --help");
        }
        let variables = readme_variables();
        assert!(variables.len() > 20, "{variables:?}");
        for variable in variables {
            assert!(help.contains(&variable), "{variable} missing from --help");
        }
    }
    for flag in ["--version", "-V"] {
        let output = run(&[flag], &broken);
        assert!(output.status.success());
        assert_eq!(
            String::from_utf8(output.stdout).unwrap(),
            format!("openagents-runtime-service {}\n", env!("CARGO_PKG_VERSION"))
        );
    }
    for (command, usage) in [
        ("reproject", "Usage: openagents-runtime-service reproject"),
        (
            "import-log",
            "Usage: openagents-runtime-service import-log FILE",
        ),
    ] {
        for flag in ["--help", "-h"] {
            let output = run(&[command, flag], &broken);
            assert!(output.status.success(), "{output:?}");
            assert!(String::from_utf8(output.stdout).unwrap().starts_with(usage));
        }
    }
    let output = run(&["serve"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert_one_line(&output, "unknown command");
}

/// Exactly one line on stderr, `error: ...`, containing `needle`.
fn assert_one_line(output: &Output, needle: &str) {
    assert!(!output.status.success(), "started: {output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains(needle), "{needle} is not named: {stderr}");
}

#[test]
fn unusable_settings_refuse_to_start_with_one_line_naming_the_variable() {
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let dir = data.path().display().to_string();
    let under_file = file.join("x").display().to_string();
    let log = data.path().join("events.jsonl").display().to_string();
    let long = "x".repeat(300);
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![("RUNTIME_CHECKPOINT_PATH", &dir)],
            "RUNTIME_CHECKPOINT_PATH",
        ),
        (
            vec![("RUNTIME_CHECKPOINT_PATH", &under_file)],
            "RUNTIME_CHECKPOINT_PATH",
        ),
        (
            vec![("RUNTIME_EVENT_LOG_PATH", &dir)],
            "RUNTIME_EVENT_LOG_PATH",
        ),
        (
            vec![("RUNTIME_EVENT_LOG_PATH", &under_file)],
            "RUNTIME_EVENT_LOG_PATH",
        ),
        (
            vec![("RUNTIME_INTERNAL_AUTH_TOKEN", " ")],
            "RUNTIME_INTERNAL_AUTH_TOKEN",
        ),
        (
            vec![("RUNTIME_INTERNAL_AUTH_TOKEN", "")],
            "RUNTIME_INTERNAL_AUTH_TOKEN",
        ),
        (
            vec![("RUNTIME_SYNC_TOKEN_SIGNING_KEY", "\t")],
            "RUNTIME_SYNC_TOKEN_SIGNING_KEY",
        ),
        (
            vec![("RUNTIME_SYNC_TOKEN_ISSUER", " ")],
            "RUNTIME_SYNC_TOKEN_ISSUER",
        ),
        (
            vec![("RUNTIME_SYNC_TOKEN_AUDIENCE", "")],
            "RUNTIME_SYNC_TOKEN_AUDIENCE",
        ),
        (
            vec![("RUNTIME_SERVICE_NAME", "a\u{7}b")],
            "RUNTIME_SERVICE_NAME",
        ),
        (vec![("RUNTIME_BUILD_SHA", &long)], "RUNTIME_BUILD_SHA"),
        (vec![("RUST_LOG", "foo=bar")], "RUST_LOG"),
        (
            vec![("RUNTIME_MAX_CONNECTIONS", "0")],
            "RUNTIME_MAX_CONNECTIONS",
        ),
        (
            vec![("RUNTIME_MAX_BODY_BYTES_IN_FLIGHT", "2048")],
            "RUNTIME_MAX_BODY_BYTES_IN_FLIGHT",
        ),
        (
            vec![
                ("RUNTIME_STORAGE_BACKEND", "postgres"),
                (
                    "RUNTIME_DATABASE_URL",
                    "postgres://u:hunter2@127.0.0.1:1/test",
                ),
            ],
            "RUNTIME_DATABASE_URL",
        ),
    ];
    for (env, variable) in cases {
        let mut env = env;
        if !env
            .iter()
            .any(|(name, _)| *name == "RUNTIME_EVENT_LOG_PATH")
        {
            env.push(("RUNTIME_EVENT_LOG_PATH", &log));
        }
        let output = run(&[], &env);
        assert_one_line(&output, variable);
        assert!(
            !String::from_utf8_lossy(&output.stderr).contains("hunter2"),
            "the password was printed"
        );
    }
}

#[test]
fn a_database_url_on_the_embedded_log_is_warned_about() {
    let data = tempfile::tempdir().unwrap();
    let child = binary()
        .env("RUNTIME_EVENT_LOG_PATH", data.path().join("events.jsonl"))
        .env(
            "RUNTIME_CHECKPOINT_PATH",
            data.path().join("projections.json"),
        )
        .env(
            "RUNTIME_DATABASE_URL",
            "postgres://u:hunter2@127.0.0.1/test",
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let warning = stdout
        .lines()
        .find(|line| line.contains("RUNTIME_DATABASE_URL"))
        .unwrap_or_else(|| panic!("no warning: {stdout}"));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(!stdout.contains("hunter2"));
}

/// The binary on `data` with its log lines written to `log`.
fn logged_server(data: &std::path::Path, log: &std::path::Path) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = binary()
        .env("RUNTIME_BIND_ADDR", format!("127.0.0.1:{port}"))
        .env("RUNTIME_EVENT_LOG_PATH", data.join("events.jsonl"))
        .env("RUNTIME_CHECKPOINT_PATH", data.join("projections.json"))
        .stdout(std::fs::File::create(log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server {
        child,
        addr: format!("127.0.0.1:{port}"),
    };
    server.wait_ready();
    server
}

/// The fields of the `event log recovered` line in `log`.
fn recovery_line(log: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(log).unwrap();
    let line = text
        .lines()
        .find(|line| line.contains("event log recovered"))
        .unwrap_or_else(|| panic!("no recovery line: {text}"));
    serde_json::from_str::<serde_json::Value>(line).unwrap()["fields"].clone()
}

#[test]
fn the_recovery_line_says_when_projections_were_rebuilt() {
    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("service.log");
    let mut server = logged_server(data.path(), &log);
    let (status, _) = server.call("POST", "/internal/v1/runs", Some(serde_json::json!({})));
    assert_eq!(status, 201);
    server.signal("-TERM");
    server.child.wait().unwrap();

    // With the checkpoint in place, nothing is rebuilt.
    let mut server = logged_server(data.path(), &log);
    let fields = recovery_line(&log);
    assert_eq!(fields["projections_rebuilt"], false, "{fields}");
    server.signal("-TERM");
    server.child.wait().unwrap();

    // Without it, every projection is rebuilt from the log while the log is
    // scanned, and the line says so.
    std::fs::remove_file(data.path().join("projections.json")).unwrap();
    let _server = logged_server(data.path(), &log);
    let fields = recovery_line(&log);
    assert_eq!(fields["projections_rebuilt"], true, "{fields}");
    assert_eq!(fields["records_replayed"], 1, "{fields}");
    assert_eq!(fields["projection_records_applied"], 1, "{fields}");
}

#[test]
fn a_connection_limit_above_the_open_files_limit_is_warned_about() {
    let data = tempfile::tempdir().unwrap();
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 256 && exec {}",
            env!("CARGO_BIN_EXE_openagents-runtime-service")
        ))
        .env("RUNTIME_BIND_ADDR", "127.0.0.1:0")
        .env("RUNTIME_EVENT_LOG_PATH", data.path().join("events.jsonl"))
        .env(
            "RUNTIME_CHECKPOINT_PATH",
            data.path().join("projections.json"),
        )
        .env("RUNTIME_MAX_CONNECTIONS", "1000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout
            .lines()
            .any(|line| line.contains("RUNTIME_MAX_CONNECTIONS")
                && line.contains("\"open_files_limit\":256")),
        "{stdout}"
    );
}
