//! The worker routes over the real router: registration, ownership on every
//! route, heartbeats, the status table, liveness, checkpoints and restarts.

mod support;

use axum::http::StatusCode;
use serde_json::{Value, json};
use support::{TestService, assert_error};

async fn register(service: &TestService, body: Value) -> Value {
    let (status, body) = service.post("/internal/v1/workers", body).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

#[tokio::test]
async fn registration_issues_ids_and_starts_running() {
    let service = TestService::start();
    let body = register(
        &service,
        json!({"owner_user_id": 7, "adapter": "codex", "metadata": {"a": 1}}),
    )
    .await;
    let worker = &body["worker"]["worker"];
    let id = worker["worker_id"].as_str().unwrap();
    assert!(id.starts_with("codexw_"), "{id}");
    assert_eq!(
        uuid::Uuid::parse_str(&id["codexw_".len()..])
            .unwrap()
            .get_version_num(),
        7
    );
    assert_eq!(worker["status"], "running");
    assert_eq!(worker["owner"], json!({"user_id": 7, "guest_scope": null}));
    assert_eq!(worker["latest_seq"], 1);
    // As in the service this one replaces: a registration is a sign of life.
    assert_eq!(worker["last_heartbeat_at"], worker["started_at"]);
    assert_eq!(body["worker"]["liveness"]["heartbeat_state"], "fresh");
    assert_eq!(
        body["worker"]["liveness"]["heartbeat_stale_after_ms"],
        120000
    );
}

#[tokio::test]
async fn invalid_registrations_are_400() {
    let service = TestService::start();
    for body in [
        json!({}),
        json!({"owner_user_id": 1, "owner_guest_scope": "g"}),
        json!({"owner_guest_scope": ""}),
        json!({"owner_user_id": 1, "worker_id": "has space"}),
        json!({"owner_user_id": 1, "worker_id": "a/b"}),
        json!({"owner_user_id": 1, "worker_id": "x".repeat(201)}),
        json!({"owner_user_id": 1, "worker_id": ""}),
        json!({"owner_user_id": 1, "metadata": "text"}),
    ] {
        let (status, answer) = service.post("/internal/v1/workers", body.clone()).await;
        assert_error(status, &answer, 400, "invalid_request", None);
    }
}

#[tokio::test]
async fn every_route_checks_the_owner() {
    let service = TestService::start();
    register(
        &service,
        json!({"worker_id": "w1", "owner_guest_scope": "team-a"}),
    )
    .await;
    let foreign = json!({"owner_guest_scope": "team-b"});

    let (status, body) = service
        .post(
            "/internal/v1/workers",
            json!({"worker_id": "w1", "owner_user_id": 5}),
        )
        .await;
    assert_error(status, &body, 403, "forbidden", None);
    let (status, body) = service
        .get("/internal/v1/workers/w1?owner_guest_scope=team-b")
        .await;
    assert_error(status, &body, 403, "forbidden", None);
    let (status, body) = service
        .post("/internal/v1/workers/w1/heartbeat", foreign.clone())
        .await;
    assert_error(status, &body, 403, "forbidden", None);
    let mut change = foreign.clone();
    change["status"] = json!("stopping");
    let (status, body) = service.post("/internal/v1/workers/w1/status", change).await;
    assert_error(status, &body, 403, "forbidden", None);
    let (status, body) = service
        .get("/internal/v1/workers/w1/checkpoint?owner_user_id=9")
        .await;
    assert_error(status, &body, 403, "forbidden", None);

    let (status, body) = service
        .get("/internal/v1/workers/w1?owner_guest_scope=team-a")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = service.get("/internal/v1/workers/w1").await;
    assert_error(status, &body, 400, "invalid_request", None);
    let (status, body) = service
        .get("/internal/v1/workers/w1?owner_user_id=1&owner_guest_scope=team-a")
        .await;
    assert_error(status, &body, 400, "invalid_request", None);
}

#[tokio::test]
async fn unknown_workers_and_bad_ids() {
    let service = TestService::start();
    let owner = json!({"owner_user_id": 1});
    let (status, body) = service
        .get("/internal/v1/workers/nobody?owner_user_id=1")
        .await;
    assert_error(status, &body, 404, "not_found", None);
    let (status, body) = service
        .post("/internal/v1/workers/nobody/heartbeat", owner.clone())
        .await;
    assert_error(status, &body, 404, "not_found", None);
    let (status, body) = service
        .post(
            "/internal/v1/workers/nobody/status",
            json!({"owner_user_id": 1, "status": "stopped"}),
        )
        .await;
    assert_error(status, &body, 404, "not_found", None);
    let (status, body) = service.get("/internal/v1/workers/nobody/checkpoint").await;
    assert_error(status, &body, 404, "not_found", None);
    let (status, body) = service
        .post("/internal/v1/workers/bad%20id/heartbeat", owner)
        .await;
    assert_error(status, &body, 400, "invalid_request", None);
}

#[tokio::test]
async fn heartbeats_merge_metadata_and_refresh_liveness() {
    let service = TestService::start();
    register(
        &service,
        json!({"worker_id": "w2", "owner_user_id": 3, "metadata": {"keep": 1, "drop": 2}}),
    )
    .await;
    let (status, body) = service
        .post(
            "/internal/v1/workers/w2/heartbeat",
            json!({"owner_user_id": 3, "metadata_patch": {"drop": null, "new": true}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let worker = &body["worker"]["worker"];
    assert_eq!(worker["metadata"], json!({"keep": 1, "new": true}));
    assert_eq!(worker["latest_seq"], 2);
    assert!(worker["last_heartbeat_at"].is_string());
    assert_eq!(body["worker"]["liveness"]["heartbeat_state"], "fresh");
}

#[tokio::test]
async fn status_changes_follow_the_table() {
    let service = TestService::start();
    register(&service, json!({"worker_id": "w3", "owner_user_id": 3})).await;
    let change = |status: &str| json!({"owner_user_id": 3, "status": status, "reason": "test"});

    let (status, body) = service
        .post("/internal/v1/workers/w3/status", change("starting"))
        .await;
    assert_error(
        status,
        &body,
        400,
        "invalid_request",
        Some("invalid_transition"),
    );
    let (status, body) = service
        .post("/internal/v1/workers/w3/status", change("bogus"))
        .await;
    assert_error(status, &body, 400, "invalid_request", None);

    let (status, body) = service
        .post("/internal/v1/workers/w3/status", change("stopped"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["worker"]["worker"]["status"], "stopped");
    assert!(body["worker"]["worker"]["stopped_at"].is_string());
    assert_eq!(
        body["worker"]["worker"]["last_heartbeat_at"], body["worker"]["worker"]["stopped_at"],
        "moving to stopped stamps the heartbeat"
    );
    assert_eq!(body["worker"]["liveness"]["heartbeat_state"], "stopped");

    // Re-registration by the owner revives it.
    let revived = register(
        &service,
        json!({"worker_id": "w3", "owner_user_id": 3, "metadata": {"b": 1}}),
    )
    .await;
    assert_eq!(revived["worker"]["worker"]["status"], "running");
    assert!(revived["worker"]["worker"]["stopped_at"].is_null());
}

#[tokio::test]
async fn workers_survive_a_restart_exactly() {
    let service = TestService::start();
    register(&service, json!({"worker_id": "w4", "owner_user_id": 4, "workspace_ref": "ws", "metadata": {"x": [1]}})).await;
    service
        .post(
            "/internal/v1/workers/w4/heartbeat",
            json!({"owner_user_id": 4, "metadata_patch": {"y": 2}}),
        )
        .await;
    service
        .post(
            "/internal/v1/workers/w4/status",
            json!({"owner_user_id": 4, "status": "stopping"}),
        )
        .await;
    let (_, before) = service.get("/internal/v1/workers/w4?owner_user_id=4").await;
    let (_, checkpoint_before) = service.get("/internal/v1/workers/w4/checkpoint").await;
    assert_eq!(checkpoint_before["checkpoint"]["last_seq"], 3);
    assert_eq!(
        checkpoint_before["checkpoint"]["last_event_type"],
        "worker.stopping"
    );

    let service = service.restart();
    let (_, after) = service.get("/internal/v1/workers/w4?owner_user_id=4").await;
    assert_eq!(after["worker"]["worker"], before["worker"]["worker"]);
    let (_, checkpoint_after) = service.get("/internal/v1/workers/w4/checkpoint").await;
    assert_eq!(checkpoint_after, checkpoint_before);
}

#[tokio::test]
async fn runs_inherit_the_owner_of_their_worker() {
    let service = TestService::start();
    register(
        &service,
        json!({"worker_id": "w5", "owner_guest_scope": "org-5"}),
    )
    .await;
    let (_, body) = service
        .post("/internal/v1/runs", json!({"worker_id": "w5"}))
        .await;
    assert_eq!(
        body["run"]["owner"],
        json!({"user_id": null, "guest_scope": "org-5"})
    );
    assert_eq!(body["run"]["worker_id"], "w5");
    let (_, explicit) = service
        .post(
            "/internal/v1/runs",
            json!({"worker_id": "w5", "owner_user_id": 1}),
        )
        .await;
    assert_eq!(explicit["run"]["owner"]["user_id"], 1);
}
