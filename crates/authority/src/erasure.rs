//! Run erasure: the `run.erased` tombstone, the decision that appends it,
//! and how the run fold reads it back.
//!
//! A tombstone is an ordinary record of the run's own stream (its next
//! seq). It is written so that it alone rebuilds the run's folded state: a
//! later compaction deletes every other record of an erased run, and the
//! run's stream then begins with the tombstone. So the record carries, in
//! its attributes, what the fold needs of the run (worker, owner, creation
//! time; the metadata is dropped, `{}`), and in its payload what the
//! erasure was: who, why, whether forced, the status the run had, and the
//! trajectory hash, event count and receipt digest of the run as it was,
//! so a receipt issued before the erasure can still be compared with it.
//!
//! A tombstone is told from a client event of the same type by its
//! attributes: the append route never stores attributes, and refuses the
//! type `run.erased` since erasure exists.

use crate::error::{DecisionError, FoldError};
use crate::run::{RunAttrs, RunHead};
use crate::stream::Stream;
use crate::stream_id::StreamId;
use openagents_event_log::{NewRecord, RecordRef, Txn};
use openagents_run_state::RunStatus;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

/// Event type of a tombstone.
pub const RUN_ERASED: &str = "run.erased";
/// Longest erasure reason accepted, in characters.
pub const MAX_REASON_CHARS: usize = 1024;

/// The payload of a tombstone: what the erasure was and what the run was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    /// Name of the credential that erased the run (`None` when the service
    /// ran without credentials).
    pub erased_by: Option<String>,
    /// Why, as the operator gave it.
    pub reason: String,
    /// Whether the run was erased before it was sealed.
    pub forced: bool,
    /// The run's status when it was erased.
    pub status_at_erasure: RunStatus,
    /// How many events the run had.
    pub event_count: u64,
    /// The run's last seq before the tombstone.
    pub last_seq: u64,
    /// The receipt's `trajectory_hash` of those events.
    pub trajectory_hash: String,
    /// The receipt's `canonical_json_sha256` of those events.
    pub receipt_canonical_json_sha256: String,
}

/// A tombstone as the fold holds it: its payload, seq and time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Erasure {
    /// The tombstone's seq.
    pub seq: u64,
    /// When the writer recorded the tombstone.
    pub erased_at: String,
    /// What the tombstone says.
    #[serde(flatten)]
    pub tombstone: Tombstone,
}

/// What the caller computed of the run before asking to erase it: the
/// receipt of its events up to `last_seq`. The decision appends only if the
/// run still ends at `last_seq`, so the hashes describe exactly the erased
/// events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trajectory {
    /// The last seq the receipt covers.
    pub last_seq: u64,
    /// The receipt's `event_count`.
    pub event_count: u64,
    /// The receipt's `trajectory_hash`.
    pub trajectory_hash: String,
    /// The receipt's `canonical_json_sha256`.
    pub receipt_canonical_json_sha256: String,
}

/// A validated request to erase a run.
#[derive(Debug, Clone)]
pub struct EraseRun {
    /// The run.
    pub run_id: Uuid,
    /// Why (see [`check_reason`]).
    pub reason: String,
    /// Erase even though the run is not sealed.
    pub force: bool,
    /// The credential that asks.
    pub written_by: Option<String>,
    /// The run as the caller hashed it.
    pub trajectory: Trajectory,
}

/// Refuses a reason that is blank or longer than [`MAX_REASON_CHARS`].
pub fn check_reason(reason: &str) -> Result<(), DecisionError> {
    if reason.trim().is_empty() {
        return Err(DecisionError::InvalidRequest(
            "reason must not be empty".into(),
        ));
    }
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(DecisionError::InvalidRequest(format!(
            "reason is longer than {MAX_REASON_CHARS} characters"
        )));
    }
    Ok(())
}

/// The run's erasure, refused as [`DecisionError::RunErased`].
pub(crate) fn erased(head: &RunHead) -> Result<(), DecisionError> {
    match head.erasure() {
        Some(erasure) => Err(DecisionError::RunErased {
            run: head.id,
            erasure: Box::new(erasure.clone()),
        }),
        None => Ok(()),
    }
}

/// Decides an erasure: unknown run, already erased, not sealed without
/// `force`, and a run that grew since it was hashed are refused; otherwise
/// the tombstone is appended and returned.
pub fn decide_erase(
    txn: &mut Txn<'_, Stream>,
    request: EraseRun,
) -> Result<Erasure, DecisionError> {
    check_reason(&request.reason)?;
    let stream = StreamId::Run(request.run_id).to_string();
    let head = txn
        .stream(&stream)
        .and_then(|view| view.state.as_run())
        .ok_or(DecisionError::RunNotFound(request.run_id))?;
    erased(head)?;
    if !head.is_sealed() && !request.force {
        return Err(DecisionError::RunNotSealed(request.run_id));
    }
    let trajectory = request.trajectory;
    if trajectory.last_seq != head.latest_seq {
        return Err(DecisionError::SequenceConflict {
            expected: trajectory.last_seq,
            actual: head.latest_seq,
        });
    }
    let tombstone = Tombstone {
        erased_by: request.written_by.clone(),
        reason: request.reason,
        forced: request.force,
        status_at_erasure: head.status,
        event_count: trajectory.event_count,
        last_seq: trajectory.last_seq,
        trajectory_hash: trajectory.trajectory_hash,
        receipt_canonical_json_sha256: trajectory.receipt_canonical_json_sha256,
    };
    // The metadata is the client's data like the payloads: it goes too.
    let attrs = RunAttrs {
        worker_id: head.worker_id.as_deref().map(str::to_owned),
        owner: head.owner.clone(),
        metadata: RawValue::from_string("{}".into()).expect("constant JSON"),
        created_at: Some(head.created_at.to_string()),
    };
    txn.append(NewRecord {
        stream: stream.clone(),
        event_type: RUN_ERASED.to_owned(),
        payload: serde_json::value::to_raw_value(&tombstone).expect("a tombstone serializes"),
        idempotency_key: None,
        content_hash: None,
        create_key: None,
        attrs: Some(attrs.to_raw()),
        written_by: request.written_by,
    })?;
    let erasure = txn
        .stream(&stream)
        .and_then(|view| view.state.as_run())
        .and_then(RunHead::erasure)
        .cloned()
        .expect("the staged tombstone folded into an erasure");
    Ok(erasure)
}

/// Whether `record` is a tombstone (a `run.erased` record with attributes,
/// which only [`decide_erase`] writes).
pub fn is_tombstone(record: &RecordRef<'_>) -> bool {
    record.event_type == RUN_ERASED && record.attrs.is_some()
}

/// The run as its tombstone alone rebuilds it.
pub(crate) fn erased_head(id: Uuid, record: &RecordRef<'_>) -> Result<RunHead, FoldError> {
    let attrs: RunAttrs = record
        .attrs
        .and_then(|raw| serde_json::from_str(raw.get()).ok())
        .ok_or(FoldError::RunAttributes { run: id })?;
    let tombstone: Tombstone =
        serde_json::from_str(record.payload.get()).map_err(|source| FoldError::Payload {
            stream: record.stream.to_string(),
            seq: record.seq,
            source,
        })?;
    let erasure = Erasure {
        seq: record.seq,
        erased_at: record.at.to_string(),
        tombstone,
    };
    Ok(RunHead::from_erasure(id, attrs, erasure))
}
