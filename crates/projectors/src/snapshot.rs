//! The projection snapshot: every checkpoint, summary and drift report, as
//! one value that serializes with serde. The service stores it as the
//! extension of the event log's index snapshot, which frames and checksums
//! it; [`crate::Projections::from_snapshot`] checks that its entries agree.

use crate::checkpoint::{Checkpoint, DriftReport};
use crate::run::RunSummary;
use crate::worker::WorkerSummary;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// All projection state, keyed by topic. `BTreeMap`s keep the encoding
/// byte-identical for the same state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectionSnapshot {
    /// Every topic's checkpoint.
    pub checkpoints: BTreeMap<String, Checkpoint>,
    /// Run summaries, keyed by `run:{run_id}:events`.
    pub run_summaries: BTreeMap<String, RunSummary>,
    /// Worker summaries, keyed by `worker:{worker_id}:lifecycle`.
    pub worker_summaries: BTreeMap<String, WorkerSummary>,
    /// The latest drift report of each topic that has seen a gap.
    pub drift_reports: BTreeMap<String, DriftReport>,
}

/// Why a snapshot cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// Entries that cannot all be true at once.
    #[error("projection snapshot entry {topic}: {problem}")]
    Inconsistent {
        /// The topic whose entries disagree.
        topic: String,
        /// What disagrees.
        problem: &'static str,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Projections;
    use crate::test_support::run_stream;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_projection_state_round_trips_through_serde(
            runs in prop::collection::vec((0u8..4, prop::collection::vec(1u64..10, 0..12)), 0..6),
        ) {
            let mut projections = Projections::new();
            for (run, seqs) in &runs {
                let run_id = format!("r-{run}");
                for seq in seqs {
                    projections.apply_run_event(&run_id, &run_stream(*seq)[*seq as usize - 1]);
                }
            }
            let bytes = serde_json::to_vec(&projections.snapshot()).unwrap();
            let decoded: ProjectionSnapshot = serde_json::from_slice(&bytes).unwrap();
            prop_assert_eq!(serde_json::to_vec(&decoded).unwrap(), bytes);
            prop_assert_eq!(Projections::from_snapshot(decoded).unwrap(), projections);
        }
    }
}
