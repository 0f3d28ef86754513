//! The cold store: histories moved out of the hot log read back the same,
//! keep answering retries, survive reopening with and without a snapshot,
//! and an archive that lost a file refuses to open.

mod common;

use common::{Count, Outcome, Request, SEAL, append, bodies};
use openagents_event_log::{EventLog, Keep, LogOptions, OpenError};
use std::path::Path;

fn open_with_archive(log: &Path, archive: &Path) -> EventLog<Count> {
    try_open(log, archive).unwrap()
}

fn try_open(log: &Path, archive: &Path) -> Result<EventLog<Count>, OpenError> {
    let options = LogOptions {
        segment_bytes: 4096,
        archive_dir: Some(archive.to_owned()),
        ..LogOptions::default()
    };
    EventLog::open(log, options).map(|(log, _)| log)
}

fn request(stream: &str, body: &str, key: Option<&str>) -> Request {
    Request {
        stream: stream.into(),
        body: body.into(),
        key: key.map(str::to_owned),
        expected_previous_seq: None,
    }
}

/// Appends `count` keyed records to `stream`, the last one sealing it when
/// `seal` is set.
fn fill(log: &EventLog<Count>, stream: &str, count: u64, seal: bool) {
    for n in 1..=count {
        let body = if seal && n == count {
            SEAL.to_owned()
        } else {
            format!("{{\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(200))
        };
        let key = format!("{stream}-k{n}");
        assert_eq!(
            append(log, request(stream, &body, Some(&key))).unwrap(),
            Outcome::Appended(n)
        );
    }
}

fn states(log: &EventLog<Count>) -> Vec<(String, Count, u64, u64)> {
    let index = log.index();
    let mut states: Vec<_> = index
        .streams()
        .map(|(name, entry)| {
            (
                name.to_owned(),
                entry.state().clone(),
                entry.head(),
                entry.cold_base(),
            )
        })
        .collect();
    states.sort_by(|a, b| a.0.cmp(&b.0));
    states
}

#[test]
fn a_cold_history_reads_back_the_same_and_answers_retries_across_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let (log_path, archive) = (dir.path().join("log.jsonl"), dir.path().join("archive"));
    let log = open_with_archive(&log_path, &archive);
    fill(&log, "run:a", 40, true);
    fill(&log, "run:b", 10, false);
    let before_a = bodies(&log, "run:a");
    let entry = log
        .move_cold("run:a", 40, |_| Keep::Whole)
        .unwrap()
        .unwrap();
    assert_eq!((entry.base, entry.records), (40, 40));
    assert_eq!(log.index().stream("run:a").unwrap().cold_base(), 40);
    assert_eq!(bodies(&log, "run:a"), before_a);
    assert_eq!(
        log.read_stream("run:a", 10, 5, |r| r.seq).unwrap(),
        vec![11, 12, 13, 14, 15]
    );
    let retry = |log: &EventLog<Count>| {
        let n = 7;
        let body = format!("{{\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(200));
        append(log, request("run:a", &body, Some("run:a-k7"))).unwrap()
    };
    assert_eq!(retry(&log), Outcome::Replayed(7));
    assert_eq!(
        append(&log, request("run:a", "1", Some("run:a-k8"))).unwrap(),
        Outcome::KeyReused
    );
    assert!(
        log.move_cold("run:a", 40, |_| Keep::Whole)
            .unwrap()
            .is_none(),
        "moving the same base again changes nothing"
    );
    let live_states = states(&log);
    log.write_snapshot().unwrap();
    drop(log);

    let log = open_with_archive(&log_path, &archive);
    assert_eq!(states(&log), live_states, "restored from the snapshot");
    assert_eq!(bodies(&log, "run:a"), before_a);
    assert_eq!(retry(&log), Outcome::Replayed(7));
    drop(log);

    std::fs::remove_file(log_path.with_extension("jsonl.snapshot")).unwrap();
    let log = open_with_archive(&log_path, &archive);
    assert_eq!(states(&log), live_states, "rebuilt by a full scan");
    assert_eq!(bodies(&log, "run:a"), before_a);
    assert_eq!(retry(&log), Outcome::Replayed(7));
    fill_more(&log);
}

fn fill_more(log: &EventLog<Count>) {
    assert_eq!(
        append(log, request("run:b", "11", None)).unwrap(),
        Outcome::Appended(11)
    );
}

#[test]
fn a_history_that_keeps_some_records_skips_the_others_and_later_records_follow() {
    let dir = tempfile::tempdir().unwrap();
    let (log_path, archive) = (dir.path().join("log.jsonl"), dir.path().join("archive"));
    let log = open_with_archive(&log_path, &archive);
    fill(&log, "worker:w", 20, false);
    let entry = log
        .move_cold("worker:w", 12, every_fourth)
        .unwrap()
        .unwrap();
    assert_eq!((entry.base, entry.records), (12, 3));
    let seqs = |log: &EventLog<Count>, after, limit| {
        log.read_stream("worker:w", after, limit, |r| r.seq)
            .unwrap()
    };
    assert_eq!(seqs(&log, 0, 2), Vec::<u64>::new(), "a page inside a gap");
    assert_eq!(seqs(&log, 0, 5), vec![4]);
    assert_eq!(seqs(&log, 0, 14), vec![4, 8, 12, 13, 14]);
    assert_eq!(seqs(&log, 8, 6), vec![12, 13, 14]);
    assert_eq!(seqs(&log, 12, 100), (13..=20).collect::<Vec<_>>());
    assert_eq!(log.index().stream("worker:w").unwrap().state().records, 20);
    // A later move folds the state from the earlier history's.
    let entry = log
        .move_cold("worker:w", 16, every_fourth)
        .unwrap()
        .unwrap();
    assert_eq!((entry.base, entry.records), (16, 4));
    let state: Count = serde_json::from_str(entry.state.get()).unwrap();
    assert_eq!(state.records, 16, "the state at the base, not at the head");
    fill_after(&log, 21);
    // A husk keeps the place, not the content; what was dropped before
    // stays dropped.
    let entry = log
        .move_cold("worker:w", 21, |record| {
            if record.seq == 21 {
                Keep::Whole
            } else {
                Keep::Husk
            }
        })
        .unwrap()
        .unwrap();
    assert_eq!((entry.base, entry.records), (21, 9));
    let husks = log
        .read_stream("worker:w", 0, 21, |r| {
            (r.seq, r.payload.get().to_owned(), r.key.is_some())
        })
        .unwrap();
    assert_eq!(husks.len(), 9);
    assert!(
        husks[..8]
            .iter()
            .all(|(_, payload, key)| payload == "null" && !key)
    );
    assert_eq!(husks[8], (21, "0".to_owned(), false));
    let live = states(&log);
    drop(log);
    std::fs::remove_file(log_path.with_extension("jsonl.snapshot")).ok();
    let log = open_with_archive(&log_path, &archive);
    assert_eq!(states(&log), live);
    assert_eq!(seqs(&log, 0, 100), [4, 8, 12, 16, 17, 18, 19, 20, 21]);
}

fn every_fourth(record: &openagents_event_log::RecordRef<'_>) -> Keep {
    if record.seq.is_multiple_of(4) {
        Keep::Whole
    } else {
        Keep::Drop
    }
}

fn fill_after(log: &EventLog<Count>, seq: u64) {
    assert_eq!(
        append(log, request("worker:w", "0", None)).unwrap(),
        Outcome::Appended(seq)
    );
}

#[test]
fn an_archive_that_lost_a_history_refuses_to_open_and_a_torn_catalog_line_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (log_path, archive) = (dir.path().join("log.jsonl"), dir.path().join("archive"));
    let log = open_with_archive(&log_path, &archive);
    fill(&log, "run:a", 5, true);
    fill(&log, "run:b", 5, true);
    log.move_cold("run:a", 5, |_| Keep::Whole).unwrap();
    log.move_cold("run:b", 5, |_| Keep::Whole).unwrap();
    let bytes = log.cold_store().unwrap().bytes();
    assert!(bytes > 0);
    log.write_snapshot().unwrap();
    drop(log);

    let catalog = archive.join("catalog.jsonl");
    let mut text = std::fs::read(&catalog).unwrap();
    let whole = text.len();
    text.extend_from_slice(b"0000beef {\"stream\":\"run:c\""); // a torn append
    std::fs::write(&catalog, &text).unwrap();
    let log = open_with_archive(&log_path, &archive);
    assert_eq!(std::fs::metadata(&catalog).unwrap().len() as usize, whole);
    assert_eq!(log.cold_store().unwrap().bytes(), bytes);
    drop(log);

    let file = archive.join("streams").join("run%3Aa.zst");
    let saved = std::fs::read(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    let error = try_open(&log_path, &archive).err().expect("refused");
    assert!(
        error.to_string().contains("run:a") && error.to_string().contains("missing"),
        "{error}"
    );

    // A damaged frame is a read error, never other records.
    let mut damaged = saved.clone();
    let last = damaged.len() - 3;
    damaged[last] ^= 0x55;
    std::fs::write(&file, &damaged).unwrap();
    let log = open_with_archive(&log_path, &archive);
    let read = log.read_stream("run:a", 0, 10, |r| r.seq);
    assert!(read.is_err(), "{read:?}");
    std::fs::write(&file, &saved).unwrap();
    assert_eq!(
        log.read_stream("run:a", 0, 10, |r| r.seq).unwrap(),
        [1, 2, 3, 4, 5]
    );
}
