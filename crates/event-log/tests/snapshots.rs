//! Index snapshots and the archive of sealed segments: a start from a
//! snapshot replays only what follows it; a damaged snapshot, or one ahead
//! of the log, is ignored for a full scan that gives the same answers; the
//! index keeps positions only for the active segment; and a retry on a
//! sealed stream whose keys left memory is answered from disk.

mod common;

use common::{Count, Outcome, Request, SEAL, append, bodies};
use openagents_event_log::{EventLog, KeyLookup, LogOptions, OpenReport};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Small enough that a few appends roll a segment.
const SEGMENT_BYTES: u64 = 512;

fn open(path: &Path) -> (EventLog<Count>, OpenReport) {
    let options = LogOptions {
        segment_bytes: SEGMENT_BYTES,
        ..LogOptions::default()
    };
    EventLog::open(path, options).unwrap()
}

fn request(stream: &str, body: &str, key: Option<&str>) -> Request {
    Request {
        stream: stream.into(),
        body: body.into(),
        key: key.map(str::to_owned),
        expected_previous_seq: None,
    }
}

fn fill(log: &EventLog<Count>, stream: &str, count: u32) {
    for n in 0..count {
        let body = format!("{{\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(60));
        append(log, request(stream, &body, None)).unwrap();
    }
}

fn snapshot_of(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".snapshot");
    PathBuf::from(name)
}

/// Appends to another stream until the indexer has archived the segments
/// behind `stream`'s records (the floor rises in the background).
fn until_archived(log: &EventLog<Count>, stream: &str, key: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while log.index().stream(stream).unwrap().key(key) != KeyLookup::Archived {
        assert!(Instant::now() < deadline, "the key never left memory");
        fill(log, "s:filler", 1);
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_retry_on_a_sealed_stream_is_answered_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let (log, _) = open(&path);
    let first = r#"{"first":true}"#;
    assert_eq!(
        append(&log, request("s:a", first, Some("k1"))).unwrap(),
        Outcome::Appended(1)
    );
    fill(&log, "s:a", 5);
    append(&log, request("s:a", SEAL, None)).unwrap();
    until_archived(&log, "s:a", "k1");
    let retry = |log: &EventLog<Count>| append(log, request("s:a", first, Some("k1"))).unwrap();
    assert_eq!(retry(&log), Outcome::Replayed(1));
    assert_eq!(
        append(&log, request("s:a", r#"{"other":1}"#, Some("k1"))).unwrap(),
        Outcome::KeyReused
    );
    assert_eq!(
        append(&log, request("s:a", first, Some("k2"))).unwrap(),
        Outcome::Sealed
    );
    drop(log);

    // A full scan archives the sealed segments at once, and so does a
    // start from a snapshot.
    let (log, report) = open(&path);
    assert_eq!(report.snapshot.map(|s| s.lsn), None);
    assert_eq!(
        log.index().stream("s:a").unwrap().key("k1"),
        KeyLookup::Archived
    );
    assert_eq!(retry(&log), Outcome::Replayed(1));
    log.write_snapshot().unwrap();
    drop(log);
    let (log, report) = open(&path);
    assert!(report.snapshot.is_some());
    assert_eq!(retry(&log), Outcome::Replayed(1));
}

#[test]
fn a_start_from_a_snapshot_replays_only_what_follows_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let (log, _) = open(&path);
    fill(&log, "s:a", 40);
    let written = log.write_snapshot().unwrap();
    assert_eq!(written.lsn, 40);
    fill(&log, "s:b", 7);
    drop(log);
    let (log, report) = open(&path);
    assert_eq!(report.snapshot.map(|s| s.lsn), Some(40));
    assert_eq!(report.replayed, 7);
    assert_eq!(report.records, 47);
    assert_eq!(bodies(&log, "s:a").len(), 40);
    assert_eq!(bodies(&log, "s:b").len(), 7);
    assert!(report.segments > 5, "{report:?}");
}

#[test]
fn the_index_holds_positions_of_the_newest_segments_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let (log, _) = open(&path);
    fill(&log, "s:a", 400);
    drop(log);
    let (log, _) = open(&path);
    // Every segment but the active one is archived at open.
    let held = log.index().tail_positions();
    assert!(held <= 10, "{held} positions held for 400 records");
    assert_eq!(bodies(&log, "s:a").len(), 400);
}

#[test]
fn a_damaged_snapshot_falls_back_to_a_full_scan() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let (log, _) = open(&path);
    fill(&log, "s:a", 30);
    log.write_snapshot().unwrap();
    drop(log);
    let mut bytes = std::fs::read(snapshot_of(&path)).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x20;
    std::fs::write(snapshot_of(&path), &bytes).unwrap();
    let (log, report) = open(&path);
    assert_eq!(report.snapshot.map(|s| s.lsn), None);
    assert_eq!(report.replayed, 30);
    assert_eq!(bodies(&log, "s:a").len(), 30);
    // A truncated one too.
    log.write_snapshot().unwrap();
    drop(log);
    let bytes = std::fs::read(snapshot_of(&path)).unwrap();
    std::fs::write(snapshot_of(&path), &bytes[..bytes.len() / 2]).unwrap();
    let (_log, report) = open(&path);
    assert_eq!(report.snapshot.map(|s| s.lsn), None);
}

#[test]
fn a_snapshot_ahead_of_the_log_falls_back_to_a_full_scan() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let (log, _) = open(&path);
    fill(&log, "s:a", 20);
    drop(log);
    // Keep the log as it is now, then let it grow and snapshot it.
    let older = tempfile::tempdir().unwrap();
    let copy_all = |from: &Path, to: &Path| {
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    };
    copy_all(dir.path(), older.path());
    let (log, _) = open(&path);
    fill(&log, "s:a", 20);
    assert_eq!(log.write_snapshot().unwrap().lsn, 40);
    drop(log);
    // The older log with the newer snapshot: the snapshot is ahead of it.
    let snapshot = std::fs::read(snapshot_of(&path)).unwrap();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    copy_all(older.path(), dir.path());
    std::fs::write(snapshot_of(&path), snapshot).unwrap();
    let (log, report) = open(&path);
    assert_eq!(report.snapshot.map(|s| s.lsn), None);
    assert_eq!(report.records, 20);
    assert_eq!(bodies(&log, "s:a").len(), 20);
}

#[test]
fn a_damaged_or_missing_segment_index_is_rebuilt_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let (log, _) = open(&path);
    fill(&log, "s:a", 60);
    fill(&log, "s:b", 60);
    drop(log);
    let mut indexes: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|file| file.extension().is_some_and(|ext| ext == "idx"))
        .collect();
    indexes.sort();
    assert!(indexes.len() >= 4, "{indexes:?}");
    // A flipped byte among the entries, and a file that is gone.
    let mut damaged = std::fs::read(&indexes[1]).unwrap();
    let middle = damaged.len() - 20;
    damaged[middle] ^= 0xff;
    std::fs::write(&indexes[1], &damaged).unwrap();
    std::fs::remove_file(&indexes[2]).unwrap();

    let (log, _) = open(&path);
    assert_eq!(bodies(&log, "s:a").len(), 60);
    assert_eq!(bodies(&log, "s:b").len(), 60);
    assert_ne!(std::fs::read(&indexes[1]).unwrap(), damaged);
    assert!(indexes[2].exists());
}
