//! Projector routes, and projections across restarts: a clean stop, a
//! missing or corrupt checkpoint file, and a checkpoint ahead of the log.

mod support;

use axum::http::StatusCode;
use openagents_projectors::Projections;
use openagents_run_state::RunEvent;
use serde_json::{Value, json};
use support::{TestService, assert_error};

/// The summary computed directly from the run's events as the log holds them.
async fn summary_from_log(service: &TestService, run: &str) -> Value {
    let (_, body) = service.get(&format!("/internal/v1/runs/{run}")).await;
    let events: Vec<RunEvent> = serde_json::from_value(body["run"]["events"].clone()).unwrap();
    let mut projections = Projections::new();
    for event in &events {
        projections.apply_run_event(run, event);
    }
    serde_json::to_value(projections.run(run).unwrap().summary().unwrap()).unwrap()
}

async fn busy_run(service: &TestService) -> String {
    let run = service.create_run(json!({})).await;
    for n in 0..5 {
        service
            .append(&run, json!({"event_type": "note", "payload": {"n": n}}))
            .await;
    }
    service
        .append(
            &run,
            json!({"event_type": "run.finished", "payload": {"status": "succeeded"}}),
        )
        .await;
    run
}

#[tokio::test]
async fn checkpoints_and_summaries_follow_the_log() {
    let service = TestService::start();
    let run = busy_run(&service).await;
    let (status, body) = service
        .get(&format!("/internal/v1/projectors/checkpoints/{run}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["checkpoint"]["topic"], format!("run:{run}:events"));
    assert_eq!(
        (
            body["checkpoint"]["last_seq"].clone(),
            body["checkpoint"]["last_event_type"].clone()
        ),
        (json!(7), json!("run.finished"))
    );

    let (status, body) = service
        .get(&format!("/internal/v1/projectors/run-summary/{run}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["summary"]["status"], "succeeded");
    assert_eq!(body["summary"]["event_count"], 7);
    let hashed = json!({"run_id": run, "status": "succeeded", "last_seq": 7, "event_count": 7});
    assert_eq!(
        body["summary"]["projection_hash"],
        openagents_canonical::digest(&hashed)
    );
    assert_eq!(body["summary"], summary_from_log(&service, &run).await);
}

#[tokio::test]
async fn projector_routes_answer_404_and_400() {
    let service = TestService::start();
    let unknown = uuid::Uuid::now_v7();
    let (status, body) = service
        .get(&format!("/internal/v1/projectors/checkpoints/{unknown}"))
        .await;
    assert_error(status, &body, 404, "not_found", None);
    let (status, body) = service
        .get(&format!("/internal/v1/projectors/run-summary/{unknown}"))
        .await;
    assert_error(status, &body, 404, "not_found", None);
    let (status, body) = service.get("/internal/v1/projectors/drift").await;
    assert_error(status, &body, 400, "invalid_request", None);
    let (status, body) = service
        .get(&format!(
            "/internal/v1/projectors/drift?topic=run:{unknown}:events"
        ))
        .await;
    assert_error(status, &body, 404, "not_found", None);
    let (status, body) = service
        .get("/internal/v1/projectors/checkpoints/not-a-uuid")
        .await;
    assert_error(status, &body, 400, "invalid_request", None);
}

#[tokio::test]
async fn projections_survive_restart_and_rebuild_from_a_bad_file() {
    if support::skip_unless_jsonl("projections_survive_restart_and_rebuild_from_a_bad_file") {
        return;
    }
    let service = TestService::start();
    let run = busy_run(&service).await;
    let uri = format!("/internal/v1/projectors/run-summary/{run}");
    let (_, expected) = service.get(&uri).await;

    let service = service.restart();
    assert!(
        service.config.checkpoint_path.exists(),
        "a clean stop writes the checkpoint file"
    );
    assert_eq!(service.get(&uri).await.1, expected);

    // Missing, truncated and garbage files are rebuilt from the log.
    let mut service = service;
    for damage in [None, Some(&b"{\"format\":"[..]), Some(&b"garbage\n"[..])] {
        service = service.restart_with(|config| match damage {
            None => std::fs::remove_file(&config.checkpoint_path).unwrap(),
            Some(bytes) => std::fs::write(&config.checkpoint_path, bytes).unwrap(),
        });
        assert_eq!(service.get(&uri).await.1, expected);
    }
}

#[tokio::test]
async fn a_stale_checkpoint_file_is_caught_up_from_the_log() {
    if support::skip_unless_jsonl("a_stale_checkpoint_file_is_caught_up_from_the_log") {
        return;
    }
    let service = TestService::start();
    let run = busy_run(&service).await;
    let service = service.restart();
    let stale = std::fs::read(&service.config.checkpoint_path).unwrap();

    // More events after the file was written, then a stop that loses the
    // newer checkpoint, as a crash between append and checkpoint write does.
    let open_run = service.create_run(json!({})).await;
    service
        .append(&open_run, json!({"event_type": "note"}))
        .await;
    let service =
        service.restart_with(|config| std::fs::write(&config.checkpoint_path, &stale).unwrap());
    let rewritten = std::fs::read(&service.config.checkpoint_path).unwrap();
    assert_ne!(rewritten, stale, "the catch-up is written before serving");

    for id in [&run, &open_run] {
        let (status, body) = service
            .get(&format!("/internal/v1/projectors/run-summary/{id}"))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["summary"], summary_from_log(&service, id).await);
    }
}

#[tokio::test]
async fn a_checkpoint_ahead_of_the_log_is_rebuilt() {
    if support::skip_unless_jsonl("a_checkpoint_ahead_of_the_log_is_rebuilt") {
        return;
    }
    let long = TestService::start();
    let run = busy_run(&long).await;
    let long = long.restart();
    let ahead = std::fs::read(&long.config.checkpoint_path).unwrap();
    drop(long);

    // The long run's projection, relabelled as a run that has one event.
    let service = TestService::start();
    let short = service.create_run(json!({})).await;
    let text = String::from_utf8(ahead).unwrap().replace(&run, &short);
    let service =
        service.restart_with(|config| std::fs::write(&config.checkpoint_path, text).unwrap());
    let (_, body) = service
        .get(&format!("/internal/v1/projectors/run-summary/{short}"))
        .await;
    assert_eq!(body["summary"], summary_from_log(&service, &short).await);
}
