//! The per-user firehoses: `runs:user:{user_id}:events` (every event of every
//! run the user owns) and `fleet:user:{user_id}:workers` (every lifecycle
//! event of every worker the user owns), each in log order with a gap-free
//! sequence of its own.
//!
//! A firehose message's sequence is its record's place among the user's
//! records of that family in log order, so it is a pure function of the log
//! and the same after a restart. Counting needs no pass over the log: a
//! family's count for a user is the sum of the heads of the user's streams,
//! taken from the index at start and kept up on every commit. Windows live in
//! the fanout driver like every other topic (same byte budgets, same LRU);
//! one that is not held is rebuilt on demand by merging the user's streams
//! from their ends, newest first, through `EventLog::read_stream`, until the
//! window's capacity or byte budget is reached. A merged topic cannot be read
//! by sequence from the log, so its retained window is what it holds
//! (`openagents_khala::window`). No lock is held while the log is read, so
//! the commit path never waits on a rebuild.
//!
//! An erased run keeps its places in its owner's firehose, so every later
//! sequence (and every client's cursor) stays what it was; what fills them
//! is a placeholder, `kind: "run.erased"` with `payload: {run_id, run_seq}`
//! and the erasure's time, never the event. Its tombstone drops the
//! firehose's window, so the next read rebuilds it with the placeholders.

use crate::fanout::FanoutDriver;
use crate::khala::{KhalaError, stream_message};
use openagents_authority::{RUN_ERASED, Stream, StreamId, is_tombstone};
use openagents_event_log::{EventLog, Index, ReadError, RecordRef};
use openagents_khala::message::Message;
use openagents_khala::topic::Topic;
use openagents_khala::window::TopicWindow;
use serde_json::json;
use std::collections::{BinaryHeap, HashMap};
use std::num::NonZeroUsize;
use std::sync::{Mutex, MutexGuard};

/// Records read from a stream at a time while merging, after its head.
const MERGE_CHUNK: usize = 8;
/// Rebuilds tried before a read is answered from one that could not be
/// installed.
const REBUILDS: usize = 3;

/// Which firehose a stream feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Family {
    Runs,
    Workers,
}

/// The counts the firehose sequences come from, and how far the commit path
/// has counted.
#[derive(Default)]
struct Counts {
    per_user: HashMap<(Family, u64), u64>,
    /// The newest log position counted; records at or below it are known.
    counted_lsn: u64,
}

/// The firehose counts, shared by the commit path and the rebuilds.
#[derive(Default)]
pub(crate) struct Firehoses {
    counts: Mutex<Counts>,
}

impl Firehoses {
    fn counts(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().expect("firehose lock")
    }

    /// Takes every user's counts from the index heads: one pass over the
    /// streams in memory, none over the log.
    pub(crate) fn recover(&self, index: &Index<Stream>) {
        let mut counts = self.counts();
        counts.per_user.clear();
        for (_, entry) in index.streams() {
            if let Some(key) = owner_key(entry.state()) {
                *counts.per_user.entry(key).or_default() += entry.head();
            }
        }
        counts.counted_lsn = index.last_lsn();
    }

    /// Counts a committed record into its owner's firehose and publishes it
    /// to that firehose's window when held; returns the topic to wake and
    /// the message's sequence. Runs on the writer thread, in log order.
    pub(crate) fn committed(
        &self,
        record: &RecordRef<'_>,
        index: &Index<Stream>,
        driver: &dyn FanoutDriver,
    ) -> Result<Option<(Topic, u64)>, String> {
        let Some(key) = index
            .stream(&record.stream)
            .and_then(|entry| owner_key(entry.state()))
        else {
            return Ok(None);
        };
        let mut counts = self.counts();
        // Counted already when the index was read at start.
        if record.lsn <= counts.counted_lsn {
            return Ok(None);
        }
        counts.counted_lsn = record.lsn;
        let count = counts.per_user.entry(key).or_default();
        *count += 1;
        let topic = firehose_topic(key);
        if is_tombstone(record) {
            // The window holds the erased run's events: the next read rebuilds
            // it with placeholders in their places.
            driver.forget(&topic);
            return Ok(Some((topic, *count)));
        }
        // Published under the lock, so that a rebuild installs its window
        // either before this message (which then extends it) or after it
        // (and has counted it).
        if driver.holds(&topic) {
            let message = firehose_message(record, &topic.to_string(), *count)?;
            if driver.publish(&topic, message).is_err() {
                driver.forget(&topic);
            }
        }
        Ok(Some((topic, *count)))
    }

    /// Rebuilds the window of a firehose topic from the log, without holding
    /// the commit path while reading, and installs it if no record of the
    /// user was counted meanwhile. When records were counted during every
    /// try, the last rebuild is returned instead, for this read alone: it
    /// is a valid window as of its count, and the next read tries again. The
    /// commit path therefore never waits on log reads.
    pub(crate) fn restore(
        &self,
        log: &EventLog<Stream>,
        driver: &dyn FanoutDriver,
        topic: &Topic,
        capacity: NonZeroUsize,
    ) -> Result<Option<TopicWindow>, KhalaError> {
        let key = firehose_key(topic).expect("only firehose topics are restored here");
        let max_bytes = driver.max_window_bytes();
        let mut last = None;
        for _ in 0..REBUILDS {
            let bounds = {
                let counts = self.counts();
                Bounds {
                    head: counts.of(key),
                    counted_lsn: counts.counted_lsn,
                    capacity: capacity.get(),
                    max_bytes,
                }
            };
            let newest = newest_messages(log, key, topic, bounds)?;
            let counts = self.counts();
            if counts.of(key) == bounds.head {
                // Under the lock, so no commit publishes between the count
                // and the install.
                if driver.restore(topic.clone(), bounds.head, newest).is_err() {
                    driver.forget(topic);
                }
                return Ok(None);
            }
            last = Some((bounds.head, newest));
        }
        let (head, newest) = last.expect("at least one rebuild ran");
        TopicWindow::restore_newest(topic.clone(), capacity, max_bytes, head, newest)
            .map(Some)
            .map_err(|e| damaged(format!("rebuilding {topic}: {e}")))
    }
}

impl Counts {
    /// The count of the firehose `key`.
    fn of(&self, key: (Family, u64)) -> u64 {
        self.per_user.get(&key).copied().unwrap_or(0)
    }
}

/// The extent of a rebuild: the firehose's head as counted, the log position
/// it was counted to, and the window's limits.
#[derive(Clone, Copy)]
struct Bounds {
    head: u64,
    counted_lsn: u64,
    capacity: usize,
    max_bytes: usize,
}

/// The newest messages of the firehose `key` (oldest first) among the
/// records at or below `counted_lsn`, numbered down from `head`: at most
/// `capacity`, and no more once they weigh over `max_bytes`.
fn newest_messages(
    log: &EventLog<Stream>,
    key: (Family, u64),
    topic: &Topic,
    bounds: Bounds,
) -> Result<Vec<Message>, KhalaError> {
    let name = topic.to_string();
    let mut readers: Vec<Backwards> = {
        let index = log.index();
        index
            .streams()
            .filter(|(_, entry)| owner_key(entry.state()) == Some(key))
            .map(|(stream, entry)| {
                let erased_at = entry
                    .state()
                    .as_run()
                    .and_then(|run| run.erasure())
                    .map(|erasure| erasure.erased_at.clone());
                Backwards::new(stream, entry.head(), erased_at)
            })
            .collect()
    };
    // Max-heap of each stream's newest record not taken yet, by log position.
    let mut heap = BinaryHeap::new();
    for (slot, reader) in readers.iter_mut().enumerate() {
        if let Some(lsn) = reader.peek_lsn(log, 1)? {
            heap.push((lsn, slot));
        }
    }
    let (mut newest, mut bytes, mut sequence) = (Vec::new(), 0usize, bounds.head);
    while newest.len() < bounds.capacity && bytes <= bounds.max_bytes && sequence > 0 {
        let Some((lsn, slot)) = heap.pop() else {
            break;
        };
        let reader = &mut readers[slot];
        let record = reader.take();
        if let Some(next) = reader.peek_lsn(log, MERGE_CHUNK)? {
            heap.push((next, slot));
        }
        // Below a seq the archive did not keep (a thinned heartbeat) the
        // places of older records are unknown: the window ends here.
        let hole_next = reader.at_hole();
        // Committed after the count was taken: the commit path numbers it.
        if lsn > bounds.counted_lsn {
            continue;
        }
        let mut message = record.message;
        message.topic.clone_from(&name);
        message.sequence = sequence;
        bytes = bytes.saturating_add(message.wire_len());
        newest.push(message);
        sequence -= 1;
        if hole_next {
            break;
        }
    }
    newest.reverse();
    Ok(newest)
}

/// A record read while merging: its log position and its message, numbered
/// once its place in the firehose is known.
struct Read {
    lsn: u64,
    message: Message,
}

/// Reads one stream from its head down, a chunk at a time.
struct Backwards {
    stream: String,
    /// When the stream's run was erased: its records become placeholders.
    erased_at: Option<String>,
    /// The newest seq not read yet; 0 once the stream is read to its start.
    below: u64,
    /// Read and not taken yet, oldest first.
    buffer: Vec<Read>,
    /// The record below the buffer is missing from the log.
    hole: bool,
}

impl Backwards {
    fn new(stream: &str, head: u64, erased_at: Option<String>) -> Self {
        Backwards {
            stream: stream.to_owned(),
            erased_at,
            below: head,
            buffer: Vec::new(),
            hole: false,
        }
    }

    /// The log position of the newest record not taken yet, reading up to
    /// `chunk` records when none is buffered.
    fn peek_lsn(
        &mut self,
        log: &EventLog<Stream>,
        chunk: usize,
    ) -> Result<Option<u64>, KhalaError> {
        if self.buffer.is_empty() && self.below > 0 {
            let after = self.below.saturating_sub(chunk as u64);
            let read = log.read_stream(
                &self.stream,
                after,
                (self.below - after) as usize,
                |record| {
                    let message = match &self.erased_at {
                        Some(erased_at) => Ok(erased_placeholder(&record, erased_at)),
                        None => firehose_message(&record, "", 0),
                    };
                    message.map(|message| {
                        (
                            record.seq,
                            Read {
                                lsn: record.lsn,
                                message,
                            },
                        )
                    })
                },
            )?;
            // Only the records above the newest missing seq can be placed.
            let mut expected = self.below;
            let mut contiguous = Vec::with_capacity(read.len());
            for read in read.into_iter().rev() {
                let (seq, read) = read.map_err(damaged)?;
                if seq != expected {
                    break;
                }
                contiguous.push(read);
                expected -= 1;
            }
            contiguous.reverse();
            self.buffer = contiguous;
            self.hole = expected > after;
            self.below = if self.hole { 0 } else { after };
        }
        Ok(self.buffer.last().map(|read| read.lsn))
    }

    /// Whether nothing is buffered and a missing record is next.
    fn at_hole(&self) -> bool {
        self.hole && self.buffer.is_empty()
    }

    fn take(&mut self) -> Read {
        self.buffer
            .pop()
            .expect("taken only after a peek found a record")
    }
}

fn damaged(reason: String) -> KhalaError {
    KhalaError::Read(ReadError::Damaged { offset: 0, reason })
}

/// The firehose a stream feeds: its owning user's, when a user owns it.
fn owner_key(state: &Stream) -> Option<(Family, u64)> {
    if let Some(run) = state.as_run() {
        return Some((Family::Runs, run.owner.as_ref()?.user_id()?));
    }
    let worker = state.as_worker()?;
    Some((Family::Workers, worker.owner().user_id()?))
}

fn firehose_topic((family, user): (Family, u64)) -> Topic {
    match family {
        Family::Runs => Topic::UserRuns(user),
        Family::Workers => Topic::UserWorkers(user),
    }
}

fn firehose_key(topic: &Topic) -> Option<(Family, u64)> {
    match topic {
        Topic::UserRuns(user) => Some((Family::Runs, *user)),
        Topic::UserWorkers(user) => Some((Family::Workers, *user)),
        _ => None,
    }
}

/// What stands in a firehose for a record of an erased run: its place and
/// its run, nothing of the event (numbered once its place is known).
fn erased_placeholder(record: &RecordRef<'_>, erased_at: &str) -> Message {
    let run_id = match record.stream.parse::<StreamId>() {
        Ok(StreamId::Run(run_id)) => Some(run_id),
        _ => None,
    };
    Message {
        topic: String::new(),
        sequence: 0,
        kind: RUN_ERASED.to_owned(),
        payload: json!({"run_id": run_id, "run_seq": record.seq}),
        published_at: erased_at.to_owned(),
    }
}

/// A record as a firehose message: a worker's as on its own topic; a run's
/// event wrapped with the run it belongs to and its seq there, since the
/// firehose's sequence is not the run's.
fn firehose_message(record: &RecordRef<'_>, topic: &str, sequence: u64) -> Result<Message, String> {
    let mut message = stream_message(record, topic, sequence)?;
    if let Ok(StreamId::Run(run_id)) = record.stream.parse::<StreamId>() {
        message.payload = json!({
            "run_id": run_id,
            "run_seq": record.seq,
            "payload": message.payload,
        });
    }
    Ok(message)
}
