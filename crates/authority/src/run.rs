//! A run as the log folds it: [`RunHead`], the attributes its first record
//! carries, and the conversion of a run record into the event clients see.

use crate::erasure::{Erasure, erased_head, is_tombstone};
use crate::error::FoldError;
use openagents_event_log::{ReadError, RecordRef};
use openagents_run_state::{Applied, RunEvent, RunStatus, RunTransition};
use openagents_workers::Owner;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use std::sync::Arc;
use uuid::Uuid;

/// The attributes a run is created with, stored on its first record so the
/// run can be rebuilt exactly from the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RunAttrs {
    pub(crate) worker_id: Option<String>,
    pub(crate) owner: Option<Owner>,
    pub(crate) metadata: Box<RawValue>,
    /// Set only for imported runs, whose creation time precedes their
    /// first event; otherwise the first record's time is the creation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) created_at: Option<String>,
}

impl RunAttrs {
    pub(crate) fn to_raw(&self) -> Box<RawValue> {
        serde_json::value::to_raw_value(self).expect("run attributes serialize")
    }
}

/// What answering requests needs to know about a run, folded from its records
/// (event bodies stay in the log). Serialized only into index snapshots.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// Set by the run's tombstone: the run is erased. Absent from the
    /// snapshots of runs that are not, so their bytes did not change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    erasure: Option<Arc<Erasure>>,
}

impl RunHead {
    /// Builds the run from its first record.
    pub(crate) fn open(id: Uuid, first: &RecordRef<'_>) -> Result<Self, FoldError> {
        // After a compaction an erased run's stream begins with its tombstone.
        if is_tombstone(first) {
            return erased_head(id, first);
        }
        let attrs: RunAttrs = first
            .attrs
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
            .ok_or(FoldError::RunAttributes { run: id })?;
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
            erasure: None,
        };
        head.apply(first)?;
        Ok(head)
    }

    /// The run as a tombstone describes it; the same whether the tombstone
    /// is folded after the run's records or opens a compacted stream.
    pub(crate) fn from_erasure(id: Uuid, attrs: RunAttrs, erasure: Erasure) -> Self {
        RunHead {
            id,
            status: erasure.tombstone.status_at_erasure,
            worker_id: attrs.worker_id.map(Arc::from),
            owner: attrs.owner,
            metadata: Arc::from(attrs.metadata),
            created_at: Arc::from(attrs.created_at.as_deref().unwrap_or(&erasure.erased_at)),
            updated_at: erasure.erased_at.clone(),
            latest_seq: erasure.seq,
            cancel_requested_seq: None,
            finished_seq: None,
            erasure: Some(Arc::new(erasure)),
        }
    }

    /// Folds one more record; on error the run is left as it was.
    pub(crate) fn apply(&mut self, record: &RecordRef<'_>) -> Result<(), FoldError> {
        let refused = || FoldError::BreaksStateMachine {
            run: self.id,
            seq: record.seq,
        };
        if self.erasure.is_some() {
            return Err(refused());
        }
        if is_tombstone(record) {
            let erased = erased_head(self.id, record)?;
            let tombstone = &erased.erasure.as_ref().expect("an erased head").tombstone;
            // Only a sealed run, or any run by force, and only as it stood.
            let allowed = (self.is_sealed() || tombstone.forced)
                && tombstone.status_at_erasure == self.status
                && tombstone.last_seq == self.latest_seq;
            if !allowed {
                return Err(refused());
            }
            *self = erased;
            return Ok(());
        }
        let payload = transition_payload(record)?;
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
                return Err(FoldError::BreaksStateMachine {
                    run: self.id,
                    seq: record.seq,
                });
            }
        }
        self.latest_seq = record.seq;
        self.updated_at.clear();
        self.updated_at.push_str(&record.at);
        Ok(())
    }

    /// Whether the run is sealed: it accepts no new event, only retries
    /// (an erased run not even those).
    pub fn is_sealed(&self) -> bool {
        self.status.is_terminal() || self.erasure.is_some()
    }

    /// The run's erasure, once its tombstone is folded.
    pub fn erasure(&self) -> Option<&Erasure> {
        self.erasure.as_deref()
    }

    /// The seq of the event that first made `transition`, for idempotent
    /// repeats of a transition.
    pub(crate) fn seq_of(&self, transition: RunTransition) -> Option<u64> {
        match transition {
            RunTransition::Start => Some(1),
            RunTransition::RequestCancel => self.cancel_requested_seq,
            _ => self.finished_seq,
        }
    }
}

/// The payload the state machine needs to see: only `run.finished` is read
/// (for its status), so other events skip the parse on the hot path.
fn transition_payload(record: &RecordRef<'_>) -> Result<Value, FoldError> {
    if record.event_type == openagents_run_state::RUN_FINISHED {
        serde_json::from_str(record.payload.get()).map_err(|source| FoldError::Payload {
            stream: record.stream.to_string(),
            seq: record.seq,
            source,
        })
    } else {
        Ok(Value::Null)
    }
}

/// A run record as the state machine needs to see it: its type, seq, key
/// and time, and the payload of `run.finished` only; every other payload is
/// left `null` without being parsed. What projections apply on every append
/// and every catch-up, where parsing payloads nobody reads would dominate.
pub fn transition_event(record: &RecordRef<'_>) -> Result<RunEvent, FoldError> {
    Ok(RunEvent {
        seq: record.seq,
        event_type: record.event_type.to_string(),
        payload: transition_payload(record)?,
        idempotency_key: record.key.as_deref().map(str::to_owned),
        recorded_at: record.at.to_string(),
    })
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
