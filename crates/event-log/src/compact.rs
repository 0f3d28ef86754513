//! Compaction of the file medium: the disk of dead records (those the cold
//! store serves now, see [`Index::is_dead`](crate::Index::is_dead)) is
//! given back.
//!
//! A sealed, archived segment whose dead records are at least the
//! configured fraction of its bytes is rewritten without them, and the
//! sealed segments right after it that hold no live record are merged into
//! the same file and deleted. The result is a *compacted* segment: the
//! first segment's path, its first line a checksummed header
//!
//! ```text
//! {"compacted":{"version":1,"first_lsn":…,"last_lsn":…,"logical_len":…,"covers":[…]},"crc":"1a2b3c4d"}
//! ```
//!
//! then the live records, as they were. A record line begins with `{"v":`,
//! so the header is never taken for one. The file keeps its place in the
//! log's byte space: it stands for `logical_len` bytes (those of every
//! segment it covers), so the next segment starts where it did and no
//! position of a later segment moves; its records sit at their new offsets
//! inside that stretch. Its records may skip log positions inside
//! `first_lsn ..= last_lsn` (the dead ones), and nowhere else.
//!
//! Each group is made crash-safe step by step (see [`Step`]): the new file
//! is written to `<segment>.compact` and synced; the old index file is
//! removed (so a stale one can never describe the new file); the new file
//! is renamed over the old one and the folder synced; the merged-away
//! segments and their index files are deleted; the new index is written;
//! then readers are switched to the new file and index in memory, under
//! the readers' gate (a read takes archived positions and reads them under
//! it, so it never reads a position of one file in the other). A start
//! ([`settle`]) removes a leftover temporary and deletes segments a
//! compacted header covers; a missing index is rebuilt as always.
//!
//! The active segment is never compacted, nor a segment whose positions
//! the in-memory index may still hold (at or above its archive floor), so
//! the writer never waits for compaction. The background pass reads and
//! writes at most the configured bytes per second.

use crate::archive::{Archive, At, StreamRun};
use crate::error::{OpenError, ReadError};
use crate::file::{folder_of, sync_folder};
use crate::index::StreamState;
use crate::segments::{Segment, Segments, beside};
use crate::{Shared, archive};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

/// The header format's version; a start refuses others.
const HEADER_VERSION: u32 = 1;
/// How a header line begins.
const HEADER_PREFIX: &[u8] = b"{\"compacted\":";
/// `,"crc":"` + 8 hex digits + `"}`, as on a record line.
const CRC_SUFFIX: usize = 18;
/// Longest header line read (a merge of many thousand segments fits).
const HEADER_MAX_BYTES: u64 = 1 << 20;
/// The suffix of a compaction's temporary file.
const TEMPORARY: &str = ".compact";
/// Read buffer of a rewrite.
const COPY_BUFFER_BYTES: usize = 1 << 20;
/// Streams whose cold base is asked for under one index lock.
const LOOKUP_BATCH: usize = 1024;
/// The environment variable a crash test names a [`Step`] in: the pass
/// stops there for good, for the test to kill the process.
const PAUSE_AT: &str = "OPENAGENTS_EVENT_LOG_COMPACT_PAUSE_AT";

/// Why a compaction pass stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompactionError {
    /// A file could not be read, written, renamed or synced.
    #[error("compacting {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A segment or its index did not read back as expected.
    #[error("compacting: {0}")]
    Read(#[from] ReadError),
    /// A new segment index could not be built.
    #[error("compacting: {0}")]
    Index(#[from] OpenError),
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactionReport {
    /// Segments rewritten without their dead records.
    pub segments_compacted: u64,
    /// Segments merged into a compacted one and deleted.
    pub segments_deleted: u64,
    /// Bytes of disk given back.
    pub bytes_reclaimed: u64,
    /// Dead bytes still on disk after the pass (in segments not worth
    /// rewriting yet, or not archived yet).
    pub bytes_pending: u64,
}

/// Counters of the medium's compaction since the log was opened, for
/// `/metrics` (all zero for a medium without segments).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactionStats {
    /// Bytes of every segment file now.
    pub hot_log_bytes: u64,
    /// Segments rewritten without their dead records.
    pub segments_compacted: u64,
    /// Segments merged away and deleted.
    pub segments_deleted: u64,
    /// Bytes of disk given back.
    pub bytes_reclaimed: u64,
    /// Dead bytes on disk as the last pass found them.
    pub bytes_pending: u64,
    /// Whether a pass is running.
    pub pass_in_progress: bool,
    /// Swaps done: rises each time readers move to a compacted file.
    pub generation: u64,
}

/// How compaction runs (from [`LogOptions`](crate::LogOptions)).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub(crate) dead_fraction: f64,
    pub(crate) bytes_per_second: u64,
    pub(crate) background: bool,
    pub(crate) interval: Duration,
}

/// The steps of compacting one group, each a place a crash test stops at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// The temporary file is written and synced.
    Written,
    /// The old index file is gone.
    IndexRemoved,
    /// The new file is in the old one's place.
    Renamed,
    /// The merged-away segments are deleted.
    Deleted,
    /// The new index file is written.
    Indexed,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Written => "written",
            Step::IndexRemoved => "index-removed",
            Step::Renamed => "renamed",
            Step::Deleted => "deleted",
            Step::Indexed => "indexed",
        }
    }

    /// Stops here for good when a crash test asked to (see [`PAUSE_AT`]).
    fn reached(self) {
        static PAUSE: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
        let pause = PAUSE.get_or_init(|| std::env::var(PAUSE_AT).ok());
        if pause.as_deref() == Some(self.name()) {
            // Straight to the process's stdout, past a test harness's
            // capture: the crash test waits for this line.
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "compaction paused at {}", self.name());
            let _ = out.flush();
            drop(out);
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
    }
}

/// The header line of a compacted segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Header {
    pub(crate) version: u32,
    pub(crate) first_lsn: u64,
    pub(crate) last_lsn: u64,
    pub(crate) logical_len: u64,
    /// The first lsns of the segments it stands for, its own first.
    pub(crate) covers: Vec<u64>,
}

impl Header {
    /// The line, with its checksum and `\n`.
    fn encode(&self) -> Vec<u8> {
        let mut line = HEADER_PREFIX.to_vec();
        serde_json::to_writer(&mut line, self).expect("a header serializes");
        let crc = crc32c::crc32c(&line);
        line.extend_from_slice(format!(",\"crc\":\"{crc:08x}\"}}\n").as_bytes());
        line
    }

    /// Decodes a header line (without `\n`), checking its checksum.
    fn decode(line: &[u8]) -> Result<Self, String> {
        let body_len = line
            .len()
            .checked_sub(CRC_SUFFIX)
            .ok_or("a compacted header too short")?;
        let (body, suffix) = line.split_at(body_len);
        let stored = std::str::from_utf8(suffix)
            .ok()
            .and_then(|s| s.strip_prefix(",\"crc\":\"")?.strip_suffix("\"}"))
            .and_then(|hex| u32::from_str_radix(hex, 16).ok())
            .ok_or("a compacted header without its checksum")?;
        if stored != crc32c::crc32c(body) {
            return Err("a compacted header fails its checksum".into());
        }
        let header: Header = serde_json::from_slice(&body[HEADER_PREFIX.len()..])
            .map_err(|error| format!("a compacted header: {error}"))?;
        if header.version != HEADER_VERSION {
            return Err(format!("compacted header version {}", header.version));
        }
        Ok(header)
    }
}

/// How a segment file is laid out: plain, or compacted with a header.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub(crate) header: Option<Header>,
    /// Where its first record line starts in the file.
    pub(crate) body_start: u64,
    /// Bytes of the file.
    pub(crate) file_len: u64,
}

impl Layout {
    /// Reads the layout of the segment `file` at `path`: a compacted one
    /// whose header does not check out refuses the start.
    pub(crate) fn of(file: &File, path: &Path) -> Result<Self, OpenError> {
        let io_error = |source| OpenError::Io {
            path: path.to_owned(),
            source,
        };
        let file_len = file.metadata().map_err(io_error)?.len();
        let mut prefix = [0; HEADER_PREFIX.len()];
        let plain = Layout {
            header: None,
            body_start: 0,
            file_len,
        };
        if file_len < prefix.len() as u64 {
            return Ok(plain);
        }
        file.read_exact_at(&mut prefix, 0).map_err(io_error)?;
        if prefix != HEADER_PREFIX {
            return Ok(plain);
        }
        let mut line = Vec::new();
        let reader = At { file, offset: 0 }.take(HEADER_MAX_BYTES);
        BufReader::new(reader)
            .read_until(b'\n', &mut line)
            .map_err(io_error)?;
        let corrupt = |reason: String| OpenError::Corrupt {
            path: path.to_owned(),
            offset: 0,
            reason,
        };
        if line.pop() != Some(b'\n') {
            return Err(corrupt("a compacted header without its end".into()));
        }
        let header = Header::decode(&line).map_err(corrupt)?;
        if header.logical_len < file_len {
            return Err(corrupt(
                "a compacted segment longer than it stands for".into(),
            ));
        }
        Ok(Layout {
            header: Some(header),
            body_start: line.len() as u64 + 1,
            file_len,
        })
    }

    /// Bytes of the log's byte space the segment stands for.
    pub(crate) fn logical_len(&self) -> u64 {
        self.header
            .as_ref()
            .map_or(self.file_len, |header| header.logical_len)
    }

    /// The lsn the next segment begins with, given the first and the count
    /// of records it holds.
    pub(crate) fn next_lsn(&self, first_lsn: u64, records: u64) -> u64 {
        self.header
            .as_ref()
            .map_or(first_lsn + records, |header| header.last_lsn + 1)
    }

    /// Whether a record at `found` may follow when `expected` is next: the
    /// same, or, in a compacted segment, any later one within its range.
    pub(crate) fn accepts_lsn(&self, expected: u64, found: u64) -> bool {
        match &self.header {
            None => found == expected,
            Some(header) => found >= expected && found <= header.last_lsn,
        }
    }
}

/// A segment file at open, with its layout.
pub(crate) struct OpenedSegment {
    pub(crate) first_lsn: u64,
    pub(crate) path: PathBuf,
    pub(crate) file: File,
    pub(crate) layout: Layout,
}

/// At open, before anything is read: finishes or discards a compaction a
/// crash interrupted. A leftover temporary is removed (the old segment is
/// still in place); a segment a compacted header covers was merged into
/// it and is deleted, with its index.
pub(crate) fn settle(files: Vec<(u64, PathBuf, File)>) -> Result<Vec<OpenedSegment>, OpenError> {
    let mut opened: Vec<OpenedSegment> = Vec::with_capacity(files.len());
    let mut covered_to = 0;
    for (first_lsn, path, file) in files {
        remove_if_there(&beside(&path, TEMPORARY)).map_err(io_at(&path))?;
        if first_lsn <= covered_to {
            let previous = opened.last().expect("only a later segment is covered");
            let covers = previous
                .layout
                .header
                .as_ref()
                .is_some_and(|header| header.covers.contains(&first_lsn));
            if !covers {
                return Err(OpenError::Corrupt {
                    path,
                    offset: 0,
                    reason: "a segment inside the range of a compacted one it does not cover"
                        .into(),
                });
            }
            tracing::warn!(segment = %path.display(), "deleting a segment an interrupted compaction merged away");
            drop(file);
            delete_segment(&path).map_err(io_at(&path))?;
            sync_folder(folder_of(&path)).map_err(io_at(&path))?;
            continue;
        }
        let layout = Layout::of(&file, &path)?;
        if let Some(header) = &layout.header {
            if header.first_lsn != first_lsn {
                return Err(OpenError::Corrupt {
                    path,
                    offset: 0,
                    reason: "a compacted header names another first position".into(),
                });
            }
            covered_to = header.last_lsn;
        }
        opened.push(OpenedSegment {
            first_lsn,
            path,
            file,
            layout,
        });
    }
    if opened
        .last()
        .is_some_and(|last| last.layout.header.is_some())
    {
        let last = opened.pop().expect("checked");
        return Err(OpenError::Corrupt {
            path: last.path,
            offset: 0,
            reason: "the last segment is a compacted one".into(),
        });
    }
    Ok(opened)
}

fn io_at(path: &Path) -> impl Fn(std::io::Error) -> OpenError + '_ {
    move |source| OpenError::Io {
        path: path.to_owned(),
        source,
    }
}

fn remove_if_there(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// Deletes a merged-away segment and its index file.
fn delete_segment(path: &Path) -> std::io::Result<()> {
    remove_if_there(&archive::index_path(path))?;
    remove_if_there(path)
}

/// What compaction asks of the log's index: which records are dead, and
/// below which position it keeps no positions (the only segments it may
/// touch).
pub(crate) trait LiveView: Send + Sync {
    /// The cold base of each stream (0: none), and whether its dead
    /// records must leave the disk whatever their share of a segment (see
    /// [`StreamEntry::must_scrub`](crate::StreamEntry::must_scrub)).
    fn cold_bases(&self, streams: &[&str]) -> Vec<(u64, bool)>;
    /// The index's archive floor.
    fn index_floor(&self) -> u64;
}

impl<S: StreamState> LiveView for Shared<S> {
    fn cold_bases(&self, streams: &[&str]) -> Vec<(u64, bool)> {
        let index = self.index.read().expect("index lock poisoned");
        streams
            .iter()
            .map(|stream| {
                index
                    .stream(stream)
                    .map_or((0, false), |entry| (entry.cold_base(), entry.must_scrub()))
            })
            .collect()
    }

    fn index_floor(&self) -> u64 {
        self.index
            .read()
            .expect("index lock poisoned")
            .archive_floor()
    }
}

/// The file medium's half of compaction: its segments, their indexes and
/// the readers' gate.
pub(crate) struct Medium {
    pub(crate) segments: Arc<Segments>,
    pub(crate) archive: Arc<Archive>,
    /// Readers hold it (shared) from taking archived positions to reading
    /// them; a swap takes it alone.
    pub(crate) gate: Arc<RwLock<()>>,
    counters: Counters,
}

#[derive(Default)]
struct Counters {
    compacted: AtomicU64,
    deleted: AtomicU64,
    reclaimed: AtomicU64,
    pending: AtomicU64,
    generation: AtomicU64,
    running: AtomicBool,
}

/// One archived segment as a pass found it.
struct Planned {
    segment: Segment,
    /// The next segment's start and first lsn: where this one ends.
    next_start: u64,
    next_first_lsn: u64,
    file_len: u64,
    dead_bytes: u64,
    /// Whether it holds dead records whose content must leave the disk.
    scrub: bool,
    live_records: u64,
    /// Every stream with records in it, and the cold base of those with
    /// dead ones.
    streams: Vec<String>,
    cold: HashMap<String, u64>,
}

impl Planned {
    fn worth(&self, fraction: f64) -> bool {
        self.scrub
            || (self.dead_bytes > 0 && self.dead_bytes as f64 >= fraction * self.file_len as f64)
    }
}

/// Spends the pass's byte budget: sleeps so that it moves at most
/// `per_second` bytes a second, waking early to stop.
struct Throttle<'a> {
    per_second: Option<u64>,
    started: Instant,
    moved: u64,
    stop: &'a AtomicBool,
}

impl Throttle<'_> {
    /// Counts `bytes` moved; false once the pass is asked to stop.
    fn spend(&mut self, bytes: u64) -> bool {
        self.moved += bytes;
        let Some(per_second) = self.per_second.filter(|rate| *rate > 0) else {
            return !self.stop.load(Ordering::Acquire);
        };
        let due = Duration::from_secs_f64(self.moved as f64 / per_second as f64);
        while self.started.elapsed() < due {
            if self.stop.load(Ordering::Acquire) {
                return false;
            }
            let left = due - self.started.elapsed().min(due);
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
        !self.stop.load(Ordering::Acquire)
    }
}

impl Medium {
    pub(crate) fn new(
        segments: Arc<Segments>,
        archive: Arc<Archive>,
        gate: Arc<RwLock<()>>,
    ) -> Self {
        Medium {
            segments,
            archive,
            gate,
            counters: Counters::default(),
        }
    }

    fn stats(&self) -> CompactionStats {
        let hot_log_bytes = self
            .segments
            .all()
            .iter()
            .map(|segment| segment.file.metadata().map_or(0, |meta| meta.len()))
            .sum();
        let counters = &self.counters;
        CompactionStats {
            hot_log_bytes,
            segments_compacted: counters.compacted.load(Ordering::Relaxed),
            segments_deleted: counters.deleted.load(Ordering::Relaxed),
            bytes_reclaimed: counters.reclaimed.load(Ordering::Relaxed),
            bytes_pending: counters.pending.load(Ordering::Relaxed),
            pass_in_progress: counters.running.load(Ordering::Relaxed),
            generation: counters.generation.load(Ordering::Acquire),
        }
    }

    /// One pass over every archived segment below the index's floor.
    fn pass(
        &self,
        live: &dyn LiveView,
        settings: &Settings,
        throttle: &mut Throttle<'_>,
    ) -> Result<CompactionReport, CompactionError> {
        let planned = self.plan(live)?;
        let mut report = CompactionReport::default();
        let mut at = 0;
        while at < planned.len() {
            let end = group_end(&planned, at, settings.dead_fraction);
            let Some(end) = end else {
                report.bytes_pending += planned[at].dead_bytes;
                at += 1;
                continue;
            };
            let group = &planned[at..=end];
            match self.rewrite(group, throttle)? {
                Some(reclaimed) => {
                    report.segments_compacted += 1;
                    report.segments_deleted += group.len() as u64 - 1;
                    report.bytes_reclaimed += reclaimed;
                }
                None => report.bytes_pending += group.iter().map(|p| p.dead_bytes).sum::<u64>(),
            }
            at = end + 1;
        }
        let counters = &self.counters;
        counters
            .pending
            .store(report.bytes_pending, Ordering::Relaxed);
        Ok(report)
    }

    /// Every archived segment whose positions the index no longer holds,
    /// with its dead bytes.
    fn plan(&self, live: &dyn LiveView) -> Result<Vec<Planned>, CompactionError> {
        let floor = live.index_floor().min(self.archive.floor());
        let archived = self.archive.ids();
        let all = self.segments.all();
        let mut planned = Vec::new();
        for pair in all.windows(2) {
            let (segment, next) = (&pair[0], &pair[1]);
            if next.start > floor || archived.binary_search(&segment.id).is_err() {
                break;
            }
            planned.push(self.plan_one(live, segment, next)?);
        }
        Ok(planned)
    }

    fn plan_one(
        &self,
        live: &dyn LiveView,
        segment: &Segment,
        next: &Segment,
    ) -> Result<Planned, CompactionError> {
        let (records, runs) = self.archive.runs_of(segment.id)?;
        let mut bases = Vec::with_capacity(runs.len());
        for chunk in runs.chunks(LOOKUP_BATCH) {
            let names: Vec<&str> = chunk.iter().map(|run| run.stream.as_str()).collect();
            bases.extend(live.cold_bases(&names));
        }
        let mut planned = Planned {
            segment: segment.clone(),
            next_start: next.start,
            next_first_lsn: next.first_lsn,
            file_len: segment
                .file
                .metadata()
                .map_err(|source| CompactionError::Io {
                    path: segment.path.clone(),
                    source,
                })?
                .len(),
            dead_bytes: 0,
            scrub: false,
            live_records: records,
            streams: Vec::with_capacity(runs.len()),
            cold: HashMap::new(),
        };
        for (run, (base, scrub)) in runs.into_iter().zip(bases) {
            let dead = dead_count(&run, base);
            if dead > 0 {
                planned.scrub |= scrub;
                planned.dead_bytes += self.archive.bytes_of(segment.id, &run, dead)?;
                planned.live_records -= dead;
                planned.cold.insert(run.stream.clone(), base);
            }
            planned.streams.push(run.stream);
        }
        Ok(planned)
    }

    /// Writes `group` as one compacted segment and switches readers to it;
    /// returns the bytes given back, or `None` when it is not worth it
    /// (the result would not fit its place) or the pass was stopped.
    fn rewrite(
        &self,
        group: &[Planned],
        throttle: &mut Throttle<'_>,
    ) -> Result<Option<u64>, CompactionError> {
        let first = &group[0].segment;
        let last = group.last().expect("a group has a segment");
        let header = Header {
            version: HEADER_VERSION,
            first_lsn: first.first_lsn,
            last_lsn: last.next_first_lsn - 1,
            logical_len: last.next_start - first.start,
            covers: group.iter().map(|p| p.segment.first_lsn).collect(),
        };
        let temporary = beside(&first.path, TEMPORARY);
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| CompactionError::Io { path, source }
        };
        let written = match self.write_temporary(group, &header, &temporary, throttle) {
            Ok(Some(written)) => written,
            other => {
                remove_if_there(&temporary).map_err(io(&temporary))?;
                return other.map(|_| None);
            }
        };
        Step::Written.reached();
        remove_if_there(&archive::index_path(&first.path)).map_err(io(&first.path))?;
        sync_folder(folder_of(&first.path)).map_err(io(&first.path))?;
        Step::IndexRemoved.reached();
        std::fs::rename(&temporary, &first.path).map_err(io(&first.path))?;
        sync_folder(folder_of(&first.path)).map_err(io(&first.path))?;
        Step::Renamed.reached();
        for merged in &group[1..] {
            delete_segment(&merged.segment.path).map_err(io(&merged.segment.path))?;
        }
        sync_folder(folder_of(&first.path)).map_err(io(&first.path))?;
        Step::Deleted.reached();
        let loaded =
            Archive::load_or_build(first.id, &first.path, &written, first.first_lsn, false)?;
        Step::Indexed.reached();
        let new_len = written.metadata().map_err(io(&first.path))?.len();
        self.swap(group, written, loaded);
        let old_len: u64 = group.iter().map(|p| p.file_len).sum();
        let reclaimed = old_len.saturating_sub(new_len);
        let counters = &self.counters;
        counters.compacted.fetch_add(1, Ordering::Relaxed);
        counters
            .deleted
            .fetch_add(group.len() as u64 - 1, Ordering::Relaxed);
        counters.reclaimed.fetch_add(reclaimed, Ordering::Relaxed);
        tracing::info!(
            segment = %first.path.display(),
            merged = group.len() - 1,
            reclaimed_bytes = reclaimed,
            "compacted a segment of the event log"
        );
        Ok(Some(reclaimed))
    }

    /// Writes the header and the live records of `group` to `temporary`
    /// and syncs it; `None` when the pass stopped or it would not fit.
    fn write_temporary(
        &self,
        group: &[Planned],
        header: &Header,
        temporary: &Path,
        throttle: &mut Throttle<'_>,
    ) -> Result<Option<File>, CompactionError> {
        let io = |source| CompactionError::Io {
            path: temporary.to_owned(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(temporary)
            .map_err(io)?;
        if group[0].segment.start == 0 {
            // The first segment's lock keeps other processes off the log;
            // a lock on the new file's own inode survives the rename.
            if file.try_lock().is_err() {
                return Ok(None);
            }
        }
        let mut out = std::io::BufWriter::with_capacity(COPY_BUFFER_BYTES, &file);
        let header_line = header.encode();
        out.write_all(&header_line).map_err(io)?;
        let mut written = header_line.len() as u64;
        for planned in group {
            match copy_live(planned, &mut out, throttle)? {
                Some(bytes) => written += bytes,
                None => return Ok(None),
            }
            if written > header.logical_len {
                return Ok(None);
            }
        }
        out.flush().map_err(io)?;
        drop(out);
        file.sync_all().map_err(io)?;
        Ok(Some(file))
    }

    /// Switches readers to the compacted file and its index.
    fn swap(&self, group: &[Planned], file: File, loaded: archive::Loaded) {
        let first = &group[0].segment;
        let removed: Vec<u32> = group.iter().map(|p| p.segment.id).collect();
        let mut streams: Vec<String> = group.iter().flat_map(|p| p.streams.clone()).collect();
        streams.sort_unstable();
        streams.dedup();
        let merged = Segment {
            file: Arc::new(file),
            ..first.clone()
        };
        let last_id = *removed.last().expect("a group has a segment");
        let _alone = self.gate.write().expect("readers' gate poisoned");
        self.segments.replace(merged, last_id);
        self.archive.replace(&removed, loaded, &streams);
        self.counters.generation.fetch_add(1, Ordering::Release);
    }
}

/// Where the group starting at `at` ends, if one starts there: a segment
/// worth rewriting, or one without a live record followed by another,
/// takes every following segment without a live record.
fn group_end(planned: &[Planned], at: usize, fraction: f64) -> Option<usize> {
    let empty = |p: &Planned| p.live_records == 0;
    let head = &planned[at];
    let starts = head.worth(fraction) || (empty(head) && planned.get(at + 1).is_some_and(empty));
    if !starts {
        return None;
    }
    let mut end = at;
    while planned.get(end + 1).is_some_and(empty) {
        end += 1;
    }
    Some(end)
}

/// How many of a run's records are dead under cold base `base`: a prefix,
/// since a stream goes cold from its first seq up.
fn dead_count(run: &StreamRun, base: u64) -> u64 {
    (base + 1).saturating_sub(run.first_seq).min(run.count)
}

/// Copies the live records of one planned segment to `out`; returns the
/// bytes copied, or `None` when the pass was asked to stop.
fn copy_live(
    planned: &Planned,
    out: &mut impl Write,
    throttle: &mut Throttle<'_>,
) -> Result<Option<u64>, CompactionError> {
    let segment = &planned.segment;
    let io = |source| CompactionError::Io {
        path: segment.path.clone(),
        source,
    };
    let layout = Layout::of(&segment.file, &segment.path)?;
    let reader = At {
        file: &segment.file,
        offset: layout.body_start,
    }
    .take(layout.file_len - layout.body_start);
    let mut reader = BufReader::with_capacity(COPY_BUFFER_BYTES, reader);
    let mut line = Vec::new();
    let mut copied = 0;
    let mut offset = layout.body_start;
    loop {
        line.clear();
        let read = reader.read_until(b'\n', &mut line).map_err(io)?;
        if read == 0 {
            return Ok(Some(copied));
        }
        let damaged = |reason: String| ReadError::Damaged { offset, reason };
        if line.last() != Some(&b'\n') {
            return Err(damaged("a sealed segment ends in an incomplete record".into()).into());
        }
        let record = crate::record::RecordRef::decode(&line[..line.len() - 1])
            .map_err(|error| damaged(error.to_string()))?;
        let dead = planned
            .cold
            .get(record.stream.as_ref())
            .is_some_and(|base| record.seq <= *base);
        if !dead {
            out.write_all(&line).map_err(io)?;
            copied += line.len() as u64;
        }
        offset += read as u64;
        if !throttle.spend(read as u64 + if dead { 0 } else { read as u64 }) {
            return Ok(None);
        }
    }
}

/// A log's compaction: the medium's half, the index's view, and the
/// background thread when it runs.
pub(crate) struct Compaction {
    medium: Arc<Medium>,
    live: Arc<dyn LiveView>,
    settings: Settings,
    /// One pass at a time (the background one or [`Compaction::run_now`]).
    passing: Arc<Mutex<()>>,
    wake: Arc<Wake>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Wakes the background thread early: after a move to the cold store, or
/// to stop.
#[derive(Default)]
struct Wake {
    nudged: Mutex<bool>,
    ring: Condvar,
    stop: AtomicBool,
}

impl Compaction {
    /// Sets up compaction of `medium`; starts the background thread when
    /// the settings ask for it.
    pub(crate) fn start(
        medium: Arc<Medium>,
        live: Arc<dyn LiveView>,
        settings: Settings,
    ) -> std::io::Result<Self> {
        let compaction = Compaction {
            medium,
            live,
            settings,
            passing: Arc::new(Mutex::new(())),
            wake: Arc::new(Wake::default()),
            thread: Mutex::new(None),
        };
        if settings.background {
            let worker = Compaction {
                medium: Arc::clone(&compaction.medium),
                live: Arc::clone(&compaction.live),
                settings,
                passing: Arc::clone(&compaction.passing),
                wake: Arc::clone(&compaction.wake),
                thread: Mutex::new(None),
            };
            let handle = std::thread::Builder::new()
                .name("event-log-compactor".into())
                .spawn(move || worker.run_in_background())?;
            *compaction.thread.lock().expect("compactor handle lock") = Some(handle);
        }
        Ok(compaction)
    }

    fn run_in_background(&self) {
        loop {
            {
                let nudged = self.wake.nudged.lock().expect("compactor wake lock");
                let (mut nudged, _) = self
                    .wake
                    .ring
                    .wait_timeout_while(nudged, self.settings.interval, |nudged| {
                        !*nudged && !self.wake.stop.load(Ordering::Acquire)
                    })
                    .expect("compactor wake lock");
                *nudged = false;
            }
            if self.wake.stop.load(Ordering::Acquire) {
                return;
            }
            if let Err(error) = self.run(Some(self.settings.bytes_per_second)) {
                tracing::warn!(%error, "a compaction pass of the event log failed; the next one tries again");
            }
        }
    }

    /// One pass, at most `per_second` bytes a second (`None`: at once).
    fn run(&self, per_second: Option<u64>) -> Result<CompactionReport, CompactionError> {
        let _one = self.passing.lock().expect("compaction pass lock");
        let counters = &self.medium.counters;
        counters.running.store(true, Ordering::Relaxed);
        let mut throttle = Throttle {
            per_second,
            started: Instant::now(),
            moved: 0,
            stop: &self.wake.stop,
        };
        let report = self.medium.pass(&*self.live, &self.settings, &mut throttle);
        counters.running.store(false, Ordering::Relaxed);
        report
    }

    /// One full pass now, without the byte budget.
    pub(crate) fn run_now(&self) -> Result<CompactionReport, CompactionError> {
        self.run(None)
    }

    /// Dead records may have appeared: the background pass runs soon.
    pub(crate) fn nudge(&self) {
        *self.wake.nudged.lock().expect("compactor wake lock") = true;
        self.wake.ring.notify_all();
    }

    pub(crate) fn stats(&self) -> CompactionStats {
        self.medium.stats()
    }

    /// Swaps done so far (cheap: read on every stream read).
    pub(crate) fn generation(&self) -> u64 {
        self.medium.counters.generation.load(Ordering::Acquire)
    }

    /// Stops the background thread (a pass stops at its next step; its
    /// temporary file is removed).
    pub(crate) fn stop(&self) {
        self.wake.stop.store(true, Ordering::Release);
        self.nudge();
        let handle = self.thread.lock().expect("compactor handle lock").take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}
