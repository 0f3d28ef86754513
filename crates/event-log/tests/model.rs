//! Random sequences of appends (with keys, expected sequences, conflicts and
//! seals), snapshots, segment rolls, moves of a stream's history to the cold
//! store, compaction passes, reopens and crashes (a torn write at the end
//! of the log), checked against a plain in-memory model (which neither a
//! move nor a compaction changes): after
//! every step the log holds exactly what the model acknowledged, and after
//! every reopen its index equals the one a full scan builds, keys of sealed
//! streams included (those are looked up on disk once archived).

mod common;

use common::{Count, Outcome, Request, SEAL, append, archived_options, bodies};
use openagents_event_log::{EventLog, Keep};
use proptest::prelude::*;
use std::collections::HashMap;
use std::path::Path;

#[derive(Clone, Debug)]
enum Step {
    Append {
        stream: u8,
        body: u8,
        key: Option<u8>,
        expect: Option<u8>,
    },
    Seal {
        stream: u8,
    },
    Snapshot,
    /// Moves the stream's whole history to the cold store.
    Cold {
        stream: u8,
    },
    Compact,
    Reopen,
    Crash,
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        12 => (0u8..3, 0u8..4, prop::option::of(0u8..4), prop::option::of(0u8..6))
            .prop_map(|(stream, body, key, expect)| Step::Append { stream, body, key, expect }),
        1 => (0u8..3).prop_map(|stream| Step::Seal { stream }),
        2 => Just(Step::Snapshot),
        1 => (0u8..3).prop_map(|stream| Step::Cold { stream }),
        1 => Just(Step::Compact),
        1 => Just(Step::Reopen),
        1 => Just(Step::Crash),
    ]
}

#[derive(Default)]
struct Model {
    streams: HashMap<String, Vec<(String, Option<String>)>>,
}

impl Model {
    fn apply(&mut self, request: &Request) -> Outcome {
        let events = self.streams.entry(request.stream.clone()).or_default();
        if let Some(key) = &request.key
            && let Some(index) = events.iter().position(|(_, k)| k.as_ref() == Some(key))
        {
            return if events[index].0 == request.body {
                Outcome::Replayed(index as u64 + 1)
            } else {
                Outcome::KeyReused
            };
        }
        let head = events.len() as u64;
        if request
            .expected_previous_seq
            .is_some_and(|expected| expected != head)
        {
            return Outcome::SequenceConflict { actual: head };
        }
        if events.last().is_some_and(|(body, _)| body == SEAL) {
            return Outcome::Sealed;
        }
        events.push((request.body.clone(), request.key.clone()));
        Outcome::Appended(head + 1)
    }
}

/// The seq the log's index (or its archive) gives for `key` of `stream`.
fn key_seq(log: &EventLog<Count>, stream: &str, key: &str) -> Option<u64> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (stream, key) = (stream.to_owned(), key.to_owned());
    log.submit(
        move |txn| txn.seq_for_key(&stream, &key).unwrap(),
        move |outcome| tx.send(outcome).unwrap(),
    );
    rx.recv().unwrap().unwrap()
}

/// Everything a reopened log answers from its index, for `model`'s streams.
fn answers(log: &EventLog<Count>, model: &Model) -> Vec<(String, Option<Count>, Vec<Option<u64>>)> {
    let mut streams: Vec<&String> = model.streams.keys().collect();
    streams.sort();
    streams
        .into_iter()
        .map(|stream| {
            let state = log
                .index()
                .stream(stream)
                .map(|entry| entry.state().clone());
            let keys = (0..4)
                .map(|k| key_seq(log, stream, &format!("key-{k}")))
                .collect();
            (stream.clone(), state, keys)
        })
        .collect()
}

/// Appends half a record to the log's last segment, as a crash mid-write
/// leaves it.
fn tear_the_end(path: &Path) {
    let folder = path.parent().unwrap();
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let last = std::fs::read_dir(folder)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|file| {
            file == &name
                || file
                    .strip_prefix(&format!("{name}."))
                    .is_some_and(|d| d.len() == 20 && d.bytes().all(|b| b.is_ascii_digit()))
        })
        .max()
        .unwrap();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(folder.join(last))
        .unwrap();
    std::io::Write::write_all(&mut file, b"{\"v\":1,\"lsn\":").unwrap();
}

/// Opens the model's log, with its archive beside its folder.
fn open_model(path: &Path, segment_bytes: u64) -> EventLog<Count> {
    let options = archived_options(&archive_of(path), segment_bytes, false);
    EventLog::open(path, options).unwrap().0
}

fn archive_of(path: &Path) -> std::path::PathBuf {
    path.parent().unwrap().parent().unwrap().join("cold")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_log_agrees_with_the_model_across_reopens(
        steps in prop::collection::vec(arb_step(), 1..60),
        segment_bytes in prop::sample::select(vec![64u64, 512, 4096, 1 << 20]),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log").join("events.jsonl");
        let mut log = open_model(&path, segment_bytes);
        let mut model = Model::default();
        for step in steps {
            match step {
                Step::Append { stream, body, key, expect } => {
                    let request = Request {
                        stream: format!("s:{stream}"),
                        body: format!("{{\"n\":{body}}}"),
                        key: key.map(|k| format!("key-{k}")),
                        expected_previous_seq: expect.map(u64::from),
                    };
                    let expected = model.apply(&request);
                    prop_assert_eq!(append(&log, request).unwrap(), expected);
                }
                Step::Seal { stream } => {
                    let request = Request {
                        stream: format!("s:{stream}"),
                        body: SEAL.into(),
                        key: None,
                        expected_previous_seq: None,
                    };
                    let expected = model.apply(&request);
                    prop_assert_eq!(append(&log, request).unwrap(), expected);
                }
                Step::Snapshot => {
                    log.write_snapshot().unwrap();
                }
                Step::Cold { stream } => {
                    let stream = format!("s:{stream}");
                    let head = log.index().stream(&stream).map(|entry| entry.head());
                    if let Some(head) = head {
                        log.move_cold(&stream, head, |_| Keep::Whole).unwrap();
                    }
                }
                Step::Compact => {
                    log.compact_now().unwrap();
                }
                Step::Reopen | Step::Crash => {
                    drop(log);
                    if matches!(step, Step::Crash) {
                        tear_the_end(&path);
                    }
                    log = open_model(&path, segment_bytes);
                    let (_copy, scanned) =
                        common::full_scan_copy_archived(&path, &archive_of(&path), segment_bytes);
                    prop_assert_eq!(answers(&log, &model), answers(&scanned, &model));
                }
            }
            for (stream, events) in &model.streams {
                let want: Vec<(u64, String)> = events
                    .iter()
                    .enumerate()
                    .map(|(i, (body, _))| (i as u64 + 1, body.clone()))
                    .collect();
                prop_assert_eq!(bodies(&log, stream), want);
            }
        }
    }
}
