//! The run decisions against a model of the contract, through a real log:
//! every answer (appended, replayed, refused and why) is the model's, and a
//! log reopened from disk folds to exactly the state the decisions left.

use openagents_authority::{
    AppendEvent, CreateRun, DecisionError, RunHead, RunWrite, Stream, StreamId, decide_append,
    decide_create,
};
use openagents_event_log::EventLog;
use openagents_run_state::{Applied, RunStatus, RunTransition};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::collections::HashMap;
use support::{decide, open};
use uuid::Uuid;

mod support;

#[derive(Debug, Clone)]
enum Op {
    Create {
        key: Option<u8>,
        meta: u8,
    },
    Append {
        run: usize,
        event: u8,
        payload: u8,
        key: Option<u8>,
        expected_offset: Option<i8>,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (proptest::option::of(0u8..3), 0u8..2).prop_map(|(key, meta)| Op::Create { key, meta }),
        6 => (0usize..4, 0u8..7, 0u8..2, proptest::option::of(0u8..3), proptest::option::of(-1i8..=1))
            .prop_map(|(run, event, payload, key, expected_offset)| Op::Append { run, event, payload, key, expected_offset }),
        1 => Just(Op::Reopen),
    ]
}

/// Event types drawn by the strategy: plain events and every transition,
/// including a malformed `run.finished`.
fn event(choice: u8) -> (String, Value) {
    match choice {
        0 | 1 => ("tool.call.completed".into(), json!({})),
        2 => ("run.started".into(), json!({})),
        3 => ("run.cancel_requested".into(), json!({})),
        4 => ("run.finished".into(), json!({"status": "succeeded"})),
        5 => ("run.finished".into(), json!({"status": "canceled"})),
        _ => ("run.finished".into(), json!({})),
    }
}

/// What a decision answered, reduced to what the contract specifies.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Written { run: Uuid, seq: u64, replay: bool },
    KeyReused,
    SequenceConflict { actual: u64 },
    RunState(&'static str),
}

fn answer(result: Result<RunWrite, DecisionError>) -> Answer {
    match result {
        Ok(write) => Answer::Written {
            run: write.run.id,
            seq: write.event.seq,
            replay: write.idempotent_replay,
        },
        Err(DecisionError::IdempotencyKeyReused) => Answer::KeyReused,
        Err(DecisionError::SequenceConflict { actual, .. }) => Answer::SequenceConflict { actual },
        Err(DecisionError::RunState(rule)) => Answer::RunState(rule.reason_code()),
        Err(other) => panic!("the model never expects {other}"),
    }
}

/// One run as the model sees it.
#[derive(Debug, Default)]
struct ModelRun {
    id: Uuid,
    status: Option<RunStatus>,
    latest_seq: u64,
    keys: HashMap<u8, (u64, String, Value)>,
    transitions: HashMap<&'static str, u64>,
}

#[derive(Debug, Default)]
struct Model {
    runs: Vec<ModelRun>,
    create_keys: HashMap<u8, (usize, u8)>,
}

impl Model {
    fn create(&mut self, id: Uuid, key: Option<u8>, meta: u8) -> Answer {
        if let Some(key) = key
            && let Some(&(run, earlier)) = self.create_keys.get(&key)
        {
            return if earlier == meta {
                Answer::Written {
                    run: self.runs[run].id,
                    seq: 1,
                    replay: true,
                }
            } else {
                Answer::KeyReused
            };
        }
        if let Some(key) = key {
            self.create_keys.insert(key, (self.runs.len(), meta));
        }
        let mut run = ModelRun {
            id,
            status: Some(RunStatus::Running),
            latest_seq: 1,
            ..ModelRun::default()
        };
        run.transitions.insert("start", 1);
        self.runs.push(run);
        Answer::Written {
            run: id,
            seq: 1,
            replay: false,
        }
    }

    fn append(
        &mut self,
        run: usize,
        event_type: &str,
        payload: &Value,
        key: Option<u8>,
        expected: Option<u64>,
    ) -> Answer {
        let run = &mut self.runs[run];
        if let Some(key) = key
            && let Some((seq, earlier_type, earlier_payload)) = run.keys.get(&key)
        {
            return if earlier_type == event_type && earlier_payload == payload {
                Answer::Written {
                    run: run.id,
                    seq: *seq,
                    replay: true,
                }
            } else {
                Answer::KeyReused
            };
        }
        if let Some(expected) = expected
            && expected != run.latest_seq
        {
            return Answer::SequenceConflict {
                actual: run.latest_seq,
            };
        }
        let status = run.status.expect("a created run has a status");
        match status.decide(event_type, payload) {
            Err(rule) => Answer::RunState(rule.reason_code()),
            Ok(Some(Applied::AlreadyApplied)) => {
                let transition = RunTransition::from_event(event_type, payload)
                    .unwrap()
                    .unwrap();
                let name = match transition {
                    RunTransition::Start => "start",
                    RunTransition::RequestCancel => "cancel",
                    _ => "finish",
                };
                Answer::Written {
                    run: run.id,
                    seq: run.transitions[name],
                    replay: true,
                }
            }
            Ok(applied) => {
                run.latest_seq += 1;
                let seq = run.latest_seq;
                if let Some(Applied::Moved(next)) = applied {
                    let name = if next == RunStatus::Canceling {
                        "cancel"
                    } else {
                        "finish"
                    };
                    run.transitions.insert(name, seq);
                    run.status = Some(next);
                }
                if let Some(key) = key {
                    run.keys
                        .insert(key, (seq, event_type.to_owned(), payload.clone()));
                }
                Answer::Written {
                    run: run.id,
                    seq,
                    replay: false,
                }
            }
        }
    }
}

/// Every run's folded head, by id.
fn heads(log: &EventLog<Stream>) -> HashMap<Uuid, RunHead> {
    log.index()
        .streams()
        .filter_map(|(_, entry)| entry.state().as_run().cloned())
        .map(|head| (head.id, head))
        .collect()
}

/// The fields of a head that a fold rebuilds.
fn summary(head: &RunHead) -> (RunStatus, u64, String, String, String) {
    (
        head.status,
        head.latest_seq,
        head.created_at.to_string(),
        head.updated_at.clone(),
        head.metadata.get().to_owned(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn decisions_answer_as_the_model_and_a_reopened_log_folds_to_the_same_state(
        ops in proptest::collection::vec(op(), 1..40)
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        let mut log = open(&path);
        let mut model = Model::default();
        for op in ops {
            match op {
                Op::Create { key, meta } => {
                    let id = Uuid::now_v7();
                    let request = CreateRun {
                        id,
                        worker_id: None,
                        metadata: json!({"m": meta}),
                        owner: None,
                        idempotency_key: key.map(|k| format!("create-{k}")),
                        written_by: None,
                    };
                    let got = answer(decide(&log, move |txn| decide_create(txn, request)));
                    prop_assert_eq!(got, model.create(id, key, meta));
                }
                Op::Append { run, event: choice, payload, key, expected_offset } => {
                    if model.runs.is_empty() {
                        continue;
                    }
                    let run = run % model.runs.len();
                    let (event_type, mut body) = event(choice);
                    body["p"] = json!(payload);
                    let expected = expected_offset
                        .map(|offset| model.runs[run].latest_seq.saturating_add_signed(offset.into()));
                    let request = AppendEvent {
                        event_type: event_type.clone(),
                        payload: body.clone(),
                        idempotency_key: key.map(|k| format!("k{k}")),
                        expected_previous_seq: expected,
                        written_by: None,
                    };
                    let id = model.runs[run].id;
                    let got = answer(decide(&log, move |txn| decide_append(txn, id, request)));
                    prop_assert_eq!(got, model.append(run, &event_type, &body, key, expected));
                }
                Op::Reopen => {
                    let before = heads(&log);
                    drop(log);
                    log = open(&path);
                    let after = heads(&log);
                    prop_assert_eq!(before.len(), after.len());
                    for (id, head) in &before {
                        prop_assert_eq!(summary(head), summary(&after[id]));
                    }
                }
            }
            for run in &model.runs {
                let index = log.index();
                let head = index
                    .stream(&StreamId::Run(run.id).to_string())
                    .and_then(|entry| entry.state().as_run().cloned())
                    .expect("every created run is in the index");
                prop_assert_eq!(Some(head.status), run.status);
                prop_assert_eq!(head.latest_seq, run.latest_seq);
            }
        }
    }
}
