//! Retention against the real binary over TCP: a run sealed longer ago
//! than `RUNTIME_RETENTION_SEALED_AFTER` moves to the archive and every
//! route of it answers byte for byte as before, across a SIGKILL and with
//! the policy off again; old worker heartbeats thin to the latest one while
//! the worker's state and lifecycle stay; and the offline `archive`
//! command, its dry run, and a backup restored into a fresh folder.

mod support;

use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::database::fresh_schema;
use support::process::Server;
use support::tokens::{KEY, user_token};

fn env(data: &Path, extra: &[(&str, &str)]) -> Vec<(&'static str, String)> {
    let mut env = vec![
        (
            "RUNTIME_EVENT_LOG_PATH",
            data.join("events.jsonl").display().to_string(),
        ),
        (
            "RUNTIME_CHECKPOINT_PATH",
            data.join("projections.json").display().to_string(),
        ),
        (
            "RUNTIME_ARCHIVE_DIR",
            data.join("archive").display().to_string(),
        ),
        ("RUNTIME_SYNC_TOKEN_SIGNING_KEY", KEY.to_owned()),
        ("RUNTIME_RETENTION_INTERVAL_MS", "100".to_owned()),
        // Small segments, so the runs' records sit in sealed ones.
        ("RUNTIME_EVENT_LOG_SEGMENT_BYTES", "65536".to_owned()),
    ];
    for (name, value) in extra {
        let name: &'static str = Box::leak(name.to_string().into_boxed_str());
        env.push((name, value.to_string()));
    }
    env
}

fn start(data: &Path, extra: &[(&str, &str)]) -> Server {
    Server::start_with(&env(data, extra))
}

/// A sealed run of `events` keyed notes owned by user 1.
fn sealed_run(server: &Server, events: u64) -> String {
    let (status, created) = server.call(
        "POST",
        "/internal/v1/runs",
        Some(json!({"owner_user_id": 1, "metadata": {"purpose": "retention"}})),
    );
    assert_eq!(status, 201, "{created}");
    let run = created["run"]["id"].as_str().unwrap().to_owned();
    for n in 1..=events {
        let (status, body) = server.call(
            "POST",
            &format!("/internal/v1/runs/{run}/events"),
            Some(note(n)),
        );
        assert_eq!(status, 200, "{body}");
    }
    let finish = json!({"event_type": "run.finished", "payload": {"status": "succeeded"}});
    let (status, body) = server.call(
        "POST",
        &format!("/internal/v1/runs/{run}/events"),
        Some(finish),
    );
    assert_eq!(status, 200, "{body}");
    run
}

fn note(n: u64) -> Value {
    json!({
        "event_type": "note",
        "payload": {"n": n, "text": "some words that repeat ".repeat(8)},
        "idempotency_key": format!("note-{n}"),
    })
}

/// The text of every read route of `run`, as a client sees it.
fn reads(server: &Server, run: &str) -> Vec<(String, u16, String)> {
    let token = user_token(1);
    let mut paths = vec![
        format!("/internal/v1/runs/{run}"),
        format!("/internal/v1/runs/{run}/events"),
        format!("/internal/v1/runs/{run}/events?after_seq=3&limit=5"),
        format!("/internal/v1/runs/{run}/receipt"),
        format!("/internal/v1/runs/{run}/replay"),
        format!("/internal/v1/projectors/run-summary/{run}"),
        format!("/internal/v1/projectors/checkpoints/{run}"),
    ]
    .into_iter()
    .map(|path| {
        let (status, text) = server.raw(&path);
        (path, status, text)
    })
    .collect::<Vec<_>>();
    for query in ["after_seq=0", "after_seq=10&limit=4"] {
        let path = format!("/internal/v1/khala/topics/run:{run}:events/messages?{query}");
        let (status, body) = server.call_authorized(&path, &token);
        paths.push((path, status, body.to_string()));
    }
    paths
}

fn metric(server: &Server, name: &str) -> f64 {
    let (_, text) = server.raw("/metrics");
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
        .parse()
        .unwrap()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_archived_run_answers_byte_for_byte_as_before_across_a_kill() {
    let data = tempfile::tempdir().unwrap();
    let server = start(data.path(), &[]);
    let runs: Vec<String> = (0..3).map(|_| sealed_run(&server, 40)).collect();
    let before: Vec<_> = runs.iter().map(|run| reads(&server, run)).collect();
    for (path, status, text) in before.iter().flatten() {
        assert_eq!(*status, 200, "{path}: {text}");
    }
    drop(server);

    let server = start(data.path(), &[("RUNTIME_RETENTION_SEALED_AFTER", "1ms")]);
    wait_for("the runs to be archived", || {
        metric(&server, "runtime_archived_runs") == 3.0
    });
    assert!(metric(&server, "runtime_archive_bytes") > 0.0);
    for (run, before) in runs.iter().zip(&before) {
        assert_eq!(&reads(&server, run), before, "run {run} from the archive");
        // A retry of an archived event replays it; other content is refused.
        let (status, replay) = server.call(
            "POST",
            &format!("/internal/v1/runs/{run}/events"),
            Some(note(7)),
        );
        assert_eq!(status, 200, "{replay}");
        assert_eq!(replay["idempotent_replay"], true);
        assert_eq!(replay["event"]["seq"], 8, "{replay}");
        let mut other = note(7);
        other["payload"]["n"] = json!(70);
        let (status, body) = server.call(
            "POST",
            &format!("/internal/v1/runs/{run}/events"),
            Some(other),
        );
        assert_eq!(status, 409, "{body}");
    }
    server.signal("-KILL");
    drop(server);

    // After a kill, and with the policy off: still served from the archive.
    let server = start(data.path(), &[]);
    assert_eq!(metric(&server, "runtime_archived_runs"), 3.0);
    for (run, before) in runs.iter().zip(&before) {
        assert_eq!(&reads(&server, run), before, "run {run} after a kill");
    }
    drop(server);

    // Without the snapshot: a full scan rebuilds the projections from the
    // archive too.
    std::fs::remove_file(data.path().join("projections.json")).unwrap();
    let server = start(data.path(), &[]);
    assert_eq!(metric(&server, "runtime_archived_runs"), 3.0);
    for (run, before) in runs.iter().zip(&before) {
        assert_eq!(&reads(&server, run), before, "run {run} after a full scan");
    }
}

#[test]
fn old_heartbeats_thin_to_the_latest_and_the_worker_stays_as_it_was() {
    let data = tempfile::tempdir().unwrap();
    // Khala retains the newest 8 records of a worker's topic: those stay.
    let capacity = ("RUNTIME_FANOUT_QUEUE_CAPACITY", "8");
    let server = start(data.path(), &[capacity]);
    let (status, body) = server.call(
        "POST",
        "/internal/v1/workers",
        Some(json!({"owner_user_id": 1, "adapter": "codex", "metadata": {"region": "a"}})),
    );
    assert_eq!(status, 201, "{body}");
    let worker = body["worker"]["worker"]["worker_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for n in 1..=20 {
        let (status, body) = server.call(
            "POST",
            &format!("/internal/v1/workers/{worker}/heartbeat"),
            Some(json!({"owner_user_id": 1, "metadata_patch": {"beat": n}})),
        );
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = server.call(
        "POST",
        &format!("/internal/v1/workers/{worker}/status"),
        Some(json!({"owner_user_id": 1, "status": "stopping"})),
    );
    assert_eq!(status, 200, "{body}");
    let worker_path = format!("/internal/v1/workers/{worker}?owner_user_id=1");
    let topic = |after: u64| {
        format!("/internal/v1/khala/topics/worker:{worker}:lifecycle/messages?after_seq={after}")
    };
    let token = user_token(1);
    let (_, before) = server.call("GET", &worker_path, None);
    let retained_before = server.call_authorized(&topic(14), &token);
    let stale_before = server.call_authorized(&topic(0), &token);
    assert_eq!(retained_before.0, 200, "{}", retained_before.1);
    drop(server);

    std::thread::sleep(Duration::from_millis(1200));
    let server = start(
        data.path(),
        &[capacity, ("RUNTIME_RETENTION_HEARTBEATS_AFTER", "1s")],
    );
    let catalog = data.path().join("archive").join("catalog.jsonl");
    let entry = || -> Option<Value> {
        let text = std::fs::read_to_string(&catalog).ok()?;
        text.lines()
            .rev()
            .filter_map(|line| serde_json::from_str::<Value>(line.get(9..)?).ok())
            .find(|entry| entry["stream"] == format!("worker:{worker}"))
    };
    wait_for("the heartbeats to move", || entry().is_some());
    // Records 1..=14 left the hot log; the archive kept the registration
    // and the latest heartbeat among them.
    let entry = entry().unwrap();
    assert_eq!(
        (entry["base"].clone(), entry["records"].clone()),
        (json!(14), json!(2)),
        "{entry}"
    );
    let (_, after) = server.call("GET", &worker_path, None);
    assert_eq!(after["worker"]["worker"], before["worker"]["worker"]);
    assert_eq!(after["worker"]["worker"]["metadata"]["beat"], 20);
    assert_eq!(server.call_authorized(&topic(14), &token), retained_before);
    assert_eq!(server.call_authorized(&topic(0), &token), stale_before);
    let (status, body) = server.call(
        "POST",
        &format!("/internal/v1/workers/{worker}/heartbeat"),
        Some(json!({"owner_user_id": 1, "metadata_patch": {"beat": 21}})),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["worker"]["worker"]["latest_seq"], 23, "{body}");
    drop(server);

    // A larger retained range after the thinning reaches into the hole: the
    // topic answers an error envelope (and nothing spins), the rest serves.
    let server = start(data.path(), &[("RUNTIME_FANOUT_QUEUE_CAPACITY", "64")]);
    let (status, body) = server.call_authorized(&topic(14), &token);
    assert!(
        status >= 500 && body["error"].is_string(),
        "{status} {body}"
    );
    let (status, _) = server.call("GET", &worker_path, None);
    assert_eq!(status, 200);
    // The owner's fleet firehose holds only what it can number exactly:
    // the records above the hole, ending at its head.
    let fleet = |after: u64| {
        server.call_authorized(
            &format!("/internal/v1/khala/topics/fleet:user:1:workers/messages?after_seq={after}"),
            &token,
        )
    };
    let (status, body) = fleet(0);
    assert_eq!(
        (status, body["error"].as_str()),
        (410, Some("stale_cursor")),
        "{body}"
    );
    // Seq 14 is the heartbeat the archive kept; 13 is the hole.
    let oldest = body["details"]["oldest_available_cursor"].as_u64().unwrap();
    assert_eq!(oldest, 13, "{body}");
    let (status, page) = fleet(oldest);
    assert_eq!(status, 200, "{page}");
    let sequences: Vec<u64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(sequences, (14..=23).collect::<Vec<_>>());
}

/// The binary run as a command with the service's environment.
fn command(data: &Path, args: &[&str], extra: &[(&str, &str)]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_openagents-runtime-service"))
        .args(args)
        .env("RUST_LOG", "warn")
        .envs(env(data, extra))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn copy_folder(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_folder(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn the_archive_command_moves_offline_and_a_restored_backup_serves_the_same() {
    let data = tempfile::tempdir().unwrap();
    let server = start(data.path(), &[]);
    let runs: Vec<String> = (0..3).map(|_| sealed_run(&server, 30)).collect();
    let (status, live) = server.call(
        "POST",
        "/internal/v1/runs",
        Some(json!({"owner_user_id": 1})),
    );
    assert_eq!(status, 201, "{live}");
    let before: Vec<_> = runs.iter().map(|run| reads(&server, run)).collect();
    server.signal("-TERM");
    drop(server);

    let (ok, text) = command(data.path(), &["archive", "--dry-run"], &[]);
    assert!(ok && text.contains("only erased runs move"), "{text}");
    assert!(text.contains("would move 0 runs"), "{text}");
    let policy = [("RUNTIME_RETENTION_SEALED_AFTER", "1ms")];
    let (ok, text) = command(data.path(), &["archive", "--dry-run"], &policy);
    assert!(ok, "{text}");
    assert!(text.contains("would move 3 runs"), "{text}");
    let (ok, text) = command(data.path(), &["archive", "--dry-run"], &policy);
    assert!(
        ok && text.contains("would move 3 runs"),
        "a dry run moves nothing: {text}"
    );
    let (ok, text) = command(data.path(), &["archive"], &policy);
    assert!(ok, "{text}");
    assert!(text.contains("moved 3 runs"), "{text}");
    let (ok, text) = command(data.path(), &["archive", "--dry-run"], &policy);
    assert!(ok && text.contains("would move 0 runs"), "{text}");

    // The backup of DEPLOYMENT.md: the log's folder, then the archive.
    let backup = tempfile::tempdir().unwrap();
    copy_folder(data.path(), backup.path());
    let server = start(data.path(), &[]);
    for (run, before) in runs.iter().zip(&before) {
        assert_eq!(&reads(&server, run), before, "run {run} after archiving");
    }
    drop(server);
    let restored = tempfile::tempdir().unwrap();
    copy_folder(backup.path(), restored.path());
    let server = start(restored.path(), &[]);
    for (run, before) in runs.iter().zip(&before) {
        assert_eq!(&reads(&server, run), before, "run {run} restored");
    }
    // Without its archive the restored log refuses to start, naming it.
    drop(server);
    std::fs::remove_dir_all(restored.path().join("archive").join("streams")).unwrap();
    std::fs::create_dir(restored.path().join("archive").join("streams")).unwrap();
    let (ok, text) = command(restored.path(), &["archive", "--dry-run"], &policy);
    assert!(!ok && text.contains("missing"), "{text}");
}

#[test]
fn an_erased_run_keeps_only_its_tombstone_and_places_in_the_archive() {
    let data = tempfile::tempdir().unwrap();
    let server = start(data.path(), &[]);
    let erased = sealed_run(&server, 20);
    let kept = sealed_run(&server, 20);
    // More records after them, so that their segment is a sealed one that
    // compaction may rewrite.
    sealed_run(&server, 300);
    let secret = "some words that repeat";
    let firehose = "/internal/v1/khala/topics/runs:user:1:events/messages?after_seq=0";
    let token = user_token(1);
    // The firehose's head and its newest page: an erased run keeps its
    // places, and its tombstone takes one more.
    let sequences = |server: &Server| -> (u64, Vec<(u64, String)>) {
        let (status, page) = server.call_authorized(firehose, &token);
        assert_eq!(status, 200, "{page}");
        let head = page["head_cursor"].as_u64().unwrap();
        let path = format!(
            "/internal/v1/khala/topics/runs:user:1:events/messages?after_seq={}",
            head.saturating_sub(50)
        );
        let (status, page) = server.call_authorized(&path, &token);
        assert_eq!(status, 200, "{page}");
        let newest = page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["sequence"].as_u64().unwrap(),
                    m["kind"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        (head, newest)
    };
    let before = sequences(&server);
    let kept_before = reads(&server, &kept);
    let (status, body) = server.call(
        "DELETE",
        &format!("/internal/v1/runs/{erased}"),
        Some(json!({"reason": "the user asked"})),
    );
    assert_eq!(status, 200, "{body}");
    let file = data
        .path()
        .join("archive")
        .join("streams")
        .join(format!("run%3A{erased}.zst"));
    // The catalog line is written after the file: it says the move is done.
    let catalog = data.path().join("archive").join("catalog.jsonl");
    wait_for("the erased run to move", || {
        std::fs::read_to_string(&catalog).is_ok_and(|text| text.contains(&erased))
    });
    let archived = zstd_lines(&std::fs::read(&file).unwrap());
    assert_eq!(archived.len(), 23, "every place, and the tombstone");
    assert!(
        !archived.iter().any(|line| line.contains(secret)),
        "{archived:?}"
    );
    assert!(archived.last().unwrap().contains("run.erased"));
    let (status, _) = server.raw(&format!("/internal/v1/runs/{erased}"));
    assert_eq!(status, 410);
    // Compaction removes every hot copy, however few share a segment.
    wait_for(
        "compaction to remove the erased run from the hot log",
        || !hot_log_mentions(data.path(), &erased),
    );
    assert!(metric(&server, "runtime_compaction_bytes_reclaimed") > 0.0);
    assert!(hot_log_mentions(data.path(), &kept));
    let after = sequences(&server);
    assert_eq!(after.0, before.0 + 1);
    assert_eq!(after.1[..after.1.len() - 1], before.1[1..]);
    assert_eq!(after.1.last().unwrap().1, "run.erased");
    server.signal("-KILL");
    drop(server);

    let server = start(data.path(), &[]);
    let (status, _) = server.raw(&format!("/internal/v1/runs/{erased}/events"));
    assert_eq!(status, 410);
    assert_eq!(reads(&server, &kept), kept_before);
    assert_eq!(sequences(&server), after);
    drop(server);

    std::fs::remove_file(data.path().join("projections.json")).unwrap();
    let server = start(data.path(), &[]);
    let (status, _) = server.raw(&format!("/internal/v1/runs/{erased}/receipt"));
    assert_eq!(status, 410, "after a full scan");
    assert_eq!(reads(&server, &kept), kept_before);
    assert_eq!(sequences(&server), after);
}

/// Whether a segment of the hot log under `data` holds an event of `run`
/// other than its tombstone (which stays, in the active segment, until
/// that one is sealed).
fn hot_log_mentions(data: &Path, run: &str) -> bool {
    std::fs::read_dir(data).unwrap().any(|entry| {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        let segment = name == "events.jsonl"
            || name
                .strip_prefix("events.jsonl.")
                .is_some_and(|lsn| lsn.bytes().all(|b| b.is_ascii_digit()));
        segment
            && std::fs::read_to_string(entry.path()).is_ok_and(|text| {
                text.lines().any(|line| {
                    line.contains(&format!("run:{run}"))
                        && !line.contains("\"type\":\"run.erased\"")
                })
            })
    })
}

/// The record lines of an archive file: after its header line and meta,
/// zstd frames back to back.
fn zstd_lines(file: &[u8]) -> Vec<String> {
    let header_end = file.iter().position(|b| *b == b'\n').unwrap();
    let header: Value = serde_json::from_slice(&file[..header_end]).unwrap();
    assert_eq!(header["format"], "openagents-runtime-archive");
    let meta_len = header["meta_bytes"].as_u64().unwrap() as usize;
    let meta: Value = serde_json::from_slice(&file[header_end + 1..][..meta_len]).unwrap();
    let body = &file[header_end + 1 + meta_len..];
    let mut lines = Vec::new();
    for frame in meta["frames"].as_array().unwrap() {
        let offset = frame["offset"].as_u64().unwrap() as usize;
        let len = frame["len"].as_u64().unwrap() as usize;
        let raw = zstd::decode_all(&body[offset..offset + len]).unwrap();
        lines.extend(String::from_utf8(raw).unwrap().lines().map(str::to_owned));
    }
    lines
}

#[test]
fn on_postgres_archived_runs_leave_events_and_both_instances_serve_them() {
    let Some(schema) = fresh_schema("retention_on_postgres") else {
        return;
    };
    let env = |policy: &str| {
        let mut env = vec![
            ("RUNTIME_STORAGE_BACKEND", "postgres".to_owned()),
            ("RUNTIME_DATABASE_URL", schema.url()),
            ("RUNTIME_SYNC_TOKEN_SIGNING_KEY", KEY.to_owned()),
            ("RUNTIME_RETENTION_INTERVAL_MS", "100".to_owned()),
        ];
        if !policy.is_empty() {
            env.push(("RUNTIME_RETENTION_SEALED_AFTER", policy.to_owned()));
        }
        env
    };
    let other = Server::start_with(&env(""));
    let runs: Vec<String> = (0..2).map(|_| sealed_run(&other, 15)).collect();
    let before: Vec<_> = runs.iter().map(|run| reads(&other, run)).collect();
    let events_before = schema.count("SELECT count(*) FROM events");
    let archiver = Server::start_with(&env("1ms"));
    wait_for("the runs to leave events", || {
        schema.count("SELECT count(*) FROM archived_streams") == 2
    });
    assert_eq!(
        schema.count("SELECT count(*) FROM events"),
        events_before - 2 * 17,
        "the archived runs' rows are deleted"
    );
    for (run, before) in runs.iter().zip(&before) {
        assert_eq!(&reads(&archiver, run), before, "run {run} on the archiver");
        assert_eq!(
            &reads(&other, run),
            before,
            "run {run} on the other instance"
        );
    }
    drop(archiver);
    drop(other);
    let restarted = Server::start_with(&env(""));
    for (run, before) in runs.iter().zip(&before) {
        assert_eq!(&reads(&restarted, run), before, "run {run} after a restart");
    }
}
