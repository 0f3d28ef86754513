//! What the authority's suites share: a log in a file, and a decision run
//! on its writer until its batch is durable.

use openagents_authority::Stream;
use openagents_event_log::{EventLog, LogFailure, LogOptions, Txn};
use std::path::Path;
use std::sync::mpsc;

/// The log at `path`, opened (and recovered) with the default options.
pub fn open(path: &Path) -> EventLog<Stream> {
    EventLog::open(path, LogOptions::default()).unwrap().0
}

/// Runs `decision` on the writer and waits for its durable answer.
pub fn decide<R: Send + 'static>(
    log: &EventLog<Stream>,
    decision: impl FnOnce(&mut Txn<'_, Stream>) -> R + Send + 'static,
) -> R {
    let (tx, rx) = mpsc::channel();
    log.submit(decision, move |outcome: Result<R, LogFailure>| {
        tx.send(outcome).unwrap()
    });
    rx.recv().unwrap().expect("the log makes the batch durable")
}
