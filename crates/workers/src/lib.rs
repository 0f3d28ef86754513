//! Worker lifecycle rules of the runtime contract, as pure functions.
//!
//! This crate owns, each in one place:
//!
//! - the worker status table ([`WorkerStatus::transition`]),
//! - the lifecycle event types and their payloads ([`LifecycleEventType`],
//!   [`WorkerEvent`]),
//! - the owner rules ([`Owner::from_request`], [`Owner::matches`]),
//! - worker id validation and the issued id format ([`validate_worker_id`],
//!   [`generated_worker_id`], the validated [`WorkerId`]),
//! - heartbeat liveness ([`liveness`]),
//! - the metadata merge ([`merge_metadata`]),
//! - the fold that builds a worker from its lifecycle events
//!   ([`WorkerState`]).
//!
//! It does no I/O, reads no clock and holds no global state: time comes in as
//! parameters, and the service decides, appends and applies.

mod events;
mod id;
mod liveness;
mod metadata;
mod owner;
mod state;
mod status;

pub use events::{
    Heartbeat, LifecycleEvent, LifecycleEventType, PayloadError, Registration, StatusChange,
    WorkerEvent,
};
pub use id::{
    GENERATED_WORKER_ID_PREFIX, MAX_WORKER_ID_CHARS, WorkerId, WorkerIdError, generated_worker_id,
    validate_worker_id,
};
pub use liveness::{HeartbeatState, Liveness, liveness};
pub use metadata::{MAX_METADATA_KEYS, merge_metadata, merged_key_count};
pub use owner::{MAX_GUEST_SCOPE_CHARS, Owner, OwnerError};
pub use state::{ApplyError, WorkerError, WorkerState, decide_register};
pub use status::{TransitionError, UnknownStatus, WorkerStatus};
