//! The folded state of one stream: a run's [`RunHead`] or a worker's
//! [`WorkerState`], rebuilt from the log record by record.

use crate::error::FoldError;
use crate::run::RunHead;
use crate::stream_id::StreamId;
use openagents_event_log::{RecordRef, StreamState};
use openagents_workers::{LifecycleEvent, WorkerEvent, WorkerState};
use serde_json::Value;

/// The folded state of one stream of the log. Serialized only into index
/// snapshots (see the event log's `snapshot` module).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum Stream {
    /// A `run:<uuid>` stream.
    Run(RunHead),
    /// A `worker:<id>` stream.
    Worker(Box<WorkerState>),
}

impl Stream {
    /// The run, if this is a run stream.
    pub fn as_run(&self) -> Option<&RunHead> {
        match self {
            Stream::Run(head) => Some(head),
            Stream::Worker(_) => None,
        }
    }

    /// The worker, if this is a worker stream.
    pub fn as_worker(&self) -> Option<&WorkerState> {
        match self {
            Stream::Worker(worker) => Some(worker),
            Stream::Run(_) => None,
        }
    }
}

impl StreamState for Stream {
    type Error = FoldError;

    fn open(first: &RecordRef<'_>) -> Result<Self, FoldError> {
        let id: StreamId = first
            .stream
            .parse()
            .map_err(|_| FoldError::UnknownStream(first.stream.to_string()))?;
        match id {
            StreamId::Run(run) => RunHead::open(run, first).map(Stream::Run),
            StreamId::Worker(_) => {
                let mut slot = None;
                WorkerState::apply(&mut slot, &lifecycle_event(first)?)?;
                let worker = slot.expect("a first worker.started creates the worker");
                Ok(Stream::Worker(Box::new(worker)))
            }
        }
    }

    fn apply(&mut self, record: &RecordRef<'_>) -> Result<(), FoldError> {
        match self {
            Stream::Run(head) => head.apply(record),
            Stream::Worker(worker) => {
                let event = lifecycle_event(record)?;
                let mut slot = Some((**worker).clone());
                WorkerState::apply(&mut slot, &event)?;
                **worker = slot.expect("applying never removes a worker");
                Ok(())
            }
        }
    }

    /// A finished run takes no further event. A stopped worker can start
    /// again, so it stays live.
    fn is_sealed(&self) -> bool {
        self.as_run().is_some_and(RunHead::is_sealed)
    }
}

/// Reads a worker record back as the lifecycle event it was decided as.
pub fn lifecycle_event(record: &RecordRef<'_>) -> Result<LifecycleEvent, FoldError> {
    let payload: Value =
        serde_json::from_str(record.payload.get()).map_err(|source| FoldError::Payload {
            stream: record.stream.to_string(),
            seq: record.seq,
            source,
        })?;
    let event = WorkerEvent::from_record(&record.event_type, payload)?;
    Ok(LifecycleEvent {
        seq: record.seq,
        recorded_at: record.at.to_string(),
        event,
    })
}
