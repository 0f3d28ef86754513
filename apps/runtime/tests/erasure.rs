//! Run erasure (`DELETE /internal/v1/runs/{id}`) against the real binary
//! over TCP: the refusals that change nothing, the tombstone and its hashes
//! (the receipt's, taken before), the 410 on every route of the run and on
//! its Khala topic by every lane, the run list and the owner's firehose,
//! force on a live run with streams open on it, and all of it again after a
//! SIGKILL and a restart. On the PostgreSQL suite
//! (`RUNTIME_TEST_BACKEND=postgres`) the binary runs on a schema of its own.

mod support;

use serde_json::{Value, json};
use std::sync::Arc;
use support::database::{Schema, fresh_schema, suite_on_postgres};
use support::process::Server;
use support::tokens::{KEY, user_token};
use support::{sse, ws};
use tempfile::TempDir;

/// The token of `RUNTIME_INTERNAL_AUTH_TOKEN`: the credential `internal`,
/// every scope.
const ADMIN: &str = "authorization: Bearer admin-token\r\n";
/// A credential of the file with `runs:write` and `runs:read` only.
const WRITER: &str = "authorization: Bearer writer-token\r\n";
/// The user who owns the runs.
const OWNER: u64 = 7;

/// Where a service keeps its data: a folder, and on the PostgreSQL suite a
/// schema, both kept across restarts.
struct Data {
    dir: TempDir,
    schema: Option<Arc<Schema>>,
}

impl Data {
    fn new() -> Self {
        let schema = suite_on_postgres()
            .then(|| fresh_schema("the erasure suite").expect("PostgreSQL answers"));
        Data {
            dir: tempfile::tempdir().unwrap(),
            schema,
        }
    }

    /// A service on this data, with the credentials and the sync key.
    fn start(&self) -> Server {
        let credentials = self.dir.path().join("credentials.json");
        let hash =
            openagents_canonical::digest_bytes(b"writer-token")["sha256:".len()..].to_owned();
        let file = json!({"credentials": [
            {"name": "writer", "token_sha256": hash, "scopes": ["runs:write", "runs:read"]}
        ]});
        std::fs::write(&credentials, file.to_string()).unwrap();
        let mut env = vec![
            ("RUNTIME_INTERNAL_AUTH_TOKEN", "admin-token".to_owned()),
            (
                "RUNTIME_CREDENTIALS_PATH",
                credentials.display().to_string(),
            ),
            ("RUNTIME_SYNC_TOKEN_SIGNING_KEY", KEY.to_owned()),
        ];
        match &self.schema {
            Some(schema) => env.extend([
                ("RUNTIME_STORAGE_BACKEND", "postgres".to_owned()),
                ("RUNTIME_DATABASE_URL", schema.url()),
                ("RUNTIME_FANOUT_DRIVER", "postgres_notify".to_owned()),
            ]),
            None => env.extend([
                (
                    "RUNTIME_EVENT_LOG_PATH",
                    self.dir.path().join("events.jsonl").display().to_string(),
                ),
                (
                    "RUNTIME_CHECKPOINT_PATH",
                    self.dir
                        .path()
                        .join("projections.json")
                        .display()
                        .to_string(),
                ),
            ]),
        }
        Server::start_with(&env)
    }
}

fn call(server: &Server, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    server.call_with(method, path, body.as_ref(), ADMIN)
}

fn create_run(server: &Server) -> String {
    let body = json!({"owner_user_id": OWNER, "metadata": {"email": "someone@example.com"}});
    let (status, created) = call(server, "POST", "/internal/v1/runs", Some(body));
    assert_eq!(status, 201, "{created}");
    created["run"]["id"].as_str().unwrap().to_owned()
}

fn append(server: &Server, run: &str, event_type: &str, payload: Value) -> (u16, Value) {
    let body = json!({"event_type": event_type, "payload": payload});
    call(
        server,
        "POST",
        &format!("/internal/v1/runs/{run}/events"),
        Some(body),
    )
}

/// A sealed run with a tool call and a private payload.
fn sealed_run(server: &Server) -> String {
    let run = create_run(server);
    let tool =
        json!({"tool": "shell", "params": {"cmd": "cat secret"}, "output": {"text": "hunter2"}});
    assert_eq!(append(server, &run, "tool.call.completed", tool).0, 200);
    let finished = json!({"status": "succeeded"});
    assert_eq!(append(server, &run, "run.finished", finished).0, 200);
    run
}

fn erase(server: &Server, run: &str, body: Value) -> (u16, Value) {
    call(
        server,
        "DELETE",
        &format!("/internal/v1/runs/{run}"),
        Some(body),
    )
}

/// A GET to `addr` on a connection of its own (from another thread than
/// the one holding the `Server`), with extra header lines.
fn get_at(addr: &str, path: &str, headers: &str) -> (u16, Value) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\n{headers}connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split(' ').nth(1).unwrap().parse().unwrap();
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Asserts the 410 envelope of an erased run.
fn assert_gone(what: &str, status: u16, body: &Value, run: &str) {
    assert_eq!(status, 410, "{what}: {body}");
    assert_eq!(body["error"], "gone", "{what}: {body}");
    assert_eq!(body["reason_code"], "run_erased", "{what}: {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| m.contains(run)),
        "{what}: {body}"
    );
    assert_eq!(body["details"]["run_id"], run, "{what}: {body}");
}

/// Asserts a 4xx envelope with `error` and `reason_code`.
fn assert_refused(what: &str, (status, body): (u16, Value), want: u16, error: &str) {
    assert_eq!(status, want, "{what}: {body}");
    assert_eq!(body["error"], error, "{what}: {body}");
    assert!(body["message"].as_str().is_some(), "{what}: {body}");
}

fn run_state(server: &Server, run: &str) -> Value {
    let (status, body) = call(server, "GET", &format!("/internal/v1/runs/{run}"), None);
    assert_eq!(status, 200, "{body}");
    body["run"].clone()
}

/// Every route of the run, and its topic by poll, long-poll, SSE and
/// WebSocket, answers the 410; the tombstone in the details is `tombstone`.
fn assert_every_route_gone(server: &Server, run: &str, tombstone: &Value) {
    let base = format!("/internal/v1/runs/{run}");
    let reads = [
        base.clone(),
        format!("{base}/events?after_seq=0&limit=10"),
        format!("{base}/receipt"),
        format!("{base}/replay"),
        format!("/internal/v1/projectors/checkpoints/{run}"),
        format!("/internal/v1/projectors/run-summary/{run}"),
        format!("/internal/v1/projectors/drift?topic=run:{run}:events"),
    ];
    for path in &reads {
        let (status, body) = call(server, "GET", path, None);
        assert_gone(path, status, &body, run);
        assert_eq!(&body["details"], tombstone, "{path}");
    }
    for (event_type, payload) in [
        ("note", json!({"n": 1})),
        ("run.cancel_requested", json!({})),
        ("run.finished", json!({"status": "succeeded"})),
    ] {
        let (status, body) = append(server, run, event_type, payload);
        assert_gone(event_type, status, &body, run);
    }
    for body in [
        json!({"reason": "again"}),
        json!({"reason": "again", "force": true}),
    ] {
        let (status, answer) = erase(server, run, body);
        assert_gone("a second DELETE", status, &answer, run);
        assert_eq!(answer["details"], *tombstone);
    }

    let bearer = format!("authorization: Bearer {}\r\n", user_token(OWNER));
    let topic = format!("run:{run}:events");
    for query in ["after_seq=0", "after_seq=0&wait_ms=200"] {
        let path = format!("/internal/v1/khala/topics/{topic}/messages?{query}");
        let (status, body) = server.call_with("GET", &path, None, &bearer);
        assert_gone(&path, status, &body, run);
        // The sync token's holder is told when, not by whom or why.
        assert_eq!(
            body["details"],
            json!({"run_id": run, "erased_at": tombstone["erased_at"]})
        );
    }
    let path = format!("/internal/v1/khala/topics/{topic}/stream?after_seq=0");
    match sse::open(&server.addr, &path, &bearer) {
        sse::Opened::Refused(status, body, _) => assert_gone("sse", status, &body, run),
        sse::Opened::Stream(_) => panic!("the stream of an erased run opened"),
    }
    let path = format!("/internal/v1/khala/topics/{topic}/ws?after_seq=0");
    match ws::open(&server.addr, &path, Some(&user_token(OWNER))) {
        ws::Opened::Refused(status, body) => assert_gone("ws", status, &body, run),
        ws::Opened::Socket(_) => panic!("the socket of an erased run opened"),
    }
    // Another user is refused as before: no oracle of erased runs either.
    let stranger = format!("authorization: Bearer {}\r\n", user_token(OWNER + 1));
    let path = format!("/internal/v1/khala/topics/{topic}/messages");
    let (status, body) = server.call_with("GET", &path, None, &stranger);
    assert_eq!(status, 403, "{body}");
}

/// The ids of the runs `GET /internal/v1/runs?{query}` lists, with each
/// row's status.
fn listed(server: &Server, query: &str) -> Vec<(String, String)> {
    let (status, body) = call(server, "GET", &format!("/internal/v1/runs?{query}"), None);
    assert_eq!(status, 200, "{body}");
    body["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|run| {
            (
                run["id"].as_str().unwrap().to_owned(),
                run["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The owner's firehose after cursor 0: `(sequence, kind, run_id, run_seq,
/// has a payload)` of each message.
fn firehose(server: &Server) -> Vec<(u64, String, String, u64, bool)> {
    let bearer = format!("authorization: Bearer {}\r\n", user_token(OWNER));
    let path = format!("/internal/v1/khala/topics/runs:user:{OWNER}:events/messages?after_seq=0");
    let (status, body) = server.call_with("GET", &path, None, &bearer);
    assert_eq!(status, 200, "{body}");
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["sequence"].as_u64().unwrap(),
                m["kind"].as_str().unwrap().to_owned(),
                m["payload"]["run_id"].as_str().unwrap().to_owned(),
                m["payload"]["run_seq"].as_u64().unwrap(),
                m["payload"].get("payload").is_some(),
            )
        })
        .collect()
}

#[test]
fn refusals_change_nothing() {
    let data = Data::new();
    let server = data.start();
    let sealed = sealed_run(&server);
    let live = create_run(&server);
    let before = (run_state(&server, &sealed), run_state(&server, &live));
    let path = format!("/internal/v1/runs/{sealed}");
    let good = json!({"reason": "asked by the user"}).to_string();

    let (status, body) = server.call_raw("DELETE", &path, &good, "");
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["reason_code"], "invalid_internal_token");
    let (status, body) = server.call_raw("DELETE", &path, &good, WRITER);
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["reason_code"], "missing_scope");

    let unknown = format!("/internal/v1/runs/{}", uuid::Uuid::now_v7());
    assert_refused(
        "unknown run",
        server.call_raw("DELETE", &unknown, &good, ADMIN),
        404,
        "not_found",
    );
    assert_refused(
        "not a run id",
        server.call_raw("DELETE", "/internal/v1/runs/nope", &good, ADMIN),
        400,
        "invalid_request",
    );
    for body in [
        json!({"reason": "live"}),
        json!({"reason": "live", "force": false}),
    ] {
        let (status, answer) = erase(&server, &live, body);
        assert_eq!(status, 409, "{answer}");
        assert_eq!(answer["error"], "conflict");
        assert_eq!(answer["reason_code"], "run_not_sealed");
    }
    let too_long = "r".repeat(1025);
    for bad in [
        "{}".to_owned(),
        json!({"reason": ""}).to_string(),
        json!({"reason": "  \n"}).to_string(),
        json!({"reason": too_long}).to_string(),
        json!({"reason": "ok", "forse": true}).to_string(),
        json!({"reason": 5}).to_string(),
        json!({"reason": "ok", "force": "yes"}).to_string(),
        json!({"reason": null}).to_string(),
        "[]".to_owned(),
        "{\"reason\": \"ok\"".to_owned(),
        String::new(),
    ] {
        assert_refused(
            &bad,
            server.call_raw("DELETE", &path, &bad, ADMIN),
            400,
            "invalid_request",
        );
    }
    // The type of a tombstone is the service's own.
    let (status, body) = append(&server, &live, "run.erased", json!({"reason": "forged"}));
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["reason_code"], "reserved_event_type");

    assert_eq!(
        (run_state(&server, &sealed), run_state(&server, &live)),
        before,
        "nothing was appended"
    );
    // A reason of exactly 1024 characters is accepted.
    let (status, body) = erase(&server, &sealed, json!({"reason": "é".repeat(1024)}));
    assert_eq!(status, 200, "{body}");
}

#[test]
fn an_erased_run_is_gone_everywhere_and_stays_gone_after_a_kill() {
    let data = Data::new();
    let server = data.start();
    let kept_before = sealed_run(&server);
    let run = sealed_run(&server);
    let (status, receipt) = call(
        &server,
        "GET",
        &format!("/internal/v1/runs/{run}/receipt"),
        None,
    );
    assert_eq!(status, 200, "{receipt}");
    let firehose_before = firehose(&server);
    assert_eq!(firehose_before.len(), 6, "{firehose_before:?}");

    let (status, answer) = erase(&server, &run, json!({"reason": "GDPR request 42"}));
    assert_eq!(status, 200, "{answer}");
    let tombstone = answer["tombstone"].clone();
    assert_eq!(tombstone["run_id"], run);
    assert_eq!(tombstone["seq"], 4);
    assert_eq!(tombstone["erased_by"], "internal");
    assert_eq!(tombstone["reason"], "GDPR request 42");
    assert_eq!(tombstone["forced"], false);
    assert_eq!(tombstone["status_at_erasure"], "succeeded");
    assert_eq!(tombstone["last_seq"], 3);
    assert!(tombstone["erased_at"].as_str().is_some(), "{tombstone}");
    // What a receipt holder compares with.
    assert_eq!(tombstone["trajectory_hash"], receipt["trajectory_hash"]);
    assert_eq!(tombstone["event_count"], receipt["event_count"]);
    assert_eq!(
        tombstone["receipt_canonical_json_sha256"],
        receipt["canonical_json_sha256"]
    );

    let kept_after = sealed_run(&server);
    let check = |server: &Server| {
        assert_every_route_gone(server, &run, &tombstone);
        // The run list leaves erased runs out unless asked for them.
        let ids: Vec<String> = listed(server, "").into_iter().map(|(id, _)| id).collect();
        assert_eq!(ids, [kept_after.clone(), kept_before.clone()]);
        assert_eq!(
            listed(server, "status=erased"),
            [(run.clone(), "erased".into())]
        );
        assert!(
            listed(server, "status=succeeded")
                .iter()
                .all(|(id, _)| *id != run)
        );
        // The firehose keeps the erased run's places, with placeholders.
        let messages = firehose(server);
        let sequences: Vec<u64> = messages.iter().map(|m| m.0).collect();
        assert_eq!(sequences, (1..=10).collect::<Vec<_>>(), "{messages:?}");
        for (index, message) in messages.iter().enumerate() {
            if message.2 == run {
                assert_eq!(message.1, "run.erased", "{message:?}");
                assert!(!message.4, "no payload survives: {message:?}");
            } else {
                assert_ne!(message.1, "run.erased", "{message:?}");
                assert!(message.4, "{message:?}");
            }
            if index < 6 {
                assert_eq!(message.0, firehose_before[index].0);
                assert_eq!(message.2, firehose_before[index].2);
            }
        }
        assert_eq!(messages[6].2, run, "the tombstone's place");
        assert_eq!(messages[6].3, 4);
        // Other runs are untouched.
        for other in [&kept_before, &kept_after] {
            let path = format!("/internal/v1/projectors/run-summary/{other}");
            assert_eq!(call(server, "GET", &path, None).0, 200);
            assert_eq!(run_state(server, other)["latest_seq"], 3);
        }
    };
    check(&server);

    server.signal("-KILL");
    drop(server);
    let server = data.start();
    check(&server);
    drop(server);
    // A clean stop and start (from the snapshot) again.
    let server = data.start();
    check(&server);
}

#[test]
fn force_erases_a_live_run_and_ends_what_follows_it() {
    let data = Data::new();
    let server = data.start();
    let run = create_run(&server);
    assert_eq!(append(&server, &run, "note", json!({"private": 1})).0, 200);
    let bearer = format!("authorization: Bearer {}\r\n", user_token(OWNER));
    let topic = format!("run:{run}:events");

    let mut stream = sse::open(
        &server.addr,
        &format!("/internal/v1/khala/topics/{topic}/stream?after_seq=0"),
        &bearer,
    )
    .stream();
    assert_eq!(stream.sequences(2), [1, 2]);
    let mut socket = ws::open(
        &server.addr,
        &format!("/internal/v1/khala/topics/{topic}/ws?after_seq=2"),
        Some(&user_token(OWNER)),
    )
    .socket();
    assert_eq!(socket.next_frame().unwrap()["type"], "hello");
    let addr = server.addr.clone();
    let long_poll = std::thread::spawn(move || {
        let path = format!("/internal/v1/khala/topics/{topic}/messages?after_seq=2&wait_ms=10000");
        get_at(&addr, &path, &bearer)
    });
    std::thread::sleep(std::time::Duration::from_millis(300));

    let (status, answer) = erase(
        &server,
        &run,
        json!({"reason": "runaway agent", "force": true}),
    );
    assert_eq!(status, 200, "{answer}");
    let tombstone = answer["tombstone"].clone();
    assert_eq!(tombstone["forced"], true);
    assert_eq!(tombstone["status_at_erasure"], "running");
    assert_eq!(tombstone["event_count"], 2);
    assert_eq!(tombstone["seq"], 3);

    let (status, body) = long_poll.join().unwrap();
    assert_gone("the waiting long-poll", status, &body, &run);
    let ended = stream.next_event().expect("a last event");
    assert_eq!(ended.event, "error", "{ended:?}");
    assert_eq!(ended.json()["code"], "run_erased");
    assert!(stream.next_event().is_none(), "the stream ends");
    let frame = socket.next_frame().expect("a last frame");
    assert_eq!(frame["type"], "error", "{frame}");
    assert_eq!(frame["code"], "run_erased");
    assert!(socket.next_frame().is_none(), "the socket closes");
    assert_eq!(socket.closed_with, Some(4411));

    assert_every_route_gone(&server, &run, &tombstone);
    server.signal("-KILL");
    drop(server);
    let server = data.start();
    assert_every_route_gone(&server, &run, &tombstone);
}
