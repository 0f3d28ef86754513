//! Durability under SIGKILL: a child process appends from several threads and
//! prints each acknowledgement; the parent kills it at a random moment,
//! reopens the log and checks that every acknowledged append is there,
//! unchanged, with no gaps. Several cycles run on the same log, whose small
//! segments roll every few batches and whose index is snapshotted all the
//! time, so kills land during rolls, segment indexing and snapshot writes
//! too; each reopen must also agree with a full scan of the same files.

mod common;

use common::{Outcome, Request, append, bodies, full_scan_copy, open_segmented};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

const CHILD_ENV: &str = "EVENT_LOG_CRASH_CHILD_PATH";
const CYCLES: usize = 6;
const THREADS: usize = 8;
/// Segments this small roll every few batches.
const SEGMENT_BYTES: u64 = 16 << 10;

/// Runs only as the child of `acknowledged_appends_survive_sigkill`.
#[test]
fn crash_child_appender() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let log = std::sync::Arc::new(open_segmented(path.as_ref(), SEGMENT_BYTES));
    let cycle = std::env::var("EVENT_LOG_CRASH_CYCLE").unwrap();
    let threads: Vec<_> = (0..THREADS)
        .map(|thread| {
            let log = log.clone();
            let cycle = cycle.clone();
            std::thread::spawn(move || {
                for n in 0.. {
                    let stream = format!("s:{}", (thread + n) % 5);
                    let body = format!(
                        "{{\"cycle\":{cycle},\"thread\":{thread},\"n\":{n},\"pad\":\"{}\"}}",
                        "x".repeat(n % 300)
                    );
                    let request = Request {
                        stream: stream.clone(),
                        body: body.clone(),
                        key: None,
                        expected_previous_seq: None,
                    };
                    let Ok(Outcome::Appended(seq)) = append(&log, request) else {
                        panic!("append failed")
                    };
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ack {stream} {seq} {body}").unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    let snapshots = {
        let log = log.clone();
        std::thread::spawn(move || {
            loop {
                log.write_snapshot().unwrap();
                std::thread::sleep(Duration::from_millis(3));
            }
        })
    };
    for thread in threads {
        thread.join().unwrap();
    }
    snapshots.join().unwrap();
}

/// Opens a copy of the log's segments and their indexes without the
/// snapshot, and returns every stream's records as a full scan finds them.
fn full_scan(path: &std::path::Path) -> HashMap<String, Vec<(u64, String)>> {
    let (_copy, log) = full_scan_copy(path, SEGMENT_BYTES);
    (0..5)
        .map(|s| format!("s:{s}"))
        .map(|stream| (stream.clone(), bodies(&log, &stream)))
        .collect()
}

#[test]
fn acknowledged_appends_survive_sigkill() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let mut acknowledged: HashMap<(String, u64), String> = HashMap::new();
    for cycle in 0..CYCLES {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_child_appender",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_ENV, &path)
            .env("EVENT_LOG_CRASH_CYCLE", cycle.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|line| {
                    let rest = line.strip_prefix("ack ")?;
                    let mut parts = rest.splitn(3, ' ');
                    let stream = parts.next()?.to_owned();
                    let seq = parts.next()?.parse().ok()?;
                    Some(((stream, seq), parts.next()?.to_owned()))
                })
                .collect::<Vec<_>>()
        });
        // Let it run long enough to write, then kill it mid-batch.
        std::thread::sleep(Duration::from_millis(150 + 97 * cycle as u64 % 250));
        child.kill().unwrap();
        child.wait().unwrap();
        let acks = reader.join().unwrap();
        assert!(
            !acks.is_empty(),
            "cycle {cycle}: the child acknowledged nothing"
        );
        acknowledged.extend(acks);

        let log = open_segmented(&path, SEGMENT_BYTES);
        let mut streams: HashMap<String, Vec<(u64, String)>> = HashMap::new();
        for stream in (0..5).map(|s| format!("s:{s}")) {
            streams.insert(stream.clone(), bodies(&log, &stream));
        }
        for ((stream, seq), body) in &acknowledged {
            let records = &streams[stream];
            let found = records.get(*seq as usize - 1);
            assert_eq!(
                found,
                Some(&(*seq, body.clone())),
                "cycle {cycle}: lost {stream} #{seq}"
            );
        }
        for (stream, records) in &streams {
            for (index, (seq, _)) in records.iter().enumerate() {
                assert_eq!(*seq, index as u64 + 1, "cycle {cycle}: gap in {stream}");
            }
        }
        drop(log);
        assert_eq!(
            full_scan(&path),
            streams,
            "cycle {cycle}: the snapshot start differs"
        );
    }
}
