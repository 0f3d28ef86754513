//! Retention: which histories leave the hot log for the archive, and the
//! thread that moves them.
//!
//! - A run sealed longer ago than `RUNTIME_RETENTION_SEALED_AFTER` moves
//!   whole: the archive keeps every record, so the run reads back byte for
//!   byte the same.
//! - The heartbeats of a worker older than
//!   `RUNTIME_RETENTION_HEARTBEATS_AFTER` move too, but the archive keeps
//!   only the latest of them, with every lifecycle transition. The worker's
//!   state is folded in the index and does not change. The newest
//!   `RUNTIME_FANOUT_QUEUE_CAPACITY` records of a worker never move: they
//!   are what its lifecycle topic (and its owner's fleet firehose) retains,
//!   and Khala serves a retained range whole.
//!
//! - An erased run's history always moves at the next pass, whatever the
//!   policy: the archive keeps its tombstone whole and of every other
//!   event only its place (a husk without payload), which its owner's
//!   firehose still counts. Compaction then removes the payloads from disk.
//!
//! A move is `EventLog::move_cold`: the history is durable in the archive
//! before the index serves it from there, so a run is readable from the hot
//! log, the archive or both at every instant. The hot log's copies are then
//! dead, and compaction reclaims their bytes. The same pass runs in the
//! background of the service and in the offline `archive` command.

use crate::config::Config;
use openagents_authority::{RUN_ERASED, Stream};
use openagents_event_log::{ColdMoveError, EventLog, Index, Keep, ReadError, RecordRef};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

/// The record type of a worker heartbeat, the only one that is thinned.
const HEARTBEAT: &str = "worker.heartbeat";
/// Records read at once while a worker's old heartbeats are found.
const PAGE: usize = 4096;

/// What retention moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Runs sealed longer ago than this.
    pub sealed_after: Option<Duration>,
    /// Worker heartbeats older than this.
    pub heartbeats_after: Option<Duration>,
    /// The newest records of a worker that always stay (what Khala
    /// retains of its topic).
    pub worker_records_kept: u64,
}

impl Policy {
    /// The configured policy.
    pub fn of(config: &Config) -> Self {
        Policy {
            sealed_after: config.retention_sealed_after,
            heartbeats_after: config.retention_heartbeats_after,
            worker_records_kept: config.fanout_queue_capacity as u64,
        }
    }

    /// Whether it moves nothing.
    pub fn is_off(&self) -> bool {
        self.sealed_after.is_none() && self.heartbeats_after.is_none()
    }
}

/// What a pass moved, or would move (a dry run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Runs whose whole history moved.
    pub runs: u64,
    /// Erased runs whose payloads left the hot log.
    pub erased: u64,
    /// Workers whose old heartbeats moved.
    pub workers: u64,
    /// Records of the hot log that became dead.
    pub records: u64,
    /// Their bytes in the hot log: what compaction reclaims.
    pub bytes: u64,
}

/// One history to move: its stream, the seq up to which it moves, and the
/// seq of the one heartbeat a worker keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Move {
    stream: String,
    base: u64,
    kind: MoveKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MoveKind {
    Run,
    Erased,
    Heartbeats { latest: Option<u64> },
}

impl Move {
    fn keeps(&self, record: &RecordRef<'_>) -> Keep {
        match self.kind {
            MoveKind::Run => Keep::Whole,
            MoveKind::Erased if record.event_type == RUN_ERASED => Keep::Whole,
            MoveKind::Erased => Keep::Husk,
            MoveKind::Heartbeats { latest }
                if record.event_type == HEARTBEAT && Some(record.seq) != latest =>
            {
                Keep::Drop
            }
            MoveKind::Heartbeats { .. } => Keep::Whole,
        }
    }
}

/// Runs whose history is still hot and that were erased, or sealed before
/// `cutoff` (when given), by stream name.
fn run_moves(index: &Index<Stream>, cutoff: Option<SystemTime>) -> Vec<Move> {
    let mut moves: Vec<Move> = index
        .streams()
        .filter(|(_, entry)| entry.cold_base() < entry.head())
        .filter_map(|(name, entry)| {
            let run = entry.state().as_run().filter(|run| run.is_sealed())?;
            let kind = if run.erasure().is_some() {
                MoveKind::Erased
            } else {
                let sealed_at = humantime::parse_rfc3339(&run.updated_at).ok()?;
                cutoff.filter(|cutoff| sealed_at < *cutoff)?;
                MoveKind::Run
            };
            Some(Move {
                stream: name.to_owned(),
                base: entry.head(),
                kind,
            })
        })
        .collect();
    moves.sort_by(|a, b| a.stream.cmp(&b.stream));
    moves
}

/// Worker streams with records past their cold base, by name.
fn workers(index: &Index<Stream>) -> Vec<(String, u64)> {
    let mut workers: Vec<(String, u64)> = index
        .streams()
        .filter(|(_, entry)| entry.state().as_worker().is_some())
        .filter(|(_, entry)| entry.cold_base() < entry.head())
        .map(|(name, entry)| (name.to_owned(), entry.cold_base()))
        .collect();
    workers.sort();
    workers
}

/// The move of a worker's records older than `cutoff` and below its
/// newest `kept`, if any is past its cold base: they move up to the newest
/// of them, and the archive keeps the latest heartbeat among them (or the
/// one it kept before).
fn heartbeat_move(
    log: &EventLog<Stream>,
    stream: &str,
    cold_base: u64,
    cutoff: SystemTime,
    kept: u64,
) -> Result<Option<Move>, ReadError> {
    let head = log.index().stream(stream).map_or(0, |entry| entry.head());
    let movable = head.saturating_sub(kept);
    let (mut after, mut base, mut latest) = (0, 0, None);
    'pages: while after < movable {
        let page = (movable - after).min(PAGE as u64);
        let records = log.read_stream(stream, after, page as usize, |record| {
            (
                record.seq,
                record.event_type == HEARTBEAT,
                recorded_at(&record),
            )
        })?;
        for (seq, heartbeat, at) in records {
            if at >= cutoff {
                break 'pages;
            }
            base = seq;
            if heartbeat {
                latest = Some(seq);
            }
        }
        after += page;
    }
    Ok((base > cold_base).then(|| Move {
        stream: stream.to_owned(),
        base,
        kind: MoveKind::Heartbeats { latest },
    }))
}

/// When a record was written; one that does not say is taken as new, so it
/// is never moved by age.
fn recorded_at(record: &RecordRef<'_>) -> SystemTime {
    humantime::parse_rfc3339(&record.at).unwrap_or(SystemTime::UNIX_EPOCH + Duration::MAX / 2)
}

/// Every move `policy` asks for at `now`.
fn planned(
    log: &EventLog<Stream>,
    policy: Policy,
    now: SystemTime,
) -> Result<Vec<Move>, ReadError> {
    let cutoff = policy.sealed_after.map(|after| now - after);
    let mut moves = run_moves(&log.index(), cutoff);
    if let Some(after) = policy.heartbeats_after {
        let workers = workers(&log.index());
        for (stream, cold_base) in workers {
            let kept = policy.worker_records_kept;
            moves.extend(heartbeat_move(log, &stream, cold_base, now - after, kept)?);
        }
    }
    Ok(moves)
}

/// The records of `stream` after `cold_base` up to `base`, and their bytes
/// in the hot log.
fn hot_records(
    log: &EventLog<Stream>,
    stream: &str,
    cold_base: u64,
    base: u64,
) -> Result<(u64, u64), ReadError> {
    let (mut records, mut bytes) = (0, 0);
    let mut after = cold_base;
    let mut line = Vec::new();
    while after < base {
        let page = (base - after).min(PAGE as u64);
        let sizes = log.read_stream(stream, after, page as usize, |record| {
            line_len(&record, &mut line)
        })?;
        after += page;
        records += sizes.len() as u64;
        bytes += sizes.iter().sum::<u64>();
    }
    Ok((records, bytes))
}

/// The bytes of `record`'s line in the hot log, encoded into `line`.
fn line_len(record: &RecordRef<'_>, line: &mut Vec<u8>) -> u64 {
    line.clear();
    record.encode_into(line);
    line.len() as u64
}

/// Runs one pass of `policy` at `now`: moves each planned history (or,
/// with `dry_run`, only counts it), telling `progress` after each. Ends
/// early, between two moves, once `stop` is set (a shutdown); the next pass
/// takes up the rest.
pub fn run_pass(
    log: &EventLog<Stream>,
    policy: Policy,
    now: SystemTime,
    dry_run: bool,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(&PassReport),
) -> Result<PassReport, ColdMoveError> {
    let mut report = PassReport::default();
    for planned in planned(log, policy, now)? {
        if stop.load(Ordering::Acquire) {
            break;
        }
        let cold_base = log
            .index()
            .stream(&planned.stream)
            .map_or(0, |entry| entry.cold_base());
        let (records, bytes) = if dry_run {
            hot_records(log, &planned.stream, cold_base, planned.base)?
        } else {
            // Counted while the move reads the records, not in a read of
            // its own.
            let (mut records, mut bytes, mut line) = (0, 0, Vec::new());
            let moved = log.move_cold(&planned.stream, planned.base, |record| {
                if record.seq > cold_base {
                    records += 1;
                    bytes += line_len(record, &mut line);
                }
                planned.keeps(record)
            })?;
            if moved.is_none() {
                continue;
            }
            (records, bytes)
        };
        match planned.kind {
            MoveKind::Run => report.runs += 1,
            MoveKind::Erased => report.erased += 1,
            MoveKind::Heartbeats { .. } => report.workers += 1,
        }
        report.records += records;
        report.bytes += bytes;
        progress(&report);
    }
    Ok(report)
}

/// The background thread that runs the configured policy once per
/// interval and writes a snapshot after a pass that moved something, so
/// the next start need not apply the moves again.
pub(crate) struct Retention {
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Retention {
    /// Starts the thread, unless the log has no archive. It runs without a
    /// policy too, for erased runs.
    pub(crate) fn start(
        log: Arc<EventLog<Stream>>,
        policy: Policy,
        interval: Duration,
        moved: impl Fn(&PassReport) + Send + 'static,
    ) -> Option<Self> {
        log.cold_store()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("retention".into())
            .spawn(move || {
                while !stopping.load(Ordering::Acquire) {
                    match run_pass(&log, policy, SystemTime::now(), false, &stopping, &mut |_| {}) {
                        Ok(report) if report != PassReport::default() => {
                            tracing::info!(runs = report.runs, erased = report.erased, workers = report.workers, records = report.records, bytes = report.bytes, "retention moved histories to the archive");
                            moved(&report);
                        }
                        Ok(_) => {}
                        Err(error) => {
                            tracing::error!(%error, "a retention pass failed; the history stays hot and the next pass retries");
                        }
                    }
                    std::thread::park_timeout(interval);
                }
            })
            .expect("spawning the retention thread");
        Some(Retention {
            stop,
            thread: Mutex::new(Some(thread)),
        })
    }

    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.lock().expect("retention lock").take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}
