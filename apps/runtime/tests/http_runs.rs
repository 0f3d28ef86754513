//! The run routes over the real router: every route, every error of the
//! contract's run section, the write-mode freeze, and restarts.

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use support::{TestService, assert_error};

#[tokio::test]
async fn creating_a_run_appends_run_started() {
    let service = TestService::start();
    let (status, body) = service
        .post(
            "/internal/v1/runs",
            json!({"metadata": {"policy_bundle_id": "p"}, "owner_user_id": 7}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let run = &body["run"];
    assert_eq!(run["status"], "running");
    assert_eq!(run["latest_seq"], 1);
    assert_eq!(run["owner"], json!({"user_id": 7, "guest_scope": null}));
    assert_eq!(run["metadata"], json!({"policy_bundle_id": "p"}));
    assert!(
        run.get("events").is_none(),
        "create answers without the event list"
    );
    let id = run["id"].as_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 7);

    let (status, body) = service.get(&format!("/internal/v1/runs/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    let events = body["run"]["events"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["event_type"], "run.started");
    assert_eq!(events[0]["payload"], json!({"source": "runtime"}));
}

#[tokio::test]
async fn run_creation_is_idempotent_by_key() {
    let service = TestService::start();
    let body = json!({"metadata": {"a": 1}, "idempotency_key": "create-1"});
    let (first_status, first) = service.post("/internal/v1/runs", body.clone()).await;
    let (second_status, second) = service.post("/internal/v1/runs", body).await;
    assert_eq!(
        (first_status, second_status),
        (StatusCode::CREATED, StatusCode::OK)
    );
    assert_eq!(first["run"]["id"], second["run"]["id"]);
    let (status, body) = service
        .post(
            "/internal/v1/runs",
            json!({"metadata": {"a": 2}, "idempotency_key": "create-1"}),
        )
        .await;
    assert_error(
        status,
        &body,
        409,
        "conflict",
        Some("idempotency_key_reused"),
    );
}

#[tokio::test]
async fn invalid_creation_bodies_are_rejected_and_change_nothing() {
    let service = TestService::start();
    let cases = [
        json!({"owner_user_id": 1, "owner_guest_scope": "g"}),
        json!({"owner_guest_scope": "   "}),
        json!({"metadata": [1, 2]}),
        json!({"owner_user_id": -1}),
        json!({"worker_id": "has space"}),
    ];
    for body in cases {
        let (status, answer) = service.post("/internal/v1/runs", body.clone()).await;
        assert_error(status, &answer, 400, "invalid_request", None);
    }
}

#[tokio::test]
async fn appends_follow_the_contract() {
    let service = TestService::start();
    let run = service.create_run(json!({})).await;

    let (status, body) = service
        .append(&run, json!({"event_type": "tool.call.completed", "payload": {"tool": "t"}, "idempotency_key": " k1 "}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["idempotent_replay"], false);
    assert_eq!(body["event"]["seq"], 2);
    assert_eq!(body["event"]["idempotency_key"], "k1", "keys are trimmed");
    assert_eq!(body["run"]["latest_seq"], 2);
    assert!(body["run"].get("events").is_none());

    // Same key and content: the original event, nothing appended.
    let (status, replay) = service
        .append(&run, json!({"event_type": "tool.call.completed", "payload": {"tool": "t"}, "idempotency_key": "k1", "expected_previous_seq": 0}))
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the key check comes before the seq check"
    );
    assert_eq!(replay["idempotent_replay"], true);
    assert_eq!(replay["event"], body["event"]);

    let (status, answer) = service
        .append(&run, json!({"event_type": "tool.call.completed", "payload": {"tool": "other"}, "idempotency_key": "k1"}))
        .await;
    assert_error(
        status,
        &answer,
        409,
        "conflict",
        Some("idempotency_key_reused"),
    );

    let (status, answer) = service
        .append(
            &run,
            json!({"event_type": "note", "expected_previous_seq": 1}),
        )
        .await;
    assert_error(status, &answer, 409, "conflict", Some("sequence_conflict"));
    assert_eq!(
        answer["details"],
        json!({"expected_previous_seq": 1, "actual_previous_seq": 2})
    );

    let (status, ok) = service
        .append(
            &run,
            json!({"event_type": "note", "expected_previous_seq": 2}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{ok}");
    assert_eq!(ok["event"]["payload"], json!({}));
}

#[tokio::test]
async fn the_state_machine_rejects_with_reason_codes() {
    let service = TestService::start();
    let run = service.create_run(json!({})).await;
    let finish =
        |status: Value| json!({"event_type": "run.finished", "payload": {"status": status}});

    let (status, body) = service
        .append(&run, json!({"event_type": "run.finished"}))
        .await;
    assert_error(
        status,
        &body,
        400,
        "invalid_request",
        Some("missing_terminal_status"),
    );
    let (status, body) = service.append(&run, finish(json!("done"))).await;
    assert_error(
        status,
        &body,
        400,
        "invalid_request",
        Some("invalid_terminal_status"),
    );

    let (status, body) = service
        .append(&run, json!({"event_type": "run.cancel_requested"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let cancel_seq = body["event"]["seq"].clone();
    let (status, again) = service
        .append(&run, json!({"event_type": "run.cancel_requested"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (
            again["idempotent_replay"].clone(),
            again["event"]["seq"].clone()
        ),
        (json!(true), cancel_seq)
    );

    let (status, body) = service.append(&run, finish(json!("succeeded"))).await;
    assert_error(
        status,
        &body,
        400,
        "invalid_request",
        Some("invalid_transition"),
    );
    let (status, body) = service
        .append(&run, json!({"event_type": "run.started"}))
        .await;
    assert_error(
        status,
        &body,
        400,
        "invalid_request",
        Some("invalid_transition"),
    );

    let (status, body) = service.append(&run, finish(json!("cancelled"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["run"]["status"], "canceled");
    let (status, body) = service.append(&run, finish(json!("canceled"))).await;
    assert_eq!(
        (status, body["idempotent_replay"].clone()),
        (StatusCode::OK, json!(true))
    );
    let (status, body) = service.append(&run, json!({"event_type": "note"})).await;
    assert_error(status, &body, 409, "conflict", Some("run_terminal"));
    let (status, body) = service.append(&run, finish(json!("failed"))).await;
    assert_error(status, &body, 409, "conflict", Some("run_terminal"));
}

#[tokio::test]
async fn malformed_requests_get_json_envelopes() {
    let service = TestService::start_with(|config| config.max_body_bytes = 4096);
    let run = service.create_run(json!({})).await;
    let events = format!("/internal/v1/runs/{run}/events");

    let (status, body) = service.append(&run, json!({"event_type": ""})).await;
    assert_error(status, &body, 400, "invalid_request", None);
    let (status, body) = service
        .append(&run, json!({"event_type": "x", "payload": "text"}))
        .await;
    assert_error(status, &body, 400, "invalid_request", None);
    let (status, body) = service.append(&run, json!({"payload": {}})).await;
    assert_error(status, &body, 400, "invalid_request", None);
    let (status, body) = service
        .append(&run, json!({"event_type": "x".repeat(201)}))
        .await;
    assert_error(status, &body, 400, "invalid_request", None);

    let raw = |body: &'static str, content_type: Option<&str>| {
        let mut request = Request::post(events.as_str());
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        request.body(Body::from(body)).unwrap()
    };
    let parse = |bytes: Vec<u8>| serde_json::from_slice::<Value>(&bytes).unwrap();
    let (status, bytes) = service.send(raw("{bad", Some("application/json"))).await;
    assert_error(status, &parse(bytes), 400, "invalid_request", None);
    let (status, bytes) = service.send(raw("{}", None)).await;
    assert_error(status, &parse(bytes), 415, "unsupported_media_type", None);
    let big = Box::leak(
        format!(
            "{{\"event_type\":\"x\",\"payload\":{{\"p\":\"{}\"}}}}",
            "a".repeat(5000)
        )
        .into_boxed_str(),
    );
    let (status, bytes) = service.send(raw(big, Some("application/json"))).await;
    assert_error(status, &parse(bytes), 413, "payload_too_large", None);

    let (status, body) = service
        .append("not-a-uuid", json!({"event_type": "x"}))
        .await;
    assert_error(status, &body, 400, "invalid_request", None);
    let unknown = uuid::Uuid::now_v7();
    let (status, body) = service
        .append(&unknown.to_string(), json!({"event_type": "x"}))
        .await;
    assert_error(status, &body, 404, "not_found", None);
    let (status, body) = service.get(&format!("/internal/v1/runs/{unknown}")).await;
    assert_error(status, &body, 404, "not_found", None);
    let (status, body) = service.get("/no/such/route").await;
    assert_error(status, &body, 404, "not_found", None);
    let (status, bytes) = service
        .send(
            Request::delete("/internal/v1/runs")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_error(status, &parse(bytes), 405, "method_not_allowed", None);

    // Nothing of the above was appended.
    let (_, body) = service.get(&format!("/internal/v1/runs/{run}")).await;
    assert_eq!(body["run"]["latest_seq"], 1);
}

#[tokio::test]
async fn events_are_paged() {
    let service = TestService::start();
    let run = service.create_run(json!({})).await;
    for n in 0..5 {
        service
            .append(&run, json!({"event_type": "note", "payload": {"n": n}}))
            .await;
    }
    let (status, page) = service
        .get(&format!(
            "/internal/v1/runs/{run}/events?after_seq=2&limit=2"
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    let seqs: Vec<_> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![3, 4]);
    assert_eq!(
        (page["next_cursor"].clone(), page["head_seq"].clone()),
        (json!(4), json!(6))
    );

    let (_, tail) = service
        .get(&format!("/internal/v1/runs/{run}/events?after_seq=6"))
        .await;
    assert_eq!(
        (tail["events"].clone(), tail["next_cursor"].clone()),
        (json!([]), json!(6))
    );
    let (_, default) = service
        .get(&format!("/internal/v1/runs/{run}/events"))
        .await;
    assert_eq!(default["events"].as_array().unwrap().len(), 6);
    for bad in ["limit=0", "limit=1001", "after_seq=-1", "limit=x"] {
        let (status, body) = service
            .get(&format!("/internal/v1/runs/{run}/events?{bad}"))
            .await;
        assert_error(status, &body, 400, "invalid_request", None);
    }
}

#[tokio::test]
async fn a_run_reads_back_byte_identical_after_restart() {
    let service = TestService::start();
    let run = service
        .create_run(json!({"metadata": {"z": 1, "a": [1.5, "é"]}, "owner_guest_scope": "team"}))
        .await;
    service.append(&run, json!({"event_type": "tool.call.completed", "payload": {"b": {"c": null}}, "idempotency_key": "k"})).await;
    service
        .append(
            &run,
            json!({"event_type": "run.finished", "payload": {"status": "failed"}}),
        )
        .await;
    let uri = format!("/internal/v1/runs/{run}");
    let before = service
        .send(Request::get(uri.as_str()).body(Body::empty()).unwrap())
        .await;
    let service = service.restart();
    let after = service
        .send(Request::get(uri.as_str()).body(Body::empty()).unwrap())
        .await;
    assert_eq!(before, after);
    // Idempotency keys and sealing survive the restart too.
    let retry = json!({"event_type": "tool.call.completed", "payload": {"b": {"c": null}}, "idempotency_key": "k"});
    let (status, body) = service.append(&run, retry).await;
    assert_eq!(
        (
            status,
            body["idempotent_replay"].clone(),
            body["event"]["seq"].clone()
        ),
        (StatusCode::OK, json!(true), json!(2))
    );
    let (status, body) = service.append(&run, json!({"event_type": "note"})).await;
    assert_error(status, &body, 409, "conflict", Some("run_terminal"));
}

#[tokio::test]
async fn health_and_readiness_report_the_contract_fields() {
    let service = TestService::start();
    let (status, health) = service.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    for field in [
        "service",
        "build_sha",
        "version",
        "uptime_seconds",
        "authority_write_mode",
        "authority_writer_active",
        "legacy_write_freeze",
        "storage_backend",
        "fanout_driver",
    ] {
        assert!(health.get(field).is_some(), "missing {field}: {health}");
    }
    let (status, ready) = service.get("/readyz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ready["status"], "ready");
    for field in [
        "authority_ready",
        "projector_ready",
        "workers_ready",
        "authority_writer_active",
        "fanout_driver",
    ] {
        assert!(ready.get(field).is_some(), "missing {field}: {ready}");
    }
}

#[tokio::test]
async fn routes_answer_not_ready_until_recovery_finished() {
    let dir = tempfile::tempdir().unwrap();
    let state = openagents_runtime_service::server::AppState::new(
        openagents_runtime_service::config::Config::for_tests(dir.path()),
        std::sync::Arc::new(openagents_runtime_service::metrics::Metrics::default()),
    );
    let router = openagents_runtime_service::server::router(state);
    let service = TestService {
        dir: std::sync::Arc::new(dir),
        schema: None,
        config: openagents_runtime_service::config::Config::for_tests(std::path::Path::new(".")),
        router,
        core: None,
    };
    let (status, body) = service.get("/readyz").await;
    assert_eq!(
        (status.as_u16(), body["status"].clone()),
        (503, json!("not_ready"))
    );
    let (status, body) = service.post("/internal/v1/runs", json!({})).await;
    assert_error(status, &body, 503, "not_ready", None);
    let (status, _) = service.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
}

/// The record keeps what the client sent: an integer beyond 64 bits would be
/// read as a float and served as another number, so it is refused, naming
/// the problem, and nothing is appended. Numbers that fit are kept exactly.
#[tokio::test]
async fn integers_beyond_64_bits_are_refused_and_others_kept_exactly() {
    let service = TestService::start();
    let run = service.create_run(json!({})).await;
    let raw = |uri: String, body: &'static str| {
        Request::post(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap()
    };
    let events = format!("/internal/v1/runs/{run}/events");
    for body in [
        r#"{"event_type":"note","payload":{"v":18446744073709551616}}"#,
        r#"{"event_type":"note","payload":{"deep":[{"v":-9223372036854775809}]}}"#,
    ] {
        let (status, bytes) = service.send(raw(events.clone(), body)).await;
        let answer: Value = serde_json::from_slice(&bytes).unwrap();
        assert_error(
            status,
            &answer,
            400,
            "invalid_request",
            Some("integer_out_of_range"),
        );
        assert!(
            answer["message"].as_str().unwrap().contains("64-bit"),
            "{answer}"
        );
    }
    let (status, bytes) = service
        .send(raw(
            "/internal/v1/runs".into(),
            r#"{"metadata":{"v":100000000000000000000000}}"#,
        ))
        .await;
    let answer: Value = serde_json::from_slice(&bytes).unwrap();
    assert_error(
        status,
        &answer,
        400,
        "invalid_request",
        Some("integer_out_of_range"),
    );

    let kept = r#"{"event_type":"note","payload":{"max":18446744073709551615,"min":-9223372036854775808,"s":"18446744073709551616"}}"#;
    let (status, bytes) = service.send(raw(events.clone(), kept)).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let (_, body) = service.get(&format!("/internal/v1/runs/{run}")).await;
    let stored = body["run"]["events"].as_array().unwrap();
    assert_eq!(stored.len(), 2, "only run.started and the note that fits");
    assert_eq!(
        stored[1]["payload"].to_string(),
        r#"{"max":18446744073709551615,"min":-9223372036854775808,"s":"18446744073709551616"}"#
    );
}
