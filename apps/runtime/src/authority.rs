//! The write authority's handle: every write goes through
//! [`Authority::execute`], which runs a decision of `openagents-authority` on
//! the log's writer thread and waits until its batch is durable; reads of
//! the committed index go through it too.
//!
//! The rules themselves (stream folds, the check order of an append, worker
//! decisions) live in the `openagents-authority` crate; this module adds
//! what only the service knows: the cutover write mode, the async wait, and
//! catching up with a shared database before a read.

use crate::config::AuthorityWriteMode;
use crate::types::EventView;
use openagents_authority::{DecisionError, RunHead, Stream, StreamId, run_event};
use openagents_event_log::{EventLog, LogFailure, ReadError, Txn};
use openagents_workers::{WorkerId, WorkerState};
use std::sync::Arc;
use tokio::sync::oneshot;
use uuid::Uuid;

/// Why a write or a read was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    /// A rule of the contract refused the request.
    #[error(transparent)]
    Decision(#[from] DecisionError),
    /// Writes are frozen by the cutover control.
    #[error("writes are frozen: authority write mode is {}", .0.as_str())]
    WriteFrozen(AuthorityWriteMode),
    /// The log could not make the write durable.
    #[error(transparent)]
    Log(#[from] LogFailure),
    /// The log could not read records back.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// A receipt or replay could not be built from the stored events.
    #[error("building the artifact failed: {0}")]
    Artifact(String),
    /// A response body could not be written (the client went away).
    #[error("writing the response failed: {0}")]
    Respond(#[from] std::io::Error),
}

impl AuthorityError {
    /// A request field that is not acceptable.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        DecisionError::InvalidRequest(message.into()).into()
    }
}

/// The handle every write goes through.
pub struct Authority {
    log: Arc<EventLog<Stream>>,
    mode: AuthorityWriteMode,
}

impl Authority {
    /// Wraps the open log; `mode` decides whether writes are served.
    pub(crate) fn new(log: Arc<EventLog<Stream>>, mode: AuthorityWriteMode) -> Self {
        Authority { log, mode }
    }

    /// The log, for reads.
    pub fn log(&self) -> &Arc<EventLog<Stream>> {
        &self.log
    }

    /// Runs `decide` on the writer thread and waits until its batch is
    /// durable. Refused outright while the write mode freezes writes.
    pub async fn execute<R, D>(&self, decide: D) -> Result<R, AuthorityError>
    where
        R: Send + 'static,
        D: FnOnce(&mut Txn<'_, Stream>) -> Result<R, DecisionError> + Send + 'static,
    {
        if !self.mode.writes_enabled() {
            return Err(AuthorityError::WriteFrozen(self.mode));
        }
        let (sender, receiver) = oneshot::channel();
        self.log.submit(decide, move |outcome| {
            let _ = sender.send(outcome);
        });
        let outcome = receiver.await.map_err(|_| self.lost_reply())?;
        Ok(outcome??)
    }

    /// Why the writer dropped a reply without answering: it panicked (the
    /// log is poisoned with the reason) or it stopped.
    fn lost_reply(&self) -> LogFailure {
        self.log
            .poison_reason()
            .map_or(LogFailure::Closed, LogFailure::Poisoned)
    }

    /// Brings the index up to what the storage holds when other instances
    /// append to it too (a no-op on the embedded log, which only this
    /// process writes). The storage is asked for its head on a blocking
    /// thread, never on the async workers.
    pub(crate) async fn catch_up(&self) -> Result<(), AuthorityError> {
        if !self.log.is_shared() {
            return Ok(());
        }
        let log = Arc::clone(&self.log);
        let asked = tokio::task::spawn_blocking(move || log.durable_lsn())
            .await
            .map_err(|error| ReadError::Io(std::io::Error::other(error)))?;
        let Some(durable) = asked? else {
            return Ok(());
        };
        if self.log.index().last_lsn() >= durable {
            return Ok(());
        }
        let (sender, receiver) = oneshot::channel();
        self.log.refresh(move |outcome| {
            let _ = sender.send(outcome);
        });
        receiver.await.map_err(|_| self.lost_reply())??;
        Ok(())
    }

    /// A run as currently committed; an erased run is refused with its
    /// tombstone, so no read of it reaches the log.
    pub(crate) fn run(&self, run_id: Uuid) -> Result<RunHead, AuthorityError> {
        let index = self.log.index();
        let head = index
            .stream(&StreamId::Run(run_id).to_string())
            .and_then(|entry| entry.state().as_run())
            .ok_or(DecisionError::RunNotFound(run_id))?;
        if let Some(erasure) = head.erasure() {
            return Err(DecisionError::RunErased {
                run: run_id,
                erasure: Box::new(erasure.clone()),
            }
            .into());
        }
        Ok(head.clone())
    }

    /// Refuses an erased run; an unknown run passes (the caller answers
    /// it as it does).
    pub(crate) fn refuse_erased(&self, run_id: Uuid) -> Result<(), AuthorityError> {
        match self.run(run_id) {
            Err(AuthorityError::Decision(DecisionError::RunNotFound(_))) => Ok(()),
            other => other.map(drop),
        }
    }

    /// Events of a run with `after_seq < seq`, at most `limit`, read from
    /// the log, each with the credential that wrote it.
    pub fn run_events(
        &self,
        run_id: Uuid,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<EventView>, AuthorityError> {
        let stream = StreamId::Run(run_id).to_string();
        let events = self.log.read_stream(&stream, after_seq, limit, |record| {
            run_event(&record).map(|event| EventView {
                event,
                written_by: record.by.as_deref().map(str::to_owned),
            })
        })?;
        Ok(events.into_iter().collect::<Result<_, _>>()?)
    }

    /// A worker as currently committed.
    pub(crate) fn worker(&self, worker_id: &WorkerId) -> Result<WorkerState, AuthorityError> {
        let index = self.log.index();
        index
            .stream(&StreamId::Worker(worker_id.clone()).to_string())
            .and_then(|entry| entry.state().as_worker().cloned())
            .ok_or_else(|| DecisionError::WorkerNotFound(worker_id.to_string()).into())
    }
}
