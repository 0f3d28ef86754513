//! The Khala SSE and WebSocket lanes against the real binary over TCP:
//! ordering under concurrent writers, resuming with `Last-Event-ID` across a
//! restart, the origin policy, the token matrix, the stale cursor, slow
//! consumers (both lanes), the stream limits, and shutdown.

mod support;

use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use support::process::Server;
use support::sse::{self, Opened};
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
        ("RUNTIME_SYNC_REVOKED_JTIS", "revoked-1".to_owned()),
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

fn append(server: &Server, run: &str, payload: Value) {
    let (status, body) = server.call(
        "POST",
        &format!("/internal/v1/runs/{run}/events"),
        Some(json!({"event_type": "note", "payload": payload})),
    );
    assert_eq!(status, 200, "{body}");
}

fn bearer(token: &str) -> String {
    format!("authorization: Bearer {token}\r\n")
}

fn stream_path(run: &str, query: &str) -> String {
    format!("/internal/v1/khala/topics/run:{run}:events/stream?{query}")
}

fn ws_path(run: &str, query: &str) -> String {
    format!("/internal/v1/khala/topics/run:{run}:events/ws?{query}")
}

#[test]
fn a_stream_sees_every_event_once_in_order_under_32_writers() {
    let data = tempfile::tempdir().unwrap();
    let server = Arc::new(start(data.path(), &[]));
    let run = create_run(&server, 1);
    let mut stream = sse::open(
        &server.addr,
        &stream_path(&run, "after_seq=0&limit=7"),
        &bearer(&user_token(1)),
    )
    .stream();
    let mut socket = ws::open(
        &server.addr,
        &ws_path(&run, "after_seq=0&limit=7"),
        Some(&user_token(1)),
    )
    .socket();
    let hello = socket.next_frame().unwrap();
    assert_eq!(
        hello,
        json!({
            "type": "hello",
            "topic": format!("run:{run}:events"),
            "after_seq": 0,
            "limit": 7,
            "recommended_reconnect_backoff_ms": 1000,
        })
    );
    let content_type = stream
        .headers
        .iter()
        .find(|(name, _)| name == "content-type")
        .map(|(_, value)| value.clone());
    assert_eq!(content_type.as_deref(), Some("text/event-stream"));
    let per_writer = 20;
    let writers: Vec<_> = (0..32)
        .map(|w| {
            let server = Arc::clone(&server);
            let run = run.clone();
            std::thread::spawn(move || {
                for n in 0..per_writer {
                    append(&server, &run, json!({"w": w, "n": n}));
                }
            })
        })
        .collect();
    let total = 1 + 32 * per_writer;
    let seen = stream.sequences(total as usize);
    let seen_over_ws = socket.sequences(total as usize);
    for writer in writers {
        writer.join().unwrap();
    }
    assert_eq!(seen, (1..=total).collect::<Vec<_>>());
    assert_eq!(seen_over_ws, (1..=total).collect::<Vec<_>>());
    socket.close();
}

#[test]
fn last_event_id_resumes_across_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let server = start(data.path(), &[]);
    let run = create_run(&server, 1);
    for n in 0..4 {
        append(&server, &run, json!({"n": n}));
    }
    let mut stream = sse::open(
        &server.addr,
        &stream_path(&run, ""),
        &bearer(&user_token(1)),
    )
    .stream();
    assert_eq!(stream.sequences(3), vec![1, 2, 3]);
    drop(stream);
    drop(server);
    let server = start(data.path(), &[]);
    append(&server, &run, json!({"n": 4}));
    // Last-Event-ID wins over after_seq, as a browser's reconnect sends both.
    let headers = format!("{}last-event-id: 3\r\n", bearer(&user_token(1)));
    let mut stream = sse::open(&server.addr, &stream_path(&run, "after_seq=0"), &headers).stream();
    assert_eq!(stream.sequences(3), vec![4, 5, 6]);
    // Live after the catch-up.
    append(&server, &run, json!({"n": 5}));
    assert_eq!(stream.sequences(1), vec![7]);
    // The query token works where no header can be sent.
    let path = stream_path(&run, &format!("after_seq=6&access_token={}", user_token(1)));
    let mut stream = sse::open(&server.addr, &path, "").stream();
    assert_eq!(stream.sequences(1), vec![7]);
}

#[test]
fn the_origin_policy() {
    let data = tempfile::tempdir().unwrap();
    let server = start(
        data.path(),
        &[(
            "RUNTIME_KHALA_ALLOWED_ORIGINS",
            "https://app.example, https://other.example".to_owned(),
        )],
    );
    let run = create_run(&server, 1);
    let auth = bearer(&user_token(1));
    let poll = format!("/internal/v1/khala/topics/run:{run}:events/messages");
    // Denied, on both routes.
    let denied = format!("{auth}origin: https://evil.example\r\n");
    let (status, body) = server.call_with("GET", &poll, None, &denied);
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "forbidden");
    assert_eq!(body["reason_code"], "origin_not_allowed");
    match sse::open(&server.addr, &stream_path(&run, ""), &denied) {
        Opened::Refused(403, body, _) => assert_eq!(body["reason_code"], "origin_not_allowed"),
        Opened::Refused(status, body, _) => panic!("{status}: {body}"),
        Opened::Stream(_) => panic!("a denied origin got a stream"),
    }
    // Allowed: served, with the CORS headers.
    let allowed = format!("{auth}origin: https://other.example\r\n");
    let mut stream = sse::open(&server.addr, &stream_path(&run, ""), &allowed).stream();
    assert!(stream.headers.contains(&(
        "access-control-allow-origin".into(),
        "https://other.example".into()
    )));
    assert_eq!(stream.sequences(1), vec![1]);
    let (status, _) = server.call_with("GET", &poll, None, &allowed);
    assert_eq!(status, 200);
    // A preflight from an allowed origin is answered.
    let (status, _) = server.call_with("OPTIONS", &poll, None, "origin: https://app.example\r\n");
    assert_eq!(status, 204);
    // No Origin: not a browser page, unaffected.
    let (status, _) = server.call_with("GET", &poll, None, &auth);
    assert_eq!(status, 200);
}

#[test]
fn the_token_matrix_on_the_stream() {
    let data = tempfile::tempdir().unwrap();
    let server = start(data.path(), &[]);
    let run = create_run(&server, 1);
    let mut expired = claims(1, &["runtime.run_events"]);
    expired["exp"] = json!(now() - 3600);
    let mut revoked = claims(1, &["runtime.run_events"]);
    revoked["jti"] = json!("revoked-1");
    let cases = [
        (String::new(), 401, "missing_authorization"),
        (bearer(&token(expired.clone())), 401, "token_expired"),
        (bearer(&token(revoked)), 401, "token_revoked"),
        (bearer(&user_token(2)), 403, "owner_mismatch"),
        (bearer(&token(claims(1, &[]))), 403, "missing_scope"),
    ];
    for (headers, status, reason) in cases {
        match sse::open(&server.addr, &stream_path(&run, ""), &headers) {
            Opened::Refused(got, body, _) => {
                assert_eq!(
                    (got, body["reason_code"].as_str()),
                    (status, Some(reason)),
                    "{body}"
                );
            }
            Opened::Stream(_) => panic!("{reason}: a stream was opened"),
        }
    }
    // The same refusals on the WebSocket lane, before the upgrade.
    let mut expired_ws = claims(1, &["runtime.run_events"]);
    expired_ws["exp"] = json!(now() - 3600);
    let mut revoked_ws = claims(1, &["runtime.run_events"]);
    revoked_ws["jti"] = json!("revoked-1");
    let ws_cases = [
        (None, 401, "missing_authorization"),
        (Some(token(expired_ws)), 401, "token_expired"),
        (Some(token(revoked_ws)), 401, "token_revoked"),
        (Some(user_token(2)), 403, "owner_mismatch"),
        (Some(token(claims(1, &[]))), 403, "missing_scope"),
    ];
    for (bearer, status, reason) in ws_cases {
        match ws::open(&server.addr, &ws_path(&run, ""), bearer.as_deref()) {
            ws::Opened::Refused(got, body) => {
                assert_eq!(
                    (got, body["reason_code"].as_str()),
                    (status, Some(reason)),
                    "{body}"
                );
            }
            ws::Opened::Socket(_) => panic!("{reason}: a socket was opened"),
        }
    }
    // The query token is checked the same way.
    let path = stream_path(&run, &format!("access_token={}", token(expired)));
    match sse::open(&server.addr, &path, "") {
        Opened::Refused(401, body, _) => assert_eq!(body["reason_code"], "token_expired"),
        _ => panic!("an expired query token was accepted"),
    }
    // A bad query value is a 400 before any stream.
    match sse::open(
        &server.addr,
        &stream_path(&run, "limit=0"),
        &bearer(&user_token(1)),
    ) {
        Opened::Refused(400, body, _) => assert_eq!(body["reason_code"], "invalid_limit"),
        _ => panic!("limit=0 was accepted"),
    }
}

#[test]
fn a_stale_cursor_ends_the_stream_with_its_details() {
    let data = tempfile::tempdir().unwrap();
    let server = start(
        data.path(),
        &[("RUNTIME_FANOUT_QUEUE_CAPACITY", "4".to_owned())],
    );
    let run = create_run(&server, 1);
    for n in 0..9 {
        append(&server, &run, json!({"n": n}));
    }
    let mut stream = sse::open(
        &server.addr,
        &stream_path(&run, "after_seq=2"),
        &bearer(&user_token(1)),
    )
    .stream();
    let event = stream.next_event().unwrap();
    assert_eq!(event.event, "stale_cursor");
    assert_eq!(
        event.json(),
        json!({
            "topic": format!("run:{run}:events"),
            "requested_cursor": 2,
            "oldest_available_cursor": 6,
            "head_cursor": 10,
            "recovery": "reset_local_watermark_and_replay_bootstrap",
        })
    );
    assert!(stream.next_event().is_none(), "the stream ends");
    // The same on the WebSocket lane: the details, then the close code.
    let mut socket = ws::open(
        &server.addr,
        &ws_path(&run, "after_seq=2"),
        Some(&user_token(1)),
    )
    .socket();
    assert_eq!(socket.next_frame().unwrap()["type"], "hello");
    let frame = socket.next_frame().unwrap();
    assert_eq!(frame["type"], "stale_cursor");
    assert_eq!(frame["oldest_available_cursor"], 6);
    assert_eq!(
        frame["recovery"],
        "reset_local_watermark_and_replay_bootstrap"
    );
    assert!(socket.next_frame().is_none(), "the socket closes");
    assert_eq!(socket.closed_with, Some(4410));
    // From the floor it is served.
    let mut stream = sse::open(
        &server.addr,
        &stream_path(&run, "after_seq=6"),
        &bearer(&user_token(1)),
    )
    .stream();
    assert_eq!(stream.sequences(4), vec![7, 8, 9, 10]);
}

#[test]
fn a_slow_consumer_is_dropped_and_resumes_from_its_cursor() {
    let data = tempfile::tempdir().unwrap();
    let server = start(
        data.path(),
        &[
            ("RUNTIME_KHALA_MAX_STREAM_LAG", "5".to_owned()),
            ("RUNTIME_MAX_BODY_BYTES", (1 << 20).to_string()),
        ],
    );
    let run = create_run(&server, 1);
    let mut stream = sse::open(
        &server.addr,
        &stream_path(&run, "limit=1"),
        &bearer(&user_token(1)),
    )
    .stream();
    assert_eq!(stream.sequences(1), vec![1]);
    // Far more than the socket buffers hold, while the client reads nothing.
    let filler = "x".repeat(200_000);
    let appended = 120;
    for n in 0..appended {
        append(&server, &run, json!({"n": n, "filler": filler}));
    }
    let mut last = 1;
    let ended = loop {
        let event = stream.next_event().expect("the stream ends with an event");
        if event.event != "message" {
            break event;
        }
        let sequence = event.json()["sequence"].as_u64().unwrap();
        assert_eq!(sequence, last + 1, "no gaps before the drop");
        last = sequence;
    };
    assert_eq!(ended.event, "error");
    assert_eq!(ended.json()["code"], "slow_consumer");
    assert!(stream.next_event().is_none(), "the stream ends");
    assert!(last < 1 + appended, "dropped before the end");
    // It resumes from its cursor.
    let headers = format!("{}last-event-id: {last}\r\n", bearer(&user_token(1)));
    let mut stream = sse::open(&server.addr, &stream_path(&run, "limit=1"), &headers).stream();
    assert_eq!(stream.sequences(1), vec![last + 1]);
}

#[test]
fn a_slow_websocket_consumer_is_dropped_with_its_close_code_and_resumes() {
    let data = tempfile::tempdir().unwrap();
    let server = start(
        data.path(),
        &[
            ("RUNTIME_KHALA_MAX_STREAM_LAG", "5".to_owned()),
            ("RUNTIME_MAX_BODY_BYTES", (1 << 20).to_string()),
        ],
    );
    let run = create_run(&server, 1);
    let mut socket = ws::open(
        &server.addr,
        &ws_path(&run, "limit=1"),
        Some(&user_token(1)),
    )
    .socket();
    assert_eq!(socket.next_frame().unwrap()["type"], "hello");
    assert_eq!(socket.sequences(1), vec![1]);
    // Far more than the socket buffers hold, while the client reads nothing.
    let filler = "x".repeat(200_000);
    let appended = 120;
    for n in 0..appended {
        append(&server, &run, json!({"n": n, "filler": filler}));
    }
    let mut last = 1;
    let ended = loop {
        let frame = socket.next_frame().expect("the socket ends with a frame");
        if frame["type"] != "message" {
            break frame;
        }
        let sequence = frame["message"]["sequence"].as_u64().unwrap();
        assert_eq!(sequence, last + 1, "no gaps before the drop");
        last = sequence;
    };
    assert_eq!(ended["type"], "error");
    assert_eq!(ended["code"], "slow_consumer");
    assert!(socket.next_frame().is_none(), "the socket closes");
    assert_eq!(socket.closed_with, Some(4429));
    assert!(last < 1 + appended, "dropped before the end");
    let path = ws_path(&run, &format!("after_seq={last}&limit=1"));
    let mut socket = ws::open(&server.addr, &path, Some(&user_token(1))).socket();
    assert_eq!(socket.next_frame().unwrap()["type"], "hello");
    assert_eq!(socket.sequences(1), vec![last + 1]);
    socket.close();
}

#[test]
fn streams_are_bounded_per_principal_and_in_total() {
    let data = tempfile::tempdir().unwrap();
    let server = start(
        data.path(),
        &[
            ("RUNTIME_KHALA_MAX_STREAMS", "3".to_owned()),
            ("RUNTIME_KHALA_MAX_STREAMS_PER_PRINCIPAL", "2".to_owned()),
        ],
    );
    let mine = create_run(&server, 1);
    let theirs = create_run(&server, 2);
    let third = create_run(&server, 3);
    let open = |run: &str, user: u64| {
        sse::open(
            &server.addr,
            &stream_path(run, ""),
            &bearer(&user_token(user)),
        )
    };
    let refused = |opened: Opened| match opened {
        Opened::Refused(503, body, _) => assert_eq!(body["reason_code"], "too_many_streams"),
        Opened::Refused(status, body, _) => panic!("{status}: {body}"),
        Opened::Stream(_) => panic!("a stream past the limit was opened"),
    };
    let first = open(&mine, 1).stream();
    let _second = open(&mine, 1).stream();
    refused(open(&mine, 1));
    let _other = open(&theirs, 2).stream();
    refused(open(&third, 3));
    // A closed stream gives its place back.
    drop(first);
    let started = std::time::Instant::now();
    loop {
        match open(&third, 3) {
            Opened::Stream(_) => break,
            Opened::Refused(503, _, _) if started.elapsed().as_secs() < 10 => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Opened::Refused(status, body, _) => panic!("{status}: {body}"),
        }
    }
}

#[test]
fn shutdown_ends_every_stream_with_a_frame_that_says_so() {
    let data = tempfile::tempdir().unwrap();
    let server = start(data.path(), &[]);
    let run = create_run(&server, 1);
    let mut streams: Vec<_> = (0..3)
        .map(|_| {
            sse::open(
                &server.addr,
                &stream_path(&run, ""),
                &bearer(&user_token(1)),
            )
            .stream()
        })
        .collect();
    for stream in &mut streams {
        assert_eq!(stream.sequences(1), vec![1]);
    }
    let mut socket = ws::open(&server.addr, &ws_path(&run, ""), Some(&user_token(1))).socket();
    assert_eq!(socket.next_frame().unwrap()["type"], "hello");
    assert_eq!(socket.sequences(1), vec![1]);
    let started = std::time::Instant::now();
    server.signal("-TERM");
    let frame = socket.next_frame().unwrap();
    assert_eq!(
        (frame["type"].as_str(), frame["code"].as_str()),
        (Some("error"), Some("shutting_down"))
    );
    assert!(socket.next_frame().is_none());
    assert_eq!(socket.closed_with, Some(1001));
    for stream in &mut streams {
        let event = stream.next_event().unwrap();
        assert_eq!(event.event, "error");
        assert_eq!(event.json()["code"], "shutting_down");
        assert!(stream.next_event().is_none());
    }
    assert!(
        started.elapsed().as_secs() < 5,
        "streams did not hold the shutdown"
    );
}
