//! Errors of the event log: why a log cannot be opened, and why an append was
//! not made durable.

use std::path::PathBuf;

/// Why the log could not be opened. Every variant names the file, and the
/// recovery ones the byte offset, so an operator knows where to look.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The file or its folder could not be opened, read, truncated or synced.
    #[error("event log {path}: {source}")]
    Io {
        /// The log file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Another process holds the log's exclusive lock.
    #[error("event log {path} is locked by another process")]
    Locked {
        /// The log file.
        path: PathBuf,
    },
    /// A damaged record followed by more records: not a torn final write.
    #[error("event log {path}: corrupt record at byte offset {offset}: {reason}")]
    Corrupt {
        /// The log file.
        path: PathBuf,
        /// Offset of the first byte of the damaged line.
        offset: u64,
        /// What is wrong with the line.
        reason: String,
    },
    /// A record whose log or stream position does not follow its predecessor.
    #[error("event log {path}: {problem} at byte offset {offset}")]
    OutOfOrder {
        /// The log file.
        path: PathBuf,
        /// Offset of the first byte of the offending line.
        offset: u64,
        /// Which order rule broke, with the numbers.
        problem: crate::index::IndexError,
    },
    /// The archive of cold histories could not be opened or does not match
    /// the log.
    #[error("archive: {0}")]
    Archive(String),
}

/// Why an append was not made durable. Nothing of the batch was acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogFailure {
    /// A write or `fdatasync` failed; the log accepts no writes from then on.
    #[error("event log is poisoned and accepts no writes: {0}")]
    Poisoned(String),
    /// Too many appends are queued; the caller may retry.
    #[error("event log write queue is full")]
    Overloaded,
    /// The log is shutting down.
    #[error("event log is closed")]
    Closed,
    /// The medium cannot be reached now (a shared database is down); nothing
    /// was appended, and the caller may retry.
    #[error("event log storage is unavailable: {0}")]
    Unavailable(String),
    /// The medium was lost while the batch committed and did not say in time
    /// whether it did; the caller retries with the same idempotency key.
    #[error("event log storage was lost during commit and the outcome is unknown: {0}")]
    OutcomeUnknown(String),
}

/// Why records could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The read failed.
    #[error("reading the event log: {0}")]
    Io(#[from] std::io::Error),
    /// A durable record no longer decodes: the file changed under the process.
    #[error("event log record at byte offset {offset} no longer decodes: {reason}")]
    Damaged {
        /// Offset of the damaged line.
        offset: u64,
        /// What the decoder said.
        reason: String,
    },
    /// The medium cannot be reached now (a shared database is down).
    #[error("event log storage is unavailable: {0}")]
    Unavailable(String),
}

/// Why a stream's history could not be moved to the cold store. Nothing
/// changed: the hot log still serves it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ColdMoveError {
    /// The log was opened without an archive.
    #[error("the log has no archive")]
    NoArchive,
    /// The stream does not exist, or has fewer records than asked.
    #[error("stream {stream} has no seq {base}")]
    BeyondHead {
        /// The stream.
        stream: String,
        /// The seq asked for.
        base: u64,
    },
    /// Its records could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The cold store refused.
    #[error(transparent)]
    Store(#[from] crate::cold::ColdError),
    /// The stream's records did not fold (the log and the domain disagree).
    #[error("folding {stream}: {reason}")]
    Fold {
        /// The stream.
        stream: String,
        /// What the fold said.
        reason: String,
    },
}
