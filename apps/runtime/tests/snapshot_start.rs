//! A restart on either backend starts from the index snapshot written at
//! the previous stop, reads none of the log again, says so in `/metrics`,
//! and still answers an idempotent retry on a sealed run (whose keys left
//! memory) exactly as before.

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::json;
use support::TestService;

/// The value of an un-labelled metric in `/metrics`.
async fn metric(service: &TestService, name: &str) -> f64 {
    let (status, body) = service
        .send(Request::get("/metrics").body(Body::empty()).unwrap())
        .await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(body).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_restart_starts_from_the_snapshot_and_retries_still_replay() {
    let service = TestService::start();
    let run = service.create_run(json!({})).await;
    let keyed = json!({"event_type": "tool.call", "payload": {"n": 1}, "idempotency_key": "k-1"});
    let (status, first) = service.append(&run, keyed.clone()).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    for n in 2..=4 {
        service
            .append(&run, json!({"event_type": "note", "payload": {"n": n}}))
            .await;
    }
    let finish = json!({"event_type": "run.finished", "payload": {"status": "succeeded"}});
    let (status, _) = service.append(&run, finish).await;
    assert_eq!(status, StatusCode::OK);
    let (_, before) = service.get(&format!("/internal/v1/runs/{run}")).await;

    let service = service.restart();
    assert_eq!(
        metric(&service, "runtime_start_records_replayed").await,
        0.0
    );
    assert_eq!(metric(&service, "runtime_snapshot_lsn").await, 6.0);
    assert!(metric(&service, "runtime_snapshot_bytes").await > 0.0);
    let (_, after) = service.get(&format!("/internal/v1/runs/{run}")).await;
    assert_eq!(after, before);

    let (status, replay) = service.append(&run, keyed).await;
    assert_eq!(status, StatusCode::OK, "{replay}");
    assert_eq!(replay["idempotent_replay"], true);
    assert_eq!(replay["event"], first["event"]);
    let (status, _) = service
        .append(
            &run,
            json!({"event_type": "tool.call", "payload": {"n": 2}, "idempotency_key": "k-1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (_, summary) = service
        .get(&format!("/internal/v1/projectors/run-summary/{run}"))
        .await;
    assert_eq!(summary["summary"]["last_seq"], 6, "{summary}");
}
