//! The replay validator: reads a `REPLAY.jsonl` v1 stream and names the first
//! line that breaks a rule of the format.
//!
//! Rules, checked in file order (each is a [`ReplayRule`] variant):
//!
//! - every line ends in `\n` and is one JSON object of a known `type` with
//!   exactly that type's fields;
//! - line 1 is the ReplayHeader, with `replay_version` 1;
//! - line 2 is the SessionStart, and neither appears again;
//! - every later line names the SessionStart's `session_id`;
//! - RuntimeEvent seqs strictly increase;
//! - each RuntimeEvent's `payload_hash` is the digest of its payload (of the
//!   payload's value: key order and whitespace inside the line do not matter);
//! - at most one SessionEnd, and only as the last line, with the confidence
//!   its status implies, `total_tool_calls` equal to the number of
//!   `tool.call.completed` events and `ts` equal to the last event's (or the
//!   SessionStart's when there is none).
//!
//! Memory holds one line at a time, so a replay of any length can be checked.

use crate::events::TOOL_CALL_COMPLETED;
use crate::replay::{EndStatus, REPLAY_VERSION, ReplayLine};
use openagents_canonical::digest;
use serde::de::IgnoredAny;
use std::io::{self, BufRead};

/// Why a replay is invalid: a read failure or a broken rule, with the 1-based
/// line number where it happened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// The reader failed before the line could be read.
    #[error("line {line}: reading the replay failed")]
    Read {
        /// The line being read.
        line: u64,
        /// The reader's error.
        #[source]
        source: io::Error,
    },
    /// The line breaks a rule of the format. For a replay that ends too
    /// early, `line` is the missing line's number.
    #[error("line {line}: {rule}")]
    Rule {
        /// The offending line.
        line: u64,
        /// The rule it breaks.
        rule: ReplayRule,
    },
}

impl ValidationError {
    /// The 1-based number of the line the error is about.
    pub fn line(&self) -> u64 {
        match self {
            Self::Read { line, .. } | Self::Rule { line, .. } => *line,
        }
    }
}

/// A rule of the replay format, as broken by one line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReplayRule {
    /// The line (the file's last) does not end in `\n`.
    #[error("the line does not end with a newline")]
    MissingNewline,
    /// The line is not well-formed JSON (this includes invalid UTF-8).
    #[error("the line is not valid JSON: {0}")]
    InvalidJson(String),
    /// The line is JSON but not a replay record: unknown `type`, missing,
    /// extra or mistyped fields.
    #[error("the line is not a replay record: {0}")]
    InvalidRecord(String),
    /// Line 1 is not a ReplayHeader.
    #[error("expected the ReplayHeader as line 1, found {found}")]
    ExpectedHeader {
        /// The record type found, or `end of input`.
        found: &'static str,
    },
    /// The ReplayHeader names a version this validator does not know.
    #[error("replay_version {found} is not supported, expected {REPLAY_VERSION}")]
    UnsupportedVersion {
        /// The version the header names.
        found: u64,
    },
    /// Line 2 is not a SessionStart.
    #[error("expected the SessionStart as line 2, found {found}")]
    ExpectedSessionStart {
        /// The record type found, or `end of input`.
        found: &'static str,
    },
    /// A second ReplayHeader or SessionStart after line 2.
    #[error("a {kind} may appear only once, at the top of the replay")]
    Repeated {
        /// The repeated record type.
        kind: &'static str,
    },
    /// The line names another session than the SessionStart.
    #[error("session_id {found:?} differs from the SessionStart's {expected:?}")]
    SessionMismatch {
        /// The SessionStart's session id.
        expected: String,
        /// The line's session id.
        found: String,
    },
    /// A RuntimeEvent seq is not greater than the previous one.
    #[error("seq {seq} does not follow seq {previous}: seqs must strictly increase")]
    SeqNotIncreasing {
        /// The previous RuntimeEvent's seq.
        previous: u64,
        /// This line's seq.
        seq: u64,
    },
    /// A RuntimeEvent's `payload_hash` is not the digest of its payload.
    #[error("payload_hash {found} is not the payload's digest {computed}")]
    PayloadHashMismatch {
        /// The hash the line states.
        found: String,
        /// The digest of the line's payload.
        computed: String,
    },
    /// The SessionEnd's confidence is not the one its status implies.
    #[error("confidence {found} does not match status {status:?}, which implies {expected}")]
    ConfidenceMismatch {
        /// The SessionEnd's status.
        status: EndStatus,
        /// The confidence the status implies.
        expected: f64,
        /// The confidence the line states.
        found: f64,
    },
    /// The SessionEnd's `total_tool_calls` is not the number of
    /// `tool.call.completed` events above it.
    #[error("total_tool_calls is {found} but the replay has {counted} tool.call.completed events")]
    ToolCallCountMismatch {
        /// The events counted.
        counted: u64,
        /// The total the line states.
        found: u64,
    },
    /// The SessionEnd's `ts` is not the last event's `ts`.
    #[error("SessionEnd ts {found:?} is not the last event's ts {expected:?}")]
    EndTimeMismatch {
        /// The last RuntimeEvent's ts (the SessionStart's when there is none).
        expected: String,
        /// The ts the line states.
        found: String,
    },
    /// A line follows the SessionEnd.
    #[error("nothing may follow the SessionEnd")]
    AfterSessionEnd,
}

/// Checks a whole replay; returns the number of lines on success.
pub fn validate_replay<R: BufRead>(mut input: R) -> Result<u64, ValidationError> {
    let mut state = State::ExpectHeader;
    let mut buffer = Vec::new();
    let mut line = 0;
    loop {
        buffer.clear();
        let read =
            input
                .read_until(b'\n', &mut buffer)
                .map_err(|source| ValidationError::Read {
                    line: line + 1,
                    source,
                })?;
        if read == 0 {
            return state
                .finish()
                .map(|()| line)
                .map_err(|rule| ValidationError::Rule {
                    line: line + 1,
                    rule,
                });
        }
        line += 1;
        state = parse_line(&buffer)
            .and_then(|record| state.accept(record))
            .map_err(|rule| ValidationError::Rule { line, rule })?;
    }
}

/// Parses one line, `\n` included, into a record.
fn parse_line(bytes: &[u8]) -> Result<ReplayLine<'static>, ReplayRule> {
    let content = bytes
        .strip_suffix(b"\n")
        .ok_or(ReplayRule::MissingNewline)?;
    serde_json::from_slice(content).map_err(|error| {
        if !error.is_data() {
            return ReplayRule::InvalidJson(error.to_string());
        }
        // The record parser stops at the first problem, so a shape error can
        // hide a later syntax error (`{} {}`); only a line that is JSON
        // throughout is reported as a bad record.
        match serde_json::from_slice::<IgnoredAny>(content) {
            Ok(_) => ReplayRule::InvalidRecord(error.to_string()),
            Err(syntax) => ReplayRule::InvalidJson(syntax.to_string()),
        }
    })
}

/// Where the validator is in the replay, with what later lines are checked
/// against.
enum State {
    /// Before line 1.
    ExpectHeader,
    /// After the header, before line 2.
    ExpectSessionStart,
    /// Inside the event section.
    Events(Session),
    /// After the SessionEnd: only the end of input may follow.
    Ended,
}

/// What the event section has established so far.
struct Session {
    /// The SessionStart's session id.
    id: String,
    /// Seq of the last RuntimeEvent.
    last_seq: Option<u64>,
    /// `ts` of the last RuntimeEvent (the SessionStart's before the first).
    last_ts: String,
    /// How many `tool.call.completed` events were seen.
    tool_calls: u64,
}

/// What `found` says when the input ends where a line was required.
const END_OF_INPUT: &str = "end of input";

impl State {
    /// Checks the next line against the state and moves on.
    fn accept(self, record: ReplayLine<'static>) -> Result<Self, ReplayRule> {
        match (self, record) {
            (Self::ExpectHeader, ReplayLine::ReplayHeader { replay_version, .. }) => {
                if replay_version == REPLAY_VERSION {
                    Ok(Self::ExpectSessionStart)
                } else {
                    Err(ReplayRule::UnsupportedVersion {
                        found: replay_version,
                    })
                }
            }
            (Self::ExpectHeader, other) => Err(ReplayRule::ExpectedHeader {
                found: other.kind(),
            }),
            (Self::ExpectSessionStart, ReplayLine::SessionStart { ts, session_id, .. }) => {
                Ok(Self::Events(Session {
                    id: session_id.into_owned(),
                    last_seq: None,
                    last_ts: ts.into_owned(),
                    tool_calls: 0,
                }))
            }
            (Self::ExpectSessionStart, other) => Err(ReplayRule::ExpectedSessionStart {
                found: other.kind(),
            }),
            (Self::Events(session), record) => session.accept(record),
            (Self::Ended, _) => Err(ReplayRule::AfterSessionEnd),
        }
    }

    /// Checks that the input may end here.
    fn finish(self) -> Result<(), ReplayRule> {
        match self {
            Self::ExpectHeader => Err(ReplayRule::ExpectedHeader {
                found: END_OF_INPUT,
            }),
            Self::ExpectSessionStart => Err(ReplayRule::ExpectedSessionStart {
                found: END_OF_INPUT,
            }),
            Self::Events(_) | Self::Ended => Ok(()),
        }
    }
}

impl Session {
    /// Checks a line of the event section.
    fn accept(mut self, record: ReplayLine<'static>) -> Result<State, ReplayRule> {
        match record {
            ReplayLine::RuntimeEvent {
                ts,
                session_id,
                seq,
                runtime_event_type,
                payload_hash,
                payload,
            } => {
                self.check_session(&session_id)?;
                if let Some(previous) = self.last_seq
                    && seq <= previous
                {
                    return Err(ReplayRule::SeqNotIncreasing { previous, seq });
                }
                let computed = digest(&payload);
                if payload_hash != computed {
                    return Err(ReplayRule::PayloadHashMismatch {
                        found: payload_hash.into_owned(),
                        computed,
                    });
                }
                if runtime_event_type == TOOL_CALL_COMPLETED {
                    self.tool_calls += 1;
                }
                self.last_seq = Some(seq);
                self.last_ts = ts.into_owned();
                Ok(State::Events(self))
            }
            ReplayLine::SessionEnd {
                ts,
                session_id,
                status,
                confidence,
                total_tool_calls,
            } => {
                self.check_session(&session_id)?;
                self.check_end(&ts, status, confidence, total_tool_calls)?;
                Ok(State::Ended)
            }
            other => Err(ReplayRule::Repeated { kind: other.kind() }),
        }
    }

    /// Checks that a line names this session.
    fn check_session(&self, session_id: &str) -> Result<(), ReplayRule> {
        if session_id == self.id {
            Ok(())
        } else {
            Err(ReplayRule::SessionMismatch {
                expected: self.id.clone(),
                found: session_id.to_owned(),
            })
        }
    }

    /// Checks the SessionEnd's summary fields against what was seen.
    fn check_end(
        &self,
        ts: &str,
        status: EndStatus,
        confidence: f64,
        total_tool_calls: u64,
    ) -> Result<(), ReplayRule> {
        let expected = status.confidence();
        if confidence != expected {
            return Err(ReplayRule::ConfidenceMismatch {
                status,
                expected,
                found: confidence,
            });
        }
        if total_tool_calls != self.tool_calls {
            return Err(ReplayRule::ToolCallCountMismatch {
                counted: self.tool_calls,
                found: total_tool_calls,
            });
        }
        if ts != self.last_ts {
            return Err(ReplayRule::EndTimeMismatch {
                expected: self.last_ts.clone(),
                found: ts.to_owned(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const SESSION: &str = "019b8a1c-0000-7000-8000-000000000003";

    /// A valid sealed replay: header, start, two events (one tool call), end.
    fn valid() -> Vec<Value> {
        vec![
            json!({"type": "ReplayHeader", "replay_version": 1, "producer": "openagents-runtime", "created_at": "t0"}),
            json!({"type": "SessionStart", "ts": "t0", "session_id": SESSION, "policy_bundle_id": "runtime.default"}),
            runtime_event(1, "tool.call.completed", json!({"tool": "x"})),
            runtime_event(2, "note", json!(["é", {"n": null}])),
            json!({"type": "SessionEnd", "ts": "t2", "session_id": SESSION, "status": "success", "confidence": 1.0,
                "total_tool_calls": 1}),
        ]
    }

    fn runtime_event(seq: u64, event_type: &str, payload: Value) -> Value {
        json!({"type": "RuntimeEvent", "ts": format!("t{seq}"), "session_id": SESSION, "seq": seq,
            "runtime_event_type": event_type, "payload_hash": digest(&payload), "payload": payload})
    }

    fn text(lines: &[Value]) -> String {
        lines.iter().map(|line| format!("{line}\n")).collect()
    }

    /// Validates `input` and returns the broken rule with its line.
    fn broken(input: &[u8]) -> (u64, ReplayRule) {
        match validate_replay(input) {
            Err(ValidationError::Rule { line, rule }) => (line, rule),
            other => panic!("expected a broken rule, got {other:?}"),
        }
    }

    fn broken_lines(lines: &[Value]) -> (u64, ReplayRule) {
        broken(text(lines).as_bytes())
    }

    #[test]
    fn a_valid_replay_passes_and_counts_its_lines() {
        assert_eq!(validate_replay(text(&valid()).as_bytes()).unwrap(), 5);
    }

    #[test]
    fn a_replay_without_session_end_passes() {
        let mut lines = valid();
        lines.pop();
        assert_eq!(validate_replay(text(&lines).as_bytes()).unwrap(), 4);
    }

    #[test]
    fn the_payload_hash_ignores_key_order_and_whitespace_in_the_line() {
        let payload = json!({"a": 2, "b": 1});
        let line = format!(
            r#"{{"type":"RuntimeEvent","ts":"t1","session_id":"{SESSION}","seq":1,"runtime_event_type":"note","payload_hash":"{}","payload":{{ "b" : 1, "a" : 2 }}}}"#,
            digest(&payload)
        );
        let input = format!("{}{line}\n", text(&valid()[..2]));
        assert_eq!(validate_replay(input.as_bytes()).unwrap(), 3);
    }

    #[test]
    fn a_last_line_without_newline_is_refused() {
        let mut input = text(&valid());
        input.pop();
        assert_eq!(broken(input.as_bytes()), (5, ReplayRule::MissingNewline));
    }

    #[test]
    fn malformed_json_is_refused_on_its_line() {
        let valid = text(&valid());
        let mut lines: Vec<&str> = valid.lines().collect();
        for bad in [r#"{"type":"RuntimeEvent""#, "", "not json", "{} {}"] {
            lines[2] = bad;
            let input = format!("{}\n", lines.join("\n"));
            let (line, rule) = broken(input.as_bytes());
            assert_eq!(line, 3, "{bad:?}");
            assert!(
                matches!(rule, ReplayRule::InvalidJson(_)),
                "{bad:?}: {rule:?}"
            );
        }
    }

    #[test]
    fn invalid_utf8_is_invalid_json() {
        let mut input = text(&valid()[..3]).into_bytes();
        let x = input.iter().rposition(|&b| b == b'x').unwrap();
        input[x] = 0xff;
        let (line, rule) = broken(&input);
        assert_eq!(line, 3);
        assert!(matches!(rule, ReplayRule::InvalidJson(_)), "{rule:?}");
    }

    #[test]
    fn json_that_is_not_a_record_is_refused_on_its_line() {
        let unknown_type = json!({"type": "Note", "ts": "t1"});
        let mut extra_field = runtime_event(1, "note", json!({}));
        extra_field["extra"] = json!(true);
        let mut missing_field = runtime_event(1, "note", json!({}));
        missing_field.as_object_mut().unwrap().remove("seq");
        let mut mistyped = runtime_event(1, "note", json!({}));
        mistyped["seq"] = json!("1");
        for bad in [
            unknown_type,
            extra_field,
            missing_field,
            mistyped,
            json!([1]),
        ] {
            let mut lines = valid();
            lines[2] = bad.clone();
            let (line, rule) = broken_lines(&lines);
            assert_eq!(line, 3, "{bad}");
            assert!(
                matches!(rule, ReplayRule::InvalidRecord(_)),
                "{bad}: {rule:?}"
            );
        }
    }

    #[test]
    fn the_first_line_must_be_the_header() {
        assert_eq!(
            broken_lines(&valid()[1..]),
            (
                1,
                ReplayRule::ExpectedHeader {
                    found: "SessionStart"
                }
            )
        );
        assert_eq!(
            broken(b""),
            (
                1,
                ReplayRule::ExpectedHeader {
                    found: "end of input"
                }
            )
        );
    }

    #[test]
    fn only_replay_version_1_is_accepted() {
        let mut lines = valid();
        lines[0]["replay_version"] = json!(2);
        assert_eq!(
            broken_lines(&lines),
            (1, ReplayRule::UnsupportedVersion { found: 2 })
        );
    }

    #[test]
    fn the_second_line_must_be_the_session_start() {
        let mut lines = valid();
        lines.remove(1);
        assert_eq!(
            broken_lines(&lines),
            (
                2,
                ReplayRule::ExpectedSessionStart {
                    found: "RuntimeEvent"
                }
            )
        );
        assert_eq!(
            broken_lines(&valid()[..1]),
            (
                2,
                ReplayRule::ExpectedSessionStart {
                    found: "end of input"
                }
            )
        );
    }

    #[test]
    fn header_and_session_start_appear_only_once() {
        for (index, kind) in [(0, "ReplayHeader"), (1, "SessionStart")] {
            let mut lines = valid();
            let again = lines[index].clone();
            lines.insert(3, again);
            assert_eq!(broken_lines(&lines), (4, ReplayRule::Repeated { kind }));
        }
    }

    #[test]
    fn every_line_names_the_same_session() {
        let mut lines = valid();
        lines[3]["session_id"] = json!("other");
        let expected = ReplayRule::SessionMismatch {
            expected: SESSION.to_owned(),
            found: "other".to_owned(),
        };
        assert_eq!(broken_lines(&lines), (4, expected.clone()));
        let mut lines = valid();
        lines[4]["session_id"] = json!("other");
        assert_eq!(broken_lines(&lines), (5, expected));
    }

    #[test]
    fn seqs_must_strictly_increase() {
        for seq in [1, 0] {
            let mut lines = valid();
            lines[3] = runtime_event(seq, "note", json!({}));
            assert_eq!(
                broken_lines(&lines),
                (4, ReplayRule::SeqNotIncreasing { previous: 1, seq })
            );
        }
    }

    #[test]
    fn the_payload_hash_must_match_the_payload() {
        let mut lines = valid();
        lines[2]["payload"] = json!({"tool": "y"});
        let expected = ReplayRule::PayloadHashMismatch {
            found: digest(&json!({"tool": "x"})),
            computed: digest(&json!({"tool": "y"})),
        };
        assert_eq!(broken_lines(&lines), (3, expected));
    }

    #[test]
    fn nothing_follows_the_session_end() {
        let mut lines = valid();
        let end = lines[4].clone();
        lines.push(end);
        assert_eq!(broken_lines(&lines), (6, ReplayRule::AfterSessionEnd));
        let mut lines = valid();
        lines.push(runtime_event(3, "note", json!({})));
        assert_eq!(broken_lines(&lines), (6, ReplayRule::AfterSessionEnd));
    }

    #[test]
    fn the_session_end_confidence_follows_its_status() {
        let mut lines = valid();
        lines[4]["status"] = json!("cancelled");
        let expected = ReplayRule::ConfidenceMismatch {
            status: EndStatus::Cancelled,
            expected: 0.0,
            found: 1.0,
        };
        assert_eq!(broken_lines(&lines), (5, expected));
    }

    #[test]
    fn the_session_end_counts_the_tool_calls() {
        let mut lines = valid();
        lines[4]["total_tool_calls"] = json!(2);
        assert_eq!(
            broken_lines(&lines),
            (
                5,
                ReplayRule::ToolCallCountMismatch {
                    counted: 1,
                    found: 2
                }
            )
        );
    }

    #[test]
    fn the_session_end_is_stamped_with_the_last_event_time() {
        let mut lines = valid();
        lines[4]["ts"] = json!("t9");
        let expected = ReplayRule::EndTimeMismatch {
            expected: "t2".to_owned(),
            found: "t9".to_owned(),
        };
        assert_eq!(broken_lines(&lines), (5, expected));
        let mut lines = valid();
        lines.drain(2..4);
        lines[2]["total_tool_calls"] = json!(0);
        lines[2]["ts"] = json!("t0");
        assert_eq!(validate_replay(text(&lines).as_bytes()).unwrap(), 3);
    }

    #[test]
    fn a_read_failure_names_the_line_being_read() {
        struct FailsAfter(&'static [u8]);
        impl io::Read for FailsAfter {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() {
                    return Err(io::Error::other("device gone"));
                }
                let n = self.0.len().min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let first = br#"{"type":"ReplayHeader","replay_version":1,"producer":"p","created_at":"t0"}
"#;
        let error = validate_replay(io::BufReader::new(FailsAfter(first))).unwrap_err();
        assert!(
            matches!(error, ValidationError::Read { line: 2, .. }),
            "{error:?}"
        );
        assert_eq!(error.line(), 2);
    }
}
