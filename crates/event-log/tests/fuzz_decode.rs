//! Property-based fuzzing of the record parser and of opening damaged logs.
//!
//! - Any bytes given to [`RecordRef::decode`] are answered without a panic,
//!   also bytes that carry a correct checksum, so the JSON parser behind the
//!   checksum is reached too.
//! - A mutated valid line either still decodes to the very same record or is
//!   rejected: damage never yields a different record.
//! - Opening a file of arbitrary bytes, or a valid log with garbage appended
//!   or inserted, never panics: it opens (cutting a torn tail, keeping only
//!   original records) or fails with an error naming the byte offset.

use openagents_event_log::{EventLog, LogOptions, NewRecord, OpenError, RecordRef, StreamState};
use proptest::prelude::*;
use serde_json::value::RawValue;
use std::path::Path;

/// The timestamp every generated record carries.
const AT: &str = "2026-01-01T00:00:00.000000Z";

/// A stream state that only counts records; recovery needs no more.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Count;

impl StreamState for Count {
    type Error = std::convert::Infallible;

    fn open(_first: &RecordRef<'_>) -> Result<Self, Self::Error> {
        Ok(Count)
    }

    fn apply(&mut self, _record: &RecordRef<'_>) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// Every field of a record, owned, for comparing two decodes.
type Fields = (
    u8,
    u64,
    String,
    u64,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
);

fn fields(record: &RecordRef<'_>) -> Fields {
    let text = |value: &Option<std::borrow::Cow<'_, str>>| value.as_deref().map(str::to_owned);
    (
        record.v,
        record.lsn,
        record.stream.to_string(),
        record.seq,
        record.event_type.to_string(),
        record.at.to_string(),
        text(&record.key),
        text(&record.hash),
        text(&record.create_key),
        record.attrs.map(|raw| raw.get().to_owned()),
        record.payload.get().to_owned(),
    )
}

/// A JSON value of bounded size and depth.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        "\\PC{0,12}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map("\\PC{0,8}", inner, 0..4)
                .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A record as the writer would propose it.
fn new_record() -> impl Strategy<Value = NewRecord> {
    (
        "[a-z]{1,6}:\\PC{1,12}",
        "\\PC{1,20}",
        prop::collection::btree_map("\\PC{0,8}", json_value(), 0..4),
        prop::option::of("\\PC{0,16}"),
        prop::option::of("sha256:[0-9a-f]{8}"),
        prop::option::of("\\PC{1,16}"),
        prop::option::of(json_value()),
    )
        .prop_map(
            |(stream, event_type, payload, key, hash, create_key, attrs)| NewRecord {
                stream,
                event_type,
                payload: raw(&serde_json::Value::Object(payload.into_iter().collect())),
                idempotency_key: key,
                content_hash: hash,
                create_key,
                attrs: attrs.as_ref().map(raw),
                written_by: None,
            },
        )
}

fn raw(value: &serde_json::Value) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).expect("JSON values serialize")
}

/// The line (without `\n`) of `record` at `lsn`/`seq`.
fn encoded(record: &NewRecord, lsn: u64, seq: u64) -> Vec<u8> {
    let mut line = Vec::new();
    RecordRef::proposed(record, lsn, seq, AT).encode_into(&mut line);
    assert_eq!(line.pop(), Some(b'\n'));
    line
}

/// `body` sealed with its correct checksum field, as the writer seals lines.
fn sealed(mut body: Vec<u8>) -> Vec<u8> {
    let crc = crc32c::crc32c(&body);
    body.extend_from_slice(format!(",\"crc\":\"{crc:08x}\"}}").as_bytes());
    body
}

/// One way to damage a line.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
    Delete(prop::sample::Index),
    Truncate(prop::sample::Index),
    Duplicate(prop::sample::Index, prop::sample::Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<prop::sample::Index>(), 1u8..).prop_map(|(i, x)| Mutation::Flip(i, x)),
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<prop::sample::Index>().prop_map(Mutation::Delete),
        any::<prop::sample::Index>().prop_map(Mutation::Truncate),
        (any::<prop::sample::Index>(), any::<prop::sample::Index>())
            .prop_map(|(a, b)| Mutation::Duplicate(a, b)),
    ]
}

fn mutate(line: &mut Vec<u8>, mutation: &Mutation) {
    if line.is_empty() {
        return;
    }
    match mutation {
        Mutation::Flip(at, x) => {
            let at = at.index(line.len());
            line[at] ^= x;
        }
        Mutation::Insert(at, byte) => line.insert(at.index(line.len() + 1), *byte),
        Mutation::Delete(at) => {
            line.remove(at.index(line.len()));
        }
        Mutation::Truncate(at) => line.truncate(at.index(line.len())),
        Mutation::Duplicate(a, b) => {
            let (a, b) = (a.index(line.len()), b.index(line.len()));
            let (from, to) = (a.min(b), a.max(b));
            let copy = line[from..to].to_vec();
            line.splice(to..to, copy);
        }
    }
}

/// A valid log of `records`, spread over a few streams, and where each line
/// ends (offset just past its `\n`).
fn valid_log(records: &[NewRecord]) -> (Vec<u8>, Vec<usize>) {
    let mut heads = std::collections::HashMap::new();
    let mut create_keys = std::collections::HashSet::new();
    let mut log = Vec::new();
    let mut ends = Vec::new();
    for (position, record) in records.iter().enumerate() {
        let seq = heads.entry(record.stream.clone()).or_insert(0u64);
        *seq += 1;
        let mut record = record.clone();
        // Only a stream's first record may carry a create key, and a create
        // key names one stream of the log.
        let keeps = *seq == 1
            && record
                .create_key
                .as_ref()
                .is_some_and(|key| create_keys.insert(key.clone()));
        if !keeps {
            record.create_key = None;
        }
        log.extend(encoded(&record, position as u64 + 1, *seq));
        log.push(b'\n');
        ends.push(log.len());
    }
    (log, ends)
}

/// Opens the log in `dir` holding `bytes`.
fn open(dir: &Path, bytes: &[u8]) -> Result<(u64, u64), OpenError> {
    let path = dir.join("log.jsonl");
    std::fs::write(&path, bytes).expect("writing the log");
    let (log, report) = EventLog::<Count>::open(&path, LogOptions::default())?;
    drop(log);
    let len = std::fs::metadata(&path).expect("log metadata").len();
    assert_eq!(len + report.truncated_bytes, bytes.len() as u64);
    Ok((report.records, report.truncated_bytes))
}

/// A refused open must be a recovery error naming an offset inside the file.
fn assert_names_offset(error: &OpenError, file_len: usize) -> u64 {
    // `Corrupt` is the only outcome random damage can cause; `OutOfOrder`
    // needs a line with a valid checksum.
    let offset = match error {
        OpenError::Corrupt { offset, .. } => *offset,
        other => panic!("unexpected open error: {other}"),
    };
    assert!(offset < file_len as u64, "{error}");
    assert!(
        error.to_string().contains(&format!("byte offset {offset}")),
        "{error}"
    );
    offset
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
        let _ = RecordRef::decode(&bytes);
    }

    #[test]
    fn checksummed_arbitrary_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = RecordRef::decode(&sealed(body));
    }

    #[test]
    fn checksummed_json_objects_never_panic(value in prop::collection::btree_map(
        prop_oneof![
            Just("v".to_owned()), Just("lsn".to_owned()), Just("stream".to_owned()),
            Just("seq".to_owned()), Just("type".to_owned()), Just("at".to_owned()),
            Just("key".to_owned()), Just("payload".to_owned()), Just("attrs".to_owned()),
            "\\PC{0,6}",
        ],
        json_value(),
        0..12,
    )) {
        let mut body = serde_json::to_vec(&value).expect("maps serialize");
        body.pop();
        let line = sealed(body);
        if let Ok(record) = RecordRef::decode(&line) {
            // Whatever decodes re-encodes to a line that decodes the same.
            let mut again = Vec::new();
            record.encode_into(&mut again);
            again.pop();
            let reread = RecordRef::decode(&again).expect("a re-encoded record decodes");
            prop_assert_eq!(fields(&reread), fields(&record));
        }
    }

    #[test]
    fn a_mutated_line_decodes_to_the_same_record_or_is_rejected(
        record in new_record(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let line = encoded(&record, 3, 2);
        let original = fields(&RecordRef::decode(&line).expect("a valid line decodes"));
        let mut damaged = line.clone();
        for mutation in &mutations {
            mutate(&mut damaged, mutation);
        }
        if let Ok(decoded) = RecordRef::decode(&damaged) {
            prop_assert_eq!(fields(&decoded), original);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn opening_arbitrary_bytes_never_panics(
        bytes in prop::collection::vec(prop_oneof![any::<u8>(), Just(b'\n')], 0..2048),
    ) {
        let dir = tempfile::tempdir().unwrap();
        // Random bytes never carry a valid checksum, so the first line is
        // the damage: cut when it is the only line, named at offset 0 if not.
        match open(dir.path(), &bytes) {
            Ok((records, truncated)) => {
                prop_assert_eq!(records, 0);
                prop_assert_eq!(truncated, bytes.len() as u64);
            }
            Err(error) => prop_assert_eq!(assert_names_offset(&error, bytes.len()), 0),
        }
    }

    #[test]
    fn garbage_after_a_valid_log_is_cut_or_named(
        records in prop::collection::vec(new_record(), 1..8),
        garbage in prop::collection::vec(prop_oneof![any::<u8>(), Just(b'\n')], 1..256),
    ) {
        let (original, ends) = valid_log(&records);
        let mut damaged = original.clone();
        damaged.extend_from_slice(&garbage);
        check_damaged_open(&original, &ends, &damaged)?;
    }

    #[test]
    fn garbage_inside_a_valid_log_keeps_a_prefix_or_is_named(
        records in prop::collection::vec(new_record(), 2..8),
        at in any::<prop::sample::Index>(),
        garbage in prop::collection::vec(prop_oneof![any::<u8>(), Just(b'\n')], 1..64),
    ) {
        let (original, ends) = valid_log(&records);
        let mut damaged = original.clone();
        let at = at.index(original.len());
        damaged.splice(at..at, garbage);
        check_damaged_open(&original, &ends, &damaged)?;
    }
}

/// Opens `damaged`, a copy of the valid log `original` (whose lines end at
/// `ends`) with bytes added, and checks the documented outcome: every line
/// before the first changed byte is intact; the line holding that byte is the
/// damage. When nothing but that line (and no further `\n`) follows, it is a
/// torn write and is cut, keeping exactly the original records before it;
/// otherwise opening fails naming the line's offset.
fn check_damaged_open(
    original: &[u8],
    ends: &[usize],
    damaged: &[u8],
) -> Result<(), TestCaseError> {
    let changed = original
        .iter()
        .zip(damaged)
        .position(|(a, b)| a != b)
        .unwrap_or(original.len().min(damaged.len()));
    let intact = ends.iter().take_while(|&&end| end <= changed).count();
    let damage_at = if intact == 0 { 0 } else { ends[intact - 1] };
    let rest = &damaged[damage_at..];
    let torn = rest
        .iter()
        .position(|&b| b == b'\n')
        .is_none_or(|at| at == rest.len() - 1);
    let dir = tempfile::tempdir().unwrap();
    match open(dir.path(), damaged) {
        Ok((records, truncated)) => {
            prop_assert!(
                torn,
                "damage at {} followed by more lines was accepted",
                damage_at
            );
            prop_assert_eq!(records, intact as u64);
            prop_assert_eq!(truncated, rest.len() as u64);
        }
        Err(error) => {
            prop_assert!(!torn, "a torn final write must be cut off: {}", error);
            prop_assert_eq!(assert_names_offset(&error, damaged.len()), damage_at as u64);
        }
    }
    Ok(())
}
