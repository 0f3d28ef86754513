//! Run erasure in the domain: which runs a tombstone is accepted on, what
//! it records, that nothing folds after it, and that the tombstone alone
//! (as a compaction leaves it) rebuilds the state the whole stream folds to.

use openagents_authority::{
    AppendEvent, CreateRun, DecisionError, EraseRun, Erasure, MAX_REASON_CHARS, RUN_ERASED,
    RunHead, Stream, StreamId, Trajectory, check_reason, decide_append, decide_create,
    decide_erase, is_tombstone,
};
use openagents_event_log::{EventLog, StreamState};
use openagents_run_state::RunStatus;
use serde_json::json;
use support::decide;
use uuid::Uuid;

mod support;

fn open(dir: &std::path::Path) -> EventLog<Stream> {
    support::open(&dir.join("events.jsonl"))
}

fn create(log: &EventLog<Stream>) -> Uuid {
    let id = Uuid::now_v7();
    let request = CreateRun {
        id,
        worker_id: Some("w-1".into()),
        metadata: json!({"secret": "personal"}),
        owner: Some(openagents_workers::Owner::User(7)),
        idempotency_key: Some("create-1".into()),
        written_by: None,
    };
    decide(log, move |txn| decide_create(txn, request)).unwrap();
    id
}

fn append(log: &EventLog<Stream>, id: Uuid, event_type: &str, payload: serde_json::Value) {
    let request = AppendEvent {
        event_type: event_type.into(),
        payload,
        idempotency_key: None,
        expected_previous_seq: None,
        written_by: None,
    };
    decide(log, move |txn| decide_append(txn, id, request)).unwrap();
}

fn erase(
    log: &EventLog<Stream>,
    id: Uuid,
    force: bool,
    last_seq: u64,
) -> Result<Erasure, DecisionError> {
    let request = EraseRun {
        run_id: id,
        reason: "user asked".into(),
        force,
        written_by: Some("admin".into()),
        trajectory: Trajectory {
            last_seq,
            event_count: last_seq,
            trajectory_hash: "sha256:aa".into(),
            receipt_canonical_json_sha256: "bb".into(),
        },
    };
    decide(log, move |txn| decide_erase(txn, request))
}

fn head(log: &EventLog<Stream>, id: Uuid) -> RunHead {
    let index = log.index();
    let entry = index.stream(&StreamId::Run(id).to_string()).unwrap();
    entry.state().as_run().unwrap().clone()
}

/// The run's folded state as JSON (the state has no `PartialEq`).
fn state_json(head: &RunHead) -> serde_json::Value {
    serde_json::to_value(head).unwrap()
}

#[test]
fn a_sealed_run_is_erased_and_takes_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let id = create(&log);
    append(&log, id, "run.finished", json!({"status": "succeeded"}));
    let erasure = erase(&log, id, false, 2).unwrap();
    assert_eq!(erasure.seq, 3);
    assert_eq!(erasure.tombstone.status_at_erasure, RunStatus::Succeeded);
    assert_eq!(erasure.tombstone.erased_by.as_deref(), Some("admin"));
    let run = head(&log, id);
    assert!(run.is_sealed());
    assert_eq!(run.erasure(), Some(&erasure));
    assert_eq!(run.metadata.get(), "{}");
    assert_eq!(run.latest_seq, 3);

    let again = erase(&log, id, true, 3);
    assert!(matches!(again, Err(DecisionError::RunErased { .. })));
    let request = AppendEvent {
        event_type: "note".into(),
        payload: json!({}),
        idempotency_key: None,
        expected_previous_seq: None,
        written_by: None,
    };
    let appended = decide(&log, move |txn| decide_append(txn, id, request));
    assert!(matches!(appended, Err(DecisionError::RunErased { .. })));
    // A retried creation names an erased run: refused, not replayed
    // from records a compaction may have deleted.
    let retried = CreateRun {
        id: Uuid::now_v7(),
        worker_id: Some("w-1".into()),
        metadata: json!({"secret": "personal"}),
        owner: Some(openagents_workers::Owner::User(7)),
        idempotency_key: Some("create-1".into()),
        written_by: None,
    };
    let created = decide(&log, move |txn| decide_create(txn, retried));
    assert!(matches!(created, Err(DecisionError::RunErased { .. })));
}

#[test]
fn a_live_run_needs_force_and_an_unchanged_head() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let id = create(&log);
    append(&log, id, "note", json!({"n": 1}));
    assert!(matches!(
        erase(&log, id, false, 2),
        Err(DecisionError::RunNotSealed(_))
    ));
    assert!(matches!(
        erase(&log, id, true, 1),
        Err(DecisionError::SequenceConflict {
            expected: 1,
            actual: 2
        })
    ));
    assert_eq!(head(&log, id).latest_seq, 2, "refusals append nothing");
    let erasure = erase(&log, id, true, 2).unwrap();
    assert!(erasure.tombstone.forced);
    assert_eq!(erasure.tombstone.status_at_erasure, RunStatus::Running);
    assert!(head(&log, id).is_sealed());
    assert!(matches!(
        erase(&log, Uuid::now_v7(), true, 0),
        Err(DecisionError::RunNotFound(_))
    ));
}

#[test]
fn the_tombstone_alone_rebuilds_the_state_the_fold_reached() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let id = create(&log);
    append(&log, id, "run.cancel_requested", json!({}));
    append(&log, id, "run.finished", json!({"status": "canceled"}));
    erase(&log, id, false, 3).unwrap();
    let folded = head(&log, id);
    let stream = StreamId::Run(id).to_string();
    let opened = log
        .read_stream(&stream, 3, 1, |record| {
            assert!(is_tombstone(&record));
            let state = Stream::open(&record).unwrap();
            state.as_run().expect("a run stream").clone()
        })
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(state_json(&opened), state_json(&folded));
    assert!(opened.is_sealed());
    drop(log);
    // And a restart folds the whole stream to the same state.
    let log = open(dir.path());
    assert_eq!(state_json(&head(&log, id)), state_json(&folded));
}

#[test]
fn clients_cannot_append_the_tombstone_type_and_reasons_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let id = create(&log);
    let request = AppendEvent {
        event_type: RUN_ERASED.into(),
        payload: json!({}),
        idempotency_key: None,
        expected_previous_seq: None,
        written_by: None,
    };
    let appended = decide(&log, move |txn| decide_append(txn, id, request));
    assert!(matches!(appended, Err(DecisionError::ReservedEventType(_))));
    assert!(check_reason(" ").is_err());
    assert!(check_reason(&"é".repeat(MAX_REASON_CHARS)).is_ok());
    assert!(check_reason(&"é".repeat(MAX_REASON_CHARS + 1)).is_err());
}
