//! Khala topics: the parsed [`Topic`] a client polls, the aggregate lane and
//! the per-user firehoses.
//!
//! The topic of one run or one worker is the topic of its log stream, spelled
//! by `openagents_authority::StreamId` (the one home of that grammar); this
//! file adds the topics that merge many streams (the aggregate lane, and the
//! firehoses `runs:user:{user_id}:events` and `fleet:user:{user_id}:workers`)
//! and the mapping both ways.
//!
//! Every topic has exactly one accepted spelling, so a topic string read back
//! from [`Topic`]'s `Display` equals the string that was parsed. That keeps
//! windows, waiters and responses keyed on one name per topic.

use crate::reason::ReasonCode;
use openagents_authority::{StreamId, StreamIdError, StreamKind, write_topic};
use serde::{Serialize, Serializer};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// The aggregate lane: every worker lifecycle event, in one sequence.
pub const CODEX_WORKER_EVENTS: &str = "runtime.codex_worker_events";
/// Prefix and suffix of a user's run firehose, `runs:user:{user_id}:events`.
const USER_RUNS: (&str, &str) = ("runs:user:", ":events");
/// Prefix and suffix of a user's worker firehose, `fleet:user:{user_id}:workers`.
const USER_WORKERS: (&str, &str) = ("fleet:user:", ":workers");
pub use openagents_workers::{MAX_WORKER_ID_CHARS, WorkerId};

/// A topic a client can poll.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// `run:{run_id}:events`: the events of one run, by run seq.
    RunEvents(Uuid),
    /// `worker:{worker_id}:lifecycle`: the lifecycle events of one worker.
    WorkerLifecycle(WorkerId),
    /// `runtime.codex_worker_events`: every worker's lifecycle events.
    CodexWorkerEvents,
    /// `runs:user:{user_id}:events`: every event of every run the user owns,
    /// in log order, numbered by its place among them.
    UserRuns(u64),
    /// `fleet:user:{user_id}:workers`: every lifecycle event of every worker
    /// the user owns, in log order, numbered by its place among them.
    UserWorkers(u64),
}

/// The family a topic belongs to; the ACL is decided per family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    /// A `run:{id}:events` topic.
    Run,
    /// A `worker:{id}:lifecycle` topic.
    Worker,
    /// The `runtime.codex_worker_events` aggregate lane.
    Aggregate,
    /// A `runs:user:{user_id}:events` firehose.
    UserRuns,
    /// A `fleet:user:{user_id}:workers` firehose.
    UserWorkers,
}

impl Topic {
    /// The log stream this topic delivers (`None` for the topics that merge
    /// many streams).
    pub fn stream(&self) -> Option<StreamId> {
        match self {
            Self::RunEvents(id) => Some(StreamId::Run(*id)),
            Self::WorkerLifecycle(id) => Some(StreamId::Worker(id.clone())),
            Self::CodexWorkerEvents | Self::UserRuns(_) | Self::UserWorkers(_) => None,
        }
    }

    /// The family of this topic.
    pub fn kind(&self) -> TopicKind {
        match self {
            Self::RunEvents(_) => TopicKind::Run,
            Self::WorkerLifecycle(_) => TopicKind::Worker,
            Self::CodexWorkerEvents => TopicKind::Aggregate,
            Self::UserRuns(_) => TopicKind::UserRuns,
            Self::UserWorkers(_) => TopicKind::UserWorkers,
        }
    }
}

/// The user id of a firehose topic spelled `{prefix}{user_id}{suffix}`:
/// `None` when `s` has another shape, an error when the id is not canonical
/// decimal (no sign, no leading zero), so that each topic has one spelling.
fn user_topic(s: &str, (prefix, suffix): (&str, &str)) -> Option<Result<u64, TopicError>> {
    let id = s.strip_prefix(prefix)?.strip_suffix(suffix)?;
    let canonical = !id.is_empty()
        && id.bytes().all(|b| b.is_ascii_digit())
        && (id == "0" || !id.starts_with('0'));
    Some(
        canonical
            .then(|| id.parse().ok())
            .flatten()
            .ok_or(TopicError::InvalidUserId),
    )
}

impl FromStr for Topic {
    type Err = TopicError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == CODEX_WORKER_EVENTS {
            return Ok(Self::CodexWorkerEvents);
        }
        if let Some(user) = user_topic(s, USER_RUNS) {
            return user.map(Self::UserRuns);
        }
        if let Some(user) = user_topic(s, USER_WORKERS) {
            return user.map(Self::UserWorkers);
        }
        match StreamId::from_topic(s) {
            Ok(stream) => Ok(Self::from(stream)),
            Err(StreamIdError::InvalidRunId) => Err(TopicError::InvalidRunId),
            Err(StreamIdError::InvalidWorkerId(_)) => Err(TopicError::InvalidWorkerId),
            Err(_) => Err(TopicError::Unknown),
        }
    }
}

impl From<StreamId> for Topic {
    fn from(stream: StreamId) -> Self {
        match stream {
            StreamId::Run(id) => Self::RunEvents(id),
            StreamId::Worker(id) => Self::WorkerLifecycle(id),
        }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RunEvents(id) => write_topic(f, StreamKind::Run, id.hyphenated()),
            Self::WorkerLifecycle(id) => write_topic(f, StreamKind::Worker, id),
            Self::CodexWorkerEvents => f.write_str(CODEX_WORKER_EVENTS),
            Self::UserRuns(user) => write!(f, "{}{user}{}", USER_RUNS.0, USER_RUNS.1),
            Self::UserWorkers(user) => write!(f, "{}{user}{}", USER_WORKERS.0, USER_WORKERS.1),
        }
    }
}

/// Topics serialize as their canonical string, as they appear on the wire.
impl Serialize for Topic {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Why a string is not a topic.
///
/// The messages never echo the input back: it comes from a URL path and can
/// be long or hostile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Not one of the topic shapes.
    #[error(
        "unknown topic: expected run:{{run_id}}:events, worker:{{worker_id}}:lifecycle, \
         runs:user:{{user_id}}:events, fleet:user:{{user_id}}:workers or {CODEX_WORKER_EVENTS}"
    )]
    Unknown,
    /// A firehose topic whose user id is not a canonical decimal integer.
    #[error("firehose topic user id must be a decimal integer without sign or leading zeros")]
    InvalidUserId,
    /// A run topic whose id is not a lowercase hyphenated UUID.
    #[error("run topic id must be a lowercase hyphenated UUID")]
    InvalidRunId,
    /// A worker topic whose id breaks the worker id rules.
    #[error(
        "worker topic id must be 1..={MAX_WORKER_ID_CHARS} characters without whitespace, control characters or '/'"
    )]
    InvalidWorkerId,
}

impl TopicError {
    /// The reason code to answer with: a topic outside the grammar is one no
    /// token may read, so it is refused like any other forbidden topic.
    pub fn reason(&self) -> ReasonCode {
        ReasonCode::ForbiddenTopic
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const RUN: &str = "run:0192f1c4-7a3b-7c00-8000-00000000abcd:events";

    #[test]
    fn parses_each_shape() {
        assert_eq!(RUN.parse::<Topic>().unwrap().kind(), TopicKind::Run);
        let worker: Topic = "worker:codexw_1:lifecycle".parse().unwrap();
        assert_eq!(worker.kind(), TopicKind::Worker);
        assert_eq!(
            CODEX_WORKER_EVENTS.parse::<Topic>().unwrap(),
            Topic::CodexWorkerEvents
        );
        assert_eq!(
            "runs:user:42:events".parse::<Topic>(),
            Ok(Topic::UserRuns(42))
        );
        assert_eq!(
            "fleet:user:0:workers".parse::<Topic>(),
            Ok(Topic::UserWorkers(0))
        );
        assert_eq!(Topic::UserRuns(42).to_string(), "runs:user:42:events");
        assert_eq!(Topic::UserWorkers(7).to_string(), "fleet:user:7:workers");
    }

    #[test]
    fn rejects_bad_topics() {
        let cases = [
            ("", TopicError::Unknown),
            ("runtime.other", TopicError::Unknown),
            ("run:abc:events", TopicError::InvalidRunId),
            (
                "run:0192F1C4-7A3B-7C00-8000-00000000ABCD:events",
                TopicError::InvalidRunId,
            ),
            (
                "run:0192f1c47a3b7c00800000000000abcd:events",
                TopicError::InvalidRunId,
            ),
            (
                "run:{0192f1c4-7a3b-7c00-8000-00000000abcd}:events",
                TopicError::InvalidRunId,
            ),
            (
                "run:0192f1c4-7a3b-7c00-8000-00000000abcd",
                TopicError::Unknown,
            ),
            ("worker::lifecycle", TopicError::InvalidWorkerId),
            ("worker:a b:lifecycle", TopicError::InvalidWorkerId),
            ("worker:a/b:lifecycle", TopicError::InvalidWorkerId),
            ("worker:a\u{0}b:lifecycle", TopicError::InvalidWorkerId),
            ("worker:a:events", TopicError::Unknown),
            ("runs:user::events", TopicError::InvalidUserId),
            ("runs:user:042:events", TopicError::InvalidUserId),
            ("runs:user:+42:events", TopicError::InvalidUserId),
            ("runs:user:-1:events", TopicError::InvalidUserId),
            (
                "runs:user:18446744073709551616:events",
                TopicError::InvalidUserId,
            ),
            ("fleet:user:x:workers", TopicError::InvalidUserId),
            ("fleet:user:7:events", TopicError::Unknown),
            ("runs:user:7:workers", TopicError::Unknown),
        ];
        for (input, expected) in cases {
            assert_eq!(input.parse::<Topic>(), Err(expected), "{input:?}");
        }
    }

    #[test]
    fn worker_id_length_is_counted_in_characters() {
        let max = "é".repeat(MAX_WORKER_ID_CHARS);
        assert!(max.parse::<WorkerId>().is_ok());
        let over = "é".repeat(MAX_WORKER_ID_CHARS + 1);
        assert!(over.parse::<WorkerId>().is_err());
    }

    #[test]
    fn serializes_as_canonical_string() {
        let topic: Topic = RUN.parse().unwrap();
        assert_eq!(serde_json::to_value(&topic).unwrap(), RUN);
    }

    proptest! {
        #[test]
        fn parse_display_round_trips(s in "\\PC{0,60}|worker:[^ /]{1,20}:lifecycle|run:[0-9a-f-]{36}:events|runs:user:[0-9]{1,21}:events|fleet:user:[0-9]{1,21}:workers") {
            if let Ok(topic) = s.parse::<Topic>() {
                prop_assert_eq!(topic.to_string(), s);
            }
        }

        #[test]
        fn every_uuid_makes_a_topic(bytes in any::<[u8; 16]>()) {
            let topic = Topic::RunEvents(Uuid::from_bytes(bytes));
            prop_assert_eq!(topic.to_string().parse::<Topic>(), Ok(topic));
        }
    }
}
