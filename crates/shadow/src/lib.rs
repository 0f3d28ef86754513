//! Shadow-mode parity harness: compares what the legacy runtime and the Rust
//! runtime published for the same run, and decides whether cutover may go on.
//!
//! One side of a comparison is a *run export*: a manifest
//! ([`MANIFEST_FILE_NAME`]) naming four artifacts of one run, the receipt,
//! the replay, the run summary and the run checkpoint. [`RunExport::load`]
//! reads the facts the comparison needs, [`compare`] lists the fields on
//! which two exports disagree with their [`Severity`], and [`ParityReport`]
//! (`openagents.runtime.shadow_parity.v1`) applies a [`GatePolicy`] to them.
//! [`check_parity`] does all three. [`ExportFiles`] writes an export folder,
//! from fetched bytes or from a run's events.
//!
//! The `runtime-shadow-harness` binary of this package is the command line
//! around it; `docs/SHADOW_PARITY.md` is its runbook.
//!
//! The library runs no server, starts no runtime, reads no environment and
//! no clock: the same files and policy always give the same report.

mod compare;
mod error;
mod export;
mod files;
mod json;
mod manifest;
mod report;
#[cfg(test)]
mod test_support;

pub use compare::{Comparison, Diff, Field, Severity, compare};
pub use error::LoadError;
pub use export::RunExport;
pub use files::{ExportFiles, RunLogError, WriteError};
pub use manifest::MANIFEST_FILE_NAME;
pub use report::{
    Decision, Gate, GatePolicy, PARITY_REPORT_SCHEMA, ParityReport, Totals, check_parity,
};
