//! Writers against the real binary on PostgreSQL while the service's
//! database backends are terminated every 50–400 ms (`pg_terminate_backend`),
//! as the outside testing of issue 19 found it: a connection that dies while
//! `COMMIT` waits may have committed. Afterwards the database is the judge:
//!
//! - every 2xx is in the database exactly once;
//! - every 503 `storage_unavailable` left nothing in the database;
//! - a 503 `commit_outcome_unknown` may be either, and a retry with the same
//!   idempotency key lands it exactly once;
//! - the service's own view (its index, served by `GET`) equals the database.
//!
//! Two more tests cut one `COMMIT` through a proxy: with its answer lost but
//! the database reachable, a committed batch is answered 200 and one that
//! never reached the database 503 `storage_unavailable`. Then one loses the
//! answer to a `COMMIT` that did commit and keeps
//! the database out of reach past the writer's deadline: the request gets
//! 503 `commit_outcome_unknown`, and once the database is back the next
//! batch takes the committed record into the index, so the retry with the
//! same key is an idempotent replay and the index equals the database.
//!
//! Skips with a printed note when PostgreSQL does not answer, unless
//! `RUNTIME_TEST_REQUIRE_POSTGRES=1`.

mod support;

use axum::http::StatusCode;
use cutter::Cut;
use openagents_runtime_service::config::StorageBackend;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::database::{Schema, fresh_schema};
use support::process::Server;
use support::{TestService, assert_error};

/// How long the writers write while backends are being terminated.
const CHAOS: Duration = Duration::from_secs(6);
/// Concurrent writers.
const WRITERS: usize = 8;
/// Runs the writers share.
const RUNS: usize = 4;

/// What one append was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Answer {
    Ok,
    StorageUnavailable,
    OutcomeUnknown,
    /// Any other answer, or none (the test fails on these).
    Other,
}

fn classify(status: u16, body: &Value) -> Answer {
    match (status, body["reason_code"].as_str()) {
        (200, _) => Answer::Ok,
        (503, Some("storage_unavailable")) => Answer::StorageUnavailable,
        (503, Some("commit_outcome_unknown")) => Answer::OutcomeUnknown,
        _ => Answer::Other,
    }
}

/// A tiny deterministic generator for the pauses between terminations.
fn pause(state: &mut u64) -> Duration {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    Duration::from_millis(50 + (*state >> 33) % 351)
}

#[test]
fn terminated_backends_never_turn_a_commit_into_a_503_storage_unavailable() {
    let Some(schema) = fresh_schema("terminated_backends_never_turn_a_commit_into_a_503") else {
        return;
    };
    // The service's connections carry a name of their own, so only they are
    // terminated, never another test's.
    let application = format!("oa_terminate_{}", uuid::Uuid::now_v7().simple());
    let service_url = format!("{}&application_name={application}", schema.url());
    let server = Arc::new(Server::start_with(&[
        ("RUNTIME_STORAGE_BACKEND", "postgres".to_owned()),
        ("RUNTIME_DATABASE_URL", service_url),
    ]));
    let runs: Arc<Vec<String>> = Arc::new(
        (0..RUNS)
            .map(|_| {
                let (status, body) = server.call("POST", "/internal/v1/runs", Some(json!({})));
                assert_eq!(status, 201, "{body}");
                body["run"]["id"].as_str().unwrap().to_owned()
            })
            .collect(),
    );

    let stop = Arc::new(AtomicBool::new(false));
    let terminator = {
        let (stop, url) = (Arc::clone(&stop), schema.url());
        std::thread::spawn(move || {
            let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            let (mut state, mut terminated) = (0x9e37_79b9_7f4a_7c15_u64, 0i64);
            while !stop.load(Ordering::Acquire) {
                std::thread::sleep(pause(&mut state));
                let row = client
                    .query_one(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                         WHERE application_name = $1",
                        &[&application],
                    )
                    .unwrap();
                terminated += row.get::<_, i64>(0);
            }
            terminated
        })
    };

    let started = Instant::now();
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let (server, runs) = (Arc::clone(&server), Arc::clone(&runs));
            std::thread::spawn(move || {
                let mut answers = Vec::new();
                let mut n = 0;
                while started.elapsed() < CHAOS {
                    let run = &runs[(writer + n) % runs.len()];
                    let key = format!("w{writer}-{n}");
                    let body = json!({"event_type": "note", "payload": {"writer": writer, "n": n}, "idempotency_key": key});
                    let answer = match server.try_call(
                        "POST",
                        &format!("/internal/v1/runs/{run}/events"),
                        Some(&body),
                    ) {
                        Ok((status, body)) => (classify(status, &body), format!("{status} {body}")),
                        Err(error) => (Answer::Other, error.to_string()),
                    };
                    answers.push((run.clone(), key, body, answer));
                    n += 1;
                }
                answers
            })
        })
        .collect();
    let answers: Vec<_> = writers
        .into_iter()
        .flat_map(|writer| writer.join().unwrap())
        .collect();
    stop.store(true, Ordering::Release);
    let terminated = terminator.join().unwrap();
    server.wait_ready();

    // Every key's rows, straight from the database.
    let stored: HashMap<String, i64> = {
        let url = schema.url();
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
                    client
                        .query(
                            "SELECT idempotency_key, count(*) FROM events \
                             WHERE idempotency_key IS NOT NULL GROUP BY idempotency_key",
                            &[],
                        )
                        .unwrap()
                        .iter()
                        .map(|row| (row.get(0), row.get(1)))
                        .collect()
                })
                .join()
                .unwrap()
        })
    };
    let mut counts: HashMap<Answer, usize> = HashMap::new();
    for (run, key, body, (answer, text)) in &answers {
        *counts.entry(*answer).or_default() += 1;
        let rows = stored.get(key).copied().unwrap_or(0);
        match answer {
            Answer::Ok => assert_eq!(rows, 1, "{key} was answered 2xx: {text}"),
            Answer::StorageUnavailable => {
                assert_eq!(rows, 0, "{key} was answered storage_unavailable: {text}")
            }
            Answer::OutcomeUnknown => {
                assert!(rows <= 1, "{key}: {rows} rows");
                // What the contract tells the client to do.
                let (status, again) = server.call(
                    "POST",
                    &format!("/internal/v1/runs/{run}/events"),
                    Some(body.clone()),
                );
                assert_eq!(status, 200, "{key}: retry answered {again}");
                assert_eq!(again["idempotent_replay"], rows == 1, "{key}: {again}");
            }
            Answer::Other => panic!("{key}: unexpected answer {text}"),
        }
    }
    let retried = counts.get(&Answer::OutcomeUnknown).copied().unwrap_or(0);
    if retried > 0 {
        let url = schema.url();
        let duplicated: i64 = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
                    client
                        .query_one(
                            "SELECT count(*) FROM (SELECT idempotency_key FROM events \
                             WHERE idempotency_key IS NOT NULL GROUP BY idempotency_key \
                             HAVING count(*) > 1) AS twice",
                            &[],
                        )
                        .unwrap()
                        .get(0)
                })
                .join()
                .unwrap()
        });
        assert_eq!(duplicated, 0, "a retried key landed twice");
    }

    // The service's index agrees with the database, run by run.
    for run in runs.iter() {
        let stream = format!("run:{run}");
        let in_db = schema.count(&format!(
            "SELECT count(*) FROM events WHERE stream = '{stream}'"
        ));
        let (status, body) = server.call("GET", &format!("/internal/v1/runs/{run}"), None);
        assert_eq!(status, 200, "{body}");
        let served = body["run"]["events"].as_array().unwrap();
        assert_eq!(served.len() as i64, in_db, "{stream}: served vs stored");
        assert_eq!(body["run"]["latest_seq"], json!(in_db), "{stream}");
        for (index, event) in served.iter().enumerate() {
            assert_eq!(event["seq"], json!(index + 1), "{stream}: contiguous");
        }
    }

    let get = |answer| counts.get(&answer).copied().unwrap_or(0);
    eprintln!(
        "terminate loop: {} requests in {CHAOS:?}, {terminated} backends terminated: \
         {} answered 2xx (each stored once), {} answered 503 storage_unavailable \
         (none stored), {} answered 503 commit_outcome_unknown (retried: each stored once)",
        answers.len(),
        get(Answer::Ok),
        get(Answer::StorageUnavailable),
        get(Answer::OutcomeUnknown),
    );
    assert!(terminated > 0, "the loop terminated no backend");
    assert!(get(Answer::Ok) > 0, "nothing was acknowledged at all");
}

/// A `COMMIT` that went through but whose answer was lost is found in the
/// table and answered 200, once; one that never reached the database is
/// answered 503 `storage_unavailable` with nothing stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_commit_answer_is_looked_up_before_the_reply() {
    let Some(schema) = fresh_schema("a_lost_commit_answer_is_looked_up_before_the_reply") else {
        return;
    };
    let cutter = cutter::CommitCutter::start(Schema::server_addr());
    let url = schema.url_through("127.0.0.1", cutter.port());
    let service = TestService::start_on(Arc::clone(&schema), |config| {
        config.storage_backend = StorageBackend::Postgres { url };
        config.checkpoint_flush_interval = Duration::from_secs(3600);
    });
    let run = service.create_run(json!({})).await;
    let stored = |key: &str| {
        schema.count(&format!(
            "SELECT count(*) FROM events WHERE idempotency_key = '{key}'"
        ))
    };

    cutter.arm(Cut::SwallowAnswer);
    let committed = json!({"event_type": "note", "payload": {"n": 1}, "idempotency_key": "k1"});
    let (status, body) = service.append(&run, committed.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["event"]["seq"], 2);
    assert_eq!(stored("k1"), 1);

    cutter.arm(Cut::DropCommit);
    let dropped = json!({"event_type": "note", "payload": {"n": 2}, "idempotency_key": "k2"});
    let (status, body) = service.append(&run, dropped.clone()).await;
    assert_error(
        status,
        &body,
        503,
        "unavailable",
        Some("storage_unavailable"),
    );
    assert_eq!(
        stored("k2"),
        0,
        "storage_unavailable means nothing was written"
    );

    let (status, again) = service.append(&run, committed).await;
    assert_eq!(
        (status, again["idempotent_replay"].clone()),
        (StatusCode::OK, json!(true))
    );
    let (status, retried) = service.append(&run, dropped).await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    assert_eq!(retried["idempotent_replay"], false);
    assert_eq!(retried["event"]["seq"], 3);
    assert_eq!(schema.count("SELECT count(*) FROM events"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_commit_answer_past_the_deadline_is_unknown_and_the_retry_finds_it() {
    let Some(schema) = fresh_schema("a_lost_commit_answer_past_the_deadline_is_unknown") else {
        return;
    };
    let cutter = cutter::CommitCutter::start(Schema::server_addr());
    let url = schema.url_through("127.0.0.1", cutter.port());
    let service = TestService::start_on(Arc::clone(&schema), |config| {
        config.storage_backend = StorageBackend::Postgres { url };
        // No checkpoint transaction may meet the armed cutter.
        config.checkpoint_flush_interval = Duration::from_secs(3600);
    });
    let run = service.create_run(json!({})).await;
    let keyed = json!({"event_type": "note", "payload": {"n": 1}, "idempotency_key": "k1"});

    cutter.arm(Cut::SwallowAnswerThenRefuse);
    let started = Instant::now();
    let (status, body) = service.append(&run, keyed.clone()).await;
    assert_error(
        status,
        &body,
        503,
        "unavailable",
        Some("commit_outcome_unknown"),
    );
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("same idempotency key")),
        "{body}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        schema.count("SELECT count(*) FROM events WHERE idempotency_key = 'k1'"),
        1,
        "the batch did commit"
    );

    cutter.forward();
    let deadline = Instant::now() + Duration::from_secs(10);
    while service.get("/readyz").await.0 != StatusCode::OK {
        assert!(Instant::now() < deadline, "readiness did not come back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, again) = service.append(&run, keyed).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["idempotent_replay"], true, "{again}");
    assert_eq!(again["event"]["seq"], 2);
    let (status, next) = service
        .append(&run, json!({"event_type": "note", "payload": {"n": 2}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{next}");
    assert_eq!(next["event"]["seq"], 3, "the index took the lost commit in");
    let (_, read) = service.get(&format!("/internal/v1/runs/{run}")).await;
    assert_eq!(read["run"]["latest_seq"], 3);
    assert_eq!(schema.count("SELECT count(*) FROM events"), 3);
}

/// A TCP proxy in front of PostgreSQL that, once armed, cuts the next
/// connection that sends `COMMIT`: either it lets the `COMMIT` through and
/// swallows the database's answer, or it drops the `COMMIT` unsent; then it
/// forwards again, or refuses every new connection until told to forward.
mod cutter {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU8, Ordering};
    use std::time::Duration;

    const FORWARD: u8 = 0;
    const REFUSE: u8 = 1;
    const SWALLOW_THEN_REFUSE: u8 = 2;
    const SWALLOW: u8 = 3;
    const DROP: u8 = 4;

    /// What the armed proxy does to the next `COMMIT`.
    #[derive(Clone, Copy)]
    pub enum Cut {
        /// Send it, swallow the answer, then refuse new connections.
        SwallowAnswerThenRefuse,
        /// Send it, swallow the answer, then go on forwarding.
        SwallowAnswer,
        /// Do not send it (the transaction dies with the connection).
        DropCommit,
    }

    pub struct CommitCutter {
        port: u16,
        mode: Arc<AtomicU8>,
    }

    impl CommitCutter {
        pub fn start(target: String) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let mode = Arc::new(AtomicU8::new(FORWARD));
            let shared = Arc::clone(&mode);
            std::thread::spawn(move || {
                for client in listener.incoming().flatten() {
                    if shared.load(Ordering::Acquire) == REFUSE {
                        continue;
                    }
                    let Ok(server) = TcpStream::connect(&target) else {
                        continue;
                    };
                    relay(client, server, Arc::clone(&shared));
                }
            });
            CommitCutter { port, mode }
        }

        pub fn port(&self) -> u16 {
            self.port
        }

        pub fn arm(&self, cut: Cut) {
            let mode = match cut {
                Cut::SwallowAnswerThenRefuse => SWALLOW_THEN_REFUSE,
                Cut::SwallowAnswer => SWALLOW,
                Cut::DropCommit => DROP,
            };
            self.mode.store(mode, Ordering::Release);
        }

        pub fn forward(&self) {
            self.mode.store(FORWARD, Ordering::Release);
        }
    }

    /// Copies both ways; the client-to-server half watches for `COMMIT`.
    fn relay(client: TcpStream, server: TcpStream, mode: Arc<AtomicU8>) {
        let swallow = Arc::new(AtomicU8::new(0));
        let (mut from_client, mut to_server) =
            (client.try_clone().unwrap(), server.try_clone().unwrap());
        let (mut from_server, mut to_client) = (server, client);
        let cut = Arc::clone(&swallow);
        std::thread::spawn(move || {
            let mut buffer = vec![0; 64 * 1024];
            while let Ok(n) = from_client.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                let chunk = &buffer[..n];
                let armed = mode.load(Ordering::Acquire);
                let next = match armed {
                    SWALLOW_THEN_REFUSE => REFUSE,
                    SWALLOW | DROP => FORWARD,
                    _ => armed,
                };
                if next != armed
                    && chunk.windows(7).any(|w| w == b"COMMIT\0")
                    && mode
                        .compare_exchange(armed, next, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                {
                    cut.store(1, Ordering::Release);
                    if armed != DROP {
                        let _ = to_server.write_all(chunk);
                        // Let the commit finish before the connection goes.
                        std::thread::sleep(Duration::from_millis(300));
                    }
                    let _ = to_server.shutdown(Shutdown::Both);
                    let _ = from_client.shutdown(Shutdown::Both);
                    return;
                }
                if to_server.write_all(chunk).is_err() {
                    break;
                }
            }
            let _ = to_server.shutdown(Shutdown::Both);
        });
        std::thread::spawn(move || {
            let mut buffer = vec![0; 64 * 1024];
            while let Ok(n) = from_server.read(&mut buffer) {
                if n == 0 || swallow.load(Ordering::Acquire) == 1 {
                    break;
                }
                if to_client.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
            let _ = to_client.shutdown(Shutdown::Both);
        });
    }
}
