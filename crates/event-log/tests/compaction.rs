//! Compaction of the file medium: once sealed streams moved to the cold
//! store, their dead records' segments are rewritten or merged away, and
//! every stream still reads back byte for byte (hot ones from the hot log,
//! cold ones from the cold store), keyed retries still answer, and a start
//! with or without the snapshot finds the same index; appends go on during
//! a background pass; and a SIGKILL at every step of a compaction loses
//! nothing.

mod common;

use common::{
    Count, Outcome, Request, SEAL, append, archived_options, bodies, full_scan_copy_archived,
};
use openagents_event_log::{EventLog, Keep, KeyLookup, LogOptions};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Small segments: each cold stream fills a few.
const SEGMENT_BYTES: u64 = 1024;
const COLD_STREAMS: usize = 4;
const CHILD_ENV: &str = "EVENT_LOG_COMPACT_CHILD_PATH";
const PAUSE_AT: &str = "OPENAGENTS_EVENT_LOG_COMPACT_PAUSE_AT";

/// The log folder and archive folder of a test.
struct Place {
    _dir: tempfile::TempDir,
    log: PathBuf,
    archive: PathBuf,
}

fn place() -> Place {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log").join("events.jsonl");
    let archive = dir.path().join("cold");
    Place {
        log,
        archive,
        _dir: dir,
    }
}

fn open(place: &Place, background: bool) -> EventLog<Count> {
    open_with(
        place,
        archived_options(&place.archive, SEGMENT_BYTES, background),
    )
}

fn open_with(place: &Place, options: LogOptions<Count>) -> EventLog<Count> {
    EventLog::open(&place.log, options).unwrap().0
}

fn request(stream: &str, n: usize, key: Option<String>) -> Request {
    Request {
        stream: stream.into(),
        body: format!("{{\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(60 + n % 40)),
        key,
        expected_previous_seq: None,
    }
}

fn cold_stream(c: usize) -> String {
    format!("s:cold-{c}")
}

fn streams() -> Vec<String> {
    let mut all: Vec<String> = (0..COLD_STREAMS).map(cold_stream).collect();
    all.push("s:hot".into());
    all
}

/// Appends to the hot stream until `stream`'s keys left memory: the
/// segments behind its records are archived and the index's floor passed
/// them.
fn until_archived(log: &EventLog<Count>, stream: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut n = 10_000;
    while log.index().stream(stream).unwrap().key("k-0") != KeyLookup::Archived {
        assert!(Instant::now() < deadline, "{stream} was never archived");
        append(log, request("s:hot", n, None)).unwrap();
        n += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Writes cold streams (each in a block of its own segments, keyed and
/// sealed) between records of a hot stream, then moves the cold ones to
/// the archive. Returns every stream's bodies.
fn build(place: &Place) -> BTreeMap<String, Vec<(u64, String)>> {
    let log = open(place, false);
    for c in 0..COLD_STREAMS {
        for n in 0..40 {
            let key = (n % 5 == 0).then(|| format!("k-{n}"));
            append(&log, request(&cold_stream(c), n, key)).unwrap();
            if n % 13 == 0 {
                let key = Some(format!("hot-{c}-{n}"));
                append(&log, request("s:hot", c * 100 + n, key)).unwrap();
            }
        }
        let seal = Request {
            stream: cold_stream(c),
            body: SEAL.into(),
            key: None,
            expected_previous_seq: None,
        };
        append(&log, seal).unwrap();
    }
    for c in 0..COLD_STREAMS {
        until_archived(&log, &cold_stream(c));
    }
    let before = read_all(&log);
    for c in 0..COLD_STREAMS {
        let stream = cold_stream(c);
        let head = log.index().stream(&stream).unwrap().head();
        log.move_cold(&stream, head, |_| Keep::Whole)
            .unwrap()
            .unwrap();
    }
    assert_eq!(read_all(&log), before, "moving cold changed a stream");
    before
}

fn read_all(log: &EventLog<Count>) -> BTreeMap<String, Vec<(u64, String)>> {
    streams()
        .into_iter()
        .map(|stream| {
            let records = bodies(log, &stream);
            (stream, records)
        })
        .collect()
}

/// What the index answers: every stream's state and head.
fn states(log: &EventLog<Count>) -> Vec<(String, Option<(Count, u64)>)> {
    streams()
        .into_iter()
        .map(|stream| {
            let entry = log
                .index()
                .stream(&stream)
                .map(|entry| (entry.state().clone(), entry.head()));
            (stream, entry)
        })
        .collect()
}

/// Retries of keyed appends answer with the seq they first got: from the
/// cold store for cold streams, the hot log for the hot one.
fn check_retries(log: &EventLog<Count>) {
    for c in 0..COLD_STREAMS {
        for n in (0..40).step_by(5) {
            let retry = request(&cold_stream(c), n, Some(format!("k-{n}")));
            assert_eq!(
                append(log, retry).unwrap(),
                Outcome::Replayed(n as u64 + 1),
                "{} k-{n}",
                cold_stream(c)
            );
        }
    }
    let hot = bodies(log, "s:hot");
    let keyed = request("s:hot", 113, Some("hot-1-13".into()));
    let seq = hot.iter().find(|(_, body)| *body == keyed.body).unwrap().0;
    assert_eq!(append(log, keyed).unwrap(), Outcome::Replayed(seq));
}

/// Checks a log against what was written: every stream, the retries, and
/// a full scan of a copy without the snapshot.
fn check(log: &EventLog<Count>, place: &Place, want: &BTreeMap<String, Vec<(u64, String)>>) {
    assert_eq!(&read_all(log), want);
    check_retries(log);
    let (_copy, scanned) = full_scan_copy_archived(&place.log, &place.archive, SEGMENT_BYTES);
    assert_eq!(states(&scanned), states(log), "a full scan differs");
    assert_eq!(&read_all(&scanned), want);
}

fn hot_appends(
    want: &mut BTreeMap<String, Vec<(u64, String)>>,
    log: &EventLog<Count>,
    from: usize,
) {
    for n in from..from + 20 {
        let request = request("s:hot", n, None);
        let Outcome::Appended(seq) = append(log, request.clone()).unwrap() else {
            panic!("a hot append was refused");
        };
        want.get_mut("s:hot").unwrap().push((seq, request.body));
    }
}

#[test]
fn compaction_gives_back_dead_segments_and_every_stream_reads_back() {
    let place = place();
    let mut want = build(&place);
    let log = open(&place, false);
    let segments = log.segment_count();
    let before = log.compaction_stats();
    log.write_snapshot().unwrap();
    let report = log.compact_now().unwrap();
    let after = log.compaction_stats();
    assert!(report.segments_compacted > 0, "{report:?}");
    assert!(report.segments_deleted > 0, "{report:?}");
    assert_eq!(
        log.segment_count(),
        segments - report.segments_deleted as usize
    );
    assert!(
        after.hot_log_bytes < before.hot_log_bytes / 2,
        "{before:?} {after:?}"
    );
    assert_eq!(after.bytes_reclaimed, report.bytes_reclaimed);
    assert_eq!(after.segments_deleted, report.segments_deleted);
    assert!(log.compaction_generation() > 0);
    check(&log, &place, &want);
    // Nothing dead is left worth a rewrite.
    let again = log.compact_now().unwrap();
    assert_eq!(again.segments_compacted, 0, "{again:?}");
    hot_appends(&mut want, &log, 50_000);
    let expected_states = states(&log);
    drop(log);

    // The snapshot was written before compaction: a start may not use
    // positions it moved, and finds the same index either way.
    let log = open(&place, false);
    assert_eq!(states(&log), expected_states);
    check(&log, &place, &want);
    log.write_snapshot().unwrap();
    hot_appends(&mut want, &log, 60_000);
    let expected_states = states(&log);
    drop(log);
    let (log, report) = EventLog::open(
        &place.log,
        archived_options(&place.archive, SEGMENT_BYTES, false),
    )
    .unwrap();
    assert!(report.snapshot.is_some(), "a fresh snapshot is used");
    assert_eq!(states(&log), expected_states);
    check(&log, &place, &want);
}

#[test]
fn appends_go_on_during_a_background_compaction() {
    let place = place();
    let mut want = build(&place);
    let options = LogOptions {
        // Slow enough that the pass spans many appends.
        compact_bytes_per_second: 16 << 10,
        compact_interval: Duration::from_millis(100),
        ..archived_options(&place.archive, SEGMENT_BYTES, true)
    };
    let log = open_with(&place, options);
    let started = Instant::now();
    let mut n = 100_000;
    let mut saw_running = false;
    while log.compaction_stats().segments_deleted == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no pass finished"
        );
        saw_running |= log.compaction_stats().pass_in_progress;
        let request = request("s:hot", n, None);
        let sent = Instant::now();
        let Outcome::Appended(seq) = append(&log, request.clone()).unwrap() else {
            panic!("a hot append was refused");
        };
        assert!(sent.elapsed() < Duration::from_secs(2), "an append waited");
        want.get_mut("s:hot").unwrap().push((seq, request.body));
        n += 1;
    }
    assert!(saw_running);
    assert!(n > 100_010, "the pass did not overlap appends");
    check(&log, &place, &want);
}

/// Runs only as the child of `a_crash_at_any_step_of_a_compaction_loses_nothing`:
/// compacts the log, stopping at the step the parent named.
#[test]
fn compaction_crash_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let path = PathBuf::from(path);
    let archive = path.parent().unwrap().parent().unwrap().join("cold");
    let options = archived_options(&archive, SEGMENT_BYTES, false);
    let log = EventLog::<Count>::open(&path, options).unwrap().0;
    log.compact_now().unwrap();
    println!("compaction finished");
}

/// Runs the child on `path` until it says `until` (or ends), then kills it.
fn run_child(path: &Path, step: &str) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "compaction_crash_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, path)
        .env(PAUSE_AT, step)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let paused = stdout
        .lines()
        .map_while(Result::ok)
        // The harness's own "test … ... " precedes it on the line.
        .any(|line| line.ends_with(&format!("compaction paused at {step}")));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(paused, "the child never reached {step}");
}

#[test]
fn a_crash_at_any_step_of_a_compaction_loses_nothing() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    for step in ["written", "index-removed", "renamed", "deleted", "indexed"] {
        let place = place();
        let mut want = build(&place);
        run_child(&place.log, step);
        let log = open(&place, false);
        check(&log, &place, &want);
        // The next pass finishes the job, and the log goes on.
        log.compact_now().unwrap();
        hot_appends(&mut want, &log, 70_000);
        check(&log, &place, &want);
        let leftovers: Vec<_> = std::fs::read_dir(place.log.parent().unwrap())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".compact"))
            .collect();
        assert!(leftovers.is_empty(), "{step}: {leftovers:?}");
    }
}
