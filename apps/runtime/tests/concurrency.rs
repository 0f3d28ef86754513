//! Races on one run: the check and the append are one atomic step.

mod support;

use axum::http::StatusCode;
use serde_json::json;
use std::sync::Arc;
use support::TestService;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_expected_previous_seq_has_exactly_one_winner_per_seq() {
    let service = Arc::new(TestService::start());
    let run = service.create_run(json!({})).await;
    // Rounds of 64 concurrent appends all claiming the same previous seq.
    for (round, next_expected) in (1u64..=4).enumerate() {
        let tasks: Vec<_> = (0..64)
            .map(|n| {
                let service = Arc::clone(&service);
                let run = run.clone();
                tokio::spawn(async move {
                    let body = json!({"event_type": "note", "payload": {"round": round, "n": n}, "expected_previous_seq": next_expected});
                    service.append(&run, body).await
                })
            })
            .collect();
        let mut winners = 0;
        for task in tasks {
            let (status, body) = task.await.unwrap();
            match status {
                StatusCode::OK => winners += 1,
                StatusCode::CONFLICT => assert_eq!(body["reason_code"], "sequence_conflict"),
                other => panic!("unexpected {other}: {body}"),
            }
        }
        assert_eq!(winners, 1, "round {round}");
    }
    let (_, body) = service.get(&format!("/internal/v1/runs/{run}")).await;
    let seqs: Vec<u64> = body["run"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=5).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_finishes_accept_exactly_one() {
    let service = Arc::new(TestService::start());
    let run = service.create_run(json!({})).await;
    let statuses = ["succeeded", "failed", "canceled", "cancelled"];
    let tasks: Vec<_> = (0..16)
        .map(|n| {
            let service = Arc::clone(&service);
            let run = run.clone();
            let status = statuses[n % statuses.len()];
            tokio::spawn(async move {
                service
                    .append(
                        &run,
                        json!({"event_type": "run.finished", "payload": {"status": status}}),
                    )
                    .await
            })
        })
        .collect();
    let mut accepted = 0;
    for task in tasks {
        let (status, body) = task.await.unwrap();
        match (status, body["idempotent_replay"].as_bool()) {
            (StatusCode::OK, Some(false)) => accepted += 1,
            (StatusCode::OK, Some(true)) => {}
            (StatusCode::CONFLICT, _) => assert_eq!(body["reason_code"], "run_terminal"),
            other => panic!("unexpected {other:?}: {body}"),
        }
    }
    assert_eq!(accepted, 1);
    let (_, body) = service.get(&format!("/internal/v1/runs/{run}")).await;
    let finishes = body["run"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_type"] == "run.finished")
        .count();
    assert_eq!(finishes, 1);
}
