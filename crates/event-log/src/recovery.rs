//! Opening a log file: one streaming pass that checks every record and
//! rebuilds the index.
//!
//! The rules, in the order they are applied to each line:
//!
//! 1. A final line without `\n`, or a final line that does not decode, is a
//!    torn write: it was never acknowledged (acknowledgement waits for
//!    `fdatasync`), so it is cut off and a warning names it.
//! 2. A line that does not decode but is followed by more data is corruption
//!    of acknowledged history: opening fails, naming the file and offset.
//! 3. Every record's `lsn` must follow the previous one, and its `seq` must be
//!    its stream's head + 1; a gap or a duplicate fails the open the same way.
//!
//! Nothing here falls back to an empty or in-memory log.

use crate::error::OpenError;
use crate::index::{Index, RecordPos, StreamState};
use crate::record::RecordRef;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::SystemTime;

/// Read buffer of the recovery pass: large enough that syscalls do not
/// dominate the scan of a multi-gigabyte log.
const SCAN_BUFFER_BYTES: usize = 4 << 20;

/// What the recovery pass found.
pub(crate) struct Recovered<S> {
    /// The index of every valid record.
    pub(crate) index: Index<S>,
    /// Length of the valid prefix; the file is truncated to it.
    pub(crate) valid_len: u64,
    /// Bytes of a torn final write that must be cut off.
    pub(crate) torn_bytes: u64,
    /// Time of the newest record, so new records never get an earlier one.
    pub(crate) last_at: Option<SystemTime>,
}

/// Scans `file` from the start and rebuilds the index.
pub(crate) fn scan<S: StreamState>(file: &File, path: &Path) -> Result<Recovered<S>, OpenError> {
    let io_error = |source| OpenError::Io {
        path: path.to_owned(),
        source,
    };
    let file_len = file.metadata().map_err(io_error)?.len();
    let mut reader = BufReader::with_capacity(SCAN_BUFFER_BYTES, file);
    let mut index = Index::default();
    let mut line = Vec::with_capacity(4096);
    let mut offset = 0u64;
    let mut last_at = String::new();
    loop {
        line.clear();
        let read = reader.read_until(b'\n', &mut line).map_err(io_error)?;
        if read == 0 {
            break;
        }
        let at_end = offset + read as u64 == file_len;
        if line.last() != Some(&b'\n') {
            // Only the final line can lack its newline.
            break;
        }
        let body = &line[..line.len() - 1];
        match RecordRef::decode(body) {
            Ok(record) => {
                check_order(&index, &record).map_err(|problem| OpenError::OutOfOrder {
                    path: path.to_owned(),
                    offset,
                    problem,
                })?;
                let len = u32::try_from(body.len()).expect("lines are bounded by the writer");
                index
                    .insert_recovered(&record, RecordPos { offset, len })
                    .map_err(|reason| OpenError::Corrupt {
                        path: path.to_owned(),
                        offset,
                        reason,
                    })?;
                last_at.clear();
                last_at.push_str(&record.at);
            }
            Err(_) if at_end => break,
            Err(error) => {
                return Err(OpenError::Corrupt {
                    path: path.to_owned(),
                    offset,
                    reason: error.to_string(),
                });
            }
        }
        offset += read as u64;
    }
    let last_at = humantime::parse_rfc3339(&last_at).ok();
    Ok(Recovered {
        index,
        valid_len: offset,
        torn_bytes: file_len - offset,
        last_at,
    })
}

/// The order rules of a record against what precedes it.
fn check_order<S: StreamState>(index: &Index<S>, record: &RecordRef<'_>) -> Result<(), String> {
    let expected_lsn = index.last_lsn() + 1;
    if record.lsn != expected_lsn {
        return Err(format!(
            "log position {} where {expected_lsn} was expected",
            record.lsn
        ));
    }
    let head = index.stream(&record.stream).map_or(0, |entry| entry.head());
    match record.seq {
        seq if seq == head + 1 => Ok(()),
        seq if seq <= head => Err(format!(
            "duplicate sequence {seq} in stream {} (head is {head})",
            record.stream
        )),
        seq => Err(format!(
            "sequence gap in stream {}: {seq} follows {head}",
            record.stream
        )),
    }
}
