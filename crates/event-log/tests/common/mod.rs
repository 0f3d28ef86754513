//! A tiny domain for the log's tests: streams whose state counts records and
//! that a record with the body `"seal"` seals, and a decision that applies
//! the log-level rules (idempotency key, expected previous sequence, no
//! append to a sealed stream) the way a real domain does.

#![allow(dead_code, missing_docs)]

use openagents_event_log::{
    EventLog, LogFailure, LogOptions, NewRecord, RecordRef, StreamState, Txn,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::path::Path;
use std::sync::mpsc;

/// Counts records, and whether the stream is sealed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Count {
    pub records: u64,
    pub sealed: bool,
}

/// The body that seals a stream.
pub const SEAL: &str = "\"seal\"";

/// A record offered to a sealed stream.
#[derive(Debug, thiserror::Error)]
#[error("the stream is sealed")]
pub struct Sealed;

impl StreamState for Count {
    type Error = Sealed;

    fn open(first: &RecordRef<'_>) -> Result<Self, Self::Error> {
        Ok(Count {
            records: 1,
            sealed: first.payload.get() == SEAL,
        })
    }
    fn apply(&mut self, record: &RecordRef<'_>) -> Result<(), Self::Error> {
        if self.sealed {
            return Err(Sealed);
        }
        self.records += 1;
        self.sealed = record.payload.get() == SEAL;
        Ok(())
    }
    fn is_sealed(&self) -> bool {
        self.sealed
    }
}

/// One append request as a client would send it.
#[derive(Clone, Debug)]
pub struct Request {
    pub stream: String,
    pub body: String,
    pub key: Option<String>,
    pub expected_previous_seq: Option<u64>,
}

/// What the decision answered.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Appended(u64),
    Replayed(u64),
    KeyReused,
    SequenceConflict { actual: u64 },
    Sealed,
}

pub fn decide(txn: &mut Txn<'_, Count>, request: Request) -> Outcome {
    let head = txn.stream(&request.stream).map_or(0, |view| view.head);
    if let Some(key) = &request.key
        && let Some(seq) = txn.seq_for_key(&request.stream, key).unwrap()
    {
        let same = txn
            .with_record(&request.stream, seq, |record| {
                record.payload.get() == request.body
            })
            .unwrap()
            .unwrap();
        return if same {
            Outcome::Replayed(seq)
        } else {
            Outcome::KeyReused
        };
    }
    if let Some(expected) = request.expected_previous_seq
        && expected != head
    {
        return Outcome::SequenceConflict { actual: head };
    }
    if txn
        .stream(&request.stream)
        .is_some_and(|view| view.state.sealed)
    {
        return Outcome::Sealed;
    }
    let appended = txn
        .append(NewRecord {
            stream: request.stream,
            event_type: "test.event".into(),
            payload: RawValue::from_string(request.body).unwrap(),
            idempotency_key: request.key,
            content_hash: None,
            create_key: None,
            attrs: None,
            written_by: None,
        })
        .unwrap();
    Outcome::Appended(appended.seq)
}

pub fn open(path: &Path) -> EventLog<Count> {
    EventLog::open(path, LogOptions::default()).unwrap().0
}

/// Opens with segments of `segment_bytes`, so that appends roll segments.
pub fn open_segmented(path: &Path, segment_bytes: u64) -> EventLog<Count> {
    let options = LogOptions {
        segment_bytes,
        ..LogOptions::default()
    };
    EventLog::open(path, options).unwrap().0
}

/// Opens a copy of the log at `path` (its segments and their indexes)
/// without its snapshot: the index a full scan builds. The copy lives as
/// long as the returned folder.
pub fn full_scan_copy(path: &Path, segment_bytes: u64) -> (tempfile::TempDir, EventLog<Count>) {
    let copy = tempfile::tempdir().unwrap();
    copy_files(path.parent().unwrap(), copy.path(), |name| {
        !name.contains(".snapshot")
    });
    let log = open_segmented(&copy.path().join(path.file_name().unwrap()), segment_bytes);
    (copy, log)
}

/// Copies the files of folder `from` whose name `wanted` accepts (and,
/// recursively, its folders) into `to`.
pub fn copy_files(from: &Path, to: &Path, wanted: impl Fn(&str) -> bool + Copy) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if entry.file_type().unwrap().is_dir() {
            copy_files(&entry.path(), &to.join(&name), wanted);
        } else if wanted(&name.to_string_lossy()) {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

/// Options of a log with an archive (cold store) in `archive`, segments of
/// `segment_bytes`, and the background compactor on or off.
pub fn archived_options(archive: &Path, segment_bytes: u64, background: bool) -> LogOptions<Count> {
    LogOptions {
        segment_bytes,
        archive_dir: Some(archive.to_owned()),
        compact_in_background: background,
        ..LogOptions::default()
    }
}

/// Like [`full_scan_copy`] for a log with an archive in `archive`: the
/// copy has its own copy of the archive, so it opens as the log would.
pub fn full_scan_copy_archived(
    path: &Path,
    archive: &Path,
    segment_bytes: u64,
) -> (tempfile::TempDir, EventLog<Count>) {
    let copy = tempfile::tempdir().unwrap();
    let log_folder = copy.path().join("log");
    copy_files(path.parent().unwrap(), &log_folder, |name| {
        !name.contains(".snapshot")
    });
    copy_files(archive, &copy.path().join("cold"), |_| true);
    let options = archived_options(&copy.path().join("cold"), segment_bytes, false);
    let log = EventLog::open(&log_folder.join(path.file_name().unwrap()), options)
        .unwrap()
        .0;
    (copy, log)
}

/// Submits and waits for the durable answer.
pub fn append(log: &EventLog<Count>, request: Request) -> Result<Outcome, LogFailure> {
    let (tx, rx) = mpsc::channel();
    log.submit(
        move |txn| decide(txn, request),
        move |outcome| tx.send(outcome).unwrap(),
    );
    rx.recv().unwrap()
}

/// Every record body of a stream, in order.
pub fn bodies(log: &EventLog<Count>, stream: &str) -> Vec<(u64, String)> {
    log.read_stream(stream, 0, usize::MAX, |record| {
        (record.seq, record.payload.get().to_owned())
    })
    .unwrap()
}
