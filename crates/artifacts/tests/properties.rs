//! Property tests of the artifacts built from arbitrary runs: hashes ignore
//! how a payload was spelled, builds are byte-reproducible, every built replay
//! validates, and a changed byte in any replay payload is caught on its line.

use openagents_artifacts::{RunHeader, build_receipt, validate_replay, write_replay};
use openagents_run_state::{RunEvent, RunStatus};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::convert::Infallible;

/// Payload keys: the fields the receipt reads, plus arbitrary ones.
fn arb_key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "tool",
            "params",
            "output",
            "latency_ms",
            "side_effects",
            "command",
            "exit_code",
            "cwd",
            "duration_ms",
            "status"
        ])
        .prop_map(str::to_owned),
        "[a-zA-Z_é😀 \"\\\\]{0,5}",
    ]
}

/// Arbitrary JSON. With `floats`, numbers include finite f64s.
///
/// Without floats, strings also avoid the control characters serde_json
/// writes as `\u00XX`: those are the two spots where a one-byte change can
/// keep a payload's *value* (a float digit past f64 precision, the case of a
/// hex digit in an escape), and with it its hash, unchanged, which the
/// byte-flip property would wrongly count as a miss.
fn arb_json(floats: bool) -> impl Strategy<Value = Value> {
    let number = if floats {
        prop_oneof![
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
                .prop_map(Value::from)
        ]
        .boxed()
    } else {
        prop_oneof![
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from)
        ]
        .boxed()
    };
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number,
        "[a-z0-9 é😀中\"\\\\/\n\t]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 40, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(arb_key(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Arbitrary runs: a header with any status and 0..12 events with seqs 1..=n.
fn arb_run(floats: bool) -> impl Strategy<Value = (RunHeader, Vec<RunEvent>)> {
    let event = (
        prop::sample::select(vec![
            "run.started",
            "note",
            "tool.call.completed",
            "verification.completed",
        ]),
        arb_json(floats),
        prop::option::of("[a-z0-9-]{1,6}"),
    );
    (
        prop::sample::select(RunStatus::ALL.to_vec()),
        arb_json(floats),
        prop::collection::vec(event, 0..12),
    )
        .prop_map(|(status, policy, events)| {
            let run = RunHeader {
                id: "019b7ca9-8c88-7a01-8b00-0000000000ff".to_owned(),
                created_at: "2026-01-02T03:04:05.000000Z".to_owned(),
                metadata: json!({"policy_bundle_id": policy}),
                status,
            };
            let events = events
                .into_iter()
                .zip(1..)
                .map(|((event_type, payload, idempotency_key), seq)| RunEvent {
                    seq,
                    event_type: event_type.to_owned(),
                    payload,
                    idempotency_key,
                    recorded_at: format!("2026-01-02T03:05:{seq:02}.000000Z"),
                })
                .collect();
            (run, events)
        })
}

fn receipt_bytes(run: &RunHeader, events: &[RunEvent]) -> Vec<u8> {
    build_receipt(run, events.iter().cloned().map(Ok::<_, Infallible>))
        .unwrap()
        .to_json_bytes()
}

fn replay_bytes(run: &RunHeader, events: &[RunEvent]) -> Vec<u8> {
    let mut out = Vec::new();
    write_replay(
        &mut out,
        run,
        events.iter().cloned().map(Ok::<_, Infallible>),
    )
    .unwrap();
    out
}

/// Writes `value` as JSON text with every object's keys in reverse order and
/// `gap` wherever JSON allows whitespace: a spelling a client could send.
fn respell(value: &Value, gap: &str, out: &mut String) {
    match value {
        Value::Object(map) => {
            out.push('{');
            for (index, (key, item)) in map.iter().rev().enumerate() {
                out.push_str(if index > 0 { "," } else { "" });
                out.push_str(&format!("{gap}{}{gap}:{gap}", Value::from(key.as_str())));
                respell(item, gap, out);
            }
            out.push_str(gap);
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                out.push_str(if index > 0 { "," } else { "" });
                out.push_str(gap);
                respell(item, gap, out);
            }
            out.push_str(gap);
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The events with every payload re-read from a respelled text.
fn respelled(events: &[RunEvent], gap: &str) -> Vec<RunEvent> {
    events
        .iter()
        .map(|event| {
            let mut text = String::new();
            respell(&event.payload, gap, &mut text);
            RunEvent {
                payload: serde_json::from_str(&text).unwrap(),
                ..event.clone()
            }
        })
        .collect()
}

proptest! {
    #[test]
    fn key_order_and_whitespace_of_payloads_change_no_hash(
        (run, events) in arb_run(true),
        gap in prop::sample::select(vec!["", " ", "\n", "\t", " \r\n  "]),
    ) {
        let respelled = respelled(&events, gap);
        let original = build_receipt(&run, events.iter().cloned().map(Ok::<_, Infallible>)).unwrap();
        let other = build_receipt(&run, respelled.iter().cloned().map(Ok::<_, Infallible>)).unwrap();
        // Trajectory hash and tool-call hashes, then the whole receipt.
        prop_assert_eq!(&original.trajectory_hash, &other.trajectory_hash);
        prop_assert_eq!(&original.tool_calls, &other.tool_calls);
        prop_assert_eq!(original.to_json_bytes(), other.to_json_bytes());
        // The replay carries every payload_hash.
        prop_assert_eq!(replay_bytes(&run, &events), replay_bytes(&run, &respelled));
    }

    #[test]
    fn building_twice_gives_identical_bytes((run, events) in arb_run(true)) {
        prop_assert_eq!(receipt_bytes(&run, &events), receipt_bytes(&run, &events));
        prop_assert_eq!(replay_bytes(&run, &events), replay_bytes(&run, &events));
    }

    #[test]
    fn every_built_replay_passes_the_validator((run, events) in arb_run(true)) {
        let replay = replay_bytes(&run, &events);
        let lines = validate_replay(&replay[..]);
        let expected = 2 + events.len() as u64 + u64::from(run.status.is_terminal());
        prop_assert_eq!(lines.map_err(|error| error.to_string()), Ok(expected));
    }

    #[test]
    fn a_changed_payload_byte_fails_validation_on_its_line(
        (run, events) in arb_run(false).prop_filter("needs an event", |(_, events)| !events.is_empty()),
        which in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        delta in 1..=255u8,
    ) {
        let event = which.index(events.len());
        let mut replay = replay_bytes(&run, &events);
        let line_start = nth_line_start(&replay, 2 + event);
        let line_end = line_start + replay[line_start..].iter().position(|&b| b == b'\n').unwrap();
        // The payload is the line's last field: it ends just before `}`.
        let payload_text = serde_json::to_vec(&events[event].payload).unwrap();
        let payload_end = line_end - 1;
        let payload_start = payload_end - payload_text.len();
        prop_assert_eq!(&replay[payload_start..payload_end], &payload_text[..]);

        let byte = payload_start + at.index(payload_text.len());
        replay[byte] = replay[byte].wrapping_add(delta);
        let error = validate_replay(&replay[..]).expect_err("a changed payload byte went unnoticed");
        prop_assert_eq!(error.line(), 3 + event as u64, "{}", error);
    }
}

/// Byte offset where the 0-based line `index` of `text` starts.
fn nth_line_start(text: &[u8], index: usize) -> usize {
    if index == 0 {
        return 0;
    }
    text.iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(index - 1)
        .map(|(at, _)| at + 1)
        .unwrap()
}

#[test]
fn the_respelling_really_reorders_keys_and_adds_whitespace() {
    let mut text = String::new();
    respell(&json!({"a": 1, "b": [true, null]}), " ", &mut text);
    assert_eq!(text, r#"{ "b" : [ true, null ], "a" : 1 }"#);
}
