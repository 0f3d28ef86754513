//! One live subscription, the core behind both streaming lanes (SSE and
//! WebSocket):
//! catch-up from a cursor, then live delivery as records are committed.
//!
//! A subscription is opened with the poll route's checks, in its order
//! (token, topic, query, ACL), through the same functions, so the lanes
//! cannot drift apart from it. Its pages come from the same reader
//! (`Khala::read`) and therefore obey the same stale-cursor rule: a cursor
//! below the replay floor, at the start or later, ends the subscription
//! with the 410 details; it never skips ahead. Each page starts right after
//! the last sequence delivered, so the sequences a subscriber sees are
//! strictly increasing and without gaps (on the aggregate lane, without
//! gaps among the messages it may see).
//!
//! The subscriber pulls: a page is read only when the lane has sent the
//! previous one, so what the service holds for one subscriber is at most
//! one page (`limit` messages within the response byte cap) plus the
//! connection's write buffer. A subscriber that has caught up once and then
//! falls more than `RUNTIME_KHALA_MAX_STREAM_LAG` messages behind the head
//! is ended with `slow_consumer`; it resumes from its cursor on a new
//! stream.

use crate::core::Core;
use crate::khala::{KhalaError, StreamSlot, Waker};
use openagents_khala::acl::{Access, Principal};
use openagents_khala::message::Message;
use openagents_khala::poll::{Limit, PollParams, StaleCursor};
use openagents_khala::topic::Topic;
use std::sync::Arc;
use tokio::sync::watch;

/// Why a subscription ended.
pub(crate) enum Ended {
    /// The cursor is below the replay floor; the subscription is over.
    Stale(StaleCursor),
    /// The subscriber fell too far behind; the subscription is over.
    SlowConsumer,
    /// The service is shutting down; the subscription is over.
    Closing,
    /// The topic's run was erased; the subscription is over.
    Erased(KhalaError),
    /// The log could not be read; the subscription is over.
    Failed(KhalaError),
}

/// A subscription to one topic from a cursor.
pub(crate) struct Subscription {
    core: Arc<Core>,
    principal: Principal,
    topic: Topic,
    access: Access,
    cursor: u64,
    limit: Limit,
    max_lag: u64,
    /// Set once a page reached the head: from then on the lag counts.
    live: bool,
    waker: Waker,
    closing: watch::Receiver<bool>,
    _slot: StreamSlot,
}

impl Subscription {
    /// Checks the token, topic, query and ACL exactly as the poll route
    /// does, then takes a place under the stream limits.
    pub(crate) fn open(
        core: Arc<Core>,
        authorization: &[Box<[u8]>],
        topic: &str,
        after_seq: Option<&str>,
        limit: Option<&str>,
    ) -> Result<Self, KhalaError> {
        let khala = &core.khala;
        let principal = khala.authenticate(authorization)?;
        let topic: Topic = topic.parse()?;
        let params = PollParams::from_query(after_seq, limit, None)?;
        let access = khala.authorize(core.authority.log(), &principal, &topic)?;
        let (waker, slot) = khala.stream_slot(&principal, &topic.to_string())?;
        let closing = khala.closing();
        let max_lag = khala.max_stream_lag();
        Ok(Subscription {
            core,
            principal,
            topic,
            access,
            cursor: params.after_seq(),
            limit: params.limit(),
            max_lag,
            live: false,
            waker,
            closing,
            _slot: slot,
        })
    }

    /// The topic subscribed to.
    pub(crate) fn topic(&self) -> &Topic {
        &self.topic
    }

    /// The last sequence delivered (or the starting cursor).
    pub(crate) fn cursor(&self) -> u64 {
        self.cursor
    }

    /// The page size.
    pub(crate) fn limit(&self) -> Limit {
        self.limit
    }

    /// Waits for, then returns, the messages that follow the cursor, in
    /// sequence order; or why the subscription is over.
    pub(crate) async fn next(&mut self) -> Result<Vec<Message>, Ended> {
        loop {
            if *self.closing.borrow() {
                return Err(Ended::Closing);
            }
            let khala = &self.core.khala;
            let log = self.core.authority.log();
            let read = khala.read_page(log, &self.topic, self.cursor, self.limit);
            let mut page = match read.await {
                Ok(page) => page,
                Err(KhalaError::Stale(stale)) => return Err(Ended::Stale(stale)),
                Err(erased @ KhalaError::RunErased { .. }) => return Err(Ended::Erased(erased)),
                Err(error) => return Err(Ended::Failed(error)),
            };
            let plan = *page.plan();
            if self.live && plan.head_cursor().saturating_sub(self.cursor) > self.max_lag {
                return Err(Ended::SlowConsumer);
            }
            khala.filter(log, &self.principal, self.access, &mut page);
            let covered = !plan.sequences().is_empty();
            if covered {
                self.cursor = plan.next_cursor();
            }
            self.live |= plan.replay_complete();
            if !page.messages().is_empty() {
                return Ok(page.into_messages());
            }
            if covered {
                // Every covered message was filtered out: read on.
                continue;
            }
            tokio::select! {
                changed = self.waker.changed() => {
                    if changed.is_err() {
                        return Err(Ended::Closing);
                    }
                }
                _ = self.closing.wait_for(|closed| *closed) => return Err(Ended::Closing),
            }
        }
    }
}
