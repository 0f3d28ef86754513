//! The error both builders return: the event source failed, the events came
//! out of order, or the replay could not be written.

use std::io;

/// Why a receipt or a replay could not be built.
///
/// `E` is the error type of the caller's event source, so a log reader's own
/// error reaches the caller unchanged.
#[derive(Debug, thiserror::Error)]
pub enum BuildError<E> {
    /// The event source returned an error instead of an event.
    #[error("reading the run's events failed")]
    Events(#[source] E),
    /// An event's seq is not greater than the one before it. Artifacts commit
    /// to the stream in seq order, so a reordered stream is a caller bug and
    /// is refused rather than published.
    #[error(
        "event seq {seq} follows seq {previous}: events must come in strictly increasing seq order"
    )]
    SeqNotIncreasing {
        /// Seq of the event read before.
        previous: u64,
        /// Seq of the offending event.
        seq: u64,
    },
    /// Writing a replay line failed (only [`crate::write_replay`] writes).
    #[error("writing the replay failed")]
    Write(#[source] io::Error),
}
