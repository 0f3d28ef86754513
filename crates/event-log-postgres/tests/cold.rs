//! The cold store on PostgreSQL: a history moved to `archived_streams`
//! leaves `events`, reads back byte for byte, keeps answering keyed
//! retries, survives restarts from the snapshot and from every row, is read
//! the same by an instance that started before the move, and a move whose
//! connection dies changes nothing.
//!
//! Each test works in a schema of its own in `RUNTIME_TEST_DATABASE_URL`
//! (default the local `test` database) and skips with a printed note when
//! PostgreSQL does not answer, unless `RUNTIME_TEST_REQUIRE_POSTGRES=1`.

#![allow(missing_docs)]

// The event log's own test domain (a stream state that counts records and
// seals, and the decision that applies the log's rules), so that both media
// are tested against the same one.
#[path = "../../event-log/tests/common/mod.rs"]
mod common;

use common::{Count, Outcome, Request, SEAL};
use openagents_event_log::{
    CommitObserver, EventLog, Index, Keep, LogOptions, OpenReport, RecordRef,
};
use openagents_event_log_postgres::{PgOptions, open};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A schema of the test database, dropped with everything in it.
struct Db {
    name: String,
}

fn base_url() -> String {
    std::env::var("RUNTIME_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.into())
}

/// Runs `work` on a thread of its own: the synchronous client may not run
/// on a thread of an async runtime, and the tests may one day have one.
fn off_runtime<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| scope.spawn(work).join().unwrap())
}

impl Db {
    /// A fresh schema, or `None` (after a printed note) when PostgreSQL
    /// does not answer and is not required.
    fn create(test: &str) -> Option<Db> {
        let name = format!("t_{}", uuid::Uuid::now_v7().simple());
        let created = off_runtime(|| {
            postgres::Client::connect(&base_url(), postgres::NoTls)?
                .batch_execute(&format!("CREATE SCHEMA {name}"))
        });
        match created {
            Ok(()) => Some(Db { name }),
            Err(error)
                if std::env::var("RUNTIME_TEST_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") =>
            {
                panic!("PostgreSQL is required but does not answer: {error}")
            }
            Err(error) => {
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "skipped: {test}: PostgreSQL does not answer at {}: {error}",
                    base_url()
                );
                None
            }
        }
    }

    fn url(&self) -> String {
        let base = base_url();
        let separator = if base.contains('?') { '&' } else { '?' };
        format!("{base}{separator}options=-csearch_path%3D{}", self.name)
    }

    fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url(), postgres::NoTls).unwrap()
    }

    /// One number from `sql` in this schema.
    fn count(&self, sql: &str) -> i64 {
        off_runtime(|| self.client().query_one(sql, &[]).unwrap().get(0))
    }

    fn execute(&self, sql: &str) {
        off_runtime(|| self.client().batch_execute(sql).unwrap())
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = off_runtime(|| {
            postgres::Client::connect(&base_url(), postgres::NoTls)?
                .batch_execute(&format!("DROP SCHEMA {name} CASCADE"))
        });
    }
}

fn start(url: &str) -> (EventLog<Count>, OpenReport) {
    start_with(url, None)
}

fn start_with(
    url: &str,
    observer: Option<Arc<dyn CommitObserver<Count>>>,
) -> (EventLog<Count>, OpenReport) {
    let options = PgOptions {
        url: url.to_owned(),
        readers: 2,
    };
    let log_options = LogOptions {
        observer,
        ..LogOptions::default()
    };
    open(&options, log_options).unwrap()
}

/// Counts the records a start replays to derived state, per stream.
#[derive(Default)]
struct Replays(Mutex<BTreeMap<String, u64>>);

impl CommitObserver<Count> for Replays {
    fn committed(&self, _records: &[RecordRef<'_>], _index: &Index<Count>) {}

    fn replayed(&self, record: &RecordRef<'_>) {
        *self
            .0
            .lock()
            .unwrap()
            .entry(record.stream.to_string())
            .or_default() += 1;
    }
}

fn append(log: &EventLog<Count>, stream: &str, body: &str, key: Option<&str>) -> Outcome {
    let request = Request {
        stream: stream.to_owned(),
        body: body.to_owned(),
        key: key.map(str::to_owned),
        expected_previous_seq: None,
    };
    common::append(log, request).unwrap()
}

/// The body of record `n` of a stream filled by [`fill`]: 200 bytes of
/// pseudo-random hex, so that the archive's size follows what it keeps.
fn body(n: u64) -> String {
    let mut state = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let pad: String = (0..25)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            format!("{:08x}", state as u32)
        })
        .collect();
    format!("{{\"n\":{n},\"pad\":\"{pad}\"}}")
}

/// Appends `count` keyed records to `stream`, the last one sealing it.
fn fill(log: &EventLog<Count>, stream: &str, count: u64) {
    for n in 1..=count {
        let body = if n == count { SEAL.to_owned() } else { body(n) };
        let key = format!("{stream}-k{n}");
        assert_eq!(append(log, stream, &body, Some(&key)), Outcome::Appended(n));
    }
}

/// Every record of a stream as served: seq, lsn, time, type, key, payload.
fn records(log: &EventLog<Count>, stream: &str) -> Vec<(u64, u64, String, String, String)> {
    log.read_stream(stream, 0, usize::MAX, |r| {
        (
            r.seq,
            r.lsn,
            r.at.to_string(),
            r.key.as_deref().unwrap_or_default().to_owned(),
            r.payload.get().to_owned(),
        )
    })
    .unwrap()
}

fn states(log: &EventLog<Count>) -> Vec<(String, Count, u64, u64)> {
    let index = log.index();
    let mut states: Vec<_> = index
        .streams()
        .map(|(name, entry)| {
            (
                name.to_owned(),
                entry.state().clone(),
                entry.head(),
                entry.cold_base(),
            )
        })
        .collect();
    states.sort_by(|a, b| a.0.cmp(&b.0));
    states
}

/// The keyed retry of record 7 of `stream`, and a reuse of key 8.
fn retries(log: &EventLog<Count>, stream: &str) {
    let k7 = format!("{stream}-k7");
    assert_eq!(
        append(log, stream, &body(7), Some(&k7)),
        Outcome::Replayed(7)
    );
    let k8 = format!("{stream}-k8");
    assert_eq!(append(log, stream, "1", Some(&k8)), Outcome::KeyReused);
    assert_eq!(append(log, stream, "1", None), Outcome::Sealed);
}

/// Waits until `log` took in everything the database holds.
fn caught_up(log: &EventLog<Count>) {
    let (tx, rx) = mpsc::channel();
    log.refresh(move |outcome| tx.send(outcome).unwrap());
    rx.recv().unwrap().unwrap();
}

#[test]
fn a_cold_history_leaves_events_reads_back_the_same_and_survives_restarts() {
    let Some(db) = Db::create("a_cold_history_leaves_events") else {
        return;
    };
    let (log, _) = start(&db.url());
    fill(&log, "run:b", 10);
    // The sealing record of run:a is the log's last: the snapshot's last
    // row is then one of the deleted ones.
    for n in 1..=10 {
        assert_eq!(
            append(&log, "run:w", &n.to_string(), None),
            Outcome::Appended(n)
        );
    }
    fill(&log, "run:a", 40);
    let before = records(&log, "run:a");
    let entry = log
        .move_cold("run:a", 40, |_| Keep::Whole)
        .unwrap()
        .unwrap();
    assert_eq!((entry.base, entry.records), (40, 40));
    assert_eq!(
        db.count("SELECT count(*) FROM events WHERE stream = 'run:a'"),
        0
    );
    assert_eq!(db.count("SELECT count(*) FROM events"), 20);
    assert_eq!(
        db.count("SELECT bytes FROM archived_streams WHERE stream = 'run:a'"),
        db.count("SELECT octet_length(archive)::bigint FROM archived_streams"),
    );
    assert_eq!(log.cold_store().unwrap().bytes(), entry.bytes);
    assert_eq!(records(&log, "run:a"), before, "read back from the archive");
    assert_eq!(
        log.read_stream("run:a", 10, 5, |r| r.seq).unwrap(),
        vec![11, 12, 13, 14, 15]
    );
    retries(&log, "run:a");
    let live = states(&log);
    log.write_snapshot().unwrap();
    drop(log);

    let (log, report) = start(&db.url());
    assert!(
        report.snapshot.is_some(),
        "the snapshot whose last row went cold is still used"
    );
    assert_eq!(report.replayed, 0);
    assert_eq!(states(&log), live, "restored from the snapshot");
    assert_eq!(records(&log, "run:a"), before);
    retries(&log, "run:a");
    drop(log);

    db.execute("DELETE FROM projection_checkpoint");
    let replays = Arc::new(Replays::default());
    let (log, report) = start_with(&db.url(), Some(replays.clone()));
    assert!(report.snapshot.is_none());
    let replayed = replays.0.lock().unwrap().clone();
    assert_eq!(
        replayed.into_iter().collect::<Vec<_>>(),
        [
            ("run:a".into(), 40),
            ("run:b".into(), 10),
            ("run:w".into(), 10)
        ],
        "derived state sees the cold records too"
    );
    assert_eq!(states(&log), live, "rebuilt from every row, across the gap");
    assert_eq!(records(&log, "run:a"), before);
    retries(&log, "run:a");
    // Appends go on after the gap, to old streams and new ones.
    assert_eq!(append(&log, "run:w", "11", None), Outcome::Appended(11));
    assert_eq!(append(&log, "run:c", "1", None), Outcome::Appended(1));
    assert_eq!(db.count("SELECT lsn FROM log_head"), 62);
}

#[test]
fn an_instance_that_started_before_the_move_reads_the_cold_history_the_same() {
    let Some(db) = Db::create("an_instance_that_started_before_the_move") else {
        return;
    };
    let (a, _) = start(&db.url());
    let (b, _) = start(&db.url());
    fill(&a, "run:a", 30);
    caught_up(&b);
    let before = records(&b, "run:a");
    assert_eq!(before, records(&a, "run:a"));
    a.move_cold("run:a", 30, |_| Keep::Whole).unwrap().unwrap();
    assert_eq!(
        db.count("SELECT count(*) FROM events WHERE stream = 'run:a'"),
        0
    );
    assert_eq!(
        b.index().stream("run:a").unwrap().cold_base(),
        0,
        "b was not told"
    );
    assert_eq!(records(&b, "run:a"), before, "from the archive row");
    assert_eq!(
        b.read_stream("run:a", 10, 5, |r| r.seq).unwrap(),
        vec![11, 12, 13, 14, 15]
    );
    retries(&b, "run:a");
    // B's own appends go on, and A takes them in.
    assert_eq!(append(&b, "run:b", "1", None), Outcome::Appended(1));
    caught_up(&a);
    let hot = |log: &EventLog<Count>| {
        let mut states = states(log);
        states.iter_mut().for_each(|state| state.3 = 0);
        states
    };
    assert_eq!(hot(&a), hot(&b), "the same but for what a knows is cold");
    drop(b);
    let (b, _) = start(&db.url());
    assert_eq!(b.index().stream("run:a").unwrap().cold_base(), 30);
    assert_eq!(records(&b, "run:a"), before);
}

#[test]
fn a_move_whose_connection_is_terminated_changes_nothing() {
    let Some(db) = Db::create("a_move_whose_connection_is_terminated") else {
        return;
    };
    let application = format!("oa_cold_{}", uuid::Uuid::now_v7().simple());
    let (log, _) = start(&format!("{}&application_name={application}", db.url()));
    fill(&log, "run:a", 10);
    let before = records(&log, "run:a");
    let stats = || {
        (
            db.count("SELECT count(*) FROM events WHERE stream = 'run:a'"),
            db.count("SELECT count(*) FROM archived_streams"),
        )
    };
    assert_eq!(stats(), (10, 0));

    // Hold the rows, so the move's delete waits; then cut its connection.
    let url = db.url();
    let result = off_runtime(|| {
        let mut holder = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let mut txn = holder.transaction().unwrap();
        txn.query(
            "SELECT 1 FROM events WHERE stream = 'run:a' FOR UPDATE",
            &[],
        )
        .unwrap();
        std::thread::scope(|scope| {
            let mover = scope.spawn(|| log.move_cold("run:a", 10, |_| Keep::Whole));
            let mut killer = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let killed: i64 = killer
                    .query_one(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                         WHERE application_name = $1 AND wait_event_type = 'Lock'",
                        &[&application],
                    )
                    .unwrap()
                    .get(0);
                if killed > 0 {
                    break;
                }
                assert!(Instant::now() < deadline, "the move never waited");
                std::thread::sleep(Duration::from_millis(20));
            }
            txn.rollback().unwrap();
            mover.join().unwrap()
        })
    });
    let error = result.expect_err("the move failed");
    assert!(
        error.to_string().contains("nothing was archived"),
        "{error}"
    );
    assert_eq!(stats(), (10, 0), "nothing changed");
    assert_eq!(log.index().stream("run:a").unwrap().cold_base(), 0);
    assert_eq!(records(&log, "run:a"), before);
    retries(&log, "run:a");

    log.move_cold("run:a", 10, |_| Keep::Whole)
        .unwrap()
        .unwrap();
    assert_eq!(stats(), (0, 1), "a later move goes through");
    assert_eq!(records(&log, "run:a"), before);
}

#[test]
fn erasing_keeps_the_last_record_and_drops_the_earlier_bytes() {
    let Some(db) = Db::create("erasing_keeps_the_last_record") else {
        return;
    };
    let (log, _) = start(&db.url());
    fill(&log, "run:e", 40);
    let last = records(&log, "run:e").pop().unwrap();
    log.move_cold("run:e", 39, |_| Keep::Whole)
        .unwrap()
        .unwrap();
    let whole = db.count("SELECT octet_length(archive)::bigint FROM archived_streams");
    assert_eq!(
        db.count("SELECT count(*) FROM events WHERE stream = 'run:e'"),
        1
    );
    let entry = log
        .move_cold("run:e", 40, |r| {
            if r.seq == 40 { Keep::Whole } else { Keep::Drop }
        })
        .unwrap()
        .unwrap();
    assert_eq!((entry.base, entry.records), (40, 1));
    let erased = db.count("SELECT octet_length(archive)::bigint FROM archived_streams");
    assert!(erased * 4 < whole, "{erased} bytes left of {whole}");
    assert_eq!(db.count("SELECT count(*) FROM archived_streams"), 1);
    assert_eq!(db.count("SELECT bytes FROM archived_streams"), erased);
    assert_eq!(
        db.count("SELECT count(*) FROM events WHERE stream = 'run:e'"),
        0
    );
    assert_eq!(records(&log, "run:e"), vec![last.clone()]);
    let state = states(&log);
    drop(log);
    let (log, _) = start(&db.url());
    assert_eq!(states(&log), state);
    assert_eq!(records(&log, "run:e"), vec![last]);
}
