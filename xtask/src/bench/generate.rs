//! A direct generator of large, valid event logs: the segment files of a
//! log of many runs, written as fast as the disk takes them, for the
//! `history` scenario.
//!
//! Every line is encoded by the event log's own record encoder, with the
//! records a service would have written: each run starts with
//! `run.started` (the attributes of a run created without owner, worker or
//! metadata), carries `bench.note` events with the bench payload, and
//! (except the newest runs, which stay live) ends with `run.finished`.
//! Runs overlap as they would in production: a fixed number of runs are in
//! progress at any time, their events interleaved round-robin, and a run
//! that has all its events finishes and makes room for the next one. The
//! service's first start on such a folder scans and checks every record,
//! so a generator bug shows as a refused start, not as a wrong figure.

use crate::bench::preload::PAD;
use anyhow::Context;
use openagents_event_log::{NewRecord, RecordRef};
use serde_json::value::RawValue;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// Runs in progress at once.
const RUNS_IN_PROGRESS: usize = 500;
/// The segment size the service uses by default.
const SEGMENT_BYTES: u64 = 128 << 20;

/// What a generated log holds.
#[derive(Debug)]
pub struct Generated {
    /// Records written.
    pub events: u64,
    /// Runs, and how many of them finished.
    pub runs: usize,
    pub finished: usize,
    /// Bytes over all segments.
    pub bytes: u64,
    /// Segment files.
    pub segments: usize,
    pub elapsed: Duration,
}

/// One run being written.
struct Open {
    stream: String,
    seq: u64,
    finishes: bool,
}

/// Writes a log of `runs` runs of `events_per_run` records each (start and
/// finish included) at `path` and the segments after it; the newest
/// `live_runs` runs do not finish.
pub fn history_log(
    path: &Path,
    runs: usize,
    events_per_run: u64,
    live_runs: usize,
) -> anyhow::Result<Generated> {
    let started = Instant::now();
    let mut out = Segments::create(path)?;
    let mut in_progress: VecDeque<Open> = VecDeque::new();
    let (mut created, mut finished) = (0usize, 0usize);
    let clock = Clock::starting_at(SystemTime::now() - Duration::from_secs(30 * 86_400));
    let mut line = Vec::with_capacity(512);
    let mut note = 0u64;
    loop {
        while in_progress.len() < RUNS_IN_PROGRESS && created < runs {
            let stream = format!("run:{}", uuid::Uuid::now_v7());
            out.write(&start_record(&stream), 1, &clock, &mut line)?;
            in_progress.push_back(Open {
                stream,
                seq: 1,
                finishes: created < runs - live_runs,
            });
            created += 1;
        }
        let Some(mut run) = in_progress.pop_front() else {
            break;
        };
        let last_note = if run.finishes {
            events_per_run - 1
        } else {
            events_per_run
        };
        if run.seq < last_note {
            run.seq += 1;
            note += 1;
            out.write(&note_record(&run.stream, note), run.seq, &clock, &mut line)?;
            in_progress.push_back(run);
        } else if run.finishes {
            out.write(&finish_record(&run.stream), run.seq + 1, &clock, &mut line)?;
            finished += 1;
        }
    }
    let (events, bytes, segments) = out.finish()?;
    Ok(Generated {
        events,
        runs,
        finished,
        bytes,
        segments,
        elapsed: started.elapsed(),
    })
}

fn record(stream: &str, event_type: &str, payload: &str, attrs: Option<&str>) -> NewRecord {
    NewRecord {
        stream: stream.to_owned(),
        event_type: event_type.to_owned(),
        payload: RawValue::from_string(payload.to_owned()).expect("valid JSON"),
        idempotency_key: None,
        content_hash: None,
        create_key: None,
        attrs: attrs.map(|attrs| RawValue::from_string(attrs.to_owned()).expect("valid JSON")),
        written_by: None,
    }
}

fn start_record(stream: &str) -> NewRecord {
    record(
        stream,
        "run.started",
        r#"{"source":"runtime"}"#,
        Some(r#"{"worker_id":null,"owner":null,"metadata":{}}"#),
    )
}

fn note_record(stream: &str, n: u64) -> NewRecord {
    record(
        stream,
        "bench.note",
        &format!(r#"{{"n":{n},"pad":"{PAD}"}}"#),
        None,
    )
}

fn finish_record(stream: &str) -> NewRecord {
    record(stream, "run.finished", r#"{"status":"succeeded"}"#, None)
}

/// Record times: a microsecond apart, from a month ago.
struct Clock {
    start: SystemTime,
}

impl Clock {
    fn starting_at(start: SystemTime) -> Self {
        Clock { start }
    }

    fn at(&self, lsn: u64) -> String {
        humantime::format_rfc3339_micros(self.start + Duration::from_micros(lsn)).to_string()
    }
}

/// The segment files being written: a new one once the current one holds
/// a segment's bytes, named for its first record's position.
struct Segments {
    base: PathBuf,
    file: BufWriter<File>,
    in_segment: u64,
    lsn: u64,
    bytes: u64,
    count: usize,
}

impl Segments {
    fn create(base: &Path) -> anyhow::Result<Self> {
        let file = File::create(base).with_context(|| format!("creating {}", base.display()))?;
        Ok(Segments {
            base: base.to_owned(),
            file: BufWriter::with_capacity(8 << 20, file),
            in_segment: 0,
            lsn: 0,
            bytes: 0,
            count: 1,
        })
    }

    fn write(
        &mut self,
        record: &NewRecord,
        seq: u64,
        clock: &Clock,
        line: &mut Vec<u8>,
    ) -> anyhow::Result<()> {
        self.lsn += 1;
        if self.in_segment >= SEGMENT_BYTES {
            self.file.flush()?;
            let mut name = self.base.as_os_str().to_owned();
            name.push(format!(".{:020}", self.lsn));
            let path = PathBuf::from(name);
            let file =
                File::create(&path).with_context(|| format!("creating {}", path.display()))?;
            self.file = BufWriter::with_capacity(8 << 20, file);
            self.in_segment = 0;
            self.count += 1;
        }
        let at = clock.at(self.lsn);
        line.clear();
        RecordRef::proposed(record, self.lsn, seq, &at).encode_into(line);
        self.file.write_all(line)?;
        self.in_segment += line.len() as u64;
        self.bytes += line.len() as u64;
        Ok(())
    }

    /// Flushes and syncs the last segment; returns records, bytes, segments.
    fn finish(mut self) -> anyhow::Result<(u64, u64, usize)> {
        self.file.flush()?;
        self.file.get_ref().sync_all()?;
        Ok((self.lsn, self.bytes, self.count))
    }
}
