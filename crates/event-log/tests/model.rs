//! Random sequences of appends (with keys, expected sequences and conflicts)
//! and reopens, checked against a plain in-memory model: after every reopen
//! the log holds exactly what the model acknowledged.

mod common;

use common::{Outcome, Request, append, bodies, open_segmented};
use proptest::prelude::*;
use std::collections::HashMap;

#[derive(Clone, Debug)]
enum Step {
    Append {
        stream: u8,
        body: u8,
        key: Option<u8>,
        expect: Option<u8>,
    },
    Reopen,
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0u8..3, 0u8..4, prop::option::of(0u8..4), prop::option::of(0u8..6))
            .prop_map(|(stream, body, key, expect)| Step::Append { stream, body, key, expect }),
        1 => Just(Step::Reopen),
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
        events.push((request.body.clone(), request.key.clone()));
        Outcome::Appended(head + 1)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_log_agrees_with_the_model_across_reopens(
        steps in prop::collection::vec(arb_step(), 1..60),
        segment_bytes in prop::sample::select(vec![64u64, 512, 4096, 1 << 20]),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut log = open_segmented(&path, segment_bytes);
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
                Step::Reopen => {
                    drop(log);
                    log = open_segmented(&path, segment_bytes);
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
