//! Projections of the runtime's event streams: checkpoints, run and worker
//! summaries, drift reports, and the snapshot that carries them across
//! restarts.
//!
//! This crate owns, each in one place:
//!
//! - the checkpoint rule ([`advance`]): older seqs are no-ops, the next seq
//!   applies, a gap applies and yields a [`DriftReport`],
//! - the run summary and its hash ([`RunProjector`], [`run_projection_hash`]),
//! - the worker summary and its hash ([`WorkerProjector`]),
//! - the snapshot of all of them ([`ProjectionSnapshot`]) and the checks
//!   that rebuild projections from one ([`Projections::from_snapshot`]).
//!
//! It does no I/O, reads no clock and holds no global state: every time it
//! records is an event's `recorded_at`, so the same events always give the
//! same projections and the same bytes. Topic names are spelled by
//! `openagents_authority` (the one home of that grammar); run and worker ids
//! stay strings here, because shadow exports of another runtime carry ids
//! this service did not issue.

mod checkpoint;
mod folded;
mod run;
mod snapshot;
mod store;
#[cfg(test)]
mod test_support;
mod worker;

pub use checkpoint::{Checkpoint, DriftReason, DriftReport, Incoming, Step, advance};
pub use run::{RunApplied, RunProjector, RunSummary, run_projection_hash};
pub use snapshot::{ProjectionSnapshot, SnapshotError};
pub use store::Projections;
pub use worker::{WorkerProjector, WorkerSummary, worker_projection_hash};
