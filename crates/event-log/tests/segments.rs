//! The segmented file medium: full segments are followed by new ones, every
//! record reads back across segment boundaries and after reopening, and the
//! recovery rules hold per segment (a torn end only in the last one, named
//! segments that follow each other).

mod common;

use common::{Count, Request, append, bodies};
use openagents_event_log::{EventLog, LogOptions, OpenError};
use std::path::{Path, PathBuf};

/// A segment size small enough that a few records fill one.
const SMALL_SEGMENT: u64 = 1024;

fn open_small(path: &Path) -> EventLog<Count> {
    let options = LogOptions {
        segment_bytes: SMALL_SEGMENT,
        ..LogOptions::default()
    };
    EventLog::open(path, options).unwrap().0
}

fn request(stream: &str, n: u32) -> Request {
    Request {
        stream: stream.into(),
        body: format!("{{\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(100)),
        key: None,
        expected_previous_seq: None,
    }
}

/// The segment files beside `path`, the first one included, in name order
/// (not their index files or the snapshot).
fn segment_files(path: &Path) -> Vec<PathBuf> {
    let name = path.file_name().unwrap().to_str().unwrap().to_owned();
    let is_segment = |file: &str| {
        file == name
            || file
                .strip_prefix(&format!("{name}."))
                .is_some_and(|digits| {
                    digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit())
                })
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|p| is_segment(p.file_name().unwrap().to_str().unwrap()))
        .collect();
    files.sort();
    files
}

fn expected(stream: &str, count: u32) -> Vec<(u64, String)> {
    (1..=count)
        .map(|n| (u64::from(n), request(stream, n).body))
        .collect()
}

#[test]
fn full_segments_roll_and_every_record_reads_back_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.jsonl");
    let log = open_small(&path);
    for n in 1..=60 {
        append(&log, request("s:a", n)).unwrap();
        append(&log, request("s:b", n)).unwrap();
    }
    let files = segment_files(&path);
    assert!(files.len() > 5, "{files:?}");
    assert_eq!(files[0], path);
    for file in &files[..files.len() - 1] {
        let len = std::fs::metadata(file).unwrap().len();
        assert!(len >= SMALL_SEGMENT, "{} holds {len} bytes", file.display());
    }
    assert_eq!(bodies(&log, "s:a"), expected("s:a", 60));
    drop(log);

    let log = open_small(&path);
    assert_eq!(bodies(&log, "s:a"), expected("s:a", 60));
    assert_eq!(bodies(&log, "s:b"), expected("s:b", 60));
    append(&log, request("s:a", 61)).unwrap();
    assert_eq!(bodies(&log, "s:a"), expected("s:a", 61));
    // A log written with small segments opens with the default size too.
    drop(log);
    let (log, report) = EventLog::<Count>::open(&path, LogOptions::default()).unwrap();
    assert_eq!(report.records, 121);
    assert_eq!(bodies(&log, "s:b"), expected("s:b", 60));
}

#[test]
fn a_torn_end_is_cut_only_from_the_last_segment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.jsonl");
    let log = open_small(&path);
    for n in 1..=30 {
        append(&log, request("s:a", n)).unwrap();
    }
    drop(log);
    let files = segment_files(&path);
    let last = files.last().unwrap();
    let torn = b"{\"v\":1,\"lsn\":31,\"str";
    let mut bytes = std::fs::read(last).unwrap();
    bytes.extend_from_slice(torn);
    std::fs::write(last, &bytes).unwrap();

    let (log, report) = EventLog::<Count>::open(&path, LogOptions::default()).unwrap();
    assert_eq!(report.truncated_bytes, torn.len() as u64);
    assert_eq!(bodies(&log, "s:a"), expected("s:a", 30));
    drop(log);

    // The same bytes at the end of a full segment are damage, named.
    let middle = &files[1];
    let mut bytes = std::fs::read(middle).unwrap();
    let whole = bytes.len() as u64;
    bytes.extend_from_slice(torn);
    std::fs::write(middle, &bytes).unwrap();
    match EventLog::<Count>::open(&path, LogOptions::default()) {
        Err(OpenError::Corrupt {
            path: named,
            offset,
            ..
        }) => {
            assert_eq!(&named, middle);
            assert_eq!(offset, whole);
        }
        Err(other) => panic!("expected the damaged segment to be named, got {other}"),
        Ok(_) => panic!("a log with a torn full segment opened"),
    }
}

#[test]
fn a_missing_segment_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.jsonl");
    let log = open_small(&path);
    for n in 1..=40 {
        append(&log, request("s:a", n)).unwrap();
    }
    drop(log);
    let files = segment_files(&path);
    std::fs::remove_file(&files[2]).unwrap();
    match EventLog::<Count>::open(&path, LogOptions::default()) {
        Err(OpenError::Corrupt { path: named, .. }) => assert_eq!(&named, &files[3]),
        Err(other) => panic!("expected the gap to be named, got {other}"),
        Ok(_) => panic!("a log with a missing segment opened"),
    }
}

#[test]
fn an_empty_last_segment_left_by_a_crash_during_a_roll_is_appended_to() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.jsonl");
    let log = open_small(&path);
    for n in 1..=20 {
        append(&log, request("s:a", n)).unwrap();
    }
    drop(log);
    // What a crash right after creating the next segment leaves behind.
    let next = format!("{}.{:020}", path.display(), 21);
    std::fs::write(&next, b"").unwrap();
    let log = open_small(&path);
    append(&log, request("s:a", 21)).unwrap();
    assert_eq!(bodies(&log, "s:a"), expected("s:a", 21));
    drop(log);
    assert!(std::fs::metadata(&next).unwrap().len() > 0);
    assert_eq!(bodies(&open_small(&path), "s:a"), expected("s:a", 21));
}
