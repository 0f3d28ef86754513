//! The field-by-field comparison of two exports, and the severity of each
//! field. The severity table ([`Field::severity`]) is the harness's policy on
//! what may differ during shadow mode; it lives here and nowhere else.

use crate::export::RunExport;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How much a difference in one field matters for cutover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The two runtimes disagree on what happened: a different run, a
    /// different history or a different outcome. Blocks cutover unless the
    /// policy says otherwise.
    Critical,
    /// The runtimes agree on what happened but not on how it is recorded or
    /// counted. Tolerated up to the policy's maximum.
    Warning,
}

/// A compared field, named in reports as `<artifact>.<field>`
/// ([`Field::name`], the one spelling both for writing and reading reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "&'static str", try_from = "String")]
pub enum Field {
    /// The receipt's `session_id` (the run id).
    ReceiptSessionId,
    /// The summary's `run_id`.
    SummaryRunId,
    /// The replay's `session_id` (from its SessionStart line).
    ReplaySessionId,
    /// The receipt's `trajectory_hash`: the whole event history.
    ReceiptTrajectoryHash,
    /// The summary's `status`: the projected outcome.
    SummaryStatus,
    /// The summary's `last_seq`.
    SummaryLastSeq,
    /// The checkpoint's `last_seq`.
    CheckpointLastSeq,
    /// `sha256:` of the replay file's bytes.
    ReplayHash,
    /// How many RuntimeEvent lines the replay has.
    ReplayEventCount,
    /// The receipt's `event_count`.
    ReceiptEventCount,
    /// The receipt's `last_seq`.
    ReceiptLastSeq,
    /// The summary's `event_count`.
    SummaryEventCount,
    /// The summary's `projection_hash`.
    SummaryProjectionHash,
    /// The checkpoint's `last_event_type`.
    CheckpointLastEventType,
    /// The receipt's `canonical_json_sha256`, compared only when both
    /// receipts carry it (receipts older than the field do not).
    ReceiptCanonicalJsonSha256,
}

impl Field {
    /// Every compared field, in the order reports list differences.
    pub const ALL: [Field; 15] = [
        Field::ReceiptSessionId,
        Field::SummaryRunId,
        Field::ReplaySessionId,
        Field::ReceiptTrajectoryHash,
        Field::SummaryStatus,
        Field::SummaryLastSeq,
        Field::CheckpointLastSeq,
        Field::ReplayHash,
        Field::ReplayEventCount,
        Field::ReceiptEventCount,
        Field::ReceiptLastSeq,
        Field::SummaryEventCount,
        Field::SummaryProjectionHash,
        Field::CheckpointLastEventType,
        Field::ReceiptCanonicalJsonSha256,
    ];

    /// How much a difference in this field matters.
    ///
    /// Critical: identity, history, outcome and the projection position
    /// (a projector that stopped elsewhere serves other reads). Warning:
    /// byte-level and bookkeeping differences that leave the history intact,
    /// such as replay formatting or how a projector counts events, and the
    /// receipt digest, which also covers fields a runtime may spell in its
    /// own way (`created_at`, `policy_bundle_id`, the tool-call entries)
    /// while a different history already shows as `receipt.trajectory_hash`.
    pub fn severity(self) -> Severity {
        match self {
            Field::ReceiptSessionId
            | Field::SummaryRunId
            | Field::ReplaySessionId
            | Field::ReceiptTrajectoryHash
            | Field::SummaryStatus
            | Field::SummaryLastSeq
            | Field::CheckpointLastSeq => Severity::Critical,
            Field::ReplayHash
            | Field::ReplayEventCount
            | Field::ReceiptEventCount
            | Field::ReceiptLastSeq
            | Field::SummaryEventCount
            | Field::SummaryProjectionHash
            | Field::CheckpointLastEventType
            | Field::ReceiptCanonicalJsonSha256 => Severity::Warning,
        }
    }

    /// The field's name in reports, e.g. `receipt.trajectory_hash`.
    pub fn name(self) -> &'static str {
        match self {
            Field::ReceiptSessionId => "receipt.session_id",
            Field::SummaryRunId => "summary.run_id",
            Field::ReplaySessionId => "replay.session_id",
            Field::ReceiptTrajectoryHash => "receipt.trajectory_hash",
            Field::SummaryStatus => "summary.status",
            Field::SummaryLastSeq => "summary.last_seq",
            Field::CheckpointLastSeq => "checkpoint.last_seq",
            Field::ReplayHash => "replay.hash",
            Field::ReplayEventCount => "replay.event_count",
            Field::ReceiptEventCount => "receipt.event_count",
            Field::ReceiptLastSeq => "receipt.last_seq",
            Field::SummaryEventCount => "summary.event_count",
            Field::SummaryProjectionHash => "summary.projection_hash",
            Field::CheckpointLastEventType => "checkpoint.last_event_type",
            Field::ReceiptCanonicalJsonSha256 => "receipt.canonical_json_sha256",
        }
    }

    /// This field's value in `export`, as the report shows it; `None` when
    /// the export does not record the field at all.
    fn read(self, export: &RunExport) -> Option<Value> {
        let (receipt, replay) = (&export.receipt, &export.replay);
        let (summary, checkpoint) = (&export.summary, &export.checkpoint);
        let value = match self {
            Field::ReceiptSessionId => receipt.session_id.as_str().into(),
            Field::SummaryRunId => summary.run_id.as_str().into(),
            Field::ReplaySessionId => replay.session_id.as_str().into(),
            Field::ReceiptTrajectoryHash => receipt.trajectory_hash.as_str().into(),
            Field::SummaryStatus => summary.status.as_str().into(),
            Field::SummaryLastSeq => summary.last_seq.into(),
            Field::CheckpointLastSeq => checkpoint.last_seq.into(),
            Field::ReplayHash => replay.hash.as_str().into(),
            Field::ReplayEventCount => replay.event_count.into(),
            Field::ReceiptEventCount => receipt.event_count.into(),
            Field::ReceiptLastSeq => receipt.last_seq.into(),
            Field::SummaryEventCount => summary.event_count.into(),
            Field::SummaryProjectionHash => summary.projection_hash.as_str().into(),
            Field::CheckpointLastEventType => checkpoint.last_event_type.as_str().into(),
            Field::ReceiptCanonicalJsonSha256 => {
                return receipt.canonical_json_sha256.as_deref().map(Value::from);
            }
        };
        Some(value)
    }
}

impl From<Field> for &'static str {
    fn from(field: Field) -> Self {
        field.name()
    }
}

impl TryFrom<String> for Field {
    type Error = String;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        Field::ALL
            .into_iter()
            .find(|field| field.name() == name)
            .ok_or_else(|| format!("unknown parity field {name:?}"))
    }
}

/// One field on which the two exports disagree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diff {
    /// The field.
    pub field: Field,
    /// Its severity, [`Field::severity`]; repeated in the report so that a
    /// reader needs no table.
    pub severity: Severity,
    /// The legacy runtime's value.
    pub legacy: Value,
    /// The Rust runtime's value.
    pub rust: Value,
}

/// The outcome of comparing two exports.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// The differences, in [`Field::ALL`] order.
    pub diffs: Vec<Diff>,
    /// How many fields both exports record, and so were compared.
    pub compared_fields: u64,
}

/// Compares every field of [`Field::ALL`] that both exports record and
/// returns the differences, in that order.
pub fn compare(legacy: &RunExport, rust: &RunExport) -> Comparison {
    let mut comparison = Comparison {
        diffs: Vec::new(),
        compared_fields: 0,
    };
    for field in Field::ALL {
        let (Some(legacy), Some(rust)) = (field.read(legacy), field.read(rust)) else {
            continue;
        };
        comparison.compared_fields += 1;
        if legacy != rust {
            comparison.diffs.push(Diff {
                field,
                severity: field.severity(),
                legacy,
                rust,
            });
        }
    }
    comparison
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::test_support::sample_export;

    /// Changes `field` of `export` and nothing else.
    pub(crate) fn perturb(export: &mut RunExport, field: Field) {
        let altered = "altered".to_owned();
        match field {
            Field::ReceiptSessionId => export.receipt.session_id = altered,
            Field::SummaryRunId => export.summary.run_id = altered,
            Field::ReplaySessionId => export.replay.session_id = altered,
            Field::ReceiptTrajectoryHash => export.receipt.trajectory_hash = altered,
            Field::SummaryStatus => export.summary.status = altered,
            Field::SummaryLastSeq => export.summary.last_seq += 1,
            Field::CheckpointLastSeq => export.checkpoint.last_seq += 1,
            Field::ReplayHash => export.replay.hash = altered,
            Field::ReplayEventCount => export.replay.event_count += 1,
            Field::ReceiptEventCount => export.receipt.event_count += 1,
            Field::ReceiptLastSeq => export.receipt.last_seq += 1,
            Field::SummaryEventCount => export.summary.event_count += 1,
            Field::SummaryProjectionHash => export.summary.projection_hash = altered,
            Field::CheckpointLastEventType => export.checkpoint.last_event_type = altered,
            Field::ReceiptCanonicalJsonSha256 => {
                export.receipt.canonical_json_sha256 = Some(altered);
            }
        }
    }

    #[test]
    fn equal_exports_have_no_differences() {
        let comparison = compare(&sample_export(), &sample_export());
        assert!(comparison.diffs.is_empty());
        assert_eq!(comparison.compared_fields, Field::ALL.len() as u64);
    }

    #[test]
    fn each_field_is_compared_on_its_own_with_its_severity() {
        for field in Field::ALL {
            let mut rust = sample_export();
            perturb(&mut rust, field);
            let diffs = compare(&sample_export(), &rust).diffs;
            assert_eq!(diffs.len(), 1, "{}", field.name());
            assert_eq!(diffs[0].field, field);
            assert_eq!(diffs[0].severity, field.severity());
            assert_ne!(diffs[0].legacy, diffs[0].rust);
        }
    }

    #[test]
    fn a_receipt_digest_missing_on_one_side_is_not_compared() {
        let mut legacy = sample_export();
        legacy.receipt.canonical_json_sha256 = None;
        let mut rust = sample_export();
        rust.receipt.canonical_json_sha256 = Some("other".to_owned());
        let comparison = compare(&legacy, &rust);
        assert!(comparison.diffs.is_empty());
        assert_eq!(comparison.compared_fields, Field::ALL.len() as u64 - 1);
    }

    #[test]
    fn fields_round_trip_through_their_names() {
        for field in Field::ALL {
            let value = serde_json::to_value(field).unwrap();
            assert_eq!(value, field.name());
            assert_eq!(serde_json::from_value::<Field>(value).unwrap(), field);
        }
        assert!(serde_json::from_value::<Field>("receipt.nope".into()).is_err());
    }

    #[test]
    fn a_diff_shows_both_values() {
        let mut rust = sample_export();
        rust.summary.status = "failed".to_owned();
        let diffs = compare(&sample_export(), &rust).diffs;
        assert_eq!(
            serde_json::to_value(&diffs).unwrap(),
            serde_json::json!([{"field": "summary.status", "severity": "critical", "legacy": "succeeded", "rust": "failed"}])
        );
    }
}
