//! The replay `REPLAY.jsonl` v1: the line format ([`ReplayLine`]) and the
//! streaming writer ([`write_replay`]).
//!
//! A replay is one JSON object per line, each line ending in `\n`: a
//! ReplayHeader, a SessionStart, one RuntimeEvent per event in seq order and,
//! only when the run is sealed, a SessionEnd. The validator in
//! [`crate::validate_replay`] reads the same [`ReplayLine`] type, so the
//! writer and the reader cannot disagree on field names.
//!
//! Decision the contract leaves open (also in `docs/ARTIFACTS.md`): a sealed
//! run without events, which the service never produces, would end with a
//! SessionEnd stamped with the run's `created_at`.

use crate::error::BuildError;
use crate::events::{TOOL_CALL_COMPLETED, ordered};
use crate::header::RunHeader;
use openagents_canonical::digest;
use openagents_run_state::{RunEvent, RunStatus};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::borrow::Cow;
use std::io::{self, Write};

/// Value of the ReplayHeader's `replay_version`: the only version this crate
/// writes and accepts.
pub const REPLAY_VERSION: u64 = 1;

/// Value of the ReplayHeader's `producer`.
pub const REPLAY_PRODUCER: &str = "openagents-runtime";

/// One line of a replay. Variants and fields are declared in wire order:
/// `type` comes first, then the fields as listed.
///
/// Strings and the payload are `Cow`s so the writer borrows them from the
/// event instead of copying, while the validator owns what it parsed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum ReplayLine<'a> {
    /// First line: identifies the format.
    ReplayHeader {
        /// Format version, [`REPLAY_VERSION`].
        replay_version: u64,
        /// Who wrote the replay, [`REPLAY_PRODUCER`].
        producer: Cow<'a, str>,
        /// The run's `created_at`.
        created_at: Cow<'a, str>,
    },
    /// Second line: the run as a session.
    SessionStart {
        /// The run's `created_at`.
        ts: Cow<'a, str>,
        /// The run id.
        session_id: Cow<'a, str>,
        /// The run's policy bundle, as in the receipt.
        policy_bundle_id: Cow<'a, str>,
    },
    /// One per event, in seq order.
    RuntimeEvent {
        /// The event's `recorded_at`.
        ts: Cow<'a, str>,
        /// The run id.
        session_id: Cow<'a, str>,
        /// The event's seq.
        seq: u64,
        /// The event's `event_type`.
        runtime_event_type: Cow<'a, str>,
        /// `sha256:<hex>` of the canonical JSON of `payload`.
        payload_hash: Cow<'a, str>,
        /// The event's payload.
        payload: Cow<'a, Value>,
    },
    /// Last line, only for a sealed run.
    SessionEnd {
        /// The last event's `recorded_at`.
        ts: Cow<'a, str>,
        /// The run id.
        session_id: Cow<'a, str>,
        /// How the run ended.
        status: EndStatus,
        /// [`EndStatus::confidence`] of `status`.
        confidence: f64,
        /// How many `tool.call.completed` events the run has.
        total_tool_calls: u64,
    },
}

/// How a sealed run ended, in the replay's vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndStatus {
    /// The run succeeded.
    Success,
    /// The run failed.
    Failure,
    /// The run was canceled (the replay spells it `cancelled`).
    Cancelled,
}

impl EndStatus {
    /// The end status of a sealed run; `None` while the run can still change.
    pub fn from_run_status(status: RunStatus) -> Option<Self> {
        match status {
            RunStatus::Succeeded => Some(Self::Success),
            RunStatus::Failed => Some(Self::Failure),
            RunStatus::Canceled => Some(Self::Cancelled),
            RunStatus::Created | RunStatus::Running | RunStatus::Canceling => None,
        }
    }

    /// The confidence the contract pairs with the status: 1.0 for success,
    /// 0.0 otherwise.
    pub fn confidence(self) -> f64 {
        match self {
            Self::Success => 1.0,
            Self::Failure | Self::Cancelled => 0.0,
        }
    }
}

impl ReplayLine<'_> {
    /// The line's `type`, for messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::ReplayHeader { .. } => "ReplayHeader",
            Self::SessionStart { .. } => "SessionStart",
            Self::RuntimeEvent { .. } => "RuntimeEvent",
            Self::SessionEnd { .. } => "SessionEnd",
        }
    }
}

/// Writes the replay of `run` to `out`, reading `events` once in seq order.
///
/// Each line is written as soon as its event is read, so `events` may stream
/// a run of any length. `out` receives many small writes: hand in a buffered
/// writer. On error, `out` holds a prefix of the replay.
pub fn write_replay<W, I, E>(out: &mut W, run: &RunHeader, events: I) -> Result<(), BuildError<E>>
where
    W: Write + ?Sized,
    I: IntoIterator<Item = Result<RunEvent, E>>,
{
    let session_id = Cow::Borrowed(run.id.as_str());
    let created_at = Cow::Borrowed(run.created_at.as_str());
    let header = ReplayLine::ReplayHeader {
        replay_version: REPLAY_VERSION,
        producer: Cow::Borrowed(REPLAY_PRODUCER),
        created_at: created_at.clone(),
    };
    write_line(out, &header)?;
    let start = ReplayLine::SessionStart {
        ts: created_at.clone(),
        session_id: session_id.clone(),
        policy_bundle_id: Cow::Borrowed(run.policy_bundle_id()),
    };
    write_line(out, &start)?;

    let mut total_tool_calls = 0;
    let mut last_ts = None;
    for event in ordered(events) {
        let event = event?;
        if event.event_type == TOOL_CALL_COMPLETED {
            total_tool_calls += 1;
        }
        write_line(out, &runtime_event(session_id.clone(), &event))?;
        last_ts = Some(event.recorded_at);
    }

    if let Some(status) = EndStatus::from_run_status(run.status) {
        let end = ReplayLine::SessionEnd {
            ts: last_ts.map_or(created_at, Cow::Owned),
            session_id,
            status,
            confidence: status.confidence(),
            total_tool_calls,
        };
        write_line(out, &end)?;
    }
    Ok(())
}

/// The RuntimeEvent line of `event`, borrowing its strings and payload.
fn runtime_event<'a>(session_id: Cow<'a, str>, event: &'a RunEvent) -> ReplayLine<'a> {
    ReplayLine::RuntimeEvent {
        ts: Cow::Borrowed(&event.recorded_at),
        session_id,
        seq: event.seq,
        runtime_event_type: Cow::Borrowed(&event.event_type),
        payload_hash: Cow::Owned(digest(&event.payload)),
        payload: Cow::Borrowed(&event.payload),
    }
}

/// Writes one line: the compact JSON of `line` and `\n`.
fn write_line<W: Write + ?Sized, E>(
    out: &mut W,
    line: &ReplayLine<'_>,
) -> Result<(), BuildError<E>> {
    serde_json::to_writer(&mut *out, line)
        .map_err(io::Error::from)
        .and_then(|()| out.write_all(b"\n"))
        .map_err(BuildError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::convert::Infallible;

    fn run(status: RunStatus) -> RunHeader {
        RunHeader {
            id: "019b8a1c-0000-7000-8000-000000000002".to_owned(),
            created_at: "2026-01-02T03:04:05.000000Z".to_owned(),
            metadata: json!({"policy_bundle_id": "bundle.1"}),
            status,
        }
    }

    fn event(seq: u64, event_type: &str, payload: Value) -> RunEvent {
        RunEvent {
            seq,
            event_type: event_type.to_owned(),
            payload,
            idempotency_key: None,
            recorded_at: format!("2026-01-02T03:05:{seq:02}.000000Z"),
        }
    }

    fn replay_lines(status: RunStatus, events: &[RunEvent]) -> Vec<String> {
        let mut out = Vec::new();
        write_replay(
            &mut out,
            &run(status),
            events.iter().cloned().map(Ok::<_, Infallible>),
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with('\n'));
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn lines_have_the_contract_fields_in_order() {
        let events = [
            event(1, "run.started", json!({"b": 1, "a": 2})),
            event(2, "run.finished", json!({"status": "succeeded"})),
        ];
        let lines = replay_lines(RunStatus::Succeeded, &events);
        assert_eq!(
            lines[0],
            r#"{"type":"ReplayHeader","replay_version":1,"producer":"openagents-runtime","created_at":"2026-01-02T03:04:05.000000Z"}"#
        );
        assert_eq!(
            lines[1],
            r#"{"type":"SessionStart","ts":"2026-01-02T03:04:05.000000Z","session_id":"019b8a1c-0000-7000-8000-000000000002","policy_bundle_id":"bundle.1"}"#
        );
        let hash = digest(&json!({"a": 2, "b": 1}));
        assert_eq!(
            lines[2],
            format!(
                r#"{{"type":"RuntimeEvent","ts":"2026-01-02T03:05:01.000000Z","session_id":"019b8a1c-0000-7000-8000-000000000002","seq":1,"runtime_event_type":"run.started","payload_hash":"{hash}","payload":{{"a":2,"b":1}}}}"#
            )
        );
        assert_eq!(
            lines[4],
            r#"{"type":"SessionEnd","ts":"2026-01-02T03:05:02.000000Z","session_id":"019b8a1c-0000-7000-8000-000000000002","status":"success","confidence":1.0,"total_tool_calls":0}"#
        );
    }

    #[test]
    fn session_end_follows_the_terminal_status() {
        let events = [
            event(1, "run.started", json!({})),
            event(2, TOOL_CALL_COMPLETED, json!({})),
            event(3, TOOL_CALL_COMPLETED, json!({})),
        ];
        for (status, expected) in [
            (
                RunStatus::Succeeded,
                r#""status":"success","confidence":1.0,"total_tool_calls":2"#,
            ),
            (
                RunStatus::Failed,
                r#""status":"failure","confidence":0.0,"total_tool_calls":2"#,
            ),
            (
                RunStatus::Canceled,
                r#""status":"cancelled","confidence":0.0,"total_tool_calls":2"#,
            ),
        ] {
            let lines = replay_lines(status, &events);
            assert_eq!(lines.len(), 6);
            assert!(lines[5].contains(expected), "{status}: {}", lines[5]);
            assert!(lines[5].contains(r#""ts":"2026-01-02T03:05:03.000000Z""#));
        }
    }

    #[test]
    fn an_unsealed_run_has_no_session_end() {
        for status in [RunStatus::Created, RunStatus::Running, RunStatus::Canceling] {
            let lines = replay_lines(status, &[event(1, "run.started", json!({}))]);
            assert_eq!(lines.len(), 3, "{status}");
        }
    }

    #[test]
    fn a_sealed_run_without_events_ends_at_its_creation_time() {
        let lines = replay_lines(RunStatus::Failed, &[]);
        assert_eq!(lines.len(), 3);
        assert!(lines[2].contains(r#""ts":"2026-01-02T03:04:05.000000Z""#));
    }

    #[test]
    fn a_failing_writer_surfaces_as_a_write_error() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let result = write_replay(
            &mut Broken,
            &run(RunStatus::Running),
            std::iter::empty::<Result<RunEvent, Infallible>>(),
        );
        assert!(matches!(result, Err(BuildError::Write(_))));
    }
}
