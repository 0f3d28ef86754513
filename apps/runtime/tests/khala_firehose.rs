//! The per-user firehoses (`runs:user:{id}:events`, `fleet:user:{id}:workers`)
//! against the real binary over TCP: only the principal's runs and workers,
//! in commit order with a gap-free sequence of their own, the same sequence
//! after a restart, the same stale-cursor rule, the same lanes (poll, SSE,
//! WebSocket) as every topic, and a window rebuilt while the user's runs
//! are written to.

mod support;

use serde_json::{Value, json};
use std::path::Path;
use support::process::Server;
use support::sse;
use support::tokens::{KEY, claims, now, token, user_token};
use support::ws;

fn start(data: &Path, extra: &[(&str, String)]) -> Server {
    let mut env = vec![
        (
            "RUNTIME_EVENT_LOG_PATH",
            data.join("events.jsonl").display().to_string(),
        ),
        (
            "RUNTIME_CHECKPOINT_PATH",
            data.join("projections.json").display().to_string(),
        ),
        ("RUNTIME_SYNC_TOKEN_SIGNING_KEY", KEY.to_owned()),
    ];
    env.extend(extra.iter().map(|(name, value)| (*name, value.clone())));
    Server::start_with(&env)
}

fn create_run(server: &Server, owner: u64) -> String {
    let (status, created) = server.call(
        "POST",
        "/internal/v1/runs",
        Some(json!({"owner_user_id": owner})),
    );
    assert_eq!(status, 201, "{created}");
    created["run"]["id"].as_str().unwrap().to_owned()
}

fn append(server: &Server, run: &str, n: u64) {
    let (status, body) = server.call(
        "POST",
        &format!("/internal/v1/runs/{run}/events"),
        Some(json!({"event_type": "note", "payload": {"n": n}})),
    );
    assert_eq!(status, 200, "{body}");
}

fn register_worker(server: &Server, owner: u64) -> String {
    let (status, body) = server.call(
        "POST",
        "/internal/v1/workers",
        Some(json!({"owner_user_id": owner, "adapter": "codex"})),
    );
    assert_eq!(status, 201, "{body}");
    body["worker"]["worker"]["worker_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn poll(server: &Server, topic: &str, query: &str, bearer: &str) -> (u16, Value) {
    server.call_authorized(
        &format!("/internal/v1/khala/topics/{topic}/messages?{query}"),
        bearer,
    )
}

/// `(run_id, run_seq)` of each message, checking the sequence is 1.. in order.
fn runs_of(messages: &Value, first: u64) -> Vec<(String, u64)> {
    let messages = messages.as_array().unwrap();
    for (offset, message) in messages.iter().enumerate() {
        assert_eq!(message["sequence"], first + offset as u64, "{message}");
    }
    messages
        .iter()
        .map(|m| {
            let payload = &m["payload"];
            (
                payload["run_id"].as_str().unwrap().to_owned(),
                payload["run_seq"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_run_firehose_carries_only_the_users_runs_in_commit_order_across_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let server = start(data.path(), &[]);
    let a = create_run(&server, 1);
    let theirs = create_run(&server, 2);
    let b = create_run(&server, 1);
    append(&server, &a, 1);
    append(&server, &theirs, 1);
    append(&server, &b, 1);
    append(&server, &a, 2);
    let expected = vec![
        (a.clone(), 1),
        (b.clone(), 1),
        (a.clone(), 2),
        (b.clone(), 2),
        (a.clone(), 3),
    ];
    let topic = "runs:user:1:events";
    let (status, page) = poll(&server, topic, "after_seq=0", &user_token(1));
    assert_eq!(status, 200, "{page}");
    assert_eq!(runs_of(&page["messages"], 1), expected);
    assert_eq!(page["head_cursor"], 5);
    assert_eq!(page["messages"][4]["payload"]["payload"], json!({"n": 2}));
    assert_eq!(page["messages"][4]["kind"], "note");

    // Only the named user's token reads it: another user's, a guest
    // scope's, or one without the run scope are refused.
    let (status, body) = poll(&server, topic, "", &user_token(2));
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["reason_code"], "owner_mismatch");
    let guest = token(
        json!({"iss": "https://openagents.com", "aud": "openagents-sync",
        "exp": now() + 600, "oa_org_id": "1", "oa_sync_scopes": ["runtime.run_events"]}),
    );
    let (status, _) = poll(&server, topic, "", &guest);
    assert_eq!(status, 403);
    let workers_only = token(claims(1, &["runtime.codex_worker_events"]));
    let (status, body) = poll(&server, topic, "", &workers_only);
    assert_eq!(status, 403);
    assert_eq!(body["reason_code"], "missing_scope");
    let (status, body) = poll(&server, "runs:user:01:events", "", &user_token(1));
    assert_eq!(status, 403, "{body}");

    // The same sequence after a restart, and live delivery numbered on
    // from it on the SSE and WebSocket lanes.
    drop(server);
    let server = start(data.path(), &[]);
    let (status, after) = poll(&server, topic, "after_seq=0", &user_token(1));
    assert_eq!(status, 200, "{after}");
    assert_eq!(after["messages"], page["messages"]);
    let path = format!("/internal/v1/khala/topics/{topic}/stream?after_seq=3");
    let bearer = format!("authorization: Bearer {}\r\n", user_token(1));
    let mut stream = sse::open(&server.addr, &path, &bearer).stream();
    let path = format!("/internal/v1/khala/topics/{topic}/ws?after_seq=3");
    let mut socket = ws::open(&server.addr, &path, Some(&user_token(1))).socket();
    assert_eq!(socket.next_frame().unwrap()["type"], "hello");
    append(&server, &theirs, 2);
    append(&server, &b, 2);
    assert_eq!(stream.sequences(3), vec![4, 5, 6]);
    assert_eq!(socket.sequences(3), vec![4, 5, 6]);
    let (_, tail) = poll(&server, topic, "after_seq=5", &user_token(1));
    assert_eq!(runs_of(&tail["messages"], 6), vec![(b.clone(), 3)]);
    socket.close();
}

#[test]
fn a_cursor_below_the_firehose_window_is_stale() {
    let data = tempfile::tempdir().unwrap();
    let extra = [("RUNTIME_FANOUT_QUEUE_CAPACITY", "4".to_owned())];
    let server = start(data.path(), &extra);
    let run = create_run(&server, 1);
    for n in 0..9 {
        append(&server, &run, n);
    }
    // Rebuilt after a clean restart (from the index snapshot written at
    // shutdown) with the same window rules.
    let mut server = server;
    server.signal("-TERM");
    assert!(server.child.wait().unwrap().success());
    let server = start(data.path(), &extra);
    let topic = "runs:user:1:events";
    let (status, body) = poll(&server, topic, "after_seq=5", &user_token(1));
    assert_eq!(status, 410, "{body}");
    assert_eq!(body["error"], "stale_cursor");
    let details = &body["details"];
    assert_eq!(details["oldest_available_cursor"], 6);
    assert_eq!(details["head_cursor"], 10);
    let (status, page) = poll(&server, topic, "after_seq=6", &user_token(1));
    assert_eq!(status, 200, "{page}");
    assert_eq!(runs_of(&page["messages"], 7).len(), 4);
    let path = format!("/internal/v1/khala/topics/{topic}/stream?after_seq=2");
    let bearer = format!("authorization: Bearer {}\r\n", user_token(1));
    let mut stream = sse::open(&server.addr, &path, &bearer).stream();
    let event = stream.next_event().unwrap();
    assert_eq!(event.event, "stale_cursor");
    assert_eq!(event.json()["oldest_available_cursor"], 6);
}

#[test]
fn a_fleet_firehose_carries_only_the_users_workers() {
    let data = tempfile::tempdir().unwrap();
    let server = start(data.path(), &[]);
    let mine = register_worker(&server, 1);
    let _theirs = register_worker(&server, 2);
    let (status, body) = server.call(
        "POST",
        &format!("/internal/v1/workers/{mine}/heartbeat"),
        Some(json!({"owner_user_id": 1})),
    );
    assert_eq!(status, 200, "{body}");
    let topic = "fleet:user:1:workers";
    let (status, page) = poll(&server, topic, "after_seq=0", &user_token(1));
    assert_eq!(status, 200, "{page}");
    let messages = page["messages"].as_array().unwrap();
    let seen: Vec<(u64, &str, u64)> = messages
        .iter()
        .map(|m| {
            (
                m["sequence"].as_u64().unwrap(),
                m["payload"]["worker_id"].as_str().unwrap(),
                m["payload"]["latest_seq"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(seen, vec![(1, mine.as_str(), 1), (2, mine.as_str(), 2)]);
    let (status, _) = poll(&server, topic, "", &user_token(2));
    assert_eq!(status, 403);
}

#[test]
fn a_firehose_followed_while_its_window_is_rebuilt_under_writes_stays_gap_free() {
    let data = tempfile::tempdir().unwrap();
    // Two windows for five topics: polling the run topics keeps evicting
    // the firehose's window, so it is rebuilt again and again while the
    // user's runs are written to.
    let server = std::sync::Arc::new(start(
        data.path(),
        &[("RUNTIME_FANOUT_MAX_TOPICS", "2".to_owned())],
    ));
    let runs: Vec<String> = (0..4).map(|_| create_run(&server, 1)).collect();
    let per_writer = 40;
    let writers: Vec<_> = runs
        .iter()
        .flat_map(|run| [run.clone(), run.clone()])
        .enumerate()
        .map(|(w, run)| {
            let server = std::sync::Arc::clone(&server);
            std::thread::spawn(move || {
                for n in 0..per_writer {
                    append(&server, &run, (w * 1000 + n) as u64);
                }
            })
        })
        .collect();
    let churn = {
        let (server, runs) = (std::sync::Arc::clone(&server), runs.clone());
        std::thread::spawn(move || {
            for round in 0..200 {
                let run = &runs[round % runs.len()];
                let (status, _) = poll(&server, &format!("run:{run}:events"), "", &user_token(1));
                assert_eq!(status, 200);
            }
        })
    };
    let path = "/internal/v1/khala/topics/runs:user:1:events/stream?after_seq=0&limit=3";
    let bearer = format!("authorization: Bearer {}\r\n", user_token(1));
    let mut stream = sse::open(&server.addr, path, &bearer).stream();
    let total = runs.len() * (1 + 2 * per_writer);
    let mut seen = std::collections::BTreeSet::new();
    for expected in 1..=total as u64 {
        let event = stream.next_event().expect("the stream goes on");
        assert_eq!(event.event, "message", "{event:?}");
        let message = event.json();
        assert_eq!(message["sequence"], expected);
        let origin = (
            message["payload"]["run_id"].as_str().unwrap().to_owned(),
            message["payload"]["run_seq"].as_u64().unwrap(),
        );
        assert!(seen.insert(origin), "delivered twice: {message}");
    }
    for writer in writers {
        writer.join().unwrap();
    }
    churn.join().unwrap();
    // Every event of every run of the user, once.
    for run in &runs {
        let delivered = seen.iter().filter(|(id, _)| id == run).count();
        assert_eq!(delivered, 1 + 2 * per_writer);
    }
    let (_, page) = poll(
        &server,
        "runs:user:1:events",
        "after_seq=0&limit=1",
        &user_token(1),
    );
    assert_eq!(page["head_cursor"], total);
}
