//! Khala live delivery: publishing committed records to topic windows in log
//! order, polling with replay-floor semantics, long-poll wake-ups, and the
//! token and ACL checks in front of them.
//!
//! Topics and their messages are pure functions of the log:
//! `run:{id}:events` carries a run's events by seq; `worker:{id}:lifecycle`
//! a worker's lifecycle events by seq; `runtime.codex_worker_events` every
//! worker lifecycle event, numbered by its position among all worker records
//! of the log; `runs:user:{id}:events` and `fleet:user:{id}:workers` a
//! user's runs and workers (`crate::firehose`). The rules themselves (cursor window, stale cursor, scopes,
//! owner match, token checks) live in `openagents-khala`.

use crate::config::Config;
use crate::fanout::FanoutDriver;
use crate::firehose::Firehoses;
use openagents_authority::{Stream, StreamId, WorkerAfter, is_tombstone};
use openagents_event_log::{CommitObserver, EventLog, Index, ReadError, RecordRef};
use openagents_khala::acl::{self, Access, Entity, OwnerLookup, Principal};
use openagents_khala::auth::SyncTokenVerifier;
use openagents_khala::denial::AuthDenial;
use openagents_khala::message::Message;
use openagents_khala::poll::{
    Limit, PageBuilder, PollPage, PollParamError, PollParams, PollPlan, Polled, StaleCursor,
};
use openagents_khala::topic::{Topic, TopicError};
use openagents_khala::window::TopicWindow;
use serde_json::json;
use std::collections::{BinaryHeap, HashMap};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Name of the aggregate worker lane.
const AGGREGATE_TOPIC: &str = "runtime.codex_worker_events";
/// Records read from the log at a time when a window is rebuilt or a page
/// is read from the log: few, since each may be as large as a request body.
const LOG_CHUNK: usize = 8;

/// Why a Khala request is refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KhalaError {
    /// No signing key is configured.
    #[error("sync token auth is not configured on this service")]
    NotConfigured,
    /// Token or ACL refusal.
    #[error(transparent)]
    Denied(#[from] AuthDenial),
    /// The topic name is not one of the three shapes.
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// A query value is out of range.
    #[error(transparent)]
    Params(#[from] PollParamError),
    /// The cursor is below the retained window.
    #[error("cursor is older than the retained window")]
    Stale(StaleCursor),
    /// Too many long-polls are waiting.
    #[error("too many long-polls are waiting; retry shortly")]
    TooManyWaiters,
    /// Too many live streams are open, in all or for this principal.
    #[error("too many live streams are open; retry shortly")]
    TooManyStreams,
    /// The topic's run was erased.
    #[error("run {run} was erased at {erased_at}")]
    RunErased {
        /// The run.
        run: uuid::Uuid,
        /// When its tombstone was recorded.
        erased_at: String,
    },
    /// The log could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
}

/// A successful poll, as the route answers it.
#[derive(Debug, serde::Serialize)]
pub(crate) struct PollResponse {
    topic: String,
    driver: &'static str,
    messages: Vec<Message>,
    oldest_available_cursor: u64,
    head_cursor: u64,
    next_cursor: u64,
    replay_complete: bool,
}

/// Khala state: the fanout driver, the aggregate lane, and the waiters.
pub(crate) struct Khala {
    driver: Arc<dyn FanoutDriver>,
    capacity: NonZeroUsize,
    /// Most bytes of messages one poll response carries after its first.
    max_response_bytes: usize,
    /// The aggregate lane is always held: rebuilding it means merging every
    /// worker stream, so it is built once at start and kept.
    aggregate: Mutex<TopicWindow>,
    /// The per-user firehose counts; their windows are in the driver.
    firehoses: Firehoses,
    wakers: Wakers,
    waiters: Arc<AtomicUsize>,
    max_waiters: usize,
    streams: Arc<Mutex<StreamCounts>>,
    max_streams: usize,
    max_streams_per_principal: usize,
    max_stream_lag: u64,
    verifier: Option<Arc<SyncTokenVerifier>>,
    /// Set at shutdown: waiting long-polls answer at once.
    closing: watch::Sender<bool>,
}

impl Khala {
    /// Khala over `driver`, configured from `config`.
    pub(crate) fn new(config: &Config, driver: Arc<dyn FanoutDriver>) -> Result<Self, String> {
        let capacity = NonZeroUsize::new(config.fanout_queue_capacity)
            .ok_or("RUNTIME_FANOUT_QUEUE_CAPACITY must be positive")?;
        let verifier = crate::sync_auth::verifier(config)?.map(Arc::new);
        Ok(Khala {
            driver,
            capacity,
            max_response_bytes: config.khala_max_response_bytes,
            aggregate: Mutex::new(TopicWindow::new(Topic::CodexWorkerEvents, capacity)),
            firehoses: Firehoses::default(),
            wakers: Wakers::default(),
            waiters: Arc::new(AtomicUsize::new(0)),
            max_waiters: config.khala_max_waiters,
            streams: Arc::default(),
            max_streams: config.khala_max_streams,
            max_streams_per_principal: config.khala_max_streams_per_principal,
            max_stream_lag: config.khala_max_stream_lag,
            verifier,
            closing: watch::channel(false).0,
        })
    }

    /// The sync token verifier, when sync auth is configured.
    pub(crate) fn verifier(&self) -> Option<Arc<SyncTokenVerifier>> {
        self.verifier.clone()
    }

    /// The driver, for the hooks route and health.
    pub(crate) fn driver(&self) -> &dyn FanoutDriver {
        &*self.driver
    }

    /// Rebuilds the aggregate lane from the log: the newest `capacity` worker
    /// records, by log position, found by merging the worker streams from
    /// their ends. Takes the firehose counts from the index.
    pub(crate) fn recover(&self, log: &EventLog<Stream>) -> Result<(), String> {
        let capacity = self.capacity.get();
        self.firehoses.recover(&log.index());
        let (total, newest) = newest_worker_records(log, capacity).map_err(|e| e.to_string())?;
        let first_sequence = total - newest.len() as u64 + 1;
        let mut tail = Vec::with_capacity(newest.len());
        for (offset, (stream, seq)) in newest.into_iter().enumerate() {
            let read = log.read_stream(&stream, seq - 1, 1, |record| {
                stream_message(&record, AGGREGATE_TOPIC, first_sequence + offset as u64)
            });
            let message = read
                .map_err(|e| e.to_string())?
                .pop()
                .ok_or("worker record vanished")??;
            tail.push(message);
        }
        // A merged lane retains what it holds, so a tail cut short by
        // thinned heartbeats is a window like any other.
        let window = TopicWindow::restore_newest(
            Topic::CodexWorkerEvents,
            self.capacity,
            usize::MAX,
            total,
            tail,
        )
        .map_err(|e| e.to_string())?;
        *self.aggregate.lock().expect("aggregate lock") = window;
        Ok(())
    }

    /// Verifies a sync token from the `Authorization` header.
    pub(crate) fn authenticate(
        &self,
        authorization: &[Box<[u8]>],
    ) -> Result<Principal, KhalaError> {
        let verifier = self.verifier.as_ref().ok_or(KhalaError::NotConfigured)?;
        let values = authorization.iter().map(|value| &value[..]);
        Ok(verifier.verify_header_values(values, unix_now_secs())?)
    }

    /// Checks the principal's scopes and ownership of the topic.
    pub(crate) fn authorize(
        &self,
        log: &EventLog<Stream>,
        principal: &Principal,
        topic: &Topic,
    ) -> Result<Access, KhalaError> {
        let index = log.index();
        let access = acl::authorize(principal, topic, |entity| owner_lookup(&index, entity))?;
        // After the ACL: only who may see the run learns that it was erased.
        refuse_erased(&index, topic)?;
        Ok(access)
    }

    /// Answers every waiting long-poll now, and every later one without
    /// waiting: the service is shutting down, and a poll held to its
    /// deadline would hold the shutdown to its grace period.
    pub(crate) fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Answers a poll, holding it up to `wait_ms` when nothing follows the
    /// cursor (unless the service is shutting down). Waiting holds no lock,
    /// only a watch subscription.
    pub(crate) async fn poll(
        self: &Arc<Self>,
        log: &Arc<EventLog<Stream>>,
        principal: &Principal,
        topic: &Topic,
        access: Access,
        params: &PollParams,
    ) -> Result<PollResponse, KhalaError> {
        let name = topic.to_string();
        let mut wait = if params.wait_ms() > 0 {
            Some(self.wait_slot(&name)?)
        } else {
            None
        };
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(u64::from(params.wait_ms()));
        let mut closing = self.closing();
        let (after_seq, limit) = (params.after_seq(), params.limit());
        let mut page = self.read_page(log, topic, after_seq, limit).await?;
        while page.messages().is_empty()
            && let Some((waiter, _)) = wait.as_mut()
        {
            let woken = tokio::select! {
                // False at the deadline, or when the topic's sender went away.
                changed = tokio::time::timeout_at(deadline, waiter.changed()) => {
                    matches!(changed, Ok(Ok(())))
                }
                // Shutdown: answer with what there is (nothing) and the cursors.
                _ = closing.wait_for(|closed| *closed) => false,
            };
            if !woken {
                break;
            }
            page = self.read_page(log, topic, after_seq, limit).await?;
        }
        drop(wait);
        self.filter(log, principal, access, &mut page);
        let plan = page.plan();
        Ok(PollResponse {
            topic: name,
            driver: self.driver.name(),
            oldest_available_cursor: plan.oldest_available_cursor(),
            head_cursor: plan.head_cursor(),
            next_cursor: plan.next_cursor(),
            replay_complete: plan.replay_complete(),
            messages: page.messages().to_vec(),
        })
    }

    /// A receiver that changes when the service starts shutting down.
    pub(crate) fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Hides, on the aggregate lane, the messages of workers the principal
    /// does not own; other topics are shown whole.
    pub(crate) fn filter(
        &self,
        log: &EventLog<Stream>,
        principal: &Principal,
        access: Access,
        page: &mut PollPage,
    ) {
        if access == Access::OwnedWorkersOnly {
            let index = log.index();
            page.retain(|message| {
                acl::aggregate_message_visible(principal, message, |id| worker_owner(&index, id))
            });
        }
    }

    /// [`Khala::read`] without blocking an async worker thread: a page the
    /// memory holds is answered at once, one that needs the log (a `pread`,
    /// a database query) is read on a blocking thread. The one reader behind
    /// polls, long-polls and live streams.
    pub(crate) async fn read_page(
        self: &Arc<Self>,
        log: &Arc<EventLog<Stream>>,
        topic: &Topic,
        after_seq: u64,
        limit: Limit,
    ) -> Result<PollPage, KhalaError> {
        // Checked on every page: a long-poll or a stream opened before the
        // erasure ends at its next read.
        refuse_erased(&log.index(), topic)?;
        if let Some(page) = self.read_held(topic, after_seq, limit)? {
            return Ok(page);
        }
        let (khala, log, topic) = (Arc::clone(self), Arc::clone(log), topic.clone());
        match tokio::task::spawn_blocking(move || khala.read(&log, &topic, after_seq, limit)).await
        {
            Ok(read) => read,
            Err(failed) if failed.is_panic() => std::panic::resume_unwind(failed.into_panic()),
            Err(_) => Err(KhalaError::Read(ReadError::Unavailable(
                "the service is shutting down".into(),
            ))),
        }
    }

    /// The page of `topic` after `after_seq` when memory holds it (the
    /// aggregate lane, or a topic's window); `None` when the log is needed.
    fn read_held(
        &self,
        topic: &Topic,
        after_seq: u64,
        limit: Limit,
    ) -> Result<Option<PollPage>, KhalaError> {
        if *topic == Topic::CodexWorkerEvents {
            let window = self.aggregate.lock().expect("aggregate lock");
            return self.whole_window_page(&window, after_seq, limit).map(Some);
        }
        match self
            .driver
            .poll(topic, after_seq, limit, self.max_response_bytes)
        {
            Some(Ok(Polled::Page(page))) => Ok(Some(page)),
            Some(Err(stale)) => Err(KhalaError::Stale(stale)),
            Some(Ok(Polled::FromLog(_))) | None => Ok(None),
        }
    }

    /// The page after `after_seq` of a window that holds everything its
    /// topic retains (the aggregate lane, a rebuilt firehose), so it never
    /// sends a read to the log.
    fn whole_window_page(
        &self,
        window: &TopicWindow,
        after_seq: u64,
        limit: Limit,
    ) -> Result<PollPage, KhalaError> {
        let polled = window
            .poll(after_seq, limit, self.max_response_bytes)
            .map_err(KhalaError::Stale)?;
        Ok(polled
            .into_page()
            .expect("a window holding its whole topic answers from memory"))
    }

    /// The page of `topic` after `after_seq`: from memory, from its window
    /// rebuilt from the log when not held, or read from the log below the
    /// held messages. Blocks while the log is read.
    fn read(
        &self,
        log: &EventLog<Stream>,
        topic: &Topic,
        after_seq: u64,
        limit: Limit,
    ) -> Result<PollPage, KhalaError> {
        if let Some(page) = self.read_held(topic, after_seq, limit)? {
            return Ok(page);
        }
        loop {
            let polled = self
                .driver
                .poll(topic, after_seq, limit, self.max_response_bytes);
            match polled {
                Some(Ok(Polled::Page(page))) => return Ok(page),
                Some(Ok(Polled::FromLog(plan))) => return self.page_from_log(log, topic, plan),
                Some(Err(stale)) => return Err(KhalaError::Stale(stale)),
                None if topic.stream().is_none() => {
                    let rebuilt =
                        self.firehoses
                            .restore(log, &*self.driver, topic, self.capacity)?;
                    if let Some(window) = rebuilt {
                        return self.whole_window_page(&window, after_seq, limit);
                    }
                }
                None => self.restore(log, topic)?,
            }
        }
    }

    /// A page whose messages are no longer held in memory, read from the
    /// log a few records at a time up to the response's byte cap.
    fn page_from_log(
        &self,
        log: &EventLog<Stream>,
        topic: &Topic,
        plan: PollPlan,
    ) -> Result<PollPage, KhalaError> {
        let stream = topic
            .stream()
            .expect("merged topics retain only what they hold, so are never read from the log")
            .to_string();
        let mut page = PageBuilder::new(plan, self.max_response_bytes);
        while let Some(next) = page.wants() {
            let chunk = topic_messages(log, &stream, next - 1, LOG_CHUNK)?;
            if chunk.is_empty() {
                break;
            }
            for message in chunk {
                let bytes = message.wire_len();
                if !page.push(message, bytes) {
                    break;
                }
            }
        }
        Ok(page.finish())
    }

    /// Rebuilds a topic's window from the newest messages of the log that
    /// fit its byte budget (read from the end, a few at a time), then
    /// publishes whatever was committed while they were being read.
    fn restore(&self, log: &EventLog<Stream>, topic: &Topic) -> Result<(), KhalaError> {
        let stream = topic
            .stream()
            .expect("the aggregate lane is rebuilt by recover, not restored")
            .to_string();
        let head = stream_head(log, &stream);
        let floor = head.saturating_sub(self.capacity.get() as u64);
        let budget = self.driver.max_window_bytes();
        let (mut end, mut bytes, mut chunks) = (head, 0usize, Vec::new());
        while end > floor && bytes <= budget {
            let start = end.saturating_sub(LOG_CHUNK as u64).max(floor);
            let chunk = topic_messages(log, &stream, start, (end - start) as usize)?;
            bytes = chunk
                .iter()
                .fold(bytes, |sum, message| sum.saturating_add(message.wire_len()));
            chunks.push(chunk);
            end = start;
        }
        let newest: Vec<Message> = chunks.into_iter().rev().flatten().collect();
        // Erased while it was read: its payloads must not be held.
        refuse_erased(&log.index(), topic)?;
        let mut restored = head;
        if let Err(error) = self.driver.restore(topic.clone(), head, newest) {
            // Trying again would read the same messages: the log holds a
            // hole in the range the topic retains (heartbeats thinned while
            // RUNTIME_FANOUT_QUEUE_CAPACITY was lower).
            self.driver.forget(topic);
            return Err(KhalaError::Read(ReadError::Damaged {
                offset: 0,
                reason: format!("the log cannot rebuild the window of {topic}: {error}"),
            }));
        }
        while stream_head(log, &stream) > restored {
            for message in topic_messages(log, &stream, restored, LOG_CHUNK)? {
                restored = message.sequence;
                if self.driver.publish(topic, message).is_err() {
                    self.driver.forget(topic);
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// A long-poll's registration, counted against the waiter limit.
    fn wait_slot(&self, topic: &str) -> Result<(Waker, WaiterSlot), KhalaError> {
        let previous = self.waiters.fetch_add(1, Ordering::AcqRel);
        let slot = WaiterSlot(Arc::clone(&self.waiters));
        if previous >= self.max_waiters {
            return Err(KhalaError::TooManyWaiters);
        }
        Ok((self.waker(topic), slot))
    }

    /// A live stream's registration, counted against the stream limits in
    /// all and per principal.
    pub(crate) fn stream_slot(
        &self,
        principal: &Principal,
        topic: &str,
    ) -> Result<(Waker, StreamSlot), KhalaError> {
        let key = principal_key(principal);
        {
            let mut counts = self.streams.lock().expect("streams lock");
            let mine = counts.per_principal.get(&key).copied().unwrap_or(0);
            if counts.total >= self.max_streams || mine >= self.max_streams_per_principal {
                return Err(KhalaError::TooManyStreams);
            }
            counts.total += 1;
            counts.per_principal.insert(key.clone(), mine + 1);
        }
        let slot = StreamSlot {
            counts: Arc::clone(&self.streams),
            key,
        };
        Ok((self.waker(topic), slot))
    }

    fn waker(&self, topic: &str) -> Waker {
        let receiver = {
            let mut wakers = self.wakers.lock().expect("wakers lock");
            wakers
                .entry(topic.to_owned())
                .or_insert_with(|| watch::channel(0).0)
                .subscribe()
        };
        Waker {
            wakers: Arc::clone(&self.wakers),
            topic: topic.to_owned(),
            receiver,
        }
    }

    /// Messages a live stream may fall behind its topic's head.
    pub(crate) fn max_stream_lag(&self) -> u64 {
        self.max_stream_lag
    }

    /// Live streams currently open.
    pub(crate) fn streaming(&self) -> usize {
        self.streams.lock().expect("streams lock").total
    }

    /// Long-polls currently waiting.
    pub(crate) fn waiting(&self) -> usize {
        self.waiters.load(Ordering::Acquire)
    }

    fn wake(&self, topic: &str, sequence: u64) {
        let wakers = self.wakers.lock().expect("wakers lock");
        if let Some(sender) = wakers.get(topic) {
            sender.send_replace(sequence);
        }
    }

    fn publish_record(&self, record: &RecordRef<'_>, index: &Index<Stream>) -> Result<(), String> {
        let stream: StreamId = record.stream.parse().map_err(|e| format!("{e}"))?;
        let is_worker = stream.worker_id().is_some();
        let topic = Topic::from(stream);
        let name = topic.to_string();
        if is_tombstone(record) {
            // The window holds the erased run's payloads: drop it. Readers
            // are woken to be told the run is gone.
            self.driver.forget(&topic);
        } else if self.driver.holds(&topic) {
            let message = stream_message(record, &name, record.seq)?;
            if self.driver.publish(&topic, message).is_err() {
                self.driver.forget(&topic);
            }
        }
        self.wake(&name, record.seq);
        if is_worker {
            let sequence = {
                let mut aggregate = self.aggregate.lock().expect("aggregate lock");
                let sequence = aggregate.bounds().head_cursor + 1;
                aggregate
                    .publish(stream_message(record, AGGREGATE_TOPIC, sequence)?)
                    .map_err(|e| e.to_string())?;
                sequence
            };
            self.wake(AGGREGATE_TOPIC, sequence);
        }
        if let Some((topic, sequence)) = self.firehoses.committed(record, index, &*self.driver)? {
            self.wake(&topic.to_string(), sequence);
        }
        Ok(())
    }
}

impl CommitObserver<Stream> for Khala {
    fn committed(&self, records: &[RecordRef<'_>], index: &Index<Stream>) {
        for record in records {
            if let Err(reason) = self.publish_record(record, index) {
                tracing::error!(stream = %record.stream, seq = record.seq, %reason, "publishing to khala failed");
            }
        }
    }
}

/// The wake-up senders, one per topic someone waits on.
type Wakers = Arc<Mutex<HashMap<String, watch::Sender<u64>>>>;

/// Open live streams, in all and per principal.
#[derive(Default)]
struct StreamCounts {
    total: usize,
    per_principal: HashMap<String, usize>,
}

/// Who a stream counts against: the user, else the guest scope, else the
/// device the token was issued to.
fn principal_key(principal: &Principal) -> String {
    match (&principal.user_id, &principal.org_id, &principal.device_id) {
        (Some(user), _, _) => format!("user:{user}"),
        (None, Some(org), _) => format!("org:{org}"),
        (None, None, Some(device)) => format!("device:{device}"),
        (None, None, None) => "anonymous".to_owned(),
    }
}

/// A long-poll's place under the waiter limit, given back when dropped.
struct WaiterSlot(Arc<AtomicUsize>);

impl Drop for WaiterSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A live stream's place under the stream limits, given back when dropped.
pub(crate) struct StreamSlot {
    counts: Arc<Mutex<StreamCounts>>,
    key: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().expect("streams lock");
        counts.total -= 1;
        if let Some(mine) = counts.per_principal.get_mut(&self.key) {
            *mine -= 1;
            if *mine == 0 {
                counts.per_principal.remove(&self.key);
            }
        }
    }
}

/// Wakes when a record of its topic is committed; the topic's sender is
/// dropped with its last waker.
pub(crate) struct Waker {
    wakers: Wakers,
    topic: String,
    receiver: watch::Receiver<u64>,
}

impl Waker {
    /// Resolves at the topic's next commit (or at once if one came since
    /// the last call).
    pub(crate) async fn changed(&mut self) -> Result<(), watch::error::RecvError> {
        self.receiver.changed().await
    }
}

impl Drop for Waker {
    fn drop(&mut self) {
        let mut wakers = self.wakers.lock().expect("wakers lock");
        // This receiver still counts; the sender is dropped with the last one.
        if wakers
            .get(&self.topic)
            .is_some_and(|sender| sender.receiver_count() <= 1)
        {
            wakers.remove(&self.topic);
        }
    }
}

fn stream_head(log: &EventLog<Stream>, stream: &str) -> u64 {
    log.index().stream(stream).map_or(0, |entry| entry.head())
}

/// Messages of a run or worker stream with `after < seq <= after + limit`.
fn topic_messages(
    log: &EventLog<Stream>,
    stream: &str,
    after: u64,
    limit: usize,
) -> Result<Vec<Message>, KhalaError> {
    let damaged = |reason: String| KhalaError::Read(ReadError::Damaged { offset: 0, reason });
    let topic = stream
        .parse::<StreamId>()
        .map_err(|e| damaged(e.to_string()))?
        .topic();
    let messages = log.read_stream(stream, after, limit, |record| {
        stream_message(&record, &topic, record.seq)
    })?;
    messages
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(damaged)
}

/// A record of a run or worker stream as the message of `topic` with
/// `sequence`: a run event as it was appended; a worker lifecycle event as
/// the worker's status and heartbeat state after it.
pub(crate) fn stream_message(
    record: &RecordRef<'_>,
    topic: &str,
    sequence: u64,
) -> Result<Message, String> {
    let stream: StreamId = record.stream.parse().map_err(|e| format!("{e}"))?;
    let payload = match stream {
        StreamId::Run(_) => {
            serde_json::from_str(record.payload.get()).map_err(|e| e.to_string())?
        }
        StreamId::Worker(worker_id) => {
            let after = WorkerAfter::of(record).map_err(|e| e.to_string())?;
            json!({
                "worker_id": worker_id.as_str(),
                "status": after.status,
                "latest_seq": record.seq,
                "heartbeat_state": after.heartbeat_state,
            })
        }
    };
    Ok(Message {
        topic: topic.to_owned(),
        sequence,
        kind: record.event_type.to_string(),
        payload,
        published_at: record.at.to_string(),
    })
}

/// The number of worker records in the log, and the newest `limit` of them
/// as (stream, seq), oldest first. The merge stops early at a seq the
/// archive did not keep (a thinned heartbeat): its place among the other
/// streams' records is unknown, so nothing older can be numbered.
fn newest_worker_records(
    log: &EventLog<Stream>,
    limit: usize,
) -> Result<(u64, Vec<(String, u64)>), ReadError> {
    let workers: Vec<(String, u64)> = log
        .index()
        .streams()
        .filter(|(_, entry)| entry.state().as_worker().is_some())
        .map(|(name, entry)| (name.to_owned(), entry.head()))
        .collect();
    let total = workers.iter().map(|(_, head)| head).sum();
    let lsn_of = |slot: usize, seq: u64| -> Result<Option<u64>, ReadError> {
        Ok(log
            .read_stream(&workers[slot].0, seq - 1, 1, |record| record.lsn)?
            .pop())
    };
    // Max-heap of each stream's newest record not taken yet, by log
    // position; each step reads one record's position.
    let mut heap = BinaryHeap::new();
    for (slot, (_, head)) in workers.iter().enumerate() {
        if *head > 0
            && let Some(lsn) = lsn_of(slot, *head)?
        {
            heap.push((lsn, slot, *head));
        }
    }
    let mut newest = Vec::with_capacity(limit);
    while newest.len() < limit {
        let Some((_, slot, seq)) = heap.pop() else {
            break;
        };
        newest.push((workers[slot].0.clone(), seq));
        if seq > 1 {
            match lsn_of(slot, seq - 1)? {
                Some(lsn) => heap.push((lsn, slot, seq - 1)),
                None => break,
            }
        }
    }
    newest.reverse();
    Ok((total, newest))
}

/// Refuses a topic whose run was erased.
fn refuse_erased(index: &Index<Stream>, topic: &Topic) -> Result<(), KhalaError> {
    let Some(StreamId::Run(run)) = topic.stream() else {
        return Ok(());
    };
    let erasure = index
        .stream(&StreamId::Run(run).to_string())
        .and_then(|entry| entry.state().as_run()?.erasure().cloned());
    match erasure {
        Some(erasure) => Err(KhalaError::RunErased {
            run,
            erased_at: erasure.erased_at,
        }),
        None => Ok(()),
    }
}

fn khala_owner(owner: &openagents_workers::Owner) -> acl::Owner {
    acl::Owner {
        user_id: owner.user_id(),
        guest_scope: owner.guest_scope().map(str::to_owned),
    }
}

fn owner_lookup(index: &Index<Stream>, entity: Entity<'_>) -> OwnerLookup {
    match entity {
        Entity::Run(id) => match index
            .stream(&StreamId::Run(id).to_string())
            .and_then(|e| e.state().as_run())
        {
            None => OwnerLookup::Unknown,
            Some(run) => run.owner.as_ref().map_or(OwnerLookup::RunUnowned, |o| {
                OwnerLookup::RunOwned(khala_owner(o))
            }),
        },
        Entity::Worker(id) => {
            worker_owner(index, id.as_str()).map_or(OwnerLookup::Unknown, OwnerLookup::WorkerOwned)
        }
    }
}

fn worker_owner(index: &Index<Stream>, worker_id: &str) -> Option<acl::Owner> {
    let worker = index
        .stream(&StreamId::worker(worker_id).ok()?.to_string())?
        .state()
        .as_worker()?;
    Some(khala_owner(worker.owner()))
}

fn unix_now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
