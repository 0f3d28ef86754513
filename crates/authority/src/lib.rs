//! The runtime's write rules as pure functions, so that any program can
//! apply them to a log: the typed stream ids, the folds that rebuild a run
//! or a worker from its records, and every decision an append is checked
//! against.
//!
//! - [`StreamId`]: the one spelling of stream names and Khala topics.
//! - [`Stream`]: the [`StreamState`](openagents_event_log::StreamState) fold
//!   of runs ([`RunHead`]) and workers.
//! - [`decide_create`], [`decide_append`], [`decide_import`],
//!   [`decide_erase`], [`decide_worker`]: decisions run on the log's writer against a
//!   [`Txn`](openagents_event_log::Txn), in log order, so a check and the
//!   append it allows are one atomic step.
//! - [`fold_events`]: the rules a whole list of a run's events keeps.
//!
//! No async runtime, no HTTP, no environment, no clock: the time of a worker
//! decision is passed in ([`WorkerClock`]).

mod erasure;
mod error;
mod events;
mod run;
mod runs;
mod stream;
mod stream_id;
mod workers;

pub use erasure::{
    EraseRun, Erasure, MAX_REASON_CHARS, RUN_ERASED, Tombstone, Trajectory, check_reason,
    decide_erase, is_tombstone,
};
pub use error::{DecisionError, FoldError};
pub use events::{EventListError, fold_events};
pub use run::{RunHead, run_event, transition_event};
pub use runs::{
    AppendEvent, CreateRun, ImportRun, RunWrite, decide_append, decide_create, decide_import,
};
pub use stream::{Stream, lifecycle_event};
pub use stream_id::{
    StreamId, StreamIdError, StreamKind, parse_run_id, split_topic, topic_name, write_topic,
};
pub use workers::{
    WorkerAfter, WorkerClock, WorkerCommand, decide_worker, unix_ms, worker_liveness,
};
