//! The log's writer as the routes see it: a decision that panics poisons the
//! log, `/readyz` says why and writes are refused with 500 until restart; an
//! idempotency key used twice in one stream is refused by the log itself on
//! either backend, before any medium sees it.

mod support;

use openagents_authority::{DecisionError, StreamId};
use openagents_event_log::{AppendError, LogFailure, NewRecord};
use openagents_runtime_service::authority::AuthorityError;
use serde_json::json;
use serde_json::value::RawValue;
use support::{TestService, assert_error};

#[tokio::test]
async fn a_panicking_decision_poisons_the_log_and_readiness_names_it() {
    let service = TestService::start();
    let run_id = service.create_run(json!({})).await;
    let (status, _) = service.get("/readyz").await;
    assert_eq!(status, 200);

    let outcome = service
        .core()
        .authority
        .execute(|_txn| -> Result<(), DecisionError> { panic!("decided on purpose") })
        .await;
    match outcome {
        Err(AuthorityError::Log(LogFailure::Poisoned(reason))) => {
            assert!(reason.contains("decided on purpose"), "{reason}")
        }
        other => panic!("expected the poisoned log, got {other:?}"),
    }

    let (status, body) = service.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.to_string().contains("decided on purpose"), "{body}");
    let (status, body) = service
        .append(&run_id, json!({"event_type": "tool.call.completed"}))
        .await;
    assert_error(status, &body, 500, "internal", None);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("decided on purpose")
    );
    // Reads are still served from what was durable.
    let (status, body) = service.get(&format!("/internal/v1/runs/{run_id}")).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_key_used_twice_in_one_stream_is_refused_by_the_log() {
    let service = TestService::start();
    let run_id = service.create_run(json!({})).await;
    let (status, body) = service
        .append(
            &run_id,
            json!({"event_type": "tool.call.completed", "idempotency_key": "k"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let stream = StreamId::Run(run_id.parse().unwrap()).to_string();
    let outcome = service
        .core()
        .authority
        .execute(move |txn| {
            let record = NewRecord {
                stream,
                event_type: "tool.call.completed".into(),
                payload: RawValue::from_string("{}".into()).unwrap(),
                idempotency_key: Some("k".into()),
                content_hash: None,
                create_key: None,
                attrs: None,
                written_by: None,
            };
            txn.append(record)?;
            Ok(())
        })
        .await;
    assert!(
        matches!(
            outcome,
            Err(AuthorityError::Decision(DecisionError::Append(
                AppendError::KeyTaken { seq: 2, .. }
            )))
        ),
        "{outcome:?}"
    );
    let (_, body) = service
        .get(&format!("/internal/v1/runs/{run_id}/events"))
        .await;
    assert_eq!(body["events"].as_array().unwrap().len(), 2, "{body}");
    let (status, _) = service.get("/readyz").await;
    assert_eq!(status, 200);
}
