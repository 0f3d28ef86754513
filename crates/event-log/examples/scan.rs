//! Times the recovery scan of an existing log file with a trivial fold:
//! `cargo run --release -p openagents-event-log --example scan -- FILE`.

use openagents_event_log::{EventLog, LogOptions, RecordRef, StreamState};
use std::time::Instant;

#[derive(Clone)]
struct Nothing;

impl StreamState for Nothing {
    fn open(_: &RecordRef<'_>) -> Result<Self, String> {
        Ok(Nothing)
    }
    fn apply(&mut self, _: &RecordRef<'_>) -> Result<(), String> {
        Ok(())
    }
}

fn main() {
    let path = std::env::args().nth(1).expect("usage: scan FILE");
    let started = Instant::now();
    let (_log, report) =
        EventLog::<Nothing>::open(path.as_ref(), LogOptions::default()).expect("open");
    println!("{} records in {:?}", report.records, started.elapsed());
}
