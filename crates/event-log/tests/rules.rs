//! The log's own rules, whatever the domain: an idempotency key names one
//! record of its stream (refused by `Txn`, refused by recovery), and a panic
//! on the writer thread poisons the log instead of silently killing writes.

mod common;

use common::{Count, Request, append, bodies, open};
use openagents_event_log::{
    AppendError, CommitObserver, EventLog, Index, LogFailure, LogOptions, NewRecord, OpenError,
    RecordRef, Txn,
};
use serde_json::value::RawValue;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, mpsc};

fn keyed(stream: &str, key: &str) -> NewRecord {
    NewRecord {
        stream: stream.into(),
        event_type: "test.event".into(),
        payload: RawValue::from_string("{}".into()).unwrap(),
        idempotency_key: Some(key.into()),
        content_hash: None,
        create_key: None,
        attrs: None,
        written_by: None,
    }
}

/// Runs `decide` on the writer and waits for its durable answer.
fn submit<R: Send + 'static>(
    log: &EventLog<Count>,
    decide: impl FnOnce(&mut Txn<'_, Count>) -> R + Send + 'static,
) -> Result<R, LogFailure> {
    let (tx, rx) = mpsc::channel();
    log.submit(decide, move |outcome| tx.send(outcome).unwrap());
    rx.recv().unwrap()
}

#[test]
fn txn_refuses_a_second_record_with_a_key_of_its_stream() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir.path().join("log.jsonl"));
    submit(&log, |txn| txn.append(keyed("s:a", "k")).unwrap()).unwrap();
    // Against a durable record, and against one staged earlier in the batch.
    let durable = submit(&log, |txn| txn.append(keyed("s:a", "k"))).unwrap();
    assert_eq!(
        durable,
        Err(AppendError::KeyTaken {
            stream: "s:a".into(),
            seq: 1
        })
    );
    let staged = submit(&log, |txn| {
        txn.append(keyed("s:b", "k2")).unwrap();
        txn.append(keyed("s:b", "k2"))
    })
    .unwrap();
    assert!(matches!(staged, Err(AppendError::KeyTaken { seq: 1, .. })));
    // The same key in another stream is another key.
    submit(&log, |txn| txn.append(keyed("s:c", "k")).unwrap()).unwrap();
    assert_eq!(bodies(&log, "s:a").len(), 1);
    assert_eq!(bodies(&log, "s:b").len(), 1);
}

/// Appends a well-formed record line, checksum and all, bypassing the writer.
fn append_raw_line(path: &Path, record: &NewRecord, lsn: u64, seq: u64) {
    let mut line = Vec::new();
    RecordRef::proposed(record, lsn, seq, "2026-01-01T00:00:00.000000Z").encode_into(&mut line);
    let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(&line).unwrap();
}

#[test]
fn recovery_refuses_a_log_with_a_key_used_twice_in_a_stream() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.jsonl");
    drop(open(&path));
    append_raw_line(&path, &keyed("s:a", "k"), 1, 1);
    let second_offset = std::fs::metadata(&path).unwrap().len();
    append_raw_line(&path, &keyed("s:a", "k"), 2, 2);
    // A valid record after it, so the duplicate is inside the history.
    append_raw_line(&path, &keyed("s:b", "other"), 3, 1);

    match EventLog::<Count>::open(&path, LogOptions::default()) {
        Err(OpenError::OutOfOrder {
            offset, problem, ..
        }) => {
            assert_eq!(offset, second_offset);
            assert!(problem.to_string().contains("idempotency key"), "{problem}");
        }
        Err(other) => panic!("expected the duplicate key to be named, got {other}"),
        Ok(_) => panic!("a log with a duplicate key opened"),
    }
}

#[test]
fn a_panicking_decision_poisons_the_log_and_writes_nothing_of_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.jsonl");
    let log = open(&path);
    append(&log, request("s:a")).unwrap();
    let len_before = std::fs::metadata(&path).unwrap().len();

    let outcome = submit(&log, |txn| {
        txn.append(keyed("s:a", "staged")).unwrap();
        panic!("decided on purpose")
    });
    let reason = log.poison_reason().expect("the panic poisons the log");
    assert!(reason.contains("decided on purpose"), "{reason}");
    assert_eq!(outcome, Err(LogFailure::Poisoned(reason.clone())));
    // Nothing of the batch reached the file, and writes stay refused.
    assert_eq!(std::fs::metadata(&path).unwrap().len(), len_before);
    assert_eq!(
        append(&log, request("s:a")),
        Err(LogFailure::Poisoned(reason))
    );
    // Reads keep working from the durable index.
    assert_eq!(bodies(&log, "s:a").len(), 1);
}

/// An observer that panics on its first batch.
struct PanickingObserver;

impl CommitObserver<Count> for PanickingObserver {
    fn committed(&self, _records: &[RecordRef<'_>], _index: &Index<Count>) {
        panic!("observed on purpose")
    }
}

#[test]
fn a_panicking_observer_poisons_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        observer: Some(Arc::new(PanickingObserver) as Arc<dyn CommitObserver<Count>>),
        ..LogOptions::default()
    };
    let (log, _) = EventLog::<Count>::open(&dir.path().join("log.jsonl"), options).unwrap();
    let outcome = append(&log, request("s:a"));
    let reason = log.poison_reason().expect("the panic poisons the log");
    assert!(reason.contains("observed on purpose"), "{reason}");
    assert_eq!(outcome, Err(LogFailure::Poisoned(reason.clone())));
    assert_eq!(
        append(&log, request("s:a")),
        Err(LogFailure::Poisoned(reason))
    );
}

fn request(stream: &str) -> Request {
    Request {
        stream: stream.into(),
        body: "{}".into(),
        key: None,
        expected_previous_seq: None,
    }
}
