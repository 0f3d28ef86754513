//! Bounded in-memory message windows: [`TopicWindow`] holds the newest
//! messages of one topic, [`WindowSet`] holds windows for a bounded number of
//! topics.
//!
//! Both are caches of the durable log, never a source of truth: a window that
//! is evicted, or never built, is rebuilt from the log on demand with
//! [`WindowSet::restore`]. Publishing and restoring must be done by one owner
//! in log order; the types are plain data and do no locking.

use crate::message::Message;
use crate::poll::{self, Limit, PollPage, StaleCursor, WindowBounds};
use crate::topic::{Topic, TopicError};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::num::NonZeroUsize;

/// The newest `capacity` messages of one topic, contiguous and in order.
///
/// Invariant: the held messages are exactly the sequences
/// `head - len + 1 ..= head`, and `len == min(head, capacity)`, which is the
/// window the poll rules ([`poll::plan`]) describe.
#[derive(Debug, Clone)]
pub struct TopicWindow {
    topic: Topic,
    /// The canonical topic name, compared with each published message's.
    name: String,
    capacity: NonZeroUsize,
    /// The newest sequence published; 0 before the first.
    head: u64,
    messages: VecDeque<Message>,
}

/// What [`TopicWindow::publish`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishOutcome {
    /// The message was the next sequence and is now the head.
    Appended,
    /// The message's sequence is at or below the head: it is already known
    /// (a redelivery), so it was skipped.
    AlreadyPresent,
}

impl TopicWindow {
    /// An empty window for a topic that has no messages yet.
    pub fn new(topic: Topic, capacity: NonZeroUsize) -> Self {
        Self {
            name: topic.to_string(),
            topic,
            capacity,
            head: 0,
            // Grows with the topic: most topics are far shorter than the
            // capacity, and thousands may be held at once.
            messages: VecDeque::new(),
        }
    }

    /// Rebuilds a window from the topic's newest messages as read from the
    /// durable log, oldest first.
    ///
    /// `tail` must reach back to the oldest retained sequence (`head -
    /// capacity + 1`, or 1); extra older messages are dropped. A shorter tail
    /// would leave a hole the poll rules do not know about, so it is refused.
    pub fn restore(
        topic: Topic,
        capacity: NonZeroUsize,
        tail: impl IntoIterator<Item = Message>,
    ) -> Result<Self, WindowError> {
        let mut tail = tail.into_iter().peekable();
        let mut window = Self::new(topic, capacity);
        // Start just below the first message so that publishing it is the
        // ordinary "next sequence" case.
        window.head = tail.peek().map_or(0, |m| m.sequence.saturating_sub(1));
        for message in tail {
            window.publish(message)?;
        }
        let expected = window.head.min(capacity.get() as u64);
        if window.messages.len() as u64 != expected {
            return Err(WindowError::IncompleteTail {
                topic: window.topic,
                head: window.head,
                held: window.messages.len(),
                expected,
            });
        }
        Ok(window)
    }

    /// The topic this window holds.
    pub fn topic(&self) -> &Topic {
        &self.topic
    }

    /// The head and capacity, as the poll rules need them.
    pub fn bounds(&self) -> WindowBounds {
        WindowBounds {
            head_cursor: self.head,
            capacity: self.capacity.get() as u64,
        }
    }

    /// Adds the next message of the topic, evicting the oldest when full.
    ///
    /// Sequences must arrive in order without gaps: one at or below the head
    /// is skipped as already present; one beyond `head + 1` is refused with
    /// [`WindowError::Gap`], and the caller must publish the missing ones
    /// first.
    pub fn publish(&mut self, message: Message) -> Result<PublishOutcome, WindowError> {
        if message.topic != self.name {
            return Err(WindowError::WrongTopic {
                expected: self.topic.clone(),
                found: message.topic,
            });
        }
        if message.sequence <= self.head {
            return Ok(PublishOutcome::AlreadyPresent);
        }
        if message.sequence != self.head + 1 {
            return Err(WindowError::Gap {
                topic: self.topic.clone(),
                head: self.head,
                sequence: message.sequence,
            });
        }
        if self.messages.len() == self.capacity.get() {
            self.messages.pop_front();
        }
        self.head = message.sequence;
        self.messages.push_back(message);
        Ok(PublishOutcome::Appended)
    }

    /// Up to `limit` held messages with a sequence above `after_seq`, in
    /// order. Does not apply the stale rule: use [`TopicWindow::poll`] to
    /// answer a client.
    pub fn read(&self, after_seq: u64, limit: usize) -> impl Iterator<Item = &Message> {
        // The sequence just before the oldest held message.
        let base = self.head - self.messages.len() as u64;
        let skip = usize::try_from(after_seq.saturating_sub(base))
            .unwrap_or(usize::MAX)
            .min(self.messages.len());
        self.messages.range(skip..).take(limit)
    }

    /// Answers a poll: applies the stale rule, then returns the planned
    /// messages with the response's cursors.
    pub fn poll(&self, after_seq: u64, limit: Limit) -> Result<PollPage, StaleCursor> {
        let plan = poll::plan(&self.topic, self.bounds(), after_seq, limit)?;
        let messages: Vec<Message> = self
            .read(after_seq, usize::from(limit.get()))
            .cloned()
            .collect();
        debug_assert!(
            messages.iter().map(|m| m.sequence).eq(plan.sequences()),
            "window of {} out of step with its poll plan",
            self.topic
        );
        Ok(PollPage::new(plan, messages))
    }
}

/// Why a window refused a message or a restore.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum WindowError {
    /// The message names another topic than the window's.
    #[error("message of topic {found:?} published to the window of {expected}")]
    WrongTopic {
        /// The window's topic.
        expected: Topic,
        /// The topic the message names.
        found: String,
    },
    /// The message skips sequences the window has not seen.
    #[error(
        "sequence gap on {topic}: head is {head} but got {sequence}; publish the missing sequences first"
    )]
    Gap {
        /// The window's topic.
        topic: Topic,
        /// The window's newest sequence.
        head: u64,
        /// The sequence that was offered.
        sequence: u64,
    },
    /// A restore was given fewer messages than the window must retain.
    #[error("restore of {topic} is incomplete: head {head} needs {expected} messages, got {held}")]
    IncompleteTail {
        /// The window's topic.
        topic: Topic,
        /// The newest sequence given.
        head: u64,
        /// How many contiguous messages ended up held.
        held: usize,
        /// How many the window must hold for that head.
        expected: u64,
    },
    /// A message published to a [`WindowSet`] names no valid topic.
    #[error("message topic is invalid: {0}")]
    InvalidTopic(#[from] TopicError),
}

/// Windows for at most `max_topics` topics, evicting the least recently used.
///
/// "Used" means polled ([`WindowSet::get`]) or restored: a topic that is only
/// written to is not worth memory until someone reads it.
#[derive(Debug)]
pub struct WindowSet {
    window_capacity: NonZeroUsize,
    max_topics: NonZeroUsize,
    windows: HashMap<Topic, Slot>,
    /// Topics by last use, oldest first; the first entry is evicted next.
    recency: BTreeMap<u64, Topic>,
    /// Source of `recency` keys; increases on every use.
    clock: u64,
}

/// A held window and the `recency` key it is filed under.
#[derive(Debug)]
struct Slot {
    window: TopicWindow,
    last_used: u64,
}

impl WindowSet {
    /// An empty set whose windows each retain `window_capacity` messages.
    pub fn new(window_capacity: NonZeroUsize, max_topics: NonZeroUsize) -> Self {
        Self {
            window_capacity,
            max_topics,
            windows: HashMap::new(),
            recency: BTreeMap::new(),
            clock: 0,
        }
    }

    /// How many messages each window retains: how many to read from the log
    /// for [`WindowSet::restore`].
    pub fn window_capacity(&self) -> NonZeroUsize {
        self.window_capacity
    }

    /// How many topics are held.
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    /// Whether no topic is held.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// Whether `topic` is held, without counting as a use.
    pub fn contains(&self, topic: &Topic) -> bool {
        self.windows.contains_key(topic)
    }

    /// The window of `topic`, marking it as used; `None` when it must be
    /// restored from the log first.
    pub fn get(&mut self, topic: &Topic) -> Option<&TopicWindow> {
        let now = self.tick();
        let slot = self.windows.get_mut(topic)?;
        self.recency.remove(&slot.last_used);
        self.recency.insert(now, topic.clone());
        slot.last_used = now;
        Some(&slot.window)
    }

    /// Builds the window of `topic` from its log tail (see
    /// [`TopicWindow::restore`]) and holds it, replacing any window already
    /// held for it. Returns the topic evicted to make room, if any.
    pub fn restore(
        &mut self,
        topic: Topic,
        tail: impl IntoIterator<Item = Message>,
    ) -> Result<Option<Topic>, WindowError> {
        let window = TopicWindow::restore(topic.clone(), self.window_capacity, tail)?;
        let evicted = if let Some(old) = self.windows.remove(&topic) {
            self.recency.remove(&old.last_used);
            None
        } else {
            self.evict_if_full()
        };
        let last_used = self.tick();
        self.recency.insert(last_used, topic.clone());
        self.windows.insert(topic, Slot { window, last_used });
        debug_assert_eq!(self.windows.len(), self.recency.len());
        debug_assert!(self.windows.len() <= self.max_topics.get());
        Ok(evicted)
    }

    /// Drops the window of `topic`, so that the next poll rebuilds it from
    /// the log. Returns whether it was held.
    pub fn remove(&mut self, topic: &Topic) -> bool {
        match self.windows.remove(topic) {
            Some(slot) => {
                self.recency.remove(&slot.last_used);
                true
            }
            None => false,
        }
    }

    /// Publishes a message to its topic's window when that window is held;
    /// `Ok(None)` when it is not, since a later restore reads it from the log.
    pub fn publish(&mut self, message: Message) -> Result<Option<PublishOutcome>, WindowError> {
        let topic: Topic = message.topic.parse()?;
        match self.windows.get_mut(&topic) {
            Some(slot) => slot.window.publish(message).map(Some),
            None => Ok(None),
        }
    }

    /// Drops the least recently used window when the set is full.
    fn evict_if_full(&mut self) -> Option<Topic> {
        if self.windows.len() < self.max_topics.get() {
            return None;
        }
        let (_, topic) = self.recency.pop_first()?;
        self.windows.remove(&topic);
        Some(topic)
    }

    /// The next recency key.
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn nz(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).unwrap()
    }

    fn worker(id: &str) -> Topic {
        format!("worker:{id}:lifecycle").parse().unwrap()
    }

    fn message(topic: &Topic, sequence: u64) -> Message {
        Message {
            topic: topic.to_string(),
            sequence,
            kind: "worker.heartbeat".into(),
            payload: json!({ "n": sequence }),
            published_at: "2025-01-01T00:00:00Z".into(),
        }
    }

    fn tail(topic: &Topic, seqs: std::ops::RangeInclusive<u64>) -> Vec<Message> {
        seqs.map(|seq| message(topic, seq)).collect()
    }

    #[test]
    fn refuses_other_topics_and_gaps() {
        let topic = worker("a");
        let mut window = TopicWindow::new(topic.clone(), nz(4));
        assert!(matches!(
            window.publish(message(&worker("b"), 1)),
            Err(WindowError::WrongTopic { .. })
        ));
        assert_eq!(
            window.publish(message(&topic, 2)),
            Err(WindowError::Gap {
                topic: topic.clone(),
                head: 0,
                sequence: 2
            })
        );
        assert_eq!(
            window.publish(message(&topic, 1)),
            Ok(PublishOutcome::Appended)
        );
        assert_eq!(
            window.publish(message(&topic, 1)),
            Ok(PublishOutcome::AlreadyPresent)
        );
    }

    #[test]
    fn restore_needs_the_whole_retained_tail() {
        let topic = worker("a");
        let full = TopicWindow::restore(topic.clone(), nz(3), tail(&topic, 5..=9)).unwrap();
        assert_eq!(full.bounds().head_cursor, 9);
        let held: Vec<u64> = full.read(0, 10).map(|m| m.sequence).collect();
        assert_eq!(held, vec![7, 8, 9]);

        let short = TopicWindow::restore(topic.clone(), nz(3), tail(&topic, 8..=9));
        assert!(matches!(
            short,
            Err(WindowError::IncompleteTail { held: 2, .. })
        ));
        let young = TopicWindow::restore(topic.clone(), nz(3), tail(&topic, 2..=2));
        assert!(matches!(young, Err(WindowError::IncompleteTail { .. })));
        assert!(TopicWindow::restore(topic.clone(), nz(3), tail(&topic, 1..=2)).is_ok());
        assert!(TopicWindow::restore(topic, nz(3), Vec::new()).is_ok());
    }

    #[test]
    fn poll_applies_stale_rule() {
        let topic = worker("a");
        let window = TopicWindow::restore(topic.clone(), nz(3), tail(&topic, 1..=9)).unwrap();
        assert_eq!(
            window
                .poll(5, Limit::DEFAULT)
                .unwrap_err()
                .oldest_available_cursor,
            6
        );
        let page = window.poll(6, Limit::new(2).unwrap()).unwrap();
        let seqs: Vec<u64> = page.messages().iter().map(|m| m.sequence).collect();
        assert_eq!(seqs, vec![7, 8]);
        assert_eq!(page.plan().next_cursor(), 8);
    }

    #[test]
    fn set_evicts_least_recently_used() {
        let (a, b, c) = (worker("a"), worker("b"), worker("c"));
        let mut set = WindowSet::new(nz(4), nz(2));
        assert_eq!(set.restore(a.clone(), tail(&a, 1..=2)), Ok(None));
        assert_eq!(set.restore(b.clone(), tail(&b, 1..=1)), Ok(None));
        assert!(set.get(&a).is_some());
        assert_eq!(set.restore(c.clone(), Vec::new()), Ok(Some(b.clone())));
        assert!(set.contains(&a) && set.contains(&c) && !set.contains(&b));
        // Replacing a held topic evicts nothing.
        assert_eq!(set.restore(a.clone(), tail(&a, 1..=3)), Ok(None));
        assert_eq!(set.len(), 2);
        assert_eq!(set.get(&a).unwrap().bounds().head_cursor, 3);
    }

    #[test]
    fn set_publish_routes_by_topic() {
        let (a, b) = (worker("a"), worker("b"));
        let mut set = WindowSet::new(nz(4), nz(2));
        set.restore(a.clone(), Vec::new()).unwrap();
        assert_eq!(
            set.publish(message(&a, 1)),
            Ok(Some(PublishOutcome::Appended))
        );
        assert_eq!(set.publish(message(&b, 1)), Ok(None));
        let mut bad = message(&a, 2);
        bad.topic = "nope".into();
        assert!(matches!(
            set.publish(bad),
            Err(WindowError::InvalidTopic(_))
        ));
        assert!(!set.contains(&b));
    }

    proptest! {
        /// Publishing against a Vec model: in-order messages are appended,
        /// old ones skipped, gaps refused without changing anything; reads
        /// return the model's newest `capacity` messages after the cursor.
        #[test]
        fn window_matches_vec_model(
            capacity in 1usize..12,
            offsets in proptest::collection::vec(-4i64..=3, 0..80),
            limit in 1usize..20,
        ) {
            let topic = worker("model");
            let mut window = TopicWindow::new(topic.clone(), nz(capacity));
            let mut model: Vec<u64> = Vec::new();
            for offset in offsets {
                let head = model.last().copied().unwrap_or(0);
                let seq = u64::try_from((head as i64 + 1 + offset).max(0)).unwrap();
                let outcome = window.publish(message(&topic, seq));
                if seq == head + 1 {
                    prop_assert_eq!(outcome, Ok(PublishOutcome::Appended));
                    model.push(seq);
                } else if seq <= head {
                    prop_assert_eq!(outcome, Ok(PublishOutcome::AlreadyPresent));
                } else {
                    let is_gap = matches!(outcome, Err(WindowError::Gap { .. }));
                    prop_assert!(is_gap);
                }
            }
            let head = model.last().copied().unwrap_or(0);
            prop_assert_eq!(window.bounds().head_cursor, head);
            let retained = &model[model.len().saturating_sub(capacity)..];
            for after_seq in 0..=head + 2 {
                let got: Vec<u64> = window.read(after_seq, limit).map(|m| m.sequence).collect();
                let expected: Vec<u64> = retained
                    .iter()
                    .copied()
                    .filter(|seq| *seq > after_seq)
                    .take(limit)
                    .collect();
                prop_assert_eq!(got, expected);
            }
        }
    }
}
