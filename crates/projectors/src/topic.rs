//! The projector topic names of the contract, built and parsed in one place.

const RUN_PREFIX: &str = "run:";
const RUN_SUFFIX: &str = ":events";
const WORKER_PREFIX: &str = "worker:";
const WORKER_SUFFIX: &str = ":lifecycle";

/// A projector topic, split into its kind and stream id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic<'a> {
    /// `run:{run_id}:events`.
    RunEvents(&'a str),
    /// `worker:{worker_id}:lifecycle`.
    WorkerLifecycle(&'a str),
}

/// The topic of a run's events: `run:{run_id}:events`.
pub fn run_topic(run_id: &str) -> String {
    format!("{RUN_PREFIX}{run_id}{RUN_SUFFIX}")
}

/// The topic of a worker's lifecycle: `worker:{worker_id}:lifecycle`.
pub fn worker_topic(worker_id: &str) -> String {
    format!("{WORKER_PREFIX}{worker_id}{WORKER_SUFFIX}")
}

impl<'a> Topic<'a> {
    /// Parses a topic name; `None` for anything that is not a run or worker
    /// topic with a non-empty id.
    ///
    /// The prefix and suffix are fixed, so an id that itself contains `:`
    /// still parses back to the same id.
    pub fn parse(topic: &'a str) -> Option<Self> {
        let id = |prefix: &str, suffix: &str| {
            topic
                .strip_prefix(prefix)
                .and_then(|rest| rest.strip_suffix(suffix))
                .filter(|id| !id.is_empty())
        };
        id(RUN_PREFIX, RUN_SUFFIX)
            .map(Self::RunEvents)
            .or_else(|| id(WORKER_PREFIX, WORKER_SUFFIX).map(Self::WorkerLifecycle))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_round_trip() {
        assert_eq!(run_topic("r-1"), "run:r-1:events");
        assert_eq!(worker_topic("w:1"), "worker:w:1:lifecycle");
        assert_eq!(
            Topic::parse("run:r-1:events"),
            Some(Topic::RunEvents("r-1"))
        );
        assert_eq!(
            Topic::parse(&worker_topic("w:1")),
            Some(Topic::WorkerLifecycle("w:1"))
        );
    }

    #[test]
    fn other_names_are_not_topics() {
        for name in [
            "run::events",
            "runtime.codex_worker_events",
            "run:x",
            "worker:w:events",
            "",
        ] {
            assert_eq!(Topic::parse(name), None, "{name}");
        }
    }
}
