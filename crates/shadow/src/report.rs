//! The parity report `openagents.runtime.shadow_parity.v1` and the gate
//! policy that turns its differences into a cutover decision.
//!
//! The report is deterministic: the same two exports and the same policy
//! always give the same bytes. It holds no wall-clock time unless the caller
//! passes one ([`ParityReport::with_generated_at`]).

use crate::compare::{Comparison, Diff, Severity, compare};
use crate::error::LoadError;
use crate::export::RunExport;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Value of the report's `schema` field.
pub const PARITY_REPORT_SCHEMA: &str = "openagents.runtime.shadow_parity.v1";

/// When differences block cutover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatePolicy {
    /// How many warnings are tolerated; one more blocks.
    pub max_warnings: u64,
    /// Whether any critical difference blocks. Turning it off is meant for
    /// rehearsals only; the report still lists the critical differences.
    pub block_on_critical: bool,
}

impl Default for GatePolicy {
    /// The strict policy: no warning tolerated, critical differences block.
    fn default() -> Self {
        Self {
            max_warnings: 0,
            block_on_critical: true,
        }
    }
}

/// The gate's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Cutover may proceed.
    Allow,
    /// Cutover must not proceed.
    Block,
}

impl Decision {
    /// `allow` or `block`, as in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Block => "block",
        }
    }
}

/// The verdict and a sentence saying why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gate {
    /// The verdict.
    pub decision: Decision,
    /// One sentence naming the differences that decided it.
    pub reason: String,
}

/// Counts of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Critical differences.
    pub critical: u64,
    /// Warning differences.
    pub warning: u64,
    /// Fields compared, whether they differ or not.
    pub compared_fields: u64,
}

/// A parity report, fields in wire order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParityReport {
    /// Always [`PARITY_REPORT_SCHEMA`].
    pub schema: String,
    /// When the report was made, only if the caller said so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated_at: Option<String>,
    /// The legacy export's manifest path, as given.
    pub legacy_manifest: String,
    /// The Rust export's manifest path, as given.
    pub rust_manifest: String,
    /// Every difference, in [`crate::Field::ALL`] order.
    pub diffs: Vec<Diff>,
    /// Counts of `diffs`.
    pub totals: Totals,
    /// The verdict of the policy.
    pub gate: Gate,
}

/// Loads both exports, compares them and applies `policy`.
///
/// The manifest paths are recorded in the report as given, so that the
/// report does not depend on the working directory's absolute location.
pub fn check_parity(
    legacy_manifest: &Path,
    rust_manifest: &Path,
    policy: GatePolicy,
) -> Result<ParityReport, LoadError> {
    let legacy = RunExport::load(legacy_manifest)?;
    let rust = RunExport::load(rust_manifest)?;
    Ok(ParityReport::new(
        legacy_manifest.display().to_string(),
        rust_manifest.display().to_string(),
        compare(&legacy, &rust),
        policy,
    ))
}

impl ParityReport {
    /// The report of `comparison` between the exports of the two manifests.
    pub fn new(
        legacy_manifest: String,
        rust_manifest: String,
        comparison: Comparison,
        policy: GatePolicy,
    ) -> Self {
        let Comparison {
            diffs,
            compared_fields,
        } = comparison;
        let count = |severity| diffs.iter().filter(|d| d.severity == severity).count() as u64;
        let totals = Totals {
            critical: count(Severity::Critical),
            warning: count(Severity::Warning),
            compared_fields,
        };
        let gate = decide(&diffs, compared_fields, policy);
        Self {
            schema: PARITY_REPORT_SCHEMA.to_owned(),
            generated_at: None,
            legacy_manifest,
            rust_manifest,
            diffs,
            totals,
            gate,
        }
    }

    /// The same report, stamped with `generated_at` (RFC 3339 UTC expected).
    pub fn with_generated_at(mut self, generated_at: String) -> Self {
        self.generated_at = Some(generated_at);
        self
    }

    /// The report as written to disk: pretty JSON and a final newline, since
    /// people review it.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self)
            .expect("a report holds only strings, numbers and JSON values");
        bytes.push(b'\n');
        bytes
    }
}

/// Applies the gate policy to `diffs`: block on any critical difference when
/// `block_on_critical`, block on more than `max_warnings` warnings, else allow.
fn decide(diffs: &[Diff], compared_fields: u64, policy: GatePolicy) -> Gate {
    let critical = names_of(diffs, Severity::Critical);
    let warnings = names_of(diffs, Severity::Warning);
    let warnings_text = || {
        format!(
            "{} ({})",
            counted(warnings.len(), "warning", "warnings"),
            warnings.join(", ")
        )
    };
    let critical_text = || {
        format!(
            "{} ({})",
            counted(
                critical.len(),
                "critical difference",
                "critical differences"
            ),
            critical.join(", ")
        )
    };
    let critical_blocks = policy.block_on_critical && !critical.is_empty();
    let warnings_block = warnings.len() as u64 > policy.max_warnings;
    let max = policy.max_warnings;
    let mut blockers = Vec::new();
    if critical_blocks {
        blockers.push(critical_text());
    }
    if warnings_block {
        blockers.push(format!("{} over the maximum of {max}", warnings_text()));
    }
    if !blockers.is_empty() {
        return Gate {
            decision: Decision::Block,
            reason: format!("Cutover blocked: {}.", blockers.join(" and ")),
        };
    }
    let mut tolerated = Vec::new();
    if !critical.is_empty() {
        tolerated.push(format!(
            "{} ignored because block_on_critical is false",
            critical_text()
        ));
    }
    if !warnings.is_empty() {
        tolerated.push(format!("{} within the maximum of {max}", warnings_text()));
    }
    let reason = if tolerated.is_empty() {
        format!("Cutover allowed: all {compared_fields} compared fields match.")
    } else {
        format!("Cutover allowed: {}.", tolerated.join(" and "))
    };
    Gate {
        decision: Decision::Allow,
        reason,
    }
}

/// Names of the fields of `diffs` with `severity`, in report order.
fn names_of(diffs: &[Diff], severity: Severity) -> Vec<&'static str> {
    diffs
        .iter()
        .filter(|diff| diff.severity == severity)
        .map(|diff| diff.field.name())
        .collect()
}

/// `1 warning`, `2 warnings`.
fn counted(count: usize, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::Field;
    use crate::compare::tests::perturb;
    use crate::test_support::{sample_export, write_export};

    const WARNINGS: [Field; 3] = [
        Field::ReplayHash,
        Field::SummaryEventCount,
        Field::CheckpointLastEventType,
    ];

    fn report_with(fields: &[Field], policy: GatePolicy) -> ParityReport {
        let mut rust = sample_export();
        for &field in fields {
            perturb(&mut rust, field);
        }
        let comparison = compare(&sample_export(), &rust);
        ParityReport::new("legacy".into(), "rust".into(), comparison, policy)
    }

    fn decision(fields: &[Field], policy: GatePolicy) -> Decision {
        report_with(fields, policy).gate.decision
    }

    #[test]
    fn each_field_flips_the_gate_as_its_severity_says() {
        use Decision::{Allow, Block};
        use Severity::{Critical, Warning};
        let table = [
            (Field::ReceiptSessionId, Critical),
            (Field::SummaryRunId, Critical),
            (Field::ReplaySessionId, Critical),
            (Field::ReceiptTrajectoryHash, Critical),
            (Field::SummaryStatus, Critical),
            (Field::SummaryLastSeq, Critical),
            (Field::CheckpointLastSeq, Critical),
            (Field::ReplayHash, Warning),
            (Field::ReplayEventCount, Warning),
            (Field::ReceiptEventCount, Warning),
            (Field::ReceiptLastSeq, Warning),
            (Field::SummaryEventCount, Warning),
            (Field::SummaryProjectionHash, Warning),
            (Field::CheckpointLastEventType, Warning),
            (Field::ReceiptCanonicalJsonSha256, Warning),
        ];
        assert_eq!(table.len(), Field::ALL.len());
        let strict = GatePolicy::default();
        let one_warning = GatePolicy {
            max_warnings: 1,
            ..strict
        };
        let lenient = GatePolicy {
            max_warnings: 1,
            block_on_critical: false,
        };
        for (field, severity) in table {
            assert_eq!(field.severity(), severity, "{}", field.name());
            let expected = match severity {
                Critical => [Block, Block, Allow],
                Warning => [Block, Allow, Allow],
            };
            let found = [strict, one_warning, lenient].map(|policy| decision(&[field], policy));
            assert_eq!(found, expected, "{}", field.name());
        }
    }

    #[test]
    fn max_warnings_is_inclusive() {
        let policy = GatePolicy {
            max_warnings: 2,
            block_on_critical: true,
        };
        assert_eq!(decision(&WARNINGS[..1], policy), Decision::Allow);
        assert_eq!(decision(&WARNINGS[..2], policy), Decision::Allow);
        assert_eq!(decision(&WARNINGS[..3], policy), Decision::Block);
        let strict = GatePolicy::default();
        assert_eq!(decision(&[], strict), Decision::Allow);
        assert_eq!(decision(&WARNINGS[..1], strict), Decision::Block);
    }

    #[test]
    fn totals_count_each_severity() {
        let report = report_with(
            &[
                Field::SummaryStatus,
                Field::ReplayHash,
                Field::ReceiptLastSeq,
            ],
            GatePolicy::default(),
        );
        assert_eq!(
            report.totals,
            Totals {
                critical: 1,
                warning: 2,
                compared_fields: 15
            }
        );
    }

    #[test]
    fn reasons_name_what_decided() {
        let clean = report_with(&[], GatePolicy::default());
        assert_eq!(
            clean.gate.reason,
            "Cutover allowed: all 15 compared fields match."
        );
        let both = report_with(
            &[
                Field::SummaryStatus,
                Field::ReplayHash,
                Field::ReceiptLastSeq,
            ],
            GatePolicy {
                max_warnings: 1,
                block_on_critical: true,
            },
        );
        assert_eq!(
            both.gate.reason,
            "Cutover blocked: 1 critical difference (summary.status) and 2 warnings \
             (replay.hash, receipt.last_seq) over the maximum of 1."
        );
        let tolerated = report_with(
            &[Field::SummaryStatus, Field::ReplayHash],
            GatePolicy {
                max_warnings: 1,
                block_on_critical: false,
            },
        );
        assert_eq!(
            tolerated.gate.reason,
            "Cutover allowed: 1 critical difference (summary.status) ignored because \
             block_on_critical is false and 1 warning (replay.hash) within the maximum of 1."
        );
    }

    #[test]
    fn the_report_is_deterministic_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = write_export(dir.path());
        let first = check_parity(&manifest, &manifest, GatePolicy::default()).unwrap();
        let second = check_parity(&manifest, &manifest, GatePolicy::default()).unwrap();
        assert_eq!(first.to_json_bytes(), second.to_json_bytes());
        let value: serde_json::Value = serde_json::from_slice(&first.to_json_bytes()).unwrap();
        assert_eq!(value["schema"], PARITY_REPORT_SCHEMA);
        assert!(value.get("generated_at").is_none());
        assert_eq!(value["gate"]["decision"], "allow");
        let stamped = first.with_generated_at("2026-01-02T03:04:05Z".into());
        let parsed: ParityReport = serde_json::from_slice(&stamped.to_json_bytes()).unwrap();
        assert_eq!(parsed, stamped);
    }

    #[test]
    fn an_unreadable_side_is_an_error_not_a_report() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = write_export(dir.path());
        let missing = dir.path().join("missing.json");
        let error = check_parity(&manifest, &missing, GatePolicy::default()).unwrap_err();
        assert!(error.to_string().contains("missing.json"), "{error}");
    }
}
