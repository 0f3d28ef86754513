//! Receipts and replays over HTTP: content, determinism across a restart,
//! validity of the replay, and 404s.

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use openagents_artifacts::{
    ReceiptSignature, ReceiptSigner, canonical_receipt_digest, validate_replay,
};
use serde_json::{Value, json};
use support::{TestService, assert_error};

async fn fetch(service: &TestService, uri: &str) -> (StatusCode, Vec<u8>) {
    service
        .send(Request::get(uri).body(Body::empty()).unwrap())
        .await
}

async fn run_with_tools(service: &TestService) -> String {
    let run = service
        .create_run(json!({"metadata": {"policy_bundle_id": "bundle-7"}}))
        .await;
    let tool = json!({"event_type": "tool.call.completed", "payload": {"tool": "shell", "params": {"b": 1, "a": 2}, "output": "ok", "latency_ms": 12, "side_effects": false}});
    service.append(&run, tool).await;
    let verification = json!({"event_type": "verification.completed", "payload": {"command": "cargo test", "exit_code": 0, "cwd": "/w", "duration_ms": 900}});
    service.append(&run, verification).await;
    run
}

#[tokio::test]
async fn a_receipt_lists_tool_calls_and_verification() {
    let service = TestService::start();
    let run = run_with_tools(&service).await;
    let (status, bytes) = fetch(&service, &format!("/internal/v1/runs/{run}/receipt")).await;
    assert_eq!(status, StatusCode::OK);
    let receipt: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(receipt["schema"], "openagents.receipt.v1");
    assert_eq!(receipt["session_id"], run);
    assert_eq!(receipt["policy_bundle_id"], "bundle-7");
    assert_eq!(
        (
            receipt["event_count"].clone(),
            receipt["first_seq"].clone(),
            receipt["last_seq"].clone()
        ),
        (json!(3), json!(1), json!(3))
    );
    assert_eq!(receipt["tool_calls"][0]["tool"], "shell");
    assert_eq!(
        receipt["tool_calls"][0]["params_hash"],
        openagents_canonical::digest(&json!({"a": 2, "b": 1}))
    );
    assert_eq!(receipt["verification"][0]["command"], "cargo test");

    // Anyone holding the events can recompute the trajectory hash: every
    // field the run shows but `written_by`.
    let (_, run_body) = service.get(&format!("/internal/v1/runs/{run}")).await;
    let mut events = run_body["run"]["events"].clone();
    for event in events.as_array_mut().unwrap() {
        assert!(
            event
                .as_object_mut()
                .unwrap()
                .remove("written_by")
                .is_some()
        );
    }
    assert_eq!(
        receipt["trajectory_hash"],
        openagents_canonical::digest(&events)
    );
}

#[tokio::test]
async fn receipts_and_replays_are_byte_identical_after_restart() {
    let service = TestService::start();
    let run = run_with_tools(&service).await;
    service
        .append(
            &run,
            json!({"event_type": "run.finished", "payload": {"status": "succeeded"}}),
        )
        .await;
    let receipt_uri = format!("/internal/v1/runs/{run}/receipt");
    let replay_uri = format!("/internal/v1/runs/{run}/replay");
    let receipt = fetch(&service, &receipt_uri).await;
    let replay = fetch(&service, &replay_uri).await;
    let service = service.restart();
    assert_eq!(fetch(&service, &receipt_uri).await, receipt);
    assert_eq!(fetch(&service, &replay_uri).await, replay);
}

fn signer() -> ReceiptSigner {
    ReceiptSigner::from_hex(&"2a".repeat(32)).unwrap()
}

#[tokio::test]
async fn without_a_key_receipts_are_unsigned_and_the_key_route_is_404() {
    let service = TestService::start();
    let run = run_with_tools(&service).await;
    let (_, bytes) = fetch(&service, &format!("/internal/v1/runs/{run}/receipt")).await;
    let receipt: Value = serde_json::from_slice(&bytes).unwrap();
    assert!(receipt.get("signature").is_none(), "{receipt}");
    let object = receipt.as_object().unwrap();
    assert_eq!(
        receipt["canonical_json_sha256"],
        hex::encode(canonical_receipt_digest(object))
    );
    let (status, body) = service.get("/internal/v1/receipts/signing-key").await;
    assert_error(
        status,
        &body,
        404,
        "not_found",
        Some("signing_key_not_configured"),
    );
}

#[tokio::test]
async fn with_a_key_receipts_are_signed_deterministically_across_a_restart() {
    let service = TestService::start_with(|config| config.receipt_signer = Some(signer()));
    let run = run_with_tools(&service).await;
    let uri = format!("/internal/v1/runs/{run}/receipt");
    let (status, bytes) = fetch(&service, &uri).await;
    assert_eq!(status, StatusCode::OK);
    let receipt: Value = serde_json::from_slice(&bytes).unwrap();
    let signature: ReceiptSignature = serde_json::from_value(receipt["signature"].clone()).unwrap();
    let digest = canonical_receipt_digest(receipt.as_object().unwrap());
    assert_eq!(signature.signed_sha256, hex::encode(digest));
    assert_eq!(receipt["canonical_json_sha256"], hex::encode(digest));
    signature.verify(&digest).unwrap();
    assert_eq!(signature.signer_pubkey, signer().public_key_hex());

    let (status, key) = service.get("/internal/v1/receipts/signing-key").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        key,
        json!({"schema": "openagents.receipt_signature.v1",
               "scheme": "secp256k1_schnorr_no_aux_rand",
               "signer_pubkey": signer().public_key_hex()})
    );

    let service = service.restart();
    assert_eq!(fetch(&service, &uri).await, (StatusCode::OK, bytes));
}

#[tokio::test]
async fn a_replay_is_valid_ndjson_and_ends_only_when_sealed() {
    let service = TestService::start();
    let run = run_with_tools(&service).await;
    let uri = format!("/internal/v1/runs/{run}/replay");
    let response = service.router.clone();
    let open = tower::ServiceExt::oneshot(
        response,
        Request::get(uri.as_str()).body(Body::empty()).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(open.headers()["content-type"], "application/x-ndjson");

    let (_, bytes) = fetch(&service, &uri).await;
    assert_eq!(validate_replay(bytes.as_slice()).unwrap(), 5);
    assert!(!String::from_utf8_lossy(&bytes).contains("SessionEnd"));

    service
        .append(
            &run,
            json!({"event_type": "run.finished", "payload": {"status": "failed"}}),
        )
        .await;
    let (_, bytes) = fetch(&service, &uri).await;
    assert_eq!(validate_replay(bytes.as_slice()).unwrap(), 7);
    let last: Value =
        serde_json::from_slice(bytes.split(|b| *b == b'\n').rev().nth(1).unwrap()).unwrap();
    assert_eq!(
        (last["type"].clone(), last["status"].clone()),
        (json!("SessionEnd"), json!("failure"))
    );
}

#[tokio::test]
async fn artifacts_of_unknown_runs_are_404() {
    let service = TestService::start();
    let unknown = uuid::Uuid::now_v7();
    for artifact in ["receipt", "replay"] {
        let (status, body) = service
            .get(&format!("/internal/v1/runs/{unknown}/{artifact}"))
            .await;
        assert_error(status, &body, 404, "not_found", None);
    }
}
