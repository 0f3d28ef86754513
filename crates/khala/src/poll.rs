//! The poll rules: query parameters, the retained window's bounds, the
//! stale-cursor rule ([`ensure_cursor_retained`]) and which sequences a poll
//! returns ([`plan`]).
//!
//! Everything here is arithmetic on sequence numbers. Where the messages come
//! from is the caller's business (see [`crate::window`]).

use crate::message::Message;
use crate::reason::ReasonCode;
use crate::topic::Topic;
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};
use std::ops::RangeInclusive;

/// `limit` when the request names none.
pub const DEFAULT_LIMIT: u16 = 100;
/// Largest accepted `limit`.
pub const MAX_LIMIT: u16 = 500;
/// Longest accepted `wait_ms`: 30 seconds.
pub const MAX_WAIT_MS: u32 = 30_000;
/// What a client with a stale cursor must do, as the 410 details say it.
pub const STALE_CURSOR_RECOVERY: &str = "reset_local_watermark_and_replay_bootstrap";

/// A page size, always within `1..=MAX_LIMIT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(u16);

impl Limit {
    /// The page size used when the request names none.
    pub const DEFAULT: Self = Self(DEFAULT_LIMIT);

    /// Accepts `1..=MAX_LIMIT`.
    pub fn new(value: u64) -> Result<Self, PollParamError> {
        match u16::try_from(value) {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(Self(n)),
            _ => Err(PollParamError::InvalidLimit),
        }
    }

    /// The page size.
    pub fn get(self) -> u16 {
        self.0
    }
}

/// The validated query of a poll request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollParams {
    after_seq: u64,
    limit: Limit,
    wait_ms: u32,
}

impl PollParams {
    /// Validates the raw query values; an absent value takes its default
    /// (`after_seq` 0, `limit` 100, `wait_ms` 0). A present but empty value is
    /// invalid: it is more likely a client bug than a request for the default.
    pub fn from_query(
        after_seq: Option<&str>,
        limit: Option<&str>,
        wait_ms: Option<&str>,
    ) -> Result<Self, PollParamError> {
        let after_seq = parse_or(after_seq, 0, PollParamError::InvalidCursor)?;
        let limit = match limit {
            None => Limit::DEFAULT,
            Some(raw) => Limit::new(parse_or(Some(raw), 0, PollParamError::InvalidLimit)?)?,
        };
        let wait_ms = parse_or(wait_ms, 0, PollParamError::InvalidWaitMs)?;
        let wait_ms = u32::try_from(wait_ms)
            .ok()
            .filter(|ms| *ms <= MAX_WAIT_MS)
            .ok_or(PollParamError::InvalidWaitMs)?;
        Ok(Self {
            after_seq,
            limit,
            wait_ms,
        })
    }

    /// The client's cursor: it has every message up to this sequence.
    pub fn after_seq(&self) -> u64 {
        self.after_seq
    }

    /// The most messages to return.
    pub fn limit(&self) -> Limit {
        self.limit
    }

    /// How long to hold the request when nothing follows the cursor.
    pub fn wait_ms(&self) -> u32 {
        self.wait_ms
    }
}

/// `raw` as a `u64`, `default` when absent, `err` when not a `u64`.
fn parse_or(raw: Option<&str>, default: u64, err: PollParamError) -> Result<u64, PollParamError> {
    raw.map_or(Ok(default), |s| s.parse().map_err(|_| err))
}

/// A query parameter outside its accepted range; answered with 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PollParamError {
    /// `after_seq` is not a non-negative integer.
    #[error("after_seq must be a non-negative integer")]
    InvalidCursor,
    /// `limit` is not an integer in `1..=500`.
    #[error("limit must be an integer from 1 to {MAX_LIMIT}")]
    InvalidLimit,
    /// `wait_ms` is not an integer in `0..=30000`.
    #[error("wait_ms must be an integer from 0 to {MAX_WAIT_MS}")]
    InvalidWaitMs,
}

impl PollParamError {
    /// The reason code to answer with.
    pub fn reason(&self) -> ReasonCode {
        match self {
            Self::InvalidCursor => ReasonCode::InvalidCursor,
            Self::InvalidLimit => ReasonCode::InvalidLimit,
            Self::InvalidWaitMs => ReasonCode::InvalidWaitMs,
        }
    }
}

/// Where a topic stands: its newest sequence and how many it retains.
///
/// Both come from the durable log, so the bounds (and with them the stale
/// rule) are the same before and after a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowBounds {
    /// The newest sequence published on the topic; 0 when none was.
    pub head_cursor: u64,
    /// How many of the newest messages the topic retains.
    pub capacity: u64,
}

impl WindowBounds {
    /// The oldest cursor a client may poll from: the oldest retained sequence
    /// minus one, i.e. `max(head - capacity, 0)`.
    pub fn oldest_available_cursor(&self) -> u64 {
        self.head_cursor.saturating_sub(self.capacity)
    }
}

/// The stale-cursor rule, the one place it is decided: a cursor older than
/// the oldest available cursor would skip messages that are no longer
/// retained, so the client must start over.
///
/// A cursor beyond the head is not stale: it is served as caught up (see
/// [`plan`]).
pub fn ensure_cursor_retained(
    topic: &Topic,
    bounds: WindowBounds,
    after_seq: u64,
) -> Result<(), StaleCursor> {
    let oldest_available_cursor = bounds.oldest_available_cursor();
    if after_seq < oldest_available_cursor {
        return Err(StaleCursor {
            topic: topic.clone(),
            requested_cursor: after_seq,
            oldest_available_cursor,
            head_cursor: bounds.head_cursor,
        });
    }
    Ok(())
}

/// Decides what a poll returns: the sequences `after_seq + 1 ..=
/// min(head, after_seq + limit)`, and the cursors of the response.
///
/// A cursor at or beyond the head gets no messages, `next_cursor = after_seq`
/// and `replay_complete = true`: the contract's formulas applied as written.
/// A lagging replica of the window must not turn a valid cursor into an error.
pub fn plan(
    topic: &Topic,
    bounds: WindowBounds,
    after_seq: u64,
    limit: Limit,
) -> Result<PollPlan, StaleCursor> {
    ensure_cursor_retained(topic, bounds, after_seq)?;
    let head_cursor = bounds.head_cursor;
    let next_cursor = if after_seq >= head_cursor {
        after_seq
    } else {
        head_cursor.min(after_seq.saturating_add(u64::from(limit.get())))
    };
    Ok(PollPlan {
        after_seq,
        oldest_available_cursor: bounds.oldest_available_cursor(),
        head_cursor,
        next_cursor,
        replay_complete: next_cursor >= head_cursor,
    })
}

/// The outcome of [`plan`]: which sequences to return and the response's
/// cursor fields. Serializes as those four fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PollPlan {
    #[serde(skip)]
    after_seq: u64,
    oldest_available_cursor: u64,
    head_cursor: u64,
    next_cursor: u64,
    replay_complete: bool,
}

impl PollPlan {
    /// The sequences to return, in order; empty when the cursor is caught up.
    pub fn sequences(&self) -> RangeInclusive<u64> {
        if self.next_cursor > self.after_seq {
            self.after_seq + 1..=self.next_cursor
        } else {
            RangeInclusive::new(1, 0)
        }
    }

    /// The oldest cursor the topic can still serve.
    pub fn oldest_available_cursor(&self) -> u64 {
        self.oldest_available_cursor
    }

    /// The newest sequence of the topic.
    pub fn head_cursor(&self) -> u64 {
        self.head_cursor
    }

    /// The cursor for the client's next poll: the last sequence covered by this
    /// one, or `after_seq` when it covered none.
    pub fn next_cursor(&self) -> u64 {
        self.next_cursor
    }

    /// Whether the client has now seen everything up to the head.
    pub fn replay_complete(&self) -> bool {
        self.replay_complete
    }
}

/// Collects a poll's messages, in plan order, up to a byte cap on the
/// response: the first planned message is always taken (a client must make
/// progress whatever a message weighs), later ones while the total stays
/// within the cap. A page cut short ends at its last message: `next_cursor`
/// is that message's sequence and `replay_complete` is false, so the client
/// polls on from there.
#[derive(Debug)]
pub struct PageBuilder {
    plan: PollPlan,
    messages: Vec<Message>,
    bytes: usize,
    max_bytes: usize,
    full: bool,
}

impl PageBuilder {
    /// An empty page for `plan`, whose messages may weigh `max_bytes` in all.
    pub fn new(plan: PollPlan, max_bytes: usize) -> Self {
        Self {
            plan,
            messages: Vec::new(),
            bytes: 0,
            max_bytes,
            full: false,
        }
    }

    /// The next sequence the page wants; `None` once the plan is covered or
    /// the cap is reached.
    pub fn wants(&self) -> Option<u64> {
        let next = self
            .plan
            .after_seq
            .checked_add(self.messages.len() as u64 + 1)?;
        (!self.full && next <= self.plan.next_cursor).then_some(next)
    }

    /// Offers the next message, which weighs `bytes`; returns whether it was
    /// taken. A message that is not the one [`PageBuilder::wants`] names, or
    /// that would take the page over its cap, is not.
    pub fn push(&mut self, message: Message, bytes: usize) -> bool {
        if self.wants() != Some(message.sequence) {
            return false;
        }
        if !self.messages.is_empty() && self.bytes.saturating_add(bytes) > self.max_bytes {
            self.full = true;
            return false;
        }
        self.bytes = self.bytes.saturating_add(bytes);
        self.messages.push(message);
        true
    }

    /// The page: the messages taken, with the plan ending at the last one.
    pub fn finish(self) -> PollPage {
        let mut plan = self.plan;
        if let Some(last) = self.messages.last() {
            plan.next_cursor = last.sequence;
            plan.replay_complete = last.sequence >= plan.head_cursor;
        }
        debug_assert!(
            self.messages
                .iter()
                .map(|m| m.sequence)
                .eq(plan.sequences()),
            "a page holds exactly the sequences of its plan"
        );
        PollPage::new(plan, self.messages)
    }
}

/// What a window can answer for a poll.
#[derive(Debug, Clone, PartialEq)]
pub enum Polled {
    /// The page, from the messages the window holds.
    Page(PollPage),
    /// The plan begins below the oldest message the window holds (older
    /// ones were left to the log to keep the window within its byte
    /// budget): the caller reads the planned sequences from the log into a
    /// [`PageBuilder`].
    FromLog(PollPlan),
}

impl Polled {
    /// The page, when the window held every planned message (always, for a
    /// window without a byte budget).
    pub fn into_page(self) -> Option<PollPage> {
        match self {
            Polled::Page(page) => Some(page),
            Polled::FromLog(_) => None,
        }
    }
}

/// The body of a successful poll, minus `topic` and `driver` which the
/// service adds. Serializes as `{messages, oldest_available_cursor,
/// head_cursor, next_cursor, replay_complete}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PollPage {
    messages: Vec<Message>,
    #[serde(flatten)]
    plan: PollPlan,
}

impl PollPage {
    /// Pairs a plan with the messages it covers.
    pub(crate) fn new(plan: PollPlan, messages: Vec<Message>) -> Self {
        Self { messages, plan }
    }

    /// The messages to return, in sequence order.
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// The cursor fields of the response.
    pub fn plan(&self) -> &PollPlan {
        &self.plan
    }

    /// The messages, taken out of the page.
    pub fn into_messages(self) -> Vec<Message> {
        self.messages
    }

    /// Drops the messages `keep` refuses, leaving the cursors as they are, so
    /// the aggregate lane's `next_cursor` still moves past filtered messages.
    pub fn retain(&mut self, keep: impl FnMut(&Message) -> bool) {
        self.messages.retain(keep);
    }
}

/// A cursor older than the retained window; answered with 410 and these
/// fields as `details`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "cursor {requested_cursor} on {topic} is older than the retained window \
     (oldest available cursor {oldest_available_cursor}, head {head_cursor}); \
     reset the local watermark and replay the bootstrap"
)]
pub struct StaleCursor {
    /// The topic polled.
    pub topic: Topic,
    /// The `after_seq` the client sent.
    pub requested_cursor: u64,
    /// The oldest cursor the topic can still serve.
    pub oldest_available_cursor: u64,
    /// The newest sequence of the topic.
    pub head_cursor: u64,
}

impl StaleCursor {
    /// The reason code to answer with.
    pub fn reason(&self) -> ReasonCode {
        ReasonCode::StaleCursor
    }
}

/// Serializes as the 410 `details` object, `recovery` included.
impl Serialize for StaleCursor {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut details = serializer.serialize_struct("StaleCursor", 5)?;
        details.serialize_field("topic", &self.topic)?;
        details.serialize_field("requested_cursor", &self.requested_cursor)?;
        details.serialize_field("oldest_available_cursor", &self.oldest_available_cursor)?;
        details.serialize_field("head_cursor", &self.head_cursor)?;
        details.serialize_field("recovery", STALE_CURSOR_RECOVERY)?;
        details.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn topic() -> Topic {
        Topic::CodexWorkerEvents
    }

    fn bounds(head_cursor: u64, capacity: u64) -> WindowBounds {
        WindowBounds {
            head_cursor,
            capacity,
        }
    }

    fn message(sequence: u64) -> Message {
        Message {
            topic: topic().to_string(),
            sequence,
            kind: "worker.heartbeat".into(),
            payload: json!({}),
            published_at: "2025-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn a_page_ends_early_at_its_byte_cap_and_always_takes_one_message() {
        let plan = plan(&topic(), bounds(10, 10), 2, Limit::new(5).unwrap()).unwrap();
        let mut builder = PageBuilder::new(plan, 250);
        assert_eq!(builder.wants(), Some(3));
        assert!(!builder.push(message(4), 1), "out of order is refused");
        assert!(builder.push(message(3), 100));
        assert!(builder.push(message(4), 150));
        assert!(!builder.push(message(5), 1), "over the cap");
        assert_eq!(builder.wants(), None);
        let page = builder.finish();
        assert_eq!(page.messages().len(), 2);
        assert_eq!(page.plan().next_cursor(), 4);
        assert!(!page.plan().replay_complete());

        let plan = plan_for_one();
        let mut heavy = PageBuilder::new(plan, 10);
        assert!(
            heavy.push(message(10), 1_000),
            "the first message always fits"
        );
        let page = heavy.finish();
        assert_eq!(page.plan().next_cursor(), 10);
        assert!(page.plan().replay_complete());

        let caught_up = plan_at(u64::MAX);
        let builder = PageBuilder::new(caught_up, 10);
        assert_eq!(builder.wants(), None);
        assert!(builder.finish().messages().is_empty());
    }

    fn plan_for_one() -> PollPlan {
        plan(&topic(), bounds(10, 10), 9, Limit::DEFAULT).unwrap()
    }

    fn plan_at(after_seq: u64) -> PollPlan {
        plan(&topic(), bounds(10, 10), after_seq, Limit::DEFAULT).unwrap()
    }

    #[test]
    fn query_defaults() {
        let params = PollParams::from_query(None, None, None).unwrap();
        assert_eq!(params.after_seq(), 0);
        assert_eq!(params.limit().get(), DEFAULT_LIMIT);
        assert_eq!(params.wait_ms(), 0);
    }

    #[test]
    fn query_ranges() {
        let ok = PollParams::from_query(Some("7"), Some("500"), Some("30000")).unwrap();
        assert_eq!(
            (ok.after_seq(), ok.limit().get(), ok.wait_ms()),
            (7, 500, 30_000)
        );
        let cases = [
            ((Some("-1"), None, None), PollParamError::InvalidCursor),
            ((Some(""), None, None), PollParamError::InvalidCursor),
            (
                (Some("18446744073709551616"), None, None),
                PollParamError::InvalidCursor,
            ),
            ((None, Some("0"), None), PollParamError::InvalidLimit),
            ((None, Some("501"), None), PollParamError::InvalidLimit),
            ((None, Some("ten"), None), PollParamError::InvalidLimit),
            ((None, Some("70000"), None), PollParamError::InvalidLimit),
            ((None, None, Some("30001")), PollParamError::InvalidWaitMs),
            ((None, None, Some("1.5")), PollParamError::InvalidWaitMs),
        ];
        for ((after, limit, wait), expected) in cases {
            assert_eq!(
                PollParams::from_query(after, limit, wait),
                Err(expected),
                "{after:?} {limit:?} {wait:?}"
            );
        }
    }

    #[test]
    fn stale_cursor_details() {
        let err = plan(&topic(), bounds(2000, 1024), 975, Limit::DEFAULT).unwrap_err();
        assert_eq!(err.reason().status(), 410);
        assert_eq!(
            serde_json::to_value(&err).unwrap(),
            json!({
                "topic": "runtime.codex_worker_events",
                "requested_cursor": 975,
                "oldest_available_cursor": 976,
                "head_cursor": 2000,
                "recovery": "reset_local_watermark_and_replay_bootstrap",
            })
        );
    }

    #[test]
    fn cursor_beyond_head_is_caught_up() {
        let plan = plan(&topic(), bounds(5, 10), 9, Limit::DEFAULT).unwrap();
        assert!(plan.sequences().is_empty());
        assert_eq!(plan.next_cursor(), 9);
        assert!(plan.replay_complete());
    }

    #[test]
    fn plan_serializes_cursor_fields_only() {
        let plan = plan(&topic(), bounds(10, 4), 6, Limit::new(2).unwrap()).unwrap();
        assert_eq!(
            serde_json::to_value(plan).unwrap(),
            json!({
                "oldest_available_cursor": 6,
                "head_cursor": 10,
                "next_cursor": 8,
                "replay_complete": false,
            })
        );
    }

    proptest! {
        /// The model: the retained sequences listed one by one.
        #[test]
        fn plan_matches_model_window(
            capacity in 0u64..80,
            head in 0u64..300,
            after_seq in 0u64..400,
            limit in 1u64..=500,
        ) {
            let all: Vec<u64> = (1..=head).collect();
            let retained = &all[all.len().saturating_sub(capacity as usize)..];
            let oldest = retained.first().map_or(head, |first| first - 1);
            let result = plan(&topic(), bounds(head, capacity), after_seq, Limit::new(limit).unwrap());
            if after_seq < oldest {
                let err = result.unwrap_err();
                prop_assert_eq!(err.requested_cursor, after_seq);
                prop_assert_eq!(err.oldest_available_cursor, oldest);
                prop_assert_eq!(err.head_cursor, head);
                return Ok(());
            }
            let plan = result.unwrap();
            let expected: Vec<u64> = retained
                .iter()
                .copied()
                .filter(|seq| *seq > after_seq)
                .take(limit as usize)
                .collect();
            prop_assert_eq!(plan.sequences().collect::<Vec<_>>(), expected.clone());
            prop_assert_eq!(plan.next_cursor(), expected.last().copied().unwrap_or(after_seq));
            prop_assert_eq!(plan.replay_complete(), plan.next_cursor() >= head);
            prop_assert_eq!(plan.oldest_available_cursor(), oldest);
            prop_assert_eq!(plan.head_cursor(), head);
        }

        /// Extreme values: no overflow, and the invariants still hold.
        #[test]
        fn plan_never_overflows(
            capacity in any::<u64>(),
            head in any::<u64>(),
            after_seq in any::<u64>(),
            limit in 1u64..=500,
        ) {
            let window = bounds(head, capacity);
            match plan(&topic(), window, after_seq, Limit::new(limit).unwrap()) {
                Err(err) => prop_assert!(err.requested_cursor < window.oldest_available_cursor()),
                Ok(plan) => {
                    let sequences = plan.sequences();
                    prop_assert!(plan.next_cursor() >= after_seq);
                    prop_assert!(plan.next_cursor() - after_seq <= limit);
                    prop_assert!(sequences.is_empty() || *sequences.end() <= head);
                    prop_assert_eq!(plan.replay_complete(), plan.next_cursor() >= head);
                }
            }
        }
    }
}
