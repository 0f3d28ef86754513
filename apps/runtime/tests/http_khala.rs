//! Khala topic polling over the real router: auth and ACL, cursors and the
//! stale-cursor floor, ordering under concurrent writers, restarts,
//! long-polls, the aggregate lane, and the hooks route.

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::tokens::{KEY, claims, now, token, user_token};
use support::{TestService, assert_error};

fn khala(adjust: impl FnOnce(&mut openagents_runtime_service::config::Config)) -> TestService {
    TestService::start_with(|config| {
        config.sync_token_signing_key = Some(KEY.into());
        config.sync_revoked_jtis = vec!["revoked-1".into()];
        adjust(config);
    })
}

async fn poll(
    service: &TestService,
    topic: &str,
    query: &str,
    bearer: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = Request::get(format!(
        "/internal/v1/khala/topics/{topic}/messages?{query}"
    ));
    if let Some(bearer) = bearer {
        request = request.header(header::AUTHORIZATION, bearer);
    }
    let (status, bytes) = service.send(request.body(Body::empty()).unwrap()).await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn seqs(body: &Value) -> Vec<u64> {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["sequence"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn a_run_topic_pages_through_the_run_events() {
    let service = khala(|_| {});
    let run = service.create_run(json!({"owner_user_id": 1})).await;
    for n in 0..4 {
        service
            .append(&run, json!({"event_type": "note", "payload": {"n": n}}))
            .await;
    }
    let bearer = format!("Bearer {}", user_token(1));
    let topic = format!("run:{run}:events");
    let (status, body) = poll(&service, &topic, "after_seq=1&limit=2", Some(&bearer)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(seqs(&body), vec![2, 3]);
    assert_eq!(body["driver"], service.config.fanout_driver.as_str());
    assert_eq!(body["topic"], topic);
    assert_eq!(body["messages"][0]["kind"], "note");
    assert_eq!(body["messages"][0]["payload"], json!({"n": 0}));
    assert_eq!(
        (body["next_cursor"].clone(), body["head_cursor"].clone()),
        (json!(3), json!(5))
    );
    assert_eq!(
        (
            body["oldest_available_cursor"].clone(),
            body["replay_complete"].clone()
        ),
        (json!(0), json!(false))
    );
    let (_, tail) = poll(&service, &topic, "after_seq=3", Some(&bearer)).await;
    assert_eq!(
        (seqs(&tail), tail["replay_complete"].clone()),
        (vec![4, 5], json!(true))
    );
}

#[tokio::test]
async fn auth_and_acl_denials_have_their_reason_codes() {
    let service = khala(|_| {});
    let run = service.create_run(json!({"owner_user_id": 1})).await;
    let unowned = service.create_run(json!({})).await;
    let topic = format!("run:{run}:events");
    let mut expired = claims(1, &["runtime.run_events"]);
    expired["exp"] = json!(now() - 3600);
    let mut revoked = claims(1, &["runtime.run_events"]);
    revoked["jti"] = json!("revoked-1");
    let unknown = format!("run:{}:events", uuid::Uuid::now_v7());
    let cases: Vec<(String, Option<String>, u16, &str, &str)> = vec![
        (
            topic.clone(),
            None,
            401,
            "unauthorized",
            "missing_authorization",
        ),
        (
            topic.clone(),
            Some(format!("Basic {}", user_token(1))),
            401,
            "unauthorized",
            "invalid_authorization_scheme",
        ),
        (
            topic.clone(),
            Some("Bearer garbage".into()),
            401,
            "unauthorized",
            "invalid_token",
        ),
        (
            topic.clone(),
            Some(format!("Bearer {}", token(expired))),
            401,
            "unauthorized",
            "token_expired",
        ),
        (
            topic.clone(),
            Some(format!("Bearer {}", token(revoked))),
            401,
            "unauthorized",
            "token_revoked",
        ),
        (
            topic.clone(),
            Some(format!("Bearer {}", token(claims(1, &[])))),
            403,
            "forbidden_topic",
            "missing_scope",
        ),
        (
            topic.clone(),
            Some(format!("Bearer {}", user_token(2))),
            403,
            "forbidden_topic",
            "owner_mismatch",
        ),
        (
            unknown,
            Some(format!("Bearer {}", user_token(1))),
            403,
            "forbidden_topic",
            "owner_mismatch",
        ),
        (
            "nonsense".into(),
            Some(format!("Bearer {}", user_token(1))),
            403,
            "forbidden_topic",
            "forbidden_topic",
        ),
    ];
    for (topic, bearer, status, error, reason) in cases {
        let (got, body) = poll(&service, &topic, "", bearer.as_deref()).await;
        assert_error(got, &body, status, error, Some(reason));
    }
    // The scheme word is case-insensitive, and unowned runs are open to the scope.
    let (status, _) = poll(
        &service,
        &topic,
        "",
        Some(&format!("bEaReR {}", user_token(1))),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = poll(
        &service,
        &format!("run:{unowned}:events"),
        "",
        Some(&format!("Bearer {}", user_token(9))),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    for bad in ["limit=0", "limit=501", "after_seq=x", "wait_ms=30001"] {
        let (status, body) = poll(
            &service,
            &topic,
            bad,
            Some(&format!("Bearer {}", user_token(1))),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
}

#[tokio::test]
async fn without_a_signing_key_khala_answers_503() {
    let service = TestService::start();
    let run = service.create_run(json!({})).await;
    let (status, body) = poll(&service, &format!("run:{run}:events"), "", Some("Bearer x")).await;
    assert_error(
        status,
        &body,
        503,
        "service_unavailable",
        Some("sync_auth_not_configured"),
    );
}

#[tokio::test]
async fn a_cursor_below_the_window_is_stale_and_survives_restart() {
    let service = khala(|config| config.fanout_queue_capacity = 4);
    let run = service.create_run(json!({"owner_user_id": 1})).await;
    for n in 0..9 {
        service
            .append(&run, json!({"event_type": "note", "payload": {"n": n}}))
            .await;
    }
    let bearer = format!("Bearer {}", user_token(1));
    let topic = format!("run:{run}:events");
    let (status, stale) = poll(&service, &topic, "after_seq=2", Some(&bearer)).await;
    assert_error(status, &stale, 410, "stale_cursor", None);
    assert_eq!(
        stale["details"],
        json!({"topic": topic, "requested_cursor": 2, "oldest_available_cursor": 6, "head_cursor": 10, "recovery": "reset_local_watermark_and_replay_bootstrap"})
    );
    let (_, page) = poll(&service, &topic, "after_seq=6", Some(&bearer)).await;
    assert_eq!(seqs(&page), vec![7, 8, 9, 10]);

    let service = service.restart();
    assert_eq!(
        poll(&service, &topic, "after_seq=2", Some(&bearer)).await,
        (StatusCode::GONE, stale)
    );
    assert_eq!(
        poll(&service, &topic, "after_seq=6", Some(&bearer)).await,
        (StatusCode::OK, page)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_sees_every_event_once_in_order_under_32_writers() {
    let service = Arc::new(khala(|_| {}));
    let run = service.create_run(json!({"owner_user_id": 1})).await;
    let per_writer = 20;
    let writers: Vec<_> = (0..32)
        .map(|w| {
            let service = Arc::clone(&service);
            let run = run.clone();
            tokio::spawn(async move {
                for n in 0..per_writer {
                    let (status, _) = service
                        .append(
                            &run,
                            json!({"event_type": "note", "payload": {"w": w, "n": n}}),
                        )
                        .await;
                    assert_eq!(status, StatusCode::OK);
                }
            })
        })
        .collect();
    let total = 1 + 32 * per_writer;
    let bearer = format!("Bearer {}", user_token(1));
    let topic = format!("run:{run}:events");
    let mut seen = Vec::new();
    let mut cursor = 0;
    let started = Instant::now();
    while seen.len() < total as usize {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "reader stalled at {cursor}"
        );
        let (status, body) = poll(
            &service,
            &topic,
            &format!("after_seq={cursor}&limit=7&wait_ms=200"),
            Some(&bearer),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        seen.extend(seqs(&body));
        cursor = body["next_cursor"].as_u64().unwrap();
    }
    for writer in writers {
        writer.await.unwrap();
    }
    assert_eq!(seen, (1..=total).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_wakes_on_append_and_an_idle_one_times_out() {
    let service = Arc::new(khala(|_| {}));
    let run = service.create_run(json!({"owner_user_id": 1})).await;
    let bearer = format!("Bearer {}", user_token(1));
    let topic = format!("run:{run}:events");

    let waiting = {
        let service = Arc::clone(&service);
        let (topic, bearer) = (topic.clone(), bearer.clone());
        tokio::spawn(async move {
            let (status, body) =
                poll(&service, &topic, "after_seq=1&wait_ms=10000", Some(&bearer)).await;
            (status, body, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let appended_at = Instant::now();
    service.append(&run, json!({"event_type": "note"})).await;
    let (status, body, answered_at) = waiting.await.unwrap();
    assert_eq!((status, seqs(&body)), (StatusCode::OK, vec![2]));
    // Woken by the append, not by the 10 s wait running out; how fast is the
    // bench's figure (khala-longpoll), not a test's: the append's own fsync
    // counts here, and it is slow on a loaded machine.
    let latency = answered_at.saturating_duration_since(appended_at);
    assert!(latency < Duration::from_secs(2), "woke after {latency:?}");

    let started = Instant::now();
    let (status, body) = poll(&service, &topic, "after_seq=2&wait_ms=300", Some(&bearer)).await;
    let waited = started.elapsed();
    assert_eq!((status, seqs(&body)), (StatusCode::OK, vec![]));
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_millis(1500),
        "{waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_are_bounded() {
    let service = Arc::new(khala(|config| config.khala_max_waiters = 1));
    let run = service.create_run(json!({"owner_user_id": 1})).await;
    let bearer = format!("Bearer {}", user_token(1));
    let topic = format!("run:{run}:events");
    let first = {
        let service = Arc::clone(&service);
        let (topic, bearer) = (topic.clone(), bearer.clone());
        tokio::spawn(async move {
            poll(&service, &topic, "after_seq=1&wait_ms=1000", Some(&bearer)).await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, body) = poll(&service, &topic, "after_seq=1&wait_ms=1000", Some(&bearer)).await;
    assert_error(
        status,
        &body,
        503,
        "service_unavailable",
        Some("too_many_waiters"),
    );
    assert_eq!(first.await.unwrap().0, StatusCode::OK);
}

#[tokio::test]
async fn worker_topics_and_the_aggregate_lane() {
    let service = khala(|_| {});
    for (id, owner) in [("w-a", 1), ("w-b", 2), ("w-c", 1)] {
        service
            .post(
                "/internal/v1/workers",
                json!({"worker_id": id, "owner_user_id": owner}),
            )
            .await;
    }
    service
        .post(
            "/internal/v1/workers/w-a/heartbeat",
            json!({"owner_user_id": 1}),
        )
        .await;
    let bearer = format!("Bearer {}", user_token(1));

    let (status, body) = poll(&service, "worker:w-a:lifecycle", "", Some(&bearer)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(seqs(&body), vec![1, 2]);
    assert_eq!(body["messages"][1]["kind"], "worker.heartbeat");
    assert_eq!(
        body["messages"][1]["payload"],
        json!({"worker_id": "w-a", "status": "running", "latest_seq": 2, "heartbeat_state": "fresh"})
    );
    let (status, body) = poll(&service, "worker:w-b:lifecycle", "", Some(&bearer)).await;
    assert_error(
        status,
        &body,
        403,
        "forbidden_topic",
        Some("owner_mismatch"),
    );

    // The aggregate lane shows only the principal's workers; the cursor
    // still advances over the others.
    let (status, body) = poll(&service, "runtime.codex_worker_events", "", Some(&bearer)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(seqs(&body), vec![1, 3, 4]);
    assert_eq!(
        (body["next_cursor"].clone(), body["head_cursor"].clone()),
        (json!(4), json!(4))
    );

    let service = service.restart();
    let (_, again) = poll(&service, "runtime.codex_worker_events", "", Some(&bearer)).await;
    assert_eq!(again, body);
}

#[tokio::test]
async fn the_hooks_route_lists_external_drivers() {
    let service = khala(|_| {});
    let (status, body) = service.get("/internal/v1/khala/fanout/hooks").await;
    assert_eq!(status, StatusCode::OK);
    let driver = service.config.fanout_driver.as_str();
    assert_eq!(body["driver"], driver);
    let hooks: Vec<(&str, &str)> = body["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["backend"].as_str().unwrap(),
                h["status"].as_str().unwrap(),
            )
        })
        .collect();
    let shared = if driver == "postgres_notify" {
        "configured"
    } else {
        "not_configured"
    };
    assert_eq!(
        hooks,
        vec![
            ("nats", "not_configured"),
            ("redis", "not_configured"),
            ("postgres_notify", shared)
        ]
    );
}

/// With ~1 MiB events a `limit=500` poll stays under the response cap and
/// ends early with `next_cursor` set; the client pages through everything in
/// order with no gap, whether the messages come from memory (the newest, in
/// the window's byte budget) or from the log (older ones the budget left
/// out), before and after a restart.
#[tokio::test]
async fn large_events_page_within_the_response_cap_without_gaps() {
    const MIB: usize = 1 << 20;
    let cap = 3 * MIB;
    let service = khala(|config| {
        config.max_body_bytes = 2 * MIB;
        config.fanout_window_max_bytes = 2 * MIB + MIB / 2;
        config.fanout_max_total_bytes = 4 * MIB;
        config.khala_max_response_bytes = cap;
    });
    let run = service.create_run(json!({"owner_user_id": 1})).await;
    let blob = "x".repeat(MIB - 200);
    for n in 0..12 {
        let (status, body) = service
            .append(
                &run,
                json!({"event_type": "note", "payload": {"n": n, "blob": blob}}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let bearer = format!("Bearer {}", user_token(1));
    let topic = format!("run:{run}:events");
    let (seen, pages) = page_through(&service, &topic, &bearer, cap).await;
    assert_eq!(seen, (1..=13).collect::<Vec<u64>>(), "in order, no gaps");
    assert!(
        pages >= 5,
        "13 MiB in pages of at most 3 MiB: {pages} pages"
    );
    // The payloads arrive whole.
    let (_, last) = poll(&service, &topic, "after_seq=12", Some(&bearer)).await;
    assert_eq!(
        last["messages"][0]["payload"]["blob"]
            .as_str()
            .unwrap()
            .len(),
        blob.len()
    );

    let service = service.restart();
    let (seen, _) = page_through(&service, &topic, &bearer, cap).await;
    assert_eq!(
        seen,
        (1..=13).collect::<Vec<u64>>(),
        "the same after a restart"
    );
}

/// Polls `topic` with `limit=500` from 0 until `replay_complete`, checking
/// each page against the byte cap; returns the sequences seen and the pages.
async fn page_through(
    service: &TestService,
    topic: &str,
    bearer: &str,
    cap: usize,
) -> (Vec<u64>, usize) {
    let (mut cursor, mut seen, mut pages) = (0u64, Vec::new(), 0);
    loop {
        let request = Request::get(format!(
            "/internal/v1/khala/topics/{topic}/messages?after_seq={cursor}&limit=500"
        ))
        .header(header::AUTHORIZATION, bearer)
        .body(Body::empty())
        .unwrap();
        let (status, bytes) = service.send(request).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            bytes.len() <= cap + 4096,
            "a page of {} bytes exceeds the {cap}-byte cap",
            bytes.len()
        );
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        let got = seqs(&body);
        assert!(
            !got.is_empty(),
            "a page makes progress: {}",
            body["next_cursor"]
        );
        assert_eq!(body["next_cursor"], json!(got.last().unwrap()));
        seen.extend(got);
        pages += 1;
        cursor = body["next_cursor"].as_u64().unwrap();
        if body["replay_complete"] == true {
            assert_eq!(body["head_cursor"], 13);
            return (seen, pages);
        }
        assert!(pages < 20, "paging does not end");
    }
}
