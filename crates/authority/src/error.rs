//! Why a decision refused a write, and why a record would not fold.

use crate::erasure::Erasure;
use openagents_event_log::{AppendError, ReadError};
use openagents_run_state::RunStateError;
use openagents_workers::{
    ApplyError, OwnerError, PayloadError, TransitionError, WorkerError, WorkerIdError,
};
use uuid::Uuid;

/// Why a decision refused a request. Each variant is a rule of the contract;
/// the service maps them to status and reason codes in one place.
///
/// Not `#[non_exhaustive]` on purpose: a new rule must get its envelope in
/// the service's mapping, so adding one should not compile silently.
#[derive(Debug, thiserror::Error)]
pub enum DecisionError {
    /// No run with this id.
    #[error("run {0} not found")]
    RunNotFound(Uuid),
    /// The run was erased: its tombstone is all that is left.
    #[error("run {run} was erased at {}", .erasure.erased_at)]
    RunErased {
        /// The run.
        run: Uuid,
        /// Its tombstone.
        erasure: Box<Erasure>,
    },
    /// A live run may be erased only with `force`.
    #[error("run {0} is not sealed; erasing it needs \"force\": true")]
    RunNotSealed(Uuid),
    /// An event type only the service itself appends.
    #[error("event type {0} is appended only by erasing the run")]
    ReservedEventType(&'static str),
    /// No worker with this id.
    #[error("worker {0} not found")]
    WorkerNotFound(String),
    /// The run state machine refused the event.
    #[error(transparent)]
    RunState(#[from] RunStateError),
    /// The idempotency key was used before with different content.
    #[error("idempotency key was already used with a different request")]
    IdempotencyKeyReused,
    /// The client's view of the run is stale.
    #[error("expected previous seq {expected} but the run's last seq is {actual}")]
    SequenceConflict {
        /// What the client sent.
        expected: u64,
        /// The run's last seq.
        actual: u64,
    },
    /// A field of the request is not acceptable.
    #[error("{0}")]
    InvalidRequest(String),
    /// The owner fields do not name exactly one owner.
    #[error(transparent)]
    Owner(#[from] OwnerError),
    /// The worker status table refused the change.
    #[error(transparent)]
    WorkerTransition(#[from] TransitionError),
    /// The caller does not own the worker.
    #[error("the worker belongs to another owner")]
    OwnerMismatch,
    /// A record the decision needed could not be read back.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The log refused a record (a bug: decisions check what it checks).
    #[error(transparent)]
    Append(#[from] AppendError),
}

impl From<WorkerError> for DecisionError {
    fn from(error: WorkerError) -> Self {
        match error {
            WorkerError::OwnerMismatch { .. } => DecisionError::OwnerMismatch,
            WorkerError::InvalidTransition(rule) => DecisionError::WorkerTransition(rule),
            other => DecisionError::InvalidRequest(other.to_string()),
        }
    }
}

impl From<WorkerIdError> for DecisionError {
    fn from(error: WorkerIdError) -> Self {
        DecisionError::InvalidRequest(error.to_string())
    }
}

/// Why a durable record does not fold into its stream. Records were decided
/// against the same rules, so any of these means the log and the rules
/// disagree: recovery refuses to open, and the writer refuses to stage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FoldError {
    /// The stream name is neither a run nor a worker.
    #[error("stream {0:?} is not a run or worker stream")]
    UnknownStream(String),
    /// A run's first record lacks its creation attributes, or they are malformed.
    #[error("run {run} has no readable creation attributes")]
    RunAttributes {
        /// The run.
        run: Uuid,
    },
    /// A run record the state machine does not allow after the ones before it.
    #[error("run {run} record {seq} breaks the state machine")]
    BreaksStateMachine {
        /// The run.
        run: Uuid,
        /// The record's seq.
        seq: u64,
    },
    /// A worker record lacks the attributes the writer stores with it.
    #[error("worker record {stream} #{seq} has no readable attributes")]
    WorkerAttributes {
        /// The stream.
        stream: String,
        /// The record's seq.
        seq: u64,
    },
    /// A payload that is not the JSON its event type needs.
    #[error("payload of {stream} #{seq}: {source}")]
    Payload {
        /// The stream.
        stream: String,
        /// The record's seq.
        seq: u64,
        /// What the parser said.
        source: serde_json::Error,
    },
    /// A worker payload that is not its event type's shape.
    #[error(transparent)]
    WorkerPayload(#[from] PayloadError),
    /// The worker fold refused the event.
    #[error(transparent)]
    WorkerApply(#[from] ApplyError),
}
