//! The Khala fanout seam and its bounded window driver.
//!
//! A driver holds the retained window of each topic it serves. The service
//! publishes into it from the log's commit observer, on the writer thread, in
//! log order, so a topic's messages arrive in sequence order without gaps
//! whatever the write concurrency. A topic the driver does not hold is
//! rebuilt from the durable log when it is polled, so the window is always
//! the newest `capacity` messages of the log, before and after a restart.
//! Memory is bounded by bytes as well: each window holds only the newest of
//! its messages that fit `RUNTIME_FANOUT_WINDOW_MAX_BYTES`, and all windows
//! together `RUNTIME_FANOUT_MAX_TOTAL_BYTES`; a poll that reaches below the
//! held messages is answered from the log (`Polled::FromLog`).
//!
//! The same windows serve both backends; what differs is where the log's
//! records come from. On the embedded log (`memory`) they are this
//! instance's own commits. On PostgreSQL (`postgres_notify`) they are every
//! instance's commits, read from the `events` table in log order whenever a
//! `NOTIFY` on the log head wakes this instance, so a long-poll here wakes
//! for an append made through another instance.
//!
//! Publishing is idempotent and gap-safe: a message the window already holds
//! is skipped, and a message beyond the window's head drops the window, so
//! the next poll backfills it from the log instead of serving a gap.

use crate::config::FanoutDriverKind;
use openagents_khala::message::Message;
use openagents_khala::poll::{Limit, Polled, StaleCursor};
use openagents_khala::topic::Topic;
use openagents_khala::window::{WindowError, WindowSet};
use serde::Serialize;
use std::num::NonZeroUsize;
use std::sync::Mutex;

/// An external delivery backend and whether this service is set up for it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Hook {
    /// Backend name.
    pub(crate) backend: &'static str,
    /// `configured` or `not_configured`.
    pub(crate) status: &'static str,
    /// What it would take.
    pub(crate) note: &'static str,
}

/// Where Khala windows live.
pub(crate) trait FanoutDriver: Send + Sync {
    /// The driver's name, as `/healthz` and poll responses report it.
    fn name(&self) -> &'static str;
    /// Whether the driver currently holds the topic's window.
    fn holds(&self, topic: &Topic) -> bool;
    /// Publishes the next message of a held topic (ignored when not held).
    fn publish(&self, topic: &Topic, message: Message) -> Result<(), WindowError>;
    /// Reads a page of a held topic, its messages within `max_bytes` after
    /// the first; `None` when the topic is not held.
    fn poll(
        &self,
        topic: &Topic,
        after_seq: u64,
        limit: Limit,
        max_bytes: usize,
    ) -> Option<Result<Polled, StaleCursor>>;
    /// Installs the window of a topic whose head is `head` from its newest
    /// messages, oldest first (as many as fit its byte budget).
    fn restore(&self, topic: Topic, head: u64, newest: Vec<Message>) -> Result<(), WindowError>;
    /// Most bytes of messages one window holds.
    fn max_window_bytes(&self) -> usize;
    /// Drops a topic's window, so the next poll rebuilds it from the log.
    fn forget(&self, topic: &Topic);
    /// The external drivers and their status.
    fn hooks(&self) -> Vec<Hook>;
}

/// Windows in this process's memory: at most `max_topics` topics of at most
/// `capacity` messages each, within their byte budgets, least recently
/// polled topics dropped first.
pub(crate) struct WindowFanout {
    kind: FanoutDriverKind,
    windows: Mutex<WindowSet>,
}

impl WindowFanout {
    /// A driver keeping `capacity` messages per topic for `max_topics`
    /// topics, at most `window_bytes` of them per topic and `total_bytes`
    /// in all.
    pub(crate) fn new(
        kind: FanoutDriverKind,
        capacity: NonZeroUsize,
        max_topics: NonZeroUsize,
        window_bytes: usize,
        total_bytes: usize,
    ) -> Self {
        WindowFanout {
            kind,
            windows: Mutex::new(WindowSet::new(
                capacity,
                max_topics,
                window_bytes,
                total_bytes,
            )),
        }
    }

    fn windows(&self) -> std::sync::MutexGuard<'_, WindowSet> {
        self.windows.lock().expect("fanout lock poisoned")
    }
}

impl FanoutDriver for WindowFanout {
    fn name(&self) -> &'static str {
        self.kind.as_str()
    }

    fn holds(&self, topic: &Topic) -> bool {
        self.windows().contains(topic)
    }

    fn publish(&self, topic: &Topic, message: Message) -> Result<(), WindowError> {
        let mut windows = self.windows();
        match windows.publish(message) {
            Err(WindowError::Gap { head, sequence, .. }) => {
                tracing::debug!(%topic, head, sequence, "window fell behind the log; it will be rebuilt");
                windows.remove(topic);
                Ok(())
            }
            outcome => outcome.map(|_| ()),
        }
    }

    fn poll(
        &self,
        topic: &Topic,
        after_seq: u64,
        limit: Limit,
        max_bytes: usize,
    ) -> Option<Result<Polled, StaleCursor>> {
        self.windows()
            .get(topic)
            .map(|window| window.poll(after_seq, limit, max_bytes))
    }

    fn restore(&self, topic: Topic, head: u64, newest: Vec<Message>) -> Result<(), WindowError> {
        self.windows().restore(topic, head, newest).map(|_| ())
    }

    fn max_window_bytes(&self) -> usize {
        self.windows().max_window_bytes()
    }

    fn forget(&self, topic: &Topic) {
        self.windows().remove(topic);
    }

    fn hooks(&self) -> Vec<Hook> {
        let postgres_notify = match self.kind {
            FanoutDriverKind::PostgresNotify => Hook {
                backend: "postgres_notify",
                status: "configured",
                note: "windows follow the shared events table; NOTIFY on the log head wakes long-polls on every instance",
            },
            FanoutDriverKind::Memory => Hook {
                backend: "postgres_notify",
                status: "not_configured",
                note: "set RUNTIME_STORAGE_BACKEND=postgres and RUNTIME_DATABASE_URL to share delivery between instances",
            },
        };
        vec![
            Hook {
                backend: "nats",
                status: "not_configured",
                note: "no NATS driver is built into this service",
            },
            Hook {
                backend: "redis",
                status: "not_configured",
                note: "no Redis Streams driver is built into this service",
            },
            postgres_notify,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openagents_khala::poll::Limit;
    use serde_json::json;

    fn message(topic: &Topic, sequence: u64) -> Message {
        Message {
            topic: topic.to_string(),
            sequence,
            kind: "note".into(),
            payload: json!({"n": sequence}),
            published_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    fn sequences(driver: &WindowFanout, topic: &Topic) -> Option<Vec<u64>> {
        let page = driver
            .poll(topic, 0, Limit::DEFAULT, usize::MAX)?
            .ok()?
            .into_page()?;
        Some(page.messages().iter().map(|m| m.sequence).collect())
    }

    #[test]
    fn publishing_skips_what_is_held_and_drops_a_window_that_would_gap() {
        let driver = WindowFanout::new(
            FanoutDriverKind::PostgresNotify,
            NonZeroUsize::new(8).unwrap(),
            NonZeroUsize::new(2).unwrap(),
            1 << 20,
            1 << 20,
        );
        let topic: Topic = "worker:w1:lifecycle".parse().unwrap();
        driver
            .restore(
                topic.clone(),
                2,
                vec![message(&topic, 1), message(&topic, 2)],
            )
            .unwrap();
        // A second publisher repeating what the window holds changes nothing.
        driver.publish(&topic, message(&topic, 2)).unwrap();
        driver.publish(&topic, message(&topic, 3)).unwrap();
        assert_eq!(sequences(&driver, &topic), Some(vec![1, 2, 3]));
        // A message past a gap drops the window: the next poll rebuilds it
        // from the log instead of serving the gap.
        driver.publish(&topic, message(&topic, 5)).unwrap();
        assert!(!driver.holds(&topic));
        assert_eq!(sequences(&driver, &topic), None);
    }
}
