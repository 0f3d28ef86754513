//! Moving histories to the cold store under SIGKILL: a child process moves
//! sealed streams one after another (writing snapshots and appending to a
//! live stream meanwhile), and the parent kills it at a random moment. Every
//! stream must read back exactly as written, whether the kill left it hot,
//! cold, or both, after a start from the snapshot and after a full scan.

mod common;

use common::{Count, Outcome, Request, SEAL, append, bodies};
use openagents_event_log::{EventLog, Keep, LogOptions};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const CHILD_LOG: &str = "EVENT_LOG_COLD_CRASH_LOG";
const CHILD_ARCHIVE: &str = "EVENT_LOG_COLD_CRASH_ARCHIVE";
const STREAMS: usize = 60;
const RECORDS: usize = 25;
const CYCLES: u64 = 8;
const SEGMENT_BYTES: u64 = 16 << 10;

fn open(log: &Path, archive: &Path) -> EventLog<Count> {
    let options = LogOptions {
        segment_bytes: SEGMENT_BYTES,
        archive_dir: Some(archive.to_owned()),
        ..LogOptions::default()
    };
    EventLog::open(log, options).unwrap().0
}

fn stream(n: usize) -> String {
    format!("run:{n:03}")
}

/// Runs only as the child of the test below.
#[test]
fn cold_crash_child_mover() {
    let (Ok(log), Ok(archive)) = (std::env::var(CHILD_LOG), std::env::var(CHILD_ARCHIVE)) else {
        return;
    };
    let log = std::sync::Arc::new(open(log.as_ref(), archive.as_ref()));
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || {
            for n in 0.. {
                let request = Request {
                    stream: "live".into(),
                    body: format!("{{\"n\":{n},\"pad\":\"{}\"}}", "y".repeat(n % 200)),
                    key: None,
                    expected_previous_seq: None,
                };
                assert!(matches!(append(&log, request), Ok(Outcome::Appended(_))));
            }
        })
    };
    for n in 0..STREAMS {
        let name = stream(n);
        let head = log.index().stream(&name).unwrap().head();
        log.move_cold(&name, head, |_| Keep::Whole).unwrap();
        println!("moved {name}");
        if n % 7 == 0 {
            log.write_snapshot().unwrap();
        }
    }
    println!("done");
    writer.join().unwrap();
}

/// Every sealed stream's records, as written.
fn written(log: &EventLog<Count>) -> BTreeMap<String, Vec<(u64, String)>> {
    (0..STREAMS)
        .map(|n| (stream(n), bodies(log, &stream(n))))
        .collect()
}

/// Copies the log's files (not its snapshot) to a new folder.
fn copy_without_snapshot(log: &Path) -> (tempfile::TempDir, PathBuf) {
    let copy = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(log.parent().unwrap()).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if entry.file_type().unwrap().is_file() && !name.to_string_lossy().contains(".snapshot") {
            std::fs::copy(entry.path(), copy.path().join(&name)).unwrap();
        }
    }
    let path = copy.path().join(log.file_name().unwrap());
    (copy, path)
}

#[test]
fn histories_moved_cold_survive_sigkill_at_every_step() {
    let dir = tempfile::tempdir().unwrap();
    let archive_dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("log.jsonl");
    let archive = archive_dir.path().join("archive");
    let expected = {
        let log = open(&log_path, &archive);
        for n in 0..STREAMS {
            for r in 1..=RECORDS {
                let body = if r == RECORDS {
                    SEAL.to_owned()
                } else {
                    format!("{{\"s\":{n},\"r\":{r},\"pad\":\"{}\"}}", "x".repeat(r * 7))
                };
                let request = Request {
                    stream: stream(n),
                    body,
                    key: Some(format!("k{r}")),
                    expected_previous_seq: None,
                };
                assert!(matches!(append(&log, request), Ok(Outcome::Appended(_))));
            }
        }
        written(&log)
    };
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut cold_counts = Vec::new();
    for cycle in 0..CYCLES {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "cold_crash_child_mover", "--nocapture"])
            .env(CHILD_LOG, &log_path)
            .env(CHILD_ARCHIVE, &archive)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let delay = 5 + rng % 60;
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().unwrap();
        child.wait().unwrap();
        let moved = BufReader::new(child.stdout.take().unwrap())
            .lines()
            .map_while(Result::ok)
            .filter(|line| line.starts_with("moved "))
            .count();
        let log = open(&log_path, &archive);
        assert_eq!(written(&log), expected, "cycle {cycle} after {moved} moves");
        let cold = (0..STREAMS)
            .filter(|n| log.index().stream(&stream(*n)).unwrap().cold_base() > 0)
            .count();
        assert!(
            cold >= moved,
            "every acknowledged move is cold ({cold} < {moved})"
        );
        cold_counts.push(cold);
        drop(log);
        let (_copy, scan_path) = copy_without_snapshot(&log_path);
        let scanned = open(&scan_path, &archive);
        assert_eq!(written(&scanned), expected, "cycle {cycle}, full scan");
    }
    // The kills landed while histories were moving, not only before or
    // after.
    assert!(
        cold_counts.iter().any(|cold| (1..STREAMS).contains(cold)),
        "{cold_counts:?}"
    );
}
