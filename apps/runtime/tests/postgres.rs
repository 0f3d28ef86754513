//! Several instances on one PostgreSQL database: shared runs, idempotency
//! and state machine across instances, Khala wake-ups across instances, a
//! database outage and its end, refusal to start without a database, moving
//! an embedded log in, and two real processes under 32 concurrent writers.
//!
//! Each test skips with a printed note when PostgreSQL does not answer,
//! unless `RUNTIME_TEST_REQUIRE_POSTGRES=1`.

mod support;

use axum::http::StatusCode;
use openagents_runtime_service::config::{Config, StorageBackend};
use openagents_runtime_service::core::Core;
use serde_json::{Value, json};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use support::database::{Schema, fresh_schema};
use support::process::Server;
use support::tokens::{KEY, user_token};
use support::{TestService, assert_error};

fn with_khala(config: &mut Config) {
    config.sync_token_signing_key = Some(KEY.into());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_runs_keys_and_the_state_machine() {
    let Some(schema) = fresh_schema("two_instances_share_runs_keys_and_the_state_machine") else {
        return;
    };
    let a = TestService::start_on(Arc::clone(&schema), |_| {});
    let b = TestService::start_on(Arc::clone(&schema), |_| {});
    let run = a.create_run(json!({"metadata": {"k": "v"}})).await;
    let (status, _) = b.get(&format!("/internal/v1/runs/{run}")).await;
    assert_eq!(status, StatusCode::OK, "B reads A's run at once");

    let keyed = json!({"event_type": "note", "payload": {"n": 1}, "idempotency_key": "k1"});
    let (status, first) = b.append(&run, keyed.clone()).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let (status, again) = a.append(&run, keyed).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["idempotent_replay"], true);
    assert_eq!(again["event"], first["event"]);
    let reused = json!({"event_type": "note", "payload": {"n": 2}, "idempotency_key": "k1"});
    let (status, body) = a.append(&run, reused).await;
    assert_error(
        status,
        &body,
        409,
        "conflict",
        Some("idempotency_key_reused"),
    );

    let stale = json!({"event_type": "note", "payload": {}, "expected_previous_seq": 1});
    let (status, body) = a.append(&run, stale).await;
    assert_error(status, &body, 409, "conflict", Some("sequence_conflict"));

    let finish = json!({"event_type": "run.finished", "payload": {"status": "succeeded"}});
    let (status, body) = a.append(&run, finish).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = b
        .append(&run, json!({"event_type": "note", "payload": {}}))
        .await;
    assert_error(status, &body, 409, "conflict", Some("run_terminal"));

    let events = format!("/internal/v1/runs/{run}/events");
    assert_eq!(a.get(&events).await, b.get(&events).await);
    let summary = format!("/internal/v1/projectors/run-summary/{run}");
    let (status, from_b) = b.get(&summary).await;
    assert_eq!(status, StatusCode::OK, "{from_b}");
    assert_eq!(from_b["summary"]["last_seq"], 3);
    assert_eq!(a.get(&summary).await.1, from_b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_on_one_instance_wakes_for_an_append_on_the_other() {
    let Some(schema) = fresh_schema("a_long_poll_on_one_instance_wakes") else {
        return;
    };
    let a = TestService::start_on(Arc::clone(&schema), with_khala);
    let b = Arc::new(TestService::start_on(Arc::clone(&schema), with_khala));
    let run = a.create_run(json!({})).await;
    let uri =
        format!("/internal/v1/khala/topics/run:{run}:events/messages?after_seq=1&wait_ms=10000");
    let waiting = Arc::clone(&b);
    let poll = tokio::spawn(async move {
        let answer = waiting.get_authorized(&uri, &user_token(1)).await;
        (answer, Instant::now())
    });
    // Let the poll reach its wait before the append.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = a
        .append(&run, json!({"event_type": "note", "payload": {"n": 1}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let acknowledged = Instant::now();
    let ((status, page), woke) = poll.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["messages"][0]["sequence"], 2, "{page}");
    assert_eq!(page["driver"], "postgres_notify");
    let after_ack = woke.saturating_duration_since(acknowledged);
    assert!(
        after_ack < Duration::from_millis(100),
        "woke {after_ack:?} after A acknowledged the append"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_refuses_writes_and_ends_by_itself() {
    let Some(schema) = fresh_schema("a_database_outage_refuses_writes") else {
        return;
    };
    let mut proxy = proxy::Proxy::start(Schema::server_addr()).await;
    let url = schema.url_through("127.0.0.1", proxy.port());
    let service = TestService::start_on(Arc::clone(&schema), |config| {
        config.storage_backend = StorageBackend::Postgres { url };
    });
    let run = service.create_run(json!({})).await;
    let note = json!({"event_type": "note", "payload": {}});
    assert_eq!(service.append(&run, note.clone()).await.0, StatusCode::OK);
    let (_, before) = service.get(&format!("/internal/v1/runs/{run}")).await;

    proxy.cut();
    let (status, body) = service.append(&run, note.clone()).await;
    assert_error(
        status,
        &body,
        503,
        "unavailable",
        Some("storage_unavailable"),
    );
    let (status, ready) = service.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    assert!(
        ready["reason"]
            .as_str()
            .is_some_and(|r| r.contains("PostgreSQL")),
        "{ready}"
    );
    // A read answers correctly or not at all, never with something else.
    let (status, during) = service.get(&format!("/internal/v1/runs/{run}")).await;
    match status {
        StatusCode::OK => assert_eq!(during, before),
        _ => assert_error(
            status,
            &during,
            503,
            "unavailable",
            Some("storage_unavailable"),
        ),
    }

    proxy.restore().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while service.get("/readyz").await.0 != StatusCode::OK {
        assert!(Instant::now() < deadline, "readiness did not come back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = service.append(&run, note).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["event"]["seq"], 3, "the refused append left no trace");
    assert_eq!(
        schema.count("SELECT count(*) FROM events"),
        3,
        "run.started and two notes"
    );
}

#[test]
fn an_unreachable_database_refuses_to_start_and_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_tests(dir.path());
    config.storage_backend = StorageBackend::Postgres {
        url: "postgres://postgres@127.0.0.1:1/test?connect_timeout=2".into(),
    };
    let error = Core::open(&config).err().expect("no database, no start");
    let message = error.to_string();
    assert!(
        message.contains("cannot reach PostgreSQL at 127.0.0.1:1/test"),
        "{message}"
    );
}

#[tokio::test]
async fn an_embedded_log_moves_into_postgres_unchanged() {
    let Some(schema) = fresh_schema("an_embedded_log_moves_into_postgres_unchanged") else {
        return;
    };
    let embedded = TestService::start_with(|config| {
        config.storage_backend = StorageBackend::Jsonl;
        with_khala(config);
    });
    let run = embedded
        .create_run(json!({"metadata": {"from": "file"}}))
        .await;
    for n in 0..5 {
        let keyed =
            json!({"event_type": "note", "payload": {"n": n}, "idempotency_key": format!("k{n}")});
        embedded.append(&run, keyed).await;
    }
    let worker = json!({"worker_id": "w-import", "owner_user_id": 1});
    assert_eq!(
        embedded.post("/internal/v1/workers", worker).await.0,
        StatusCode::CREATED
    );
    let reads = [
        format!("/internal/v1/runs/{run}"),
        format!("/internal/v1/runs/{run}/events"),
        format!("/internal/v1/runs/{run}/receipt"),
        "/internal/v1/workers/w-import?owner_user_id=1".to_owned(),
    ];
    let mut expected = Vec::new();
    for uri in &reads {
        expected.push(embedded.get(uri).await);
    }
    let log_file = embedded.config.event_log_path.clone();
    let keep = Arc::clone(&embedded.dir);
    drop(embedded);

    let mut target = Config::for_tests(keep.path());
    target.storage_backend = StorageBackend::Postgres { url: schema.url() };
    let copied = openagents_runtime_service::storage::import_log(&target, &log_file).unwrap();
    assert_eq!(copied, 7);
    let again = openagents_runtime_service::storage::import_log(&target, &log_file);
    let refusal = again.expect_err("a second import finds a log").to_string();
    assert!(refusal.contains("needs an empty one"), "{refusal}");

    let moved = TestService::start_on(Arc::clone(&schema), with_khala);
    for (uri, want) in reads.iter().zip(expected) {
        assert_eq!(
            without_heartbeat_age(moved.get(uri).await),
            without_heartbeat_age(want),
            "{uri}"
        );
    }
    let retry = json!({"event_type": "note", "payload": {"n": 4}, "idempotency_key": "k4"});
    let (_, body) = moved.append(&run, retry).await;
    assert_eq!(body["idempotent_replay"], true, "keys moved with the log");
}

/// A worker's `heartbeat_age_ms` counts from its registration, so it grows
/// between two reads; everything else must be equal.
fn without_heartbeat_age((status, mut body): (StatusCode, Value)) -> (StatusCode, Value) {
    if let Some(liveness) = body
        .pointer_mut("/worker/liveness")
        .and_then(Value::as_object_mut)
    {
        liveness.remove("heartbeat_age_ms");
    }
    (status, body)
}

/// Two real processes on one schema, 32 writers spread over both, all on the
/// same few runs: every run's seqs stay contiguous, exactly one finish is
/// accepted per run, and both instances answer reads and polls identically.
#[test]
fn two_processes_under_32_writers_keep_every_rule() {
    let Some(schema) = fresh_schema("two_processes_under_32_writers") else {
        return;
    };
    let env = [
        ("RUNTIME_STORAGE_BACKEND", "postgres".to_owned()),
        ("RUNTIME_DATABASE_URL", schema.url()),
        ("RUNTIME_SYNC_TOKEN_SIGNING_KEY", KEY.to_owned()),
    ];
    let servers = Arc::new([Server::start_with(&env), Server::start_with(&env)]);
    let runs: Vec<String> = (0..4)
        .map(|n| {
            let (status, body) = servers[n % 2].call("POST", "/internal/v1/runs", Some(json!({})));
            assert_eq!(status, 201, "{body}");
            body["run"]["id"].as_str().unwrap().to_owned()
        })
        .collect();
    let runs = Arc::new(runs);
    let notes_done = Arc::new(Barrier::new(32));

    let writers: Vec<_> = (0..32)
        .map(|writer| {
            let (servers, runs) = (Arc::clone(&servers), Arc::clone(&runs));
            let notes_done = Arc::clone(&notes_done);
            std::thread::spawn(move || hammer(writer, &servers, &runs, &notes_done))
        })
        .collect();
    let mut appended = vec![0i64; runs.len()];
    let mut finishes = vec![0; runs.len()];
    for writer in writers {
        let outcome = writer.join().unwrap();
        for (run, (notes, finished)) in outcome.into_iter().enumerate() {
            appended[run] += notes;
            finishes[run] += finished;
        }
    }
    assert_eq!(finishes, vec![1; runs.len()], "exactly one finish per run");

    for (run, notes) in runs.iter().zip(&appended) {
        let stream = format!("run:{run}");
        let (count, max) = (
            schema.count(&format!(
                "SELECT count(*) FROM events WHERE stream = '{stream}'"
            )),
            schema.count(&format!(
                "SELECT max(seq) FROM events WHERE stream = '{stream}'"
            )),
        );
        assert_eq!((count, max), (notes + 2, notes + 2), "{stream}: contiguous");
        let events = format!("/internal/v1/runs/{run}/events?limit=1000");
        let (first, second) = (
            servers[0].call("GET", &events, None),
            servers[1].call("GET", &events, None),
        );
        assert_eq!(first, second);
        let last = &first.1["events"].as_array().unwrap().last().unwrap()["event_type"];
        assert_eq!(last, "run.finished", "nothing follows the finish");
        let poll = format!("/internal/v1/khala/topics/run:{run}:events/messages?limit=200");
        assert_eq!(
            servers[0].call_authorized(&poll, &user_token(1)),
            servers[1].call_authorized(&poll, &user_token(1))
        );
    }
}

/// One writer's share: notes on every run through its instance, then, once
/// every writer's notes are in, one attempt to finish each run (half the
/// writers say `succeeded`, half `failed`). Returns per run the notes it
/// appended and the finishes that were accepted as new.
fn hammer(
    writer: usize,
    servers: &[Server; 2],
    runs: &[String],
    notes_done: &Barrier,
) -> Vec<(i64, usize)> {
    let server = &servers[writer % 2];
    let mut outcome = vec![(0, 0); runs.len()];
    for round in 0..5 {
        for (index, run) in runs.iter().enumerate() {
            let note = json!({"event_type": "note", "payload": {"writer": writer, "round": round}});
            let (status, body) = server.call(
                "POST",
                &format!("/internal/v1/runs/{run}/events"),
                Some(note),
            );
            assert_eq!(status, 200, "{body}");
            outcome[index].0 += 1;
        }
    }
    notes_done.wait();
    let status = if writer.is_multiple_of(2) {
        "succeeded"
    } else {
        "failed"
    };
    for (index, run) in runs.iter().enumerate() {
        let finish = json!({"event_type": "run.finished", "payload": {"status": status}});
        let (code, body) = server.call(
            "POST",
            &format!("/internal/v1/runs/{run}/events"),
            Some(finish),
        );
        match (code, &body["idempotent_replay"]) {
            (200, Value::Bool(false)) => outcome[index].1 += 1,
            (200, Value::Bool(true)) => {}
            _ => assert_eq!(body["reason_code"], "run_terminal", "{code} {body}"),
        }
    }
    outcome
}

/// A TCP proxy in front of PostgreSQL that a test can cut and restore, to
/// make the database vanish from the service's point of view.
mod proxy {
    use std::net::SocketAddr;
    use tokio::net::{TcpListener, TcpStream};
    use tokio::task::JoinSet;

    pub struct Proxy {
        target: String,
        addr: SocketAddr,
        tasks: JoinSet<()>,
    }

    impl Proxy {
        pub async fn start(target: String) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let mut proxy = Proxy {
                target,
                addr,
                tasks: JoinSet::new(),
            };
            proxy.serve(listener);
            proxy
        }

        pub fn port(&self) -> u16 {
            self.addr.port()
        }

        /// Closes every proxied connection and stops accepting.
        pub fn cut(&mut self) {
            self.tasks.abort_all();
        }

        /// Accepts again on the same port.
        pub async fn restore(&mut self) {
            let listener = TcpListener::bind(self.addr).await.unwrap();
            self.serve(listener);
        }

        fn serve(&mut self, listener: TcpListener) {
            let target = self.target.clone();
            self.tasks.spawn(async move {
                let mut connections = JoinSet::new();
                while let Ok((mut client, _)) = listener.accept().await {
                    let target = target.clone();
                    connections.spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(target).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                }
            });
        }
    }
}

/// `import-log` into a schema that does not exist says what to do instead
/// of PostgreSQL's `3F000: no schema has been selected to create in`.
#[test]
fn importing_into_a_missing_schema_says_to_create_it() {
    let Some(schema) = fresh_schema("importing_into_a_missing_schema_says_to_create_it") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let log_file = dir.path().join("events.jsonl");
    std::fs::write(&log_file, "").unwrap();
    let mut target = Config::for_tests(dir.path());
    let url = schema
        .url()
        .replace("search_path%3Dt_", "search_path%3Dmissing_t_");
    assert_ne!(url, schema.url());
    target.storage_backend = StorageBackend::Postgres { url };
    let error = openagents_runtime_service::storage::import_log(&target, &log_file)
        .expect_err("no schema, no import")
        .to_string();
    assert!(error.contains("CREATE SCHEMA"), "{error}");
    assert!(error.contains("search_path"), "{error}");
    assert!(!error.contains("3F000"), "{error}");
}
