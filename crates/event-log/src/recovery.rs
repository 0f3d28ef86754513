//! Opening a log file: one streaming pass per segment, in log order, that
//! checks every record and rebuilds the index.
//!
//! The rules, in the order they are applied to each line:
//!
//! 1. A final line without `\n`, or a final line that does not decode, is a
//!    torn write: it was never acknowledged (acknowledgement waits for
//!    `fdatasync`), so it is cut off and a warning names it. Only the last
//!    segment can end in one: a segment is complete and synced before the
//!    next one is created, so a torn end anywhere else is damage.
//! 2. A line that does not decode but is followed by more data is corruption
//!    of acknowledged history: opening fails, naming the file and offset.
//! 3. Every record's `lsn` must follow the previous one, and its `seq` must be
//!    its stream's head + 1; a gap or a duplicate fails the open the same way.
//!    Only inside a compacted segment (see `compact`) may an lsn skip ahead,
//!    within the range its header names: the skipped records were dead.
//!
//! Nothing here falls back to an empty or in-memory log.

use crate::compact::Layout;
use crate::error::OpenError;
use crate::index::{Index, IndexError, RecordPos, StreamState};
use crate::record::RecordRef;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

/// Read buffer of the recovery pass: large enough that syscalls do not
/// dominate the scan of a multi-gigabyte log.
const SCAN_BUFFER_BYTES: usize = 4 << 20;

/// How often a long scan says how far it got.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// The progress of one recovery over all segments, logged every
/// [`PROGRESS_EVERY`] so that a long start is visibly alive.
pub(crate) struct Progress {
    started: Instant,
    last_logged: Instant,
    /// The log position the scan started at (after a snapshot, or 0).
    from: u64,
    total_bytes: u64,
}

impl Progress {
    /// A scan of the log's bytes from position `from` up to `end`.
    pub(crate) fn new(from: u64, end: u64) -> Self {
        let now = Instant::now();
        Progress {
            started: now,
            last_logged: now,
            from,
            total_bytes: end.saturating_sub(from),
        }
    }

    /// Notes that the scan reached log position `position`, with `records`
    /// indexed.
    fn tick(&mut self, position: u64, records: u64) {
        let scanned = position.saturating_sub(self.from);
        if self.last_logged.elapsed() < PROGRESS_EVERY {
            return;
        }
        self.last_logged = Instant::now();
        tracing::info!(
            scanned_bytes = scanned,
            total_bytes = self.total_bytes,
            records,
            elapsed_ms = self.started.elapsed().as_millis() as u64,
            "recovering the event log"
        );
    }
}

/// What the recovery pass found in one segment.
pub(crate) struct Scanned {
    /// Length of the valid prefix; the file is truncated to it.
    pub(crate) valid_len: u64,
    /// Bytes of a torn final write that must be cut off.
    pub(crate) torn_bytes: u64,
    /// Time of the segment's newest record, so new records never get an
    /// earlier one.
    pub(crate) last_at: Option<SystemTime>,
}

/// Where a scan's records go: into the index, then to the caller's
/// `replayed` (derived state rebuilt in the same pass).
pub(crate) struct ScanTarget<'a, S> {
    pub(crate) index: &'a mut Index<S>,
    pub(crate) progress: &'a mut Progress,
    pub(crate) replayed: &'a mut dyn FnMut(&RecordRef<'_>),
}

/// Scans the segment `file` (laid out as `layout` says) from byte `from`
/// (a record boundary) into the target; its first byte is at `base` in the
/// log's byte space.
pub(crate) fn scan<S: StreamState>(
    file: &File,
    path: &Path,
    base: u64,
    from: u64,
    layout: &Layout,
    target: &mut ScanTarget<'_, S>,
) -> Result<Scanned, OpenError> {
    let ScanTarget {
        index,
        progress,
        replayed,
    } = target;
    let io_error = |source| OpenError::Io {
        path: path.to_owned(),
        source,
    };
    let file_len = file.metadata().map_err(io_error)?.len();
    let mut last_at = String::new();
    let mut chunk = vec![0u8; SCAN_BUFFER_BYTES];
    // Bytes of `chunk` holding data, and the file offset of `chunk[0]`.
    let mut filled = 0usize;
    let mut chunk_offset = from;
    loop {
        // Read no further than the length the file had when opened: the
        // scan ends there even on files that never report an end.
        let position = chunk_offset + filled as u64;
        let wanted = usize::try_from(file_len - position)
            .unwrap_or(usize::MAX)
            .min(chunk.len() - filled);
        let read =
            read_some(file, &mut chunk[filled..filled + wanted], position).map_err(io_error)?;
        filled += read;
        let at_eof = chunk_offset + filled as u64 == file_len;
        let mut start = 0usize;
        while let Some(newline) = memchr::memchr(b'\n', &chunk[start..filled]) {
            let body = &chunk[start..start + newline];
            let offset = chunk_offset + start as u64;
            let is_last = at_eof && start + newline + 1 == filled;
            match RecordRef::decode(body) {
                Ok(record) => {
                    skip_compacted_gap(index, layout, record.lsn).map_err(|problem| {
                        OpenError::OutOfOrder {
                            path: path.to_owned(),
                            offset,
                            problem,
                        }
                    })?;
                    let len = u32::try_from(body.len()).expect("lines are bounded by the writer");
                    let pos = RecordPos {
                        offset: base + offset,
                        len,
                    };
                    index
                        .recover(&record, pos)
                        .map_err(|problem| OpenError::OutOfOrder {
                            path: path.to_owned(),
                            offset,
                            problem,
                        })?;
                    replayed(&record);
                    last_at.clear();
                    last_at.push_str(&record.at);
                }
                // A damaged final line is a torn write; stop before it.
                Err(_) if is_last => return Ok(finish(offset, file_len, &last_at)),
                Err(error) => {
                    return Err(OpenError::Corrupt {
                        path: path.to_owned(),
                        offset,
                        reason: error.to_string(),
                    });
                }
            }
            start += newline + 1;
        }
        let valid_end = chunk_offset + start as u64;
        progress.tick(base + valid_end, index.record_count());
        if at_eof || read == 0 {
            // Whatever follows the last newline is a torn final write.
            return Ok(finish(valid_end, file_len, &last_at));
        }
        // Keep the partial line; grow the buffer when one line fills it.
        chunk.copy_within(start..filled, 0);
        filled -= start;
        chunk_offset = valid_end;
        if filled == chunk.len() {
            chunk.resize(chunk.len() * 2, 0);
        }
    }
}

/// In a compacted segment, lets the index accept the lsn gap before a
/// record (dead records were dropped), as long as it stays in the
/// segment's range.
fn skip_compacted_gap<S: StreamState>(
    index: &mut Index<S>,
    layout: &Layout,
    lsn: u64,
) -> Result<(), IndexError> {
    if layout.header.is_none() {
        return Ok(());
    }
    let expected = index.last_lsn() + 1;
    if !layout.accepts_lsn(expected, lsn) {
        return Err(IndexError::LsnOutOfOrder {
            expected,
            found: lsn,
        });
    }
    index.skip_dead_to(lsn - 1);
    Ok(())
}

fn read_some(file: &File, buffer: &mut [u8], offset: u64) -> std::io::Result<usize> {
    loop {
        match file.read_at(buffer, offset) {
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

fn finish(valid_len: u64, file_len: u64, last_at: &str) -> Scanned {
    let last_at = humantime::parse_rfc3339(last_at).ok();
    Scanned {
        valid_len,
        torn_bytes: file_len - valid_len,
        last_at,
    }
}
