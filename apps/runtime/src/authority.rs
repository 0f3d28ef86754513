//! The write authority: how runs and workers are folded from the durable log,
//! and how every write is decided and appended as one atomic step.
//!
//! All decisions run on the log's single writer thread (see
//! `openagents_event_log::Txn`), in log order, against the committed state
//! plus what earlier decisions of the same batch staged. So the check of a
//! transition and the append it allows cannot interleave with another
//! request: two concurrent `run.finished` can never both be accepted.
//!
//! This module owns the stream naming (`run:<uuid>`, `worker:<id>`), the
//! record attributes that let runs be rebuilt exactly, and the order of the
//! append checks: idempotency key, then `expected_previous_seq`, then the
//! run state machine.

use crate::config::AuthorityWriteMode;
use openagents_event_log::{
    AppendError, EventLog, LogFailure, NewRecord, ReadError, RecordRef, StreamState, Txn,
};
use openagents_run_state::{Applied, RunEvent, RunStateError, RunStatus, RunTransition};
use openagents_workers::{
    LifecycleEvent, Owner, OwnerError, TransitionError, WorkerEvent, WorkerState,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::sync::Arc;
use tokio::sync::oneshot;
use uuid::Uuid;

/// Why a write or a read was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    /// No run with this id.
    #[error("run {0} not found")]
    RunNotFound(Uuid),
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
    /// The log refused a record (a bug: decisions check what it checks).
    #[error(transparent)]
    Append(#[from] AppendError),
}

/// The stream name of a run.
pub fn run_stream(run_id: Uuid) -> String {
    format!("run:{run_id}")
}

/// The stream name of a worker.
pub fn worker_stream(worker_id: &str) -> String {
    format!("worker:{worker_id}")
}

/// The folded state of one stream of the log.
#[derive(Debug, Clone)]
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
    fn open(first: &RecordRef<'_>) -> Result<Self, String> {
        if first.stream.starts_with("run:") {
            RunHead::open(first).map(Stream::Run)
        } else if first.stream.starts_with("worker:") {
            let mut slot = None;
            WorkerState::apply(&mut slot, &lifecycle_event(first)?).map_err(|e| e.to_string())?;
            Ok(Stream::Worker(Box::new(
                slot.expect("a first worker.started creates the worker"),
            )))
        } else {
            Err(format!("unknown stream kind {}", first.stream))
        }
    }

    fn apply(&mut self, record: &RecordRef<'_>) -> Result<(), String> {
        match self {
            Stream::Run(head) => head.apply(record),
            Stream::Worker(worker) => {
                let event = lifecycle_event(record)?;
                let mut slot = Some((**worker).clone());
                WorkerState::apply(&mut slot, &event).map_err(|e| e.to_string())?;
                **worker = slot.expect("applying never removes a worker");
                Ok(())
            }
        }
    }
}

/// Reads a worker record back as the lifecycle event it was decided as.
fn lifecycle_event(record: &RecordRef<'_>) -> Result<LifecycleEvent, String> {
    let payload: Value = serde_json::from_str(record.payload.get()).map_err(|e| e.to_string())?;
    let event = WorkerEvent::from_record(&record.event_type, payload).map_err(|e| e.to_string())?;
    Ok(LifecycleEvent {
        seq: record.seq,
        recorded_at: record.at.to_string(),
        event,
    })
}

/// The attributes a run is created with, stored on its first record so the
/// run can be rebuilt exactly from the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunAttrs {
    worker_id: Option<String>,
    owner: Option<Owner>,
    metadata: Box<RawValue>,
    /// Set only for imported runs, whose creation time precedes their
    /// first event; otherwise the first record's time is the creation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created_at: Option<String>,
}

/// What answering requests needs to know about a run, folded from its records
/// (event bodies stay in the file).
#[derive(Debug, Clone)]
pub struct RunHead {
    /// The run's id.
    pub id: Uuid,
    /// Current status.
    pub status: RunStatus,
    /// The worker the run was created for.
    pub worker_id: Option<Arc<str>>,
    /// Who owns the run (given at creation or inherited from the worker).
    pub owner: Option<Owner>,
    /// The creation metadata, as raw JSON.
    pub metadata: Arc<RawValue>,
    /// When the run was created (its first record's time).
    pub created_at: Arc<str>,
    /// Time of the run's newest record.
    pub updated_at: String,
    /// The run's last seq.
    pub latest_seq: u64,
    /// Seq of the event that moved the run to `canceling`.
    cancel_requested_seq: Option<u64>,
    /// Seq of the event that sealed the run.
    finished_seq: Option<u64>,
}

impl RunHead {
    fn open(first: &RecordRef<'_>) -> Result<Self, String> {
        let id = first
            .stream
            .strip_prefix("run:")
            .and_then(|id| Uuid::parse_str(id).ok())
            .ok_or_else(|| format!("run stream {} does not name a uuid", first.stream))?;
        let attrs: RunAttrs = first
            .attrs
            .ok_or("a run's first record carries its creation attributes")
            .and_then(|raw| {
                serde_json::from_str(raw.get()).map_err(|_| "malformed run attributes")
            })?;
        let mut head = RunHead {
            id,
            status: RunStatus::Created,
            worker_id: attrs.worker_id.map(Arc::from),
            owner: attrs.owner,
            metadata: Arc::from(attrs.metadata),
            created_at: Arc::from(attrs.created_at.as_deref().unwrap_or(&first.at)),
            updated_at: String::new(),
            latest_seq: 0,
            cancel_requested_seq: None,
            finished_seq: None,
        };
        head.apply(first)?;
        Ok(head)
    }

    fn apply(&mut self, record: &RecordRef<'_>) -> Result<(), String> {
        let payload = transition_payload(&record.event_type, record.payload)?;
        match self.status.decide(&record.event_type, &payload) {
            Ok(Some(Applied::Moved(next))) => {
                if next == RunStatus::Canceling {
                    self.cancel_requested_seq = Some(record.seq);
                } else if next.is_terminal() {
                    self.finished_seq = Some(record.seq);
                }
                self.status = next;
            }
            Ok(None) => {}
            Ok(Some(Applied::AlreadyApplied)) | Err(_) => {
                return Err(format!(
                    "run {} record {} breaks the state machine",
                    self.id, record.seq
                ));
            }
        }
        self.latest_seq = record.seq;
        self.updated_at.clear();
        self.updated_at.push_str(&record.at);
        Ok(())
    }

    /// The seq of the event that first made `transition`, for idempotent
    /// repeats of a transition.
    fn seq_of(&self, transition: RunTransition) -> Option<u64> {
        match transition {
            RunTransition::Start => Some(1),
            RunTransition::RequestCancel => self.cancel_requested_seq,
            _ => self.finished_seq,
        }
    }
}

/// The payload the state machine needs to see: only `run.finished` is read
/// (for its status), so other events skip the parse on the hot path.
fn transition_payload(event_type: &str, payload: &RawValue) -> Result<Value, String> {
    if event_type == openagents_run_state::RUN_FINISHED {
        serde_json::from_str(payload.get()).map_err(|e| e.to_string())
    } else {
        Ok(Value::Null)
    }
}

/// Converts a run record into the event clients see.
pub fn run_event(record: &RecordRef<'_>) -> Result<RunEvent, ReadError> {
    let payload = serde_json::from_str(record.payload.get()).map_err(|e| ReadError::Damaged {
        offset: 0,
        reason: format!("payload of {} #{}: {e}", record.stream, record.seq),
    })?;
    Ok(RunEvent {
        seq: record.seq,
        event_type: record.event_type.to_string(),
        payload,
        idempotency_key: record.key.as_deref().map(str::to_owned),
        recorded_at: record.at.to_string(),
    })
}

/// A validated request to create a run.
#[derive(Debug, Clone)]
pub struct CreateRun {
    /// The worker the run is for.
    pub worker_id: Option<String>,
    /// Creation metadata (an object).
    pub metadata: Value,
    /// Explicit owner.
    pub owner: Option<Owner>,
    /// Log-wide idempotency key of the creation.
    pub idempotency_key: Option<String>,
}

impl CreateRun {
    /// Hash of the request content, compared when the key is reused.
    fn content_hash(&self) -> String {
        openagents_canonical::digest(&json!({
            "worker_id": self.worker_id,
            "metadata": self.metadata,
            "owner": self.owner,
        }))
    }
}

/// A validated request to append an event to a run.
#[derive(Debug, Clone)]
pub struct AppendEvent {
    /// The event's type (non-empty).
    pub event_type: String,
    /// The event's body (an object).
    pub payload: Value,
    /// Run-local idempotency key, trimmed, `None` when empty.
    pub idempotency_key: Option<String>,
    /// The last seq the client saw.
    pub expected_previous_seq: Option<u64>,
}

impl AppendEvent {
    /// Hash of what a retry must repeat: the event type and the payload.
    fn content_hash(&self) -> String {
        openagents_canonical::digest(
            &json!({"event_type": self.event_type, "payload": self.payload}),
        )
    }
}

/// What a run write produced.
#[derive(Debug, Clone)]
pub struct RunWrite {
    /// The run after the write.
    pub run: RunHead,
    /// The appended event, or the original one for an idempotent replay.
    pub event: RunEvent,
    /// Whether nothing was appended because the request repeated an earlier one.
    pub idempotent_replay: bool,
}

/// The payload of the `run.started` event that creating a run appends.
const CREATED_PAYLOAD: &str = r#"{"source":"runtime"}"#;

/// Decides a run creation.
pub fn decide_create(
    txn: &mut Txn<'_, Stream>,
    request: CreateRun,
) -> Result<RunWrite, AuthorityError> {
    if let Some(key) = &request.idempotency_key
        && let Some(stream) = txn.stream_for_create_key(key).map(str::to_owned)
    {
        return replay_keyed(txn, &stream, 1, &request.content_hash());
    }
    // The content hash is only compared on a retry with the same key.
    let hash = request
        .idempotency_key
        .as_ref()
        .map(|_| request.content_hash());
    let owner = request.owner.clone().or_else(|| {
        let worker_id = request.worker_id.as_deref()?;
        let view = txn.stream(&worker_stream(worker_id))?;
        Some(view.state.as_worker()?.owner().clone())
    });
    let attrs = RunAttrs {
        worker_id: request.worker_id,
        owner,
        metadata: serde_json::value::to_raw_value(&request.metadata)
            .expect("JSON values serialize"),
        created_at: None,
    };
    let stream = run_stream(Uuid::now_v7());
    let appended = txn.append(NewRecord {
        stream: stream.clone(),
        event_type: openagents_run_state::RUN_STARTED.to_owned(),
        payload: RawValue::from_string(CREATED_PAYLOAD.to_owned()).expect("constant JSON"),
        idempotency_key: None,
        content_hash: hash,
        create_key: request.idempotency_key,
        attrs: Some(serde_json::value::to_raw_value(&attrs).expect("attributes serialize")),
    })?;
    let event = RunEvent {
        seq: appended.seq,
        event_type: openagents_run_state::RUN_STARTED.to_owned(),
        payload: json!({"source": "runtime"}),
        idempotency_key: None,
        recorded_at: appended.recorded_at,
    };
    Ok(RunWrite {
        run: run_in(txn, &stream)?,
        event,
        idempotent_replay: false,
    })
}

/// Answers a request whose idempotency key was used before: the original
/// event when the content matches, a conflict when it does not.
fn replay_keyed(
    txn: &Txn<'_, Stream>,
    stream: &str,
    seq: u64,
    hash: &str,
) -> Result<RunWrite, AuthorityError> {
    let same = txn
        .with_record(stream, seq, |record| record.hash.as_deref() == Some(hash))?
        .expect("a keyed seq has its record");
    if !same {
        return Err(AuthorityError::IdempotencyKeyReused);
    }
    replayed(txn, stream, seq)
}

/// The answer to a repeated request: event `seq`, nothing appended.
fn replayed(txn: &Txn<'_, Stream>, stream: &str, seq: u64) -> Result<RunWrite, AuthorityError> {
    let event = txn
        .with_record(stream, seq, |record| run_event(&record))?
        .expect("the replayed seq exists")?;
    Ok(RunWrite {
        run: run_in(txn, stream)?,
        event,
        idempotent_replay: true,
    })
}

/// Decides an append to a run: idempotency key, then expected previous seq,
/// then the state machine.
pub fn decide_append(
    txn: &mut Txn<'_, Stream>,
    run_id: Uuid,
    request: AppendEvent,
) -> Result<RunWrite, AuthorityError> {
    let stream = run_stream(run_id);
    if let Some(key) = &request.idempotency_key
        && let Some(seq) = txn.seq_for_key(&stream, key)
    {
        return replay_keyed(txn, &stream, seq, &request.content_hash());
    }
    let head = txn
        .stream(&stream)
        .and_then(|view| view.state.as_run())
        .ok_or(AuthorityError::RunNotFound(run_id))?;
    if let Some(expected) = request.expected_previous_seq
        && expected != head.latest_seq
    {
        return Err(AuthorityError::SequenceConflict {
            expected,
            actual: head.latest_seq,
        });
    }
    if let Some(Applied::AlreadyApplied) =
        head.status.decide(&request.event_type, &request.payload)?
    {
        let transition = RunTransition::from_event(&request.event_type, &request.payload)?
            .expect("only transitions are already applied");
        let seq = head
            .seq_of(transition)
            .expect("an applied transition has its event");
        return replayed(txn, &stream, seq);
    }
    // The content hash is only compared on a retry with the same key.
    let hash = request
        .idempotency_key
        .as_ref()
        .map(|_| request.content_hash());
    let payload = serde_json::value::to_raw_value(&request.payload).expect("JSON values serialize");
    let appended = txn.append(NewRecord {
        stream: stream.clone(),
        event_type: request.event_type.clone(),
        payload,
        content_hash: hash,
        idempotency_key: request.idempotency_key.clone(),
        create_key: None,
        attrs: None,
    })?;
    let event = RunEvent {
        seq: appended.seq,
        event_type: request.event_type,
        payload: request.payload,
        idempotency_key: request.idempotency_key,
        recorded_at: appended.recorded_at,
    };
    Ok(RunWrite {
        run: run_in(txn, &stream)?,
        event,
        idempotent_replay: false,
    })
}

/// A run recorded by another runtime, imported with its own id, times and
/// events (shadow parity, migrations). Not reachable over HTTP.
#[derive(Debug, Clone)]
pub struct ImportRun {
    /// The run's id.
    pub id: Uuid,
    /// When the other runtime created it.
    pub created_at: String,
    /// Creation metadata (an object).
    pub metadata: Value,
    /// Owner, if any.
    pub owner: Option<Owner>,
    /// Worker, if any.
    pub worker_id: Option<String>,
    /// Every event, seq 1.. in order, starting with `run.started`.
    pub events: Vec<RunEvent>,
}

/// Decides an import: the whole event list is checked against the sequence
/// rule and the state machine before anything is staged, so a bad import
/// appends nothing.
pub fn decide_import(txn: &mut Txn<'_, Stream>, run: ImportRun) -> Result<RunHead, AuthorityError> {
    let stream = run_stream(run.id);
    if txn.stream(&stream).is_some() {
        return Err(AuthorityError::InvalidRequest(format!(
            "run {} already exists",
            run.id
        )));
    }
    check_importable(&run.events)?;
    let attrs = RunAttrs {
        worker_id: run.worker_id,
        owner: run.owner,
        metadata: serde_json::value::to_raw_value(&run.metadata).expect("JSON values serialize"),
        created_at: Some(run.created_at),
    };
    let mut attrs = Some(serde_json::value::to_raw_value(&attrs).expect("attributes serialize"));
    for event in run.events {
        let content_hash = event.idempotency_key.as_ref().map(|_| {
            openagents_canonical::digest(
                &json!({"event_type": event.event_type, "payload": event.payload}),
            )
        });
        let record = NewRecord {
            stream: stream.clone(),
            payload: serde_json::value::to_raw_value(&event.payload)
                .expect("JSON values serialize"),
            event_type: event.event_type,
            idempotency_key: event.idempotency_key,
            content_hash,
            create_key: None,
            attrs: attrs.take(),
        };
        txn.append_recorded_at(record, event.recorded_at)?;
    }
    run_in(txn, &stream)
}

/// The rules an imported event list must keep: seqs 1, 2, 3, …, a first
/// `run.started`, every transition allowed and none repeated.
fn check_importable(events: &[RunEvent]) -> Result<(), AuthorityError> {
    let invalid = |message: String| Err(AuthorityError::InvalidRequest(message));
    match events.first() {
        Some(first) if first.event_type == openagents_run_state::RUN_STARTED => {}
        _ => return invalid("an imported run starts with run.started".into()),
    }
    let mut status = RunStatus::Created;
    for (index, event) in events.iter().enumerate() {
        if event.seq != index as u64 + 1 {
            return invalid(format!(
                "imported event {} has seq {}",
                index + 1,
                event.seq
            ));
        }
        match status.decide(&event.event_type, &event.payload)? {
            Some(Applied::Moved(next)) => status = next,
            None => {}
            Some(Applied::AlreadyApplied) => {
                return invalid(format!("imported event {} repeats a transition", event.seq));
            }
        }
    }
    Ok(())
}

/// The run of `stream` as the batch sees it.
fn run_in(txn: &Txn<'_, Stream>, stream: &str) -> Result<RunHead, AuthorityError> {
    txn.stream(stream)
        .and_then(|view| view.state.as_run().cloned())
        .ok_or_else(|| AuthorityError::InvalidRequest(format!("{stream} is not a run")))
}

/// The handle every write goes through.
pub struct Authority {
    log: Arc<EventLog<Stream>>,
    mode: AuthorityWriteMode,
}

impl Authority {
    /// Wraps the open log; `mode` decides whether writes are served.
    pub fn new(log: Arc<EventLog<Stream>>, mode: AuthorityWriteMode) -> Self {
        Authority { log, mode }
    }

    /// The log, for reads.
    pub fn log(&self) -> &EventLog<Stream> {
        &self.log
    }

    /// Runs `decide` on the writer thread and waits until its batch is
    /// durable. Refused outright while the write mode freezes writes.
    pub async fn execute<R, D>(&self, decide: D) -> Result<R, AuthorityError>
    where
        R: Send + 'static,
        D: FnOnce(&mut Txn<'_, Stream>) -> Result<R, AuthorityError> + Send + 'static,
    {
        if !self.mode.writes_enabled() {
            return Err(AuthorityError::WriteFrozen(self.mode));
        }
        let (sender, receiver) = oneshot::channel();
        self.log.submit(decide, move |outcome| {
            let _ = sender.send(outcome);
        });
        receiver
            .await
            .map_err(|_| AuthorityError::Log(LogFailure::Closed))??
    }

    /// Brings the index up to what the storage holds when other instances
    /// append to it too (a no-op on the embedded log, which only this
    /// process writes). Asking the storage for its head blocks briefly.
    pub async fn catch_up(&self) -> Result<(), AuthorityError> {
        let Some(durable) = self.log.durable_lsn()? else {
            return Ok(());
        };
        if self.log.index().last_lsn() >= durable {
            return Ok(());
        }
        let (sender, receiver) = oneshot::channel();
        self.log.refresh(move |outcome| {
            let _ = sender.send(outcome);
        });
        receiver
            .await
            .map_err(|_| AuthorityError::Log(LogFailure::Closed))??;
        Ok(())
    }

    /// A run as currently committed.
    pub fn run(&self, run_id: Uuid) -> Result<RunHead, AuthorityError> {
        let index = self.log.index();
        index
            .stream(&run_stream(run_id))
            .and_then(|entry| entry.state().as_run().cloned())
            .ok_or(AuthorityError::RunNotFound(run_id))
    }

    /// Events of a run with `after_seq < seq`, at most `limit`, read from the file.
    pub fn run_events(
        &self,
        run_id: Uuid,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<RunEvent>, AuthorityError> {
        let events = self
            .log
            .read_stream(&run_stream(run_id), after_seq, limit, |record| {
                run_event(&record)
            })?;
        Ok(events.into_iter().collect::<Result<_, _>>()?)
    }

    /// A worker as currently committed.
    pub fn worker(&self, worker_id: &str) -> Result<WorkerState, AuthorityError> {
        let index = self.log.index();
        index
            .stream(&worker_stream(worker_id))
            .and_then(|entry| entry.state().as_worker().cloned())
            .ok_or_else(|| AuthorityError::WorkerNotFound(worker_id.to_owned()))
    }
}
