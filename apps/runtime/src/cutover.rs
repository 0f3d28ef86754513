//! The cutover status: who may write, and the last shadow parity gate the
//! service knows of (the report the harness recorded at
//! `RUNTIME_PARITY_REPORT_PATH`, read when asked so a new recording shows up
//! without a restart).

use crate::config::Config;
use openagents_shadow::ParityReport;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// `GET /internal/v1/cutover/status`.
#[derive(Debug, Serialize)]
pub(crate) struct CutoverStatus {
    authority_write_mode: &'static str,
    legacy_write_freeze: bool,
    authority_writer_active: bool,
    parity_gate: Option<ParityGate>,
}

/// The recorded parity verdict, or why it could not be read.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum ParityGate {
    /// The report's verdict.
    Recorded {
        /// Where it was read from.
        report_path: PathBuf,
        /// The report itself: schema, diffs, totals and gate.
        report: Box<ParityReport>,
    },
    /// A report path is configured but the file is missing or unreadable.
    Unreadable {
        /// Where it was looked for.
        report_path: PathBuf,
        /// What went wrong.
        error: String,
    },
}

impl CutoverStatus {
    /// The status now.
    pub(crate) fn now(config: &Config, writer_active: bool) -> Self {
        CutoverStatus {
            authority_write_mode: config.authority_write_mode.as_str(),
            legacy_write_freeze: config.legacy_write_freeze,
            authority_writer_active: writer_active,
            parity_gate: config.parity_report_path.as_deref().map(read_gate),
        }
    }
}

fn read_gate(path: &Path) -> ParityGate {
    let unreadable = |error: String| ParityGate::Unreadable {
        report_path: path.to_owned(),
        error,
    };
    match std::fs::read(path) {
        Err(error) => unreadable(error.to_string()),
        Ok(bytes) => match serde_json::from_slice::<ParityReport>(&bytes) {
            Ok(report) => ParityGate::Recorded {
                report_path: path.to_owned(),
                report: Box::new(report),
            },
            Err(error) => unreadable(format!("not a parity report: {error}")),
        },
    }
}
