//! Index snapshots: the whole [`Index`] at one log position, with whatever
//! the caller derives from the log at the same position (its *extension*:
//! the service's projections), so that a start loads it and replays only
//! the records after it.
//!
//! A snapshot is one file (or one database value) in two parts:
//!
//! ```text
//! {"format":"openagents-event-log-snapshot","version":1,"lsn":…,"body_bytes":…,"body_crc32c":…}\n
//! {"index":{…},"extension":…}
//! ```
//!
//! The header line says how long the body is and what its CRC-32C is, so a
//! torn or damaged snapshot is recognised before it is used. Both parts are
//! JSON, readable with `jq` like the log itself.
//!
//! A snapshot is derived data. One that is missing, damaged, of another
//! version, or ahead of the log (its last record is not in the log) is
//! ignored with a warning and the index is rebuilt by a full scan, which
//! yields the same state.
//!
//! The cut is taken on the writer thread between two batches (a copy of the
//! index, which holds no per-event data of sealed history, and the
//! extension's own copy), then encoded and written by the caller's thread,
//! so appends wait only for the copy.

use crate::index::{Index, StreamState};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::path::{Path, PathBuf};

const FORMAT: &str = "openagents-event-log-snapshot";
/// The snapshot format's version; a change gets a new number, and a
/// snapshot of another version is ignored (the next start rebuilds).
pub const SNAPSHOT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    version: u32,
    lsn: u64,
    body_bytes: u64,
    body_crc32c: u32,
}

#[derive(Serialize)]
struct BodyOut<'a, S> {
    index: &'a Index<S>,
    extension: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(bound = "S: StreamState")]
struct BodyIn<S> {
    index: Index<S>,
    extension: Option<Box<RawValue>>,
}

/// Serializes the caller's derived state for a snapshot, off the writer.
pub type ExtensionEncoder = Box<dyn FnOnce() -> Box<RawValue> + Send>;

/// A decoded snapshot.
pub struct Snapshot<S> {
    /// The index as of the snapshot's position.
    pub index: Index<S>,
    /// The caller's derived state at the same position.
    pub extension: Option<Box<RawValue>>,
}

/// Why a snapshot was not used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// It could not be read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Its medium did not store it.
    #[error("storing the snapshot: {0}")]
    Store(String),
    /// It is not a complete snapshot of this format and version.
    #[error("the snapshot is damaged or of another format: {0}")]
    Damaged(String),
    /// It describes records the log does not hold.
    #[error("the snapshot is ahead of the log: {0}")]
    Ahead(String),
    /// The log keeps no snapshots (its medium has no place for them).
    #[error("this log's medium keeps no snapshots")]
    Unsupported,
    /// The log is closed or its writer failed before the cut was taken.
    #[error("the log's writer did not take the snapshot: {0}")]
    Writer(String),
}

/// Encodes a snapshot of `index` and `extension`.
pub(crate) fn encode<S: StreamState>(index: &Index<S>, extension: Option<&RawValue>) -> Vec<u8> {
    let body = serde_json::to_vec(&BodyOut { index, extension }).expect("the index serializes");
    let header = Header {
        format: FORMAT.into(),
        version: SNAPSHOT_VERSION,
        lsn: index.last_lsn(),
        body_bytes: body.len() as u64,
        body_crc32c: crc32c::crc32c(&body),
    };
    let mut out = serde_json::to_vec(&header).expect("the header serializes");
    out.push(b'\n');
    out.extend_from_slice(&body);
    out
}

/// Decodes a snapshot, checking its header, length and checksum. The
/// caller still checks that its medium holds the snapshot's last record.
pub fn decode_snapshot<S: StreamState>(bytes: &[u8]) -> Result<Snapshot<S>, SnapshotError> {
    let damaged = |reason: &str| SnapshotError::Damaged(reason.to_owned());
    let newline = memchr::memchr(b'\n', bytes).ok_or_else(|| damaged("no header line"))?;
    let header: Header = serde_json::from_slice(&bytes[..newline])
        .map_err(|error| SnapshotError::Damaged(format!("header: {error}")))?;
    if header.format != FORMAT || header.version != SNAPSHOT_VERSION {
        return Err(SnapshotError::Damaged(format!(
            "format {:?} version {}, expected {FORMAT:?} version {SNAPSHOT_VERSION}",
            header.format, header.version
        )));
    }
    let body = &bytes[newline + 1..];
    if body.len() as u64 != header.body_bytes {
        return Err(SnapshotError::Damaged(format!(
            "{} body bytes, the header says {}",
            body.len(),
            header.body_bytes
        )));
    }
    if crc32c::crc32c(body) != header.body_crc32c {
        return Err(damaged("checksum mismatch"));
    }
    let decoded: BodyIn<S> = serde_json::from_slice(body)
        .map_err(|error| SnapshotError::Damaged(format!("body: {error}")))?;
    if decoded.index.last_lsn() != header.lsn {
        return Err(damaged("the header and the body name different positions"));
    }
    Ok(Snapshot {
        index: decoded.index,
        extension: decoded.extension,
    })
}

/// Where the snapshot of the log whose first segment is `log_path` is kept.
pub(crate) fn snapshot_path(log_path: &Path) -> PathBuf {
    crate::segments::beside(log_path, ".snapshot")
}

/// Reads the snapshot file, if there is one.
pub(crate) fn read_file(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}
