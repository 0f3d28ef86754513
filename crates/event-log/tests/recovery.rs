//! Opening damaged logs: torn final writes are cut off, damage inside the
//! history refuses to open with the file and offset named, and a second
//! process cannot open a log that is in use.

mod common;

use common::{Request, append, bodies, open};
use openagents_event_log::{EventLog, LogOptions, OpenError};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

fn request(stream: &str, n: u32) -> Request {
    Request {
        stream: stream.into(),
        body: format!("{{\"n\":{n}}}"),
        key: None,
        expected_previous_seq: None,
    }
}

fn write_three(path: &Path) {
    let log = open(path);
    for n in 1..=3 {
        append(&log, request("s:a", n)).unwrap();
    }
}

fn try_open(path: &Path) -> Result<EventLog<common::Count>, OpenError> {
    EventLog::open(path, LogOptions::default()).map(|(log, _)| log)
}

#[test]
fn a_torn_final_line_without_newline_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.jsonl");
    write_three(&path);
    let good_len = std::fs::metadata(&path).unwrap().len();
    let torn = b"{\"v\":1,\"lsn\":4,\"str";
    OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(torn)
        .unwrap();

    let (log, report) = EventLog::<common::Count>::open(&path, LogOptions::default()).unwrap();
    assert_eq!(report.truncated_bytes, torn.len() as u64);
    assert_eq!(bodies(&log, "s:a").len(), 3);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), good_len);
    // The log keeps working after the cut.
    append(&log, request("s:a", 4)).unwrap();
    drop(log);
    assert_eq!(bodies(&open(&path), "s:a").len(), 4);
}

#[test]
fn an_unparsable_final_line_with_newline_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.jsonl");
    write_three(&path);
    let mut text = std::fs::read(&path).unwrap();
    let last_start = text[..text.len() - 1]
        .iter()
        .rposition(|b| *b == b'\n')
        .unwrap()
        + 1;
    text[last_start + 10] ^= 0x01;
    std::fs::write(&path, &text).unwrap();

    let (log, report) = EventLog::<common::Count>::open(&path, LogOptions::default()).unwrap();
    assert!(report.truncated_bytes > 0);
    assert_eq!(bodies(&log, "s:a").len(), 2);
}

#[test]
fn a_damaged_line_inside_the_history_refuses_to_open_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.jsonl");
    write_three(&path);
    let mut text = std::fs::read(&path).unwrap();
    let second_start = text.iter().position(|b| *b == b'\n').unwrap() + 1;
    text[second_start + 30] ^= 0x01;
    std::fs::write(&path, &text).unwrap();

    let error = try_open(&path)
        .err()
        .expect("damaged history must not open");
    let message = error.to_string();
    assert!(matches!(error, OpenError::Corrupt { offset, .. } if offset == second_start as u64));
    assert!(message.contains("log.jsonl"), "{message}");
    assert!(
        message.contains(&format!("offset {second_start}")),
        "{message}"
    );
    // Nothing was cut off.
    assert_eq!(std::fs::read(&path).unwrap(), text);
}

#[test]
fn a_sequence_gap_or_duplicate_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.jsonl");
    write_three(&path);
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();

    // Dropping the middle line leaves an lsn and seq gap.
    std::fs::write(&path, format!("{}\n{}\n", lines[0], lines[2])).unwrap();
    let gap = try_open(&path).err().expect("gap must not open");
    assert!(matches!(gap, OpenError::OutOfOrder { .. }), "{gap}");

    // Repeating a line is a duplicate.
    std::fs::write(&path, format!("{}\n{}\n{}\n", lines[0], lines[1], lines[1])).unwrap();
    let duplicate = try_open(&path).err().expect("duplicate must not open");
    assert!(
        duplicate.to_string().contains("log position 2 where 3"),
        "{duplicate}"
    );
}

#[test]
fn a_second_open_of_the_same_file_fails_fast() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.jsonl");
    let first = open(&path);
    let second = try_open(&path).err().expect("the lock must hold");
    assert!(matches!(second, OpenError::Locked { .. }));
    drop(first);
    try_open(&path).expect("the lock is released with the first log");
}

#[test]
fn a_full_disk_poisons_the_log_and_nothing_enters_the_index() {
    // /dev/full accepts the open and fails every write with ENOSPC.
    let path = Path::new("/dev/full");
    let log = try_open(path).expect("/dev/full opens as an empty log");
    let failure = append(&log, request("s:a", 1)).unwrap_err();
    assert!(
        matches!(&failure, openagents_event_log::LogFailure::Poisoned(reason) if reason.contains("/dev/full")),
        "{failure:?}"
    );
    let again = append(&log, request("s:a", 2)).unwrap_err();
    assert_eq!(
        again, failure,
        "every later write is refused with the same reason"
    );
    assert!(log.poison_reason().is_some());
    assert_eq!(log.index().record_count(), 0);
    assert!(bodies(&log, "s:a").is_empty());
}
