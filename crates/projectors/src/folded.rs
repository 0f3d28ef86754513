//! What a summary folds, without its hash: the status, the last applied
//! seq, the count of applied events and the last event's time. The hash
//! is computed when a summary is read; the writer applies every append,
//! so the fold itself stays a few stores.

/// The fold of one run's or worker's summary; `S` is its status type.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Folded<S> {
    pub(crate) status: S,
    pub(crate) last_seq: u64,
    pub(crate) event_count: u64,
    pub(crate) updated_at: String,
}

impl<S> Folded<S> {
    /// Nothing applied yet, in status `status`.
    pub(crate) fn new(status: S) -> Self {
        Folded {
            status,
            last_seq: 0,
            event_count: 0,
            updated_at: String::new(),
        }
    }

    /// Counts one more applied event, `seq` recorded at `recorded_at`.
    pub(crate) fn count(&mut self, seq: u64, recorded_at: &str) {
        self.last_seq = seq;
        self.event_count += 1;
        self.updated_at.clear();
        self.updated_at.push_str(recorded_at);
    }
}
