//! Run decisions: creation, append and import, each run on the log's writer
//! against a [`Txn`], and the content hashes a retry is compared by.
//!
//! The order of the append checks is the contract's: idempotency key, then
//! `expected_previous_seq`, then the run state machine.

use crate::erasure::{RUN_ERASED, erased};
use crate::error::DecisionError;
use crate::events::{EventListError, fold_events};
use crate::run::{RunAttrs, RunHead, run_event};
use crate::stream::Stream;
use crate::stream_id::StreamId;
use openagents_event_log::{NewRecord, Txn};
use openagents_run_state::{Applied, RunEvent, RunTransition};
use openagents_workers::Owner;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use uuid::Uuid;

/// A validated request to create a run.
#[derive(Debug, Clone)]
pub struct CreateRun {
    /// The run's id, chosen by the caller (a fresh UUIDv7 in the service).
    pub id: Uuid,
    /// The worker the run is for.
    pub worker_id: Option<String>,
    /// Creation metadata (an object).
    pub metadata: Value,
    /// Explicit owner.
    pub owner: Option<Owner>,
    /// Log-wide idempotency key of the creation.
    pub idempotency_key: Option<String>,
    /// Name of the credential that asks, recorded on the `run.started`
    /// record (not part of the content a retry is compared by).
    pub written_by: Option<String>,
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
    /// Name of the credential that asks, recorded on the appended record
    /// (not part of the content a retry is compared by).
    pub written_by: Option<String>,
}

/// Hash of what a retry of an event must repeat: its type and payload.
fn event_content_hash(event_type: &str, payload: &Value) -> String {
    openagents_canonical::digest(&json!({"event_type": event_type, "payload": payload}))
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
    /// The credential that wrote `event`: this request's, or for a replay
    /// the original writer's.
    pub written_by: Option<String>,
}

/// The payload of the `run.started` event that creating a run appends.
const CREATED_PAYLOAD: &str = r#"{"source":"runtime"}"#;

/// Decides a run creation.
pub fn decide_create(
    txn: &mut Txn<'_, Stream>,
    request: CreateRun,
) -> Result<RunWrite, DecisionError> {
    if let Some(key) = &request.idempotency_key
        && let Some(stream) = txn.stream_for_create_key(key).map(str::to_owned)
    {
        // An erased run's first record may be gone: nothing to replay.
        if let Some(head) = txn.stream(&stream).and_then(|view| view.state.as_run()) {
            erased(head)?;
        }
        return replay_keyed(txn, &stream, 1, &request.content_hash());
    }
    // The content hash is only compared on a retry with the same key.
    let hash = request
        .idempotency_key
        .as_ref()
        .map(|_| request.content_hash());
    let owner = request.owner.clone().or_else(|| {
        let worker = StreamId::worker(request.worker_id.as_deref()?).ok()?;
        let view = txn.stream(&worker.to_string())?;
        Some(view.state.as_worker()?.owner().clone())
    });
    let attrs = RunAttrs {
        worker_id: request.worker_id,
        owner,
        metadata: serde_json::value::to_raw_value(&request.metadata)
            .expect("JSON values serialize"),
        created_at: None,
    };
    let stream = StreamId::Run(request.id).to_string();
    let appended = txn.append(NewRecord {
        stream: stream.clone(),
        event_type: openagents_run_state::RUN_STARTED.to_owned(),
        payload: RawValue::from_string(CREATED_PAYLOAD.to_owned()).expect("constant JSON"),
        idempotency_key: None,
        content_hash: hash,
        create_key: request.idempotency_key,
        attrs: Some(attrs.to_raw()),
        written_by: request.written_by.clone(),
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
        written_by: request.written_by,
    })
}

/// Answers a request whose idempotency key was used before: the original
/// event when the content matches, a conflict when it does not.
fn replay_keyed(
    txn: &Txn<'_, Stream>,
    stream: &str,
    seq: u64,
    hash: &str,
) -> Result<RunWrite, DecisionError> {
    let same = txn
        .with_record(stream, seq, |record| record.hash.as_deref() == Some(hash))?
        .expect("a keyed seq has its record");
    if !same {
        return Err(DecisionError::IdempotencyKeyReused);
    }
    replayed(txn, stream, seq)
}

/// The answer to a repeated request: event `seq`, nothing appended.
fn replayed(txn: &Txn<'_, Stream>, stream: &str, seq: u64) -> Result<RunWrite, DecisionError> {
    let (event, written_by) = txn
        .with_record(stream, seq, |record| {
            run_event(&record).map(|event| (event, record.by.as_deref().map(str::to_owned)))
        })?
        .expect("the replayed seq exists")?;
    Ok(RunWrite {
        run: run_in(txn, stream)?,
        event,
        idempotent_replay: true,
        written_by,
    })
}

/// Decides an append to a run: an erased run first (even a retry finds
/// nothing left to replay), then idempotency key, expected previous seq and
/// the state machine.
pub fn decide_append(
    txn: &mut Txn<'_, Stream>,
    run_id: Uuid,
    request: AppendEvent,
) -> Result<RunWrite, DecisionError> {
    let stream = StreamId::Run(run_id).to_string();
    if let Some(head) = txn.stream(&stream).and_then(|view| view.state.as_run()) {
        erased(head)?;
    }
    if let Some(key) = &request.idempotency_key
        && let Some(seq) = txn.seq_for_key(&stream, key)?
    {
        let hash = event_content_hash(&request.event_type, &request.payload);
        return replay_keyed(txn, &stream, seq, &hash);
    }
    let head = txn
        .stream(&stream)
        .and_then(|view| view.state.as_run())
        .ok_or(DecisionError::RunNotFound(run_id))?;
    // After the key check, so a retry of such an event from before erasure
    // existed still replays.
    if request.event_type == RUN_ERASED {
        return Err(DecisionError::ReservedEventType(RUN_ERASED));
    }
    if let Some(expected) = request.expected_previous_seq
        && expected != head.latest_seq
    {
        return Err(DecisionError::SequenceConflict {
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
        .map(|_| event_content_hash(&request.event_type, &request.payload));
    let payload = serde_json::value::to_raw_value(&request.payload).expect("JSON values serialize");
    let appended = txn.append(NewRecord {
        stream: stream.clone(),
        event_type: request.event_type.clone(),
        payload,
        content_hash: hash,
        idempotency_key: request.idempotency_key.clone(),
        create_key: None,
        attrs: None,
        written_by: request.written_by.clone(),
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
        written_by: request.written_by,
    })
}

/// A run recorded by another runtime, imported with its own id, times and
/// events (shadow parity, migrations).
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

/// Decides an import: the whole event list is checked with the event-list
/// fold before anything is staged, so a bad import appends nothing.
pub fn decide_import(txn: &mut Txn<'_, Stream>, run: ImportRun) -> Result<RunHead, DecisionError> {
    let stream = StreamId::Run(run.id).to_string();
    if txn.stream(&stream).is_some() {
        return Err(DecisionError::InvalidRequest(format!(
            "run {} already exists",
            run.id
        )));
    }
    if run
        .events
        .iter()
        .any(|event| event.event_type == RUN_ERASED)
    {
        return Err(DecisionError::ReservedEventType(RUN_ERASED));
    }
    fold_events(&run.events).map_err(|error| match error {
        EventListError::Rejected { source, .. } => DecisionError::RunState(source),
        other => DecisionError::InvalidRequest(format!("imported {other}")),
    })?;
    let attrs = RunAttrs {
        worker_id: run.worker_id,
        owner: run.owner,
        metadata: serde_json::value::to_raw_value(&run.metadata).expect("JSON values serialize"),
        created_at: Some(run.created_at),
    };
    let mut attrs = Some(attrs.to_raw());
    for event in run.events {
        let content_hash = event
            .idempotency_key
            .as_ref()
            .map(|_| event_content_hash(&event.event_type, &event.payload));
        let record = NewRecord {
            stream: stream.clone(),
            payload: serde_json::value::to_raw_value(&event.payload)
                .expect("JSON values serialize"),
            event_type: event.event_type,
            idempotency_key: event.idempotency_key,
            content_hash,
            create_key: None,
            attrs: attrs.take(),
            written_by: None,
        };
        txn.append_recorded_at(record, event.recorded_at)?;
    }
    run_in(txn, &stream)
}

/// The run of `stream` as the batch sees it.
fn run_in(txn: &Txn<'_, Stream>, stream: &str) -> Result<RunHead, DecisionError> {
    txn.stream(stream)
        .and_then(|view| view.state.as_run().cloned())
        .ok_or_else(|| DecisionError::InvalidRequest(format!("{stream} is not a run")))
}
