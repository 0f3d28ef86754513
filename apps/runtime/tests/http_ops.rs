//! Operations surface: Prometheus metrics, request ids, and the optional
//! internal bearer token.

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use support::{TestService, assert_error};
use tower::ServiceExt;

#[tokio::test]
async fn metrics_count_requests_batches_and_khala() {
    let service = TestService::start();
    let run = service.create_run(json!({})).await;
    service.append(&run, json!({"event_type": "note"})).await;
    service
        .get(&format!(
            "/internal/v1/khala/topics/run:{run}:events/messages"
        ))
        .await;
    let (status, bytes) = service
        .send(Request::get("/metrics").body(Body::empty()).unwrap())
        .await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(bytes).unwrap();
    for needle in [
        r#"runtime_http_requests_total{route="/internal/v1/runs/{run_id}/events",method="POST",status="200"} 1"#,
        "runtime_http_request_duration_seconds_bucket",
        "runtime_log_batch_records_count 2",
        "runtime_log_write_sync_seconds_count 2",
        "runtime_log_records_appended_total 2",
        "runtime_projector_lag_records 0",
        "runtime_khala_waiters 0",
        r#"runtime_khala_auth_denials_total{reason="sync_auth_not_configured"} 1"#,
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let service = TestService::start();
    let request = Request::get("/healthz")
        .header("x-request-id", "abc-123")
        .body(Body::empty())
        .unwrap();
    let response = service.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.headers()["x-request-id"], "abc-123");
    let response = service
        .router
        .clone()
        .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let generated = response.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(generated).is_ok(), "{generated}");
}

#[tokio::test]
async fn the_internal_token_guards_internal_routes_only() {
    let service =
        TestService::start_with(|config| config.internal_auth_token = Some("s3cret".into()));
    let call = |uri: &str, token: Option<&str>| {
        let mut request = Request::post(uri).header(header::CONTENT_TYPE, "application/json");
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        request.body(Body::from("{}")).unwrap()
    };
    let parse = |bytes: Vec<u8>| serde_json::from_slice::<Value>(&bytes).unwrap();
    for token in [None, Some("wrong"), Some("s3cret-but-longer")] {
        let (status, bytes) = service.send(call("/internal/v1/runs", token)).await;
        assert_error(
            status,
            &parse(bytes),
            401,
            "unauthorized",
            Some("invalid_internal_token"),
        );
    }
    let (status, _) = service
        .send(call("/internal/v1/runs", Some("s3cret")))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    for open in ["/healthz", "/readyz", "/metrics"] {
        let (status, _) = service
            .send(Request::get(open).body(Body::empty()).unwrap())
            .await;
        assert_eq!(status, StatusCode::OK, "{open}");
    }
    // Khala topic routes answer with their own auth, not the internal token.
    let uri = format!(
        "/internal/v1/khala/topics/run:{}:events/messages",
        uuid::Uuid::now_v7()
    );
    let (status, bytes) = service
        .send(Request::get(uri.as_str()).body(Body::empty()).unwrap())
        .await;
    assert_error(
        status,
        &parse(bytes),
        503,
        "service_unavailable",
        Some("sync_auth_not_configured"),
    );
}

#[tokio::test]
async fn a_failed_write_stops_writes_and_readiness_says_why() {
    if support::skip_unless_jsonl("a_failed_write_stops_writes_and_readiness_says_why") {
        return;
    }
    // Every write to /dev/full fails with ENOSPC, as on a full disk.
    let service = TestService::start_with(|config| config.event_log_path = "/dev/full".into());
    let (status, body) = service.post("/internal/v1/runs", json!({})).await;
    assert_error(status, &body, 500, "internal", None);
    assert!(
        body["message"].as_str().unwrap().contains("/dev/full"),
        "{body}"
    );
    let (status, body) = service.post("/internal/v1/runs", json!({})).await;
    assert_error(status, &body, 500, "internal", None);

    let (status, ready) = service.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready["authority_ready"], false);
    assert!(
        ready["reason"].as_str().unwrap().contains("No space left"),
        "{ready}"
    );
    let (_, health) = service.get("/healthz").await;
    assert_eq!(health["authority_writer_active"], false);
}
