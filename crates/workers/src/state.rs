//! The worker read model and the pure fold that builds it from lifecycle
//! events.
//!
//! Each command is split in two: a `decide_*` function checks it against the
//! current worker and returns the [`WorkerEvent`] to append, and
//! [`WorkerState::apply`] folds an appended event into the worker. The
//! service appends only what a `decide_*` function returned and rebuilds
//! workers after a restart with [`WorkerState::replay`], so a rebuilt worker
//! equals the one that was served before.

use crate::events::{
    Heartbeat, LifecycleEvent, LifecycleEventType, Registration, StatusChange, WorkerEvent,
};
use crate::id::{WorkerIdError, validate_worker_id};
use crate::metadata::{MAX_METADATA_KEYS, merge_metadata, merged_key_count};
use crate::owner::Owner;
use crate::status::{TransitionError, WorkerStatus};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A worker as the worker routes show it (the contract's `worker` object).
///
/// Fields are private: the only way to change a worker is to apply a
/// lifecycle event, which keeps the served state and the log in step. It
/// deserializes only from what it serialized, in an index snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerState {
    worker_id: String,
    owner: Owner,
    workspace_ref: Option<String>,
    codex_home_ref: Option<String>,
    adapter: Option<String>,
    status: WorkerStatus,
    latest_seq: u64,
    metadata: Map<String, Value>,
    started_at: String,
    stopped_at: Option<String>,
    last_heartbeat_at: Option<String>,
    updated_at: String,
}

/// Why a command is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// The caller does not own the worker (HTTP 403 `forbidden`).
    #[error("worker {worker_id} belongs to another owner")]
    OwnerMismatch {
        /// The worker the caller asked about.
        worker_id: String,
    },
    /// The status change is not in the table (HTTP 400).
    #[error(transparent)]
    InvalidTransition(#[from] TransitionError),
    /// The registration's worker id is not acceptable (HTTP 400).
    #[error(transparent)]
    InvalidWorkerId(#[from] WorkerIdError),
    /// The merge would leave more than [`MAX_METADATA_KEYS`] keys (HTTP 400).
    #[error("metadata would hold {keys} keys; at most {MAX_METADATA_KEYS} are allowed")]
    MetadataTooLarge {
        /// Keys the metadata would hold after the merge.
        keys: usize,
    },
}

impl WorkerError {
    /// The `reason_code` for this refusal, where there is one:
    /// `invalid_transition` from the contract, and `owner_mismatch`, the name
    /// the contract's Khala section uses for the same refusal.
    pub fn reason_code(&self) -> Option<&'static str> {
        match self {
            Self::OwnerMismatch { .. } => Some("owner_mismatch"),
            Self::InvalidTransition(error) => Some(error.reason_code()),
            Self::InvalidWorkerId(_) | Self::MetadataTooLarge { .. } => None,
        }
    }
}

/// Why a lifecycle event cannot be folded into a worker. Events in the log
/// were decided against the same rules, so any of these means the log and
/// the fold disagree, and recovery should stop rather than guess.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// The event is not the next one of the worker's stream.
    #[error("lifecycle event seq {actual} does not follow seq {}", expected - 1)]
    OutOfOrder {
        /// The seq that would have been next.
        expected: u64,
        /// The seq the event carries.
        actual: u64,
    },
    /// The stream does not begin with `worker.started`.
    #[error("a worker's first lifecycle event must be worker.started, not {0}")]
    NotRegistered(LifecycleEventType),
    /// A `worker.started` for another worker id.
    #[error("worker.started for {actual} applied to worker {expected}")]
    WorkerIdMismatch {
        /// The worker being folded.
        expected: String,
        /// The id in the event.
        actual: String,
    },
    /// A `worker.started` by an owner other than the worker's.
    #[error("worker.started by another owner applied to worker {0}")]
    OwnerMismatch(String),
    /// A status event the table does not allow.
    #[error(transparent)]
    InvalidTransition(#[from] TransitionError),
}

/// Decides a registration: a new worker, or a re-registration of `existing`
/// by its owner.
///
/// `existing` must be the worker stored under `registration.worker_id`.
pub fn decide_register(
    existing: Option<&WorkerState>,
    registration: Registration,
) -> Result<WorkerEvent, WorkerError> {
    validate_worker_id(&registration.worker_id)?;
    let empty = Map::new();
    let metadata = match existing {
        Some(worker) => {
            debug_assert_eq!(worker.worker_id, registration.worker_id);
            worker.ensure_owned_by(&registration.owner)?;
            &worker.metadata
        }
        None => &empty,
    };
    ensure_metadata_fits(metadata, &registration.metadata)?;
    Ok(WorkerEvent::Started(registration))
}

/// Refuses a merge that would leave too many metadata keys.
fn ensure_metadata_fits(
    metadata: &Map<String, Value>,
    patch: &Map<String, Value>,
) -> Result<(), WorkerError> {
    let keys = merged_key_count(metadata, patch);
    if keys > MAX_METADATA_KEYS {
        return Err(WorkerError::MetadataTooLarge { keys });
    }
    Ok(())
}

impl WorkerState {
    /// Decides a heartbeat from `caller`, merging `metadata_patch`.
    ///
    /// Heartbeats are accepted in every status: a stopped worker that still
    /// reports is a fact worth recording, and only a registration or a status
    /// change moves it back to a live status.
    pub fn decide_heartbeat(
        &self,
        caller: &Owner,
        metadata_patch: Map<String, Value>,
    ) -> Result<WorkerEvent, WorkerError> {
        self.ensure_owned_by(caller)?;
        ensure_metadata_fits(&self.metadata, &metadata_patch)?;
        Ok(WorkerEvent::Heartbeat(Heartbeat { metadata_patch }))
    }

    /// Decides a status change from `caller` against the transition table.
    ///
    /// A change to the current status is allowed and recorded like any other,
    /// so its `reason` lands in the log.
    pub fn decide_status(
        &self,
        caller: &Owner,
        status: WorkerStatus,
        reason: Option<String>,
    ) -> Result<WorkerEvent, WorkerError> {
        self.ensure_owned_by(caller)?;
        let status = self.status.transition(status)?;
        Ok(WorkerEvent::StatusChanged(StatusChange { status, reason }))
    }

    /// Whether `caller` owns this worker (the owner-match rule).
    pub fn is_owned_by(&self, caller: &Owner) -> bool {
        self.owner.matches(caller)
    }

    /// Refuses a caller that does not own this worker.
    fn ensure_owned_by(&self, caller: &Owner) -> Result<(), WorkerError> {
        if self.is_owned_by(caller) {
            Ok(())
        } else {
            Err(WorkerError::OwnerMismatch {
                worker_id: self.worker_id.clone(),
            })
        }
    }

    /// Folds one lifecycle event into the worker held in `slot` (`None`
    /// before the worker's first event). On error `slot` is unchanged.
    pub fn apply(slot: &mut Option<WorkerState>, event: &LifecycleEvent) -> Result<(), ApplyError> {
        match slot {
            None => {
                *slot = Some(Self::register(event)?);
                Ok(())
            }
            Some(worker) => worker.apply_next(event),
        }
    }

    /// Rebuilds a worker from its whole lifecycle stream, in seq order;
    /// `None` for an empty stream.
    pub fn replay<'a>(
        events: impl IntoIterator<Item = &'a LifecycleEvent>,
    ) -> Result<Option<WorkerState>, ApplyError> {
        let mut slot = None;
        for event in events {
            Self::apply(&mut slot, event)?;
        }
        Ok(slot)
    }

    /// Builds a new worker from the first event of its stream.
    fn register(event: &LifecycleEvent) -> Result<Self, ApplyError> {
        let WorkerEvent::Started(registration) = &event.event else {
            return Err(ApplyError::NotRegistered(event.event.event_type()));
        };
        expect_seq(1, event.seq)?;
        let mut metadata = Map::new();
        merge_metadata(&mut metadata, &registration.metadata);
        Ok(Self {
            worker_id: registration.worker_id.clone(),
            owner: registration.owner.clone(),
            workspace_ref: registration.workspace_ref.clone(),
            codex_home_ref: registration.codex_home_ref.clone(),
            adapter: registration.adapter.clone(),
            status: WorkerStatus::Running,
            latest_seq: event.seq,
            metadata,
            started_at: event.recorded_at.clone(),
            stopped_at: None,
            // A registration is the worker's first sign of life: a new
            // worker is `fresh`, not `missing` (as the service it replaces).
            last_heartbeat_at: Some(event.recorded_at.clone()),
            updated_at: event.recorded_at.clone(),
        })
    }

    /// Folds the next event of an existing worker's stream. Every check runs
    /// before the first change, so a refused event leaves the worker as it
    /// was.
    fn apply_next(&mut self, event: &LifecycleEvent) -> Result<(), ApplyError> {
        expect_seq(self.latest_seq + 1, event.seq)?;
        let at = event.recorded_at.as_str();
        match &event.event {
            WorkerEvent::Started(registration) => {
                self.check_reregistration(registration)?;
                self.reregister(registration, at);
                self.last_heartbeat_at = Some(at.to_owned());
            }
            WorkerEvent::Heartbeat(heartbeat) => {
                merge_metadata(&mut self.metadata, &heartbeat.metadata_patch);
                self.last_heartbeat_at = Some(at.to_owned());
            }
            WorkerEvent::StatusChanged(change) => {
                let to = self.status.transition(change.status)?;
                self.enter_status(to, at);
                // The worker's last word counts as its last sign of life.
                if !to.is_live() {
                    self.last_heartbeat_at = Some(at.to_owned());
                }
            }
        }
        self.latest_seq = event.seq;
        at.clone_into(&mut self.updated_at);
        Ok(())
    }

    /// The checks of [`decide_register`] that must also hold in the log.
    fn check_reregistration(&self, registration: &Registration) -> Result<(), ApplyError> {
        if registration.worker_id != self.worker_id {
            return Err(ApplyError::WorkerIdMismatch {
                expected: self.worker_id.clone(),
                actual: registration.worker_id.clone(),
            });
        }
        if !self.is_owned_by(&registration.owner) {
            return Err(ApplyError::OwnerMismatch(self.worker_id.clone()));
        }
        Ok(())
    }

    /// Re-registration: revive a stopped or failed worker, replace the
    /// attributes the registration names, keep the others, merge metadata.
    fn reregister(&mut self, registration: &Registration, at: &str) {
        if !self.status.is_live() {
            self.enter_status(WorkerStatus::Running, at);
        }
        let replace = |field: &mut Option<String>, given: &Option<String>| {
            if given.is_some() {
                field.clone_from(given);
            }
        };
        replace(&mut self.workspace_ref, &registration.workspace_ref);
        replace(&mut self.codex_home_ref, &registration.codex_home_ref);
        replace(&mut self.adapter, &registration.adapter);
        merge_metadata(&mut self.metadata, &registration.metadata);
    }

    /// Moves to `to` (already checked against the table) and keeps the life
    /// timestamps in step: entering `stopped`/`failed` stamps `stopped_at`;
    /// leaving them clears it and stamps `started_at`, because a new life of
    /// the worker begins. Staying in the same status changes neither.
    fn enter_status(&mut self, to: WorkerStatus, at: &str) {
        match (self.status.is_live(), to.is_live()) {
            (true, false) => self.stopped_at = Some(at.to_owned()),
            (false, true) => {
                self.stopped_at = None;
                at.clone_into(&mut self.started_at);
            }
            _ => {}
        }
        self.status = to;
    }

    /// The worker's id.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// Who owns the worker.
    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    /// Opaque reference to the worker's workspace.
    pub fn workspace_ref(&self) -> Option<&str> {
        self.workspace_ref.as_deref()
    }

    /// Opaque reference to the worker's Codex home.
    pub fn codex_home_ref(&self) -> Option<&str> {
        self.codex_home_ref.as_deref()
    }

    /// Which adapter runs the worker.
    pub fn adapter(&self) -> Option<&str> {
        self.adapter.as_deref()
    }

    /// The worker's current status.
    pub fn status(&self) -> WorkerStatus {
        self.status
    }

    /// Seq of the last lifecycle event folded in.
    pub fn latest_seq(&self) -> u64 {
        self.latest_seq
    }

    /// The merged metadata.
    pub fn metadata(&self) -> &Map<String, Value> {
        &self.metadata
    }

    /// When the current life of the worker began: its first registration,
    /// or the last time it left `stopped`/`failed`.
    pub fn started_at(&self) -> &str {
        &self.started_at
    }

    /// When the worker entered `stopped`/`failed`; `None` while it is live.
    pub fn stopped_at(&self) -> Option<&str> {
        self.stopped_at.as_deref()
    }

    /// When the last `worker.heartbeat` was recorded; registration does not
    /// count as a heartbeat.
    pub fn last_heartbeat_at(&self) -> Option<&str> {
        self.last_heartbeat_at.as_deref()
    }

    /// When the last lifecycle event was recorded.
    pub fn updated_at(&self) -> &str {
        &self.updated_at
    }
}

/// Refuses an event that is not the expected next one of its stream.
fn expect_seq(expected: u64, actual: u64) -> Result<(), ApplyError> {
    if expected == actual {
        Ok(())
    } else {
        Err(ApplyError::OutOfOrder { expected, actual })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    fn owner() -> Owner {
        Owner::User(7)
    }

    fn registration(metadata: Value) -> Registration {
        Registration {
            worker_id: "w-1".into(),
            owner: owner(),
            workspace_ref: Some("ws-1".into()),
            codex_home_ref: None,
            adapter: Some("in_memory".into()),
            metadata: object(metadata),
        }
    }

    /// Applies a decided event at the next seq, as the service does after the
    /// append is durable.
    fn commit(slot: &mut Option<WorkerState>, event: WorkerEvent, at: &str) -> LifecycleEvent {
        let seq = slot.as_ref().map_or(1, |w| w.latest_seq + 1);
        let record = LifecycleEvent {
            seq,
            recorded_at: at.into(),
            event,
        };
        WorkerState::apply(slot, &record).unwrap();
        record
    }

    fn registered() -> Option<WorkerState> {
        let mut slot = None;
        let event = decide_register(None, registration(json!({"a": 1, "gone": null}))).unwrap();
        commit(&mut slot, event, "2025-01-01T00:00:00Z");
        slot
    }

    #[test]
    fn registration_creates_a_running_worker_whose_registration_is_its_heartbeat() {
        let worker = registered().unwrap();
        assert_eq!(worker.status(), WorkerStatus::Running);
        assert_eq!(worker.latest_seq(), 1);
        assert_eq!(worker.started_at(), "2025-01-01T00:00:00Z");
        assert_eq!(worker.last_heartbeat_at(), Some("2025-01-01T00:00:00Z"));
        assert_eq!(
            serde_json::to_value(&worker).unwrap(),
            json!({
                "worker_id": "w-1",
                "owner": {"user_id": 7, "guest_scope": null},
                "workspace_ref": "ws-1",
                "codex_home_ref": null,
                "adapter": "in_memory",
                "status": "running",
                "latest_seq": 1,
                "metadata": {"a": 1},
                "started_at": "2025-01-01T00:00:00Z",
                "stopped_at": null,
                "last_heartbeat_at": "2025-01-01T00:00:00Z",
                "updated_at": "2025-01-01T00:00:00Z",
            })
        );
    }

    #[test]
    fn heartbeats_merge_metadata_and_stamp_the_heartbeat() {
        let mut slot = registered();
        let worker = slot.as_ref().unwrap();
        let event = worker.decide_heartbeat(&owner(), object(json!({"a": null, "b": 2})));
        commit(&mut slot, event.unwrap(), "2025-01-01T00:00:05Z");
        let worker = slot.unwrap();
        assert_eq!(Value::Object(worker.metadata().clone()), json!({"b": 2}));
        assert_eq!(worker.last_heartbeat_at(), Some("2025-01-01T00:00:05Z"));
        assert_eq!(worker.updated_at(), "2025-01-01T00:00:05Z");
        assert_eq!(worker.status(), WorkerStatus::Running);
    }

    #[test]
    fn stopping_stamps_stopped_at_and_reregistration_revives() {
        let mut slot = registered();
        let stop = slot
            .as_ref()
            .unwrap()
            .decide_status(&owner(), WorkerStatus::Stopped, None);
        commit(&mut slot, stop.unwrap(), "2025-01-01T00:01:00Z");
        let worker = slot.as_ref().unwrap();
        assert_eq!(worker.stopped_at(), Some("2025-01-01T00:01:00Z"));
        assert_eq!(worker.last_heartbeat_at(), Some("2025-01-01T00:01:00Z"));
        let again = slot
            .as_ref()
            .unwrap()
            .decide_status(&owner(), WorkerStatus::Stopped, None);
        commit(&mut slot, again.unwrap(), "2025-01-01T00:01:30Z");
        assert_eq!(
            slot.as_ref().unwrap().stopped_at(),
            Some("2025-01-01T00:01:00Z")
        );

        let mut revival = registration(json!({"b": 2}));
        revival.workspace_ref = None;
        revival.codex_home_ref = Some("home".into());
        let event = decide_register(slot.as_ref(), revival).unwrap();
        commit(&mut slot, event, "2025-01-01T00:02:00Z");
        let worker = slot.unwrap();
        assert_eq!(worker.status(), WorkerStatus::Running);
        assert_eq!(worker.stopped_at(), None);
        assert_eq!(worker.started_at(), "2025-01-01T00:02:00Z");
        assert_eq!(worker.last_heartbeat_at(), Some("2025-01-01T00:02:00Z"));
        assert_eq!(worker.workspace_ref(), Some("ws-1"));
        assert_eq!(worker.codex_home_ref(), Some("home"));
        assert_eq!(worker.adapter(), Some("in_memory"));
        assert_eq!(
            Value::Object(worker.metadata().clone()),
            json!({"a": 1, "b": 2})
        );
        assert_eq!(worker.latest_seq(), 4);
    }

    #[test]
    fn failing_stamps_the_heartbeat_and_stopping_does_not() {
        let mut slot = registered();
        let stopping = slot
            .as_ref()
            .unwrap()
            .decide_status(&owner(), WorkerStatus::Stopping, None);
        commit(&mut slot, stopping.unwrap(), "2025-01-01T00:01:00Z");
        assert_eq!(
            slot.as_ref().unwrap().last_heartbeat_at(),
            Some("2025-01-01T00:00:00Z")
        );
        let failed = slot
            .as_ref()
            .unwrap()
            .decide_status(&owner(), WorkerStatus::Failed, None);
        commit(&mut slot, failed.unwrap(), "2025-01-01T00:02:00Z");
        assert_eq!(
            slot.as_ref().unwrap().last_heartbeat_at(),
            Some("2025-01-01T00:02:00Z")
        );
    }

    #[test]
    fn reregistering_a_live_worker_keeps_its_status_and_life() {
        let mut slot = registered();
        let stopping = slot
            .as_ref()
            .unwrap()
            .decide_status(&owner(), WorkerStatus::Stopping, None);
        commit(&mut slot, stopping.unwrap(), "2025-01-01T00:01:00Z");
        let event = decide_register(slot.as_ref(), registration(json!({}))).unwrap();
        commit(&mut slot, event, "2025-01-01T00:02:00Z");
        let worker = slot.unwrap();
        assert_eq!(worker.status(), WorkerStatus::Stopping);
        assert_eq!(worker.started_at(), "2025-01-01T00:00:00Z");
    }

    #[test]
    fn other_owners_are_refused_on_every_command() {
        let slot = registered();
        let worker = slot.as_ref().unwrap();
        let stranger = Owner::GuestScope("7".into());
        let mut foreign = registration(json!({}));
        foreign.owner = stranger.clone();
        let refusals = [
            decide_register(Some(worker), foreign),
            worker.decide_heartbeat(&stranger, Map::new()),
            worker.decide_status(&stranger, WorkerStatus::Stopped, None),
        ];
        for refusal in refusals {
            let error = refusal.unwrap_err();
            assert_eq!(error.reason_code(), Some("owner_mismatch"));
        }
        assert!(worker.is_owned_by(&owner()));
    }

    #[test]
    fn invalid_transitions_carry_the_contract_reason_code() {
        let worker = registered().unwrap();
        let error = worker
            .decide_status(&owner(), WorkerStatus::Starting, None)
            .unwrap_err();
        assert_eq!(error.reason_code(), Some("invalid_transition"));
    }

    #[test]
    fn bad_ids_and_oversized_metadata_are_refused() {
        let mut bad = registration(json!({}));
        bad.worker_id = "a b".into();
        assert!(matches!(
            decide_register(None, bad),
            Err(WorkerError::InvalidWorkerId(WorkerIdError::Whitespace))
        ));
        let too_many: Map<String, Value> = (0..=MAX_METADATA_KEYS)
            .map(|i| (format!("k{i}"), json!(i)))
            .collect();
        let worker = registered().unwrap();
        assert_eq!(
            worker.decide_heartbeat(&owner(), too_many),
            Err(WorkerError::MetadataTooLarge {
                keys: MAX_METADATA_KEYS + 2
            })
        );
    }

    #[test]
    fn the_fold_refuses_records_that_break_the_rules() {
        let record = |seq, event| LifecycleEvent {
            seq,
            recorded_at: "2025-01-01T00:00:00Z".into(),
            event,
        };
        let heartbeat = WorkerEvent::Heartbeat(Heartbeat::default());
        let started = WorkerEvent::Started(registration(json!({})));
        let mut empty = None;
        assert_eq!(
            WorkerState::apply(&mut empty, &record(1, heartbeat.clone())),
            Err(ApplyError::NotRegistered(LifecycleEventType::Heartbeat))
        );
        assert_eq!(
            WorkerState::apply(&mut empty, &record(2, started.clone())),
            Err(ApplyError::OutOfOrder {
                expected: 1,
                actual: 2
            })
        );
        assert_eq!(empty, None);

        let mut slot = registered();
        let before = slot.clone();
        assert_eq!(
            WorkerState::apply(&mut slot, &record(3, heartbeat)),
            Err(ApplyError::OutOfOrder {
                expected: 2,
                actual: 3
            })
        );
        let mut other = registration(json!({}));
        other.worker_id = "w-2".into();
        assert!(matches!(
            WorkerState::apply(&mut slot, &record(2, WorkerEvent::Started(other))),
            Err(ApplyError::WorkerIdMismatch { .. })
        ));
        let mut foreign = registration(json!({}));
        foreign.owner = Owner::User(8);
        assert!(matches!(
            WorkerState::apply(&mut slot, &record(2, WorkerEvent::Started(foreign))),
            Err(ApplyError::OwnerMismatch(_))
        ));
        let starting = WorkerEvent::StatusChanged(StatusChange {
            status: WorkerStatus::Starting,
            reason: None,
        });
        assert!(matches!(
            WorkerState::apply(&mut slot, &record(2, starting)),
            Err(ApplyError::InvalidTransition(_))
        ));
        assert_eq!(slot, before);
    }

    /// A command a client might send, owner included.
    #[derive(Debug, Clone)]
    enum Command {
        Register {
            owner: u64,
            metadata: Map<String, Value>,
        },
        Heartbeat {
            owner: u64,
            patch: Map<String, Value>,
        },
        Status {
            owner: u64,
            status: WorkerStatus,
        },
    }

    fn arb_command() -> impl Strategy<Value = Command> {
        let map = prop::collection::btree_map(
            "[a-c]",
            prop_oneof![Just(Value::Null), any::<u8>().prop_map(Value::from)],
            0..3,
        )
        .prop_map(|m| m.into_iter().collect::<Map<String, Value>>());
        let owner = 0u64..2;
        let status = prop::sample::select(WorkerStatus::ALL.to_vec());
        prop_oneof![
            (owner.clone(), map.clone())
                .prop_map(|(owner, metadata)| Command::Register { owner, metadata }),
            (owner.clone(), map).prop_map(|(owner, patch)| Command::Heartbeat { owner, patch }),
            (owner, status).prop_map(|(owner, status)| Command::Status { owner, status }),
        ]
    }

    fn decide(slot: &Option<WorkerState>, command: Command) -> Result<WorkerEvent, WorkerError> {
        match (slot, command) {
            (_, Command::Register { owner, metadata }) => {
                let mut registration = registration(Value::Object(metadata));
                registration.owner = Owner::User(owner);
                decide_register(slot.as_ref(), registration)
            }
            (Some(worker), Command::Heartbeat { owner, patch }) => {
                worker.decide_heartbeat(&Owner::User(owner), patch)
            }
            (Some(worker), Command::Status { owner, status }) => {
                worker.decide_status(&Owner::User(owner), status, Some("test".into()))
            }
            (None, _) => Err(WorkerError::OwnerMismatch {
                worker_id: "w-1".into(),
            }),
        }
    }

    proptest! {
        #[test]
        fn replaying_the_stored_records_rebuilds_the_served_worker(
            commands in prop::collection::vec(arb_command(), 1..40),
        ) {
            let mut live = None;
            let mut stored = Vec::new();
            for (index, command) in commands.into_iter().enumerate() {
                let Ok(event) = decide(&live, command) else { continue };
                let at = format!("2025-01-01T00:00:{:02}Z", index);
                let record = commit(&mut live, event, &at);
                // What the log holds: the event type and payload as JSON.
                stored.push((record.seq, record.recorded_at, record.event.event_type().as_str(), record.event.payload()));
            }
            let reread: Vec<LifecycleEvent> = stored
                .into_iter()
                .map(|(seq, recorded_at, event_type, payload)| LifecycleEvent {
                    seq,
                    recorded_at,
                    event: WorkerEvent::from_record(event_type, payload).unwrap(),
                })
                .collect();
            let rebuilt = WorkerState::replay(&reread).unwrap();
            prop_assert_eq!(&rebuilt, &live);
            if let Some(worker) = rebuilt {
                prop_assert_eq!(worker.stopped_at().is_some(), !worker.status().is_live());
                prop_assert!(worker.metadata().values().all(|v| !v.is_null()));
            }
        }
    }
}
