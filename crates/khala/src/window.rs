//! Bounded in-memory message windows: [`TopicWindow`] holds the newest
//! messages of one topic, [`WindowSet`] holds windows for a bounded number of
//! topics.
//!
//! Both are caches of the durable log, never a source of truth: a window that
//! is evicted, or never built, is rebuilt from the log on demand with
//! [`WindowSet::restore`]. Publishing and restoring must be done by one owner
//! in log order; the types are plain data and do no locking.
//!
//! Two bounds apply. The *retained window* of a topic is its newest
//! `capacity` messages: what a client may poll from, and the stale-cursor
//! rule, whatever is in memory. The *held* messages are the newest part of
//! it that fits the window's byte budget (counted by [`Message::wire_len`]);
//! a poll that reaches below them is answered [`Polled::FromLog`], and the
//! caller reads those messages from the log. A topic merged from many log
//! streams (the aggregate lane, the firehoses) has no per-topic order in the
//! log to read a range from, so its retained window is what it holds: a
//! cursor below its oldest held message is stale. A [`WindowSet`] also keeps the
//! bytes of all its windows within a total, dropping least recently used
//! windows whole when it would exceed it.

use crate::message::Message;
use crate::poll::{self, Limit, PageBuilder, Polled, StaleCursor, WindowBounds};
use crate::topic::{Topic, TopicError};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::num::NonZeroUsize;

/// The newest `capacity` messages of one topic, or the newest of them that
/// fit in `max_bytes`, contiguous and in order.
///
/// Invariant: the held messages are exactly the sequences
/// `head - len + 1 ..= head`, with `len <= min(head, capacity)`; without a
/// byte budget `len == min(head, capacity)`, which is the window the poll
/// rules ([`poll::plan`]) describe.
#[derive(Debug, Clone)]
pub struct TopicWindow {
    topic: Topic,
    /// The canonical topic name, compared with each published message's.
    name: String,
    capacity: NonZeroUsize,
    /// Whether messages below the held ones can be read from the log: the
    /// topic is one log stream (see [`TopicWindow::bounds`]).
    backed_by_stream: bool,
    /// Most bytes the held messages may weigh together.
    max_bytes: usize,
    /// The newest sequence published; 0 before the first.
    head: u64,
    messages: VecDeque<Held>,
    /// What the held messages weigh together.
    bytes: usize,
}

/// A held message and its weight.
#[derive(Debug, Clone)]
struct Held {
    message: Message,
    bytes: usize,
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
    /// An empty window for a topic that has no messages yet, with no byte
    /// budget (see [`TopicWindow::with_max_bytes`]).
    pub fn new(topic: Topic, capacity: NonZeroUsize) -> Self {
        Self {
            name: topic.to_string(),
            backed_by_stream: topic.stream().is_some(),
            topic,
            capacity,
            max_bytes: usize::MAX,
            head: 0,
            // Grows with the topic: most topics are far shorter than the
            // capacity, and thousands may be held at once.
            messages: VecDeque::new(),
            bytes: 0,
        }
    }

    /// The same window holding at most `max_bytes` of messages: older ones
    /// are dropped now and whenever a publish would exceed the budget.
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self.trim();
        self
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
        let head = tail.peek().map_or(0, |m| m.sequence.saturating_sub(1));
        let window = Self::new(topic, capacity).extended(head, tail)?;
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

    /// Rebuilds a window with a byte budget from the newest messages of a
    /// topic whose head is `head`: `newest` (oldest first) must end at
    /// `head`, and may be shorter than the retained window (or empty), since
    /// whatever it lacks is read from the log when polled.
    pub fn restore_newest(
        topic: Topic,
        capacity: NonZeroUsize,
        max_bytes: usize,
        head: u64,
        newest: impl IntoIterator<Item = Message>,
    ) -> Result<Self, WindowError> {
        let mut newest = newest.into_iter().peekable();
        let start = newest.peek().map_or(head, |m| m.sequence.saturating_sub(1));
        let window = Self::new(topic, capacity)
            .with_max_bytes(max_bytes)
            .extended(start, newest)?;
        if window.head != head {
            return Err(WindowError::IncompleteTail {
                topic: window.topic,
                head,
                held: window.messages.len(),
                expected: head.min(capacity.get() as u64),
            });
        }
        Ok(window)
    }

    /// Starting just below `messages` (so that publishing the first is the
    /// ordinary "next sequence" case), publishes them all.
    fn extended(
        mut self,
        below: u64,
        messages: impl IntoIterator<Item = Message>,
    ) -> Result<Self, WindowError> {
        self.head = below;
        for message in messages {
            self.publish(message)?;
        }
        Ok(self)
    }

    /// The topic this window holds.
    pub fn topic(&self) -> &Topic {
        &self.topic
    }

    /// The head and retained size, as the poll rules need them: `capacity`
    /// for a topic backed by one log stream (what is not held is read from
    /// the log), the held messages for a merged topic.
    pub fn bounds(&self) -> WindowBounds {
        let retained = if self.backed_by_stream {
            self.capacity.get()
        } else {
            self.messages.len()
        };
        WindowBounds {
            head_cursor: self.head,
            capacity: retained as u64,
        }
    }

    /// What the held messages weigh together.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Adds the next message of the topic, evicting the oldest when full
    /// (by count or by bytes).
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
        self.head = message.sequence;
        let bytes = message.wire_len();
        self.bytes += bytes;
        self.messages.push_back(Held { message, bytes });
        self.trim();
        Ok(PublishOutcome::Appended)
    }

    /// Drops the oldest held messages until both bounds hold.
    fn trim(&mut self) {
        while self.messages.len() > self.capacity.get() || self.bytes > self.max_bytes {
            let Some(oldest) = self.messages.pop_front() else {
                break;
            };
            self.bytes -= oldest.bytes;
        }
    }

    /// Up to `limit` held messages with a sequence above `after_seq`, in
    /// order. Does not apply the stale rule: use [`TopicWindow::poll`] to
    /// answer a client.
    pub fn read(&self, after_seq: u64, limit: usize) -> impl Iterator<Item = &Message> {
        self.held_after(after_seq)
            .take(limit)
            .map(|held| &held.message)
    }

    fn held_after(&self, after_seq: u64) -> impl Iterator<Item = &Held> {
        // The sequence just before the oldest held message.
        let base = self.head - self.messages.len() as u64;
        let skip = usize::try_from(after_seq.saturating_sub(base))
            .unwrap_or(usize::MAX)
            .min(self.messages.len());
        self.messages.range(skip..)
    }

    /// Answers a poll: applies the stale rule, then returns the planned
    /// messages, at most `max_bytes` of them after the first (see
    /// [`PageBuilder`]), with the response's cursors; or, when the plan
    /// reaches below the held messages, the plan for the caller to fill
    /// from the log.
    pub fn poll(
        &self,
        after_seq: u64,
        limit: Limit,
        max_bytes: usize,
    ) -> Result<Polled, StaleCursor> {
        let plan = poll::plan(&self.topic, self.bounds(), after_seq, limit)?;
        let base = self.head - self.messages.len() as u64;
        if !plan.sequences().is_empty() && after_seq < base {
            return Ok(Polled::FromLog(plan));
        }
        let mut page = PageBuilder::new(plan, max_bytes);
        for held in self.held_after(after_seq) {
            if !page.push(held.message.clone(), held.bytes) {
                break;
            }
        }
        debug_assert!(
            page.wants().is_none(),
            "window of {} out of step with its poll plan",
            self.topic
        );
        Ok(Polled::Page(page.finish()))
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

/// Windows for at most `max_topics` topics, evicting the least recently used,
/// each within `max_window_bytes` and all together within `max_total_bytes`.
///
/// "Used" means polled ([`WindowSet::get`]) or restored: a topic that is only
/// written to is not worth memory until someone reads it.
#[derive(Debug)]
pub struct WindowSet {
    window_capacity: NonZeroUsize,
    max_topics: NonZeroUsize,
    max_window_bytes: usize,
    max_total_bytes: usize,
    /// What every held window weighs together.
    total_bytes: usize,
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
    /// An empty set whose windows each retain `window_capacity` messages,
    /// hold at most `max_window_bytes` of them, and together at most
    /// `max_total_bytes` (at least `max_window_bytes`).
    pub fn new(
        window_capacity: NonZeroUsize,
        max_topics: NonZeroUsize,
        max_window_bytes: usize,
        max_total_bytes: usize,
    ) -> Self {
        Self {
            window_capacity,
            max_topics,
            max_window_bytes,
            max_total_bytes: max_total_bytes.max(max_window_bytes),
            total_bytes: 0,
            windows: HashMap::new(),
            recency: BTreeMap::new(),
            clock: 0,
        }
    }

    /// How many messages each window retains.
    pub fn window_capacity(&self) -> NonZeroUsize {
        self.window_capacity
    }

    /// How many bytes of messages one window holds at most: how much of a
    /// topic's tail [`WindowSet::restore`] can use.
    pub fn max_window_bytes(&self) -> usize {
        self.max_window_bytes
    }

    /// What every held window weighs together.
    pub fn total_bytes(&self) -> usize {
        self.total_bytes
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

    /// Builds the window of `topic`, whose head is `head`, from its newest
    /// messages as read from the log (see [`TopicWindow::restore_newest`])
    /// and holds it, replacing any window already held for it. Returns the
    /// topics evicted to make room.
    pub fn restore(
        &mut self,
        topic: Topic,
        head: u64,
        newest: impl IntoIterator<Item = Message>,
    ) -> Result<Vec<Topic>, WindowError> {
        let window = TopicWindow::restore_newest(
            topic.clone(),
            self.window_capacity,
            self.max_window_bytes,
            head,
            newest,
        )?;
        self.remove(&topic);
        let mut evicted = Vec::new();
        if self.windows.len() >= self.max_topics.get() {
            evicted.extend(self.evict_oldest());
        }
        let last_used = self.tick();
        self.recency.insert(last_used, topic.clone());
        self.total_bytes += window.bytes();
        self.windows.insert(topic, Slot { window, last_used });
        evicted.extend(self.evict_over_budget());
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
                self.total_bytes -= slot.window.bytes();
                true
            }
            None => false,
        }
    }

    /// Publishes a message to its topic's window when that window is held;
    /// `Ok(None)` when it is not, since a later restore reads it from the log.
    pub fn publish(&mut self, message: Message) -> Result<Option<PublishOutcome>, WindowError> {
        let topic: Topic = message.topic.parse()?;
        let Some(slot) = self.windows.get_mut(&topic) else {
            return Ok(None);
        };
        let before = slot.window.bytes();
        let outcome = slot.window.publish(message);
        self.total_bytes = self.total_bytes - before + slot.window.bytes();
        self.evict_over_budget();
        outcome.map(Some)
    }

    /// Drops the least recently used window.
    fn evict_oldest(&mut self) -> Option<Topic> {
        let (_, topic) = self.recency.pop_first()?;
        if let Some(slot) = self.windows.remove(&topic) {
            self.total_bytes -= slot.window.bytes();
        }
        Some(topic)
    }

    /// Drops least recently used windows while the set weighs more than its
    /// total budget.
    fn evict_over_budget(&mut self) -> Vec<Topic> {
        let mut evicted = Vec::new();
        while self.total_bytes > self.max_total_bytes {
            match self.evict_oldest() {
                Some(topic) => evicted.push(topic),
                None => break,
            }
        }
        evicted
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
    fn a_merged_topic_retains_only_what_it_holds() {
        let topic = Topic::UserRuns(7);
        let one = message(&topic, 1).wire_len();
        // Room for two messages of ten retained by count.
        let window =
            TopicWindow::restore_newest(topic.clone(), nz(10), 2 * one, 6, tail(&topic, 3..=6))
                .unwrap();
        assert_eq!(window.bounds().oldest_available_cursor(), 4);
        let stale = window.poll(3, Limit::DEFAULT, usize::MAX).unwrap_err();
        assert_eq!(stale.oldest_available_cursor, 4);
        let page = window.poll(4, Limit::DEFAULT, usize::MAX).unwrap();
        let sequences: Vec<u64> = page
            .into_page()
            .expect("a merged topic is never read from the log")
            .messages()
            .iter()
            .map(|m| m.sequence)
            .collect();
        assert_eq!(sequences, vec![5, 6]);
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

    fn page(polled: Polled) -> crate::poll::PollPage {
        match polled {
            Polled::Page(page) => page,
            Polled::FromLog(plan) => panic!("expected a held page, got {plan:?}"),
        }
    }

    #[test]
    fn poll_applies_stale_rule() {
        let topic = worker("a");
        let window = TopicWindow::restore(topic.clone(), nz(3), tail(&topic, 1..=9)).unwrap();
        assert_eq!(
            window
                .poll(5, Limit::DEFAULT, usize::MAX)
                .unwrap_err()
                .oldest_available_cursor,
            6
        );
        let page = page(window.poll(6, Limit::new(2).unwrap(), usize::MAX).unwrap());
        let seqs: Vec<u64> = page.messages().iter().map(|m| m.sequence).collect();
        assert_eq!(seqs, vec![7, 8]);
        assert_eq!(page.plan().next_cursor(), 8);
    }

    #[test]
    fn a_byte_budget_holds_the_newest_messages_and_leaves_older_ones_to_the_log() {
        let topic = worker("a");
        let weight = message(&topic, 1).wire_len();
        // Room for two messages of the five retained.
        let window = TopicWindow::restore(topic.clone(), nz(5), tail(&topic, 1..=9))
            .unwrap()
            .with_max_bytes(2 * weight + 1);
        assert_eq!(window.bytes(), 2 * weight);
        let held: Vec<u64> = window.read(0, 10).map(|m| m.sequence).collect();
        assert_eq!(held, vec![8, 9]);
        // The retained window (and the stale rule) is the same as without
        // the budget: cursors from 4 are served, from the log below 7.
        assert!(window.poll(3, Limit::DEFAULT, usize::MAX).is_err());
        match window.poll(4, Limit::DEFAULT, usize::MAX).unwrap() {
            Polled::FromLog(plan) => assert_eq!(plan.sequences(), 5..=9),
            Polled::Page(page) => panic!("served {page:?} from memory"),
        }
        let page = page(window.poll(7, Limit::DEFAULT, usize::MAX).unwrap());
        assert_eq!(page.messages().len(), 2);
        // The response cap ends the page early, after at least one message.
        let page = page_of(&window, 7, weight);
        assert_eq!(page.messages().len(), 1);
        assert_eq!(page.plan().next_cursor(), 8);
        assert!(!page.plan().replay_complete());
        let page = page_of(&window, 7, 0);
        assert_eq!(page.messages().len(), 1);

        let restored =
            TopicWindow::restore_newest(topic.clone(), nz(5), weight, 9, tail(&topic, 8..=9))
                .unwrap();
        assert_eq!(
            restored.read(0, 10).map(|m| m.sequence).collect::<Vec<_>>(),
            vec![9]
        );
        let empty =
            TopicWindow::restore_newest(topic.clone(), nz(5), weight, 9, Vec::new()).unwrap();
        assert_eq!(empty.bounds().head_cursor, 9);
        assert_eq!(empty.bytes(), 0);
        assert!(matches!(
            TopicWindow::restore_newest(topic.clone(), nz(5), weight, 9, tail(&topic, 6..=8)),
            Err(WindowError::IncompleteTail { .. })
        ));
    }

    fn page_of(window: &TopicWindow, after_seq: u64, max_bytes: usize) -> crate::poll::PollPage {
        page(window.poll(after_seq, Limit::DEFAULT, max_bytes).unwrap())
    }

    #[test]
    fn set_evicts_least_recently_used() {
        let (a, b, c) = (worker("a"), worker("b"), worker("c"));
        let mut set = WindowSet::new(nz(4), nz(2), usize::MAX, usize::MAX);
        assert_eq!(set.restore(a.clone(), 2, tail(&a, 1..=2)), Ok(vec![]));
        assert_eq!(set.restore(b.clone(), 1, tail(&b, 1..=1)), Ok(vec![]));
        assert!(set.get(&a).is_some());
        assert_eq!(set.restore(c.clone(), 0, Vec::new()), Ok(vec![b.clone()]));
        assert!(set.contains(&a) && set.contains(&c) && !set.contains(&b));
        // Replacing a held topic evicts nothing.
        assert_eq!(set.restore(a.clone(), 3, tail(&a, 1..=3)), Ok(vec![]));
        assert_eq!(set.len(), 2);
        assert_eq!(set.get(&a).unwrap().bounds().head_cursor, 3);
    }

    #[test]
    fn set_keeps_all_windows_within_the_total_budget() {
        let (a, b, c) = (worker("a"), worker("b"), worker("c"));
        let weight = message(&a, 1).wire_len();
        let mut set = WindowSet::new(nz(8), nz(10), 2 * weight, 3 * weight);
        assert_eq!(set.restore(a.clone(), 4, tail(&a, 1..=4)), Ok(vec![]));
        assert_eq!(set.get(&a).unwrap().bytes(), 2 * weight, "per window");
        assert_eq!(set.restore(b.clone(), 1, tail(&b, 1..=1)), Ok(vec![]));
        assert_eq!(set.total_bytes(), 3 * weight);
        // One more message anywhere takes the set over: the least recently
        // used window goes whole.
        assert_eq!(
            set.restore(c.clone(), 1, tail(&c, 1..=1)),
            Ok(vec![a.clone()])
        );
        assert_eq!(set.total_bytes(), 2 * weight);
        assert_eq!(
            set.publish(message(&b, 2)),
            Ok(Some(PublishOutcome::Appended))
        );
        assert_eq!(set.total_bytes(), 3 * weight);
        assert!(set.remove(&b));
        assert_eq!(set.total_bytes(), weight);
    }

    #[test]
    fn set_publish_routes_by_topic() {
        let (a, b) = (worker("a"), worker("b"));
        let mut set = WindowSet::new(nz(4), nz(2), usize::MAX, usize::MAX);
        set.restore(a.clone(), 0, Vec::new()).unwrap();
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
