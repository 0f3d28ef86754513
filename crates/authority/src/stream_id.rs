//! The one spelling of stream names and of the Khala topic each stream is
//! delivered on.
//!
//! A run is the log stream `run:<uuid>` and the topic `run:<uuid>:events`; a
//! worker is the stream `worker:<id>` and the topic `worker:<id>:lifecycle`.
//! Nothing else in the workspace builds or parses these prefixes: it goes
//! through [`StreamId`], or, for ids that come from another runtime and are
//! not ours to validate (shadow exports), through [`topic_name`] and
//! [`split_topic`].
//!
//! Parsing accepts exactly what `Display` produces (the lowercase hyphenated
//! UUID, a worker id that passes the workers crate's rule), so one stream has
//! one name and one topic.

use openagents_workers::{WorkerId, WorkerIdError};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

const RUN_PREFIX: &str = "run:";
const WORKER_PREFIX: &str = "worker:";
const RUN_TOPIC_SUFFIX: &str = ":events";
const WORKER_TOPIC_SUFFIX: &str = ":lifecycle";
/// Length of a hyphenated UUID, the only run id spelling accepted.
const HYPHENATED_UUID_LEN: usize = 36;

/// The two kinds of stream the log holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    /// An agent run.
    Run,
    /// A worker's lifecycle.
    Worker,
}

impl StreamKind {
    fn prefix(self) -> &'static str {
        match self {
            StreamKind::Run => RUN_PREFIX,
            StreamKind::Worker => WORKER_PREFIX,
        }
    }

    fn topic_suffix(self) -> &'static str {
        match self {
            StreamKind::Run => RUN_TOPIC_SUFFIX,
            StreamKind::Worker => WORKER_TOPIC_SUFFIX,
        }
    }
}

/// A stream of the log, typed by what it records.
///
/// Not `#[non_exhaustive]` on purpose: a new kind of stream changes what
/// every consumer of the log must handle, so it should not compile silently.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamId {
    /// `run:<uuid>`.
    Run(Uuid),
    /// `worker:<id>`.
    Worker(WorkerId),
}

/// Why a name is not a stream or topic name.
///
/// The messages never echo the input: names come from URLs and logs and can
/// be long or hostile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamIdError {
    /// Neither a run nor a worker name.
    #[error("not a run or worker name")]
    Unknown,
    /// A run name whose id is not a lowercase hyphenated UUID.
    #[error("run id must be a lowercase hyphenated UUID")]
    InvalidRunId,
    /// A worker name whose id breaks the worker id rule.
    #[error("invalid worker id: {0}")]
    InvalidWorkerId(#[from] WorkerIdError),
}

impl StreamId {
    /// A worker's stream, from an id that may still need checking.
    pub fn worker(worker_id: &str) -> Result<Self, WorkerIdError> {
        worker_id.parse().map(StreamId::Worker)
    }

    /// What the stream records.
    pub fn kind(&self) -> StreamKind {
        match self {
            StreamId::Run(_) => StreamKind::Run,
            StreamId::Worker(_) => StreamKind::Worker,
        }
    }

    /// The run id, for a run stream.
    pub fn run_id(&self) -> Option<Uuid> {
        match self {
            StreamId::Run(id) => Some(*id),
            StreamId::Worker(_) => None,
        }
    }

    /// The worker id, for a worker stream.
    pub fn worker_id(&self) -> Option<&WorkerId> {
        match self {
            StreamId::Worker(id) => Some(id),
            StreamId::Run(_) => None,
        }
    }

    /// The Khala topic that delivers this stream.
    pub fn topic(&self) -> String {
        let mut topic = String::new();
        let written = match self {
            StreamId::Run(id) => write_topic(&mut topic, StreamKind::Run, id.hyphenated()),
            StreamId::Worker(id) => write_topic(&mut topic, StreamKind::Worker, id),
        };
        written.expect("a String accepts every write");
        topic
    }

    /// The stream a Khala topic delivers.
    pub fn from_topic(topic: &str) -> Result<Self, StreamIdError> {
        let (kind, id) = strip_topic(topic).ok_or(StreamIdError::Unknown)?;
        Self::from_parts(kind, id)
    }

    fn from_parts(kind: StreamKind, id: &str) -> Result<Self, StreamIdError> {
        match kind {
            StreamKind::Run => parse_run_id(id).map(StreamId::Run),
            StreamKind::Worker => Ok(StreamId::Worker(id.parse()?)),
        }
    }
}

impl fmt::Display for StreamId {
    /// The stream's name in the log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamId::Run(id) => write!(f, "{RUN_PREFIX}{}", id.hyphenated()),
            StreamId::Worker(id) => write!(f, "{WORKER_PREFIX}{id}"),
        }
    }
}

impl FromStr for StreamId {
    type Err = StreamIdError;

    /// Parses a stream name of the log.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        for kind in [StreamKind::Run, StreamKind::Worker] {
            if let Some(id) = name.strip_prefix(kind.prefix()) {
                return Self::from_parts(kind, id);
            }
        }
        Err(StreamIdError::Unknown)
    }
}

/// Writes the topic of the stream of `kind` with `id`, without allocating:
/// for a topic type that keeps its id apart (Khala's).
pub fn write_topic(
    out: &mut dyn fmt::Write,
    kind: StreamKind,
    id: impl fmt::Display,
) -> fmt::Result {
    write!(out, "{}{id}{}", kind.prefix(), kind.topic_suffix())
}

/// The topic of a stream whose id is not validated here (a run id exported
/// by another runtime, say): the same spelling as [`StreamId::topic`].
pub fn topic_name(kind: StreamKind, id: &str) -> String {
    let mut topic = String::new();
    write_topic(&mut topic, kind, id).expect("a String accepts every write");
    topic
}

/// Splits a topic into its kind and the id between the fixed prefix and
/// suffix; `None` when it is neither kind or the id is empty. The id is not
/// validated, so an id that itself contains `:` still splits back to itself.
pub fn split_topic(topic: &str) -> Option<(StreamKind, &str)> {
    strip_topic(topic).filter(|(_, id)| !id.is_empty())
}

/// The kind and the text between the fixed prefix and suffix, empty or not.
fn strip_topic(topic: &str) -> Option<(StreamKind, &str)> {
    [StreamKind::Run, StreamKind::Worker]
        .into_iter()
        .find_map(|kind| {
            let id = topic
                .strip_prefix(kind.prefix())?
                .strip_suffix(kind.topic_suffix())?;
            Some((kind, id))
        })
}

/// Accepts only the spelling `Display` produces, so names round-trip; the
/// service's routes take run ids through it too.
pub fn parse_run_id(id: &str) -> Result<Uuid, StreamIdError> {
    let canonical_shape =
        id.len() == HYPHENATED_UUID_LEN && !id.bytes().any(|b| b.is_ascii_uppercase());
    match Uuid::try_parse(id) {
        Ok(uuid) if canonical_shape => Ok(uuid),
        _ => Err(StreamIdError::InvalidRunId),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const RUN: &str = "0192f1c4-7a3b-7c00-8000-00000000abcd";

    #[test]
    fn names_and_topics_of_each_kind() {
        let run = StreamId::Run(Uuid::parse_str(RUN).unwrap());
        assert_eq!(run.to_string(), format!("run:{RUN}"));
        assert_eq!(run.topic(), format!("run:{RUN}:events"));
        let worker = StreamId::worker("w:1").unwrap();
        assert_eq!(worker.to_string(), "worker:w:1");
        assert_eq!(worker.topic(), "worker:w:1:lifecycle");
        assert_eq!(StreamId::from_topic(&worker.topic()), Ok(worker.clone()));
        assert_eq!("worker:w:1".parse::<StreamId>(), Ok(worker));
        assert_eq!(topic_name(StreamKind::Run, "r-1"), "run:r-1:events");
        assert_eq!(
            split_topic("worker:w:1:lifecycle"),
            Some((StreamKind::Worker, "w:1"))
        );
    }

    #[test]
    fn refuses_other_spellings() {
        for name in [
            "",
            "runs:x",
            "run:",
            "run:0192F1C4-7A3B-7C00-8000-00000000ABCD",
            "run:0192f1c47a3b7c00800000000000abcd",
            "run:{0192f1c4-7a3b-7c00-8000-00000000abcd}",
            "worker:",
            "worker:a b",
            "worker:a/b",
        ] {
            assert!(name.parse::<StreamId>().is_err(), "{name:?}");
        }
        for topic in [
            "run::events",
            "run:x",
            "worker:w:events",
            "runtime.codex_worker_events",
        ] {
            assert_eq!(split_topic(topic), None, "{topic:?}");
        }
        assert_eq!(
            StreamId::from_topic("run:abc:events"),
            Err(StreamIdError::InvalidRunId)
        );
    }

    proptest! {
        #[test]
        fn every_uuid_round_trips(bytes in any::<[u8; 16]>()) {
            let id = StreamId::Run(Uuid::from_bytes(bytes));
            prop_assert_eq!(id.to_string().parse::<StreamId>(), Ok(id.clone()));
            prop_assert_eq!(StreamId::from_topic(&id.topic()), Ok(id));
        }

        #[test]
        fn parse_display_round_trips(name in "\\PC{0,40}|worker:[^ /]{1,20}|run:[0-9a-f-]{36}") {
            if let Ok(id) = name.parse::<StreamId>() {
                prop_assert_eq!(id.to_string(), name);
            }
        }
    }
}
