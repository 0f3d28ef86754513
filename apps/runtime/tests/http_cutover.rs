//! Cutover controls: in each frozen mode every write route answers 503
//! `write_path_frozen` and every read route still answers; the cutover
//! status reports the flags and the recorded parity gate.

mod support;

use axum::http::StatusCode;
use openagents_runtime_service::config::AuthorityWriteMode;
use serde_json::json;
use support::{TestService, assert_error};

#[tokio::test]
async fn frozen_modes_refuse_every_write_and_serve_every_read() {
    for mode in [AuthorityWriteMode::ShadowOnly, AuthorityWriteMode::ReadOnly] {
        let service = TestService::start();
        let run = service.create_run(json!({})).await;
        service
            .post(
                "/internal/v1/workers",
                json!({"worker_id": "w", "owner_user_id": 1}),
            )
            .await;
        let service = service.restart_with(|config| {
            config.authority_write_mode = mode;
            config.legacy_write_freeze = true;
        });

        let writes = [
            ("/internal/v1/runs".to_owned(), json!({})),
            (
                format!("/internal/v1/runs/{run}/events"),
                json!({"event_type": "note"}),
            ),
            (
                "/internal/v1/workers".to_owned(),
                json!({"worker_id": "w2", "owner_user_id": 1}),
            ),
            (
                "/internal/v1/workers/w/heartbeat".to_owned(),
                json!({"owner_user_id": 1}),
            ),
            (
                "/internal/v1/workers/w/status".to_owned(),
                json!({"owner_user_id": 1, "status": "stopping"}),
            ),
        ];
        for (uri, body) in writes {
            let (status, answer) = service.post(&uri, body).await;
            assert_error(status, &answer, 503, "write_path_frozen", None);
        }
        let reads = [
            format!("/internal/v1/runs/{run}"),
            format!("/internal/v1/runs/{run}/events"),
            format!("/internal/v1/runs/{run}/receipt"),
            format!("/internal/v1/runs/{run}/replay"),
            format!("/internal/v1/projectors/checkpoints/{run}"),
            format!("/internal/v1/projectors/run-summary/{run}"),
            "/internal/v1/workers/w?owner_user_id=1".to_owned(),
            "/internal/v1/workers/w/checkpoint".to_owned(),
            "/internal/v1/khala/fanout/hooks".to_owned(),
            "/internal/v1/cutover/status".to_owned(),
            "/healthz".to_owned(),
            "/readyz".to_owned(),
        ];
        for uri in reads {
            let request = axum::http::Request::get(uri.as_str())
                .body(axum::body::Body::empty())
                .unwrap();
            let (status, _) = service.send(request).await;
            assert_eq!(status, StatusCode::OK, "{mode:?} {uri}");
        }
        let (_, cutover) = service.get("/internal/v1/cutover/status").await;
        assert_eq!(cutover["authority_write_mode"], mode.as_str());
        assert_eq!(cutover["legacy_write_freeze"], true);
        assert_eq!(cutover["authority_writer_active"], false);
    }
}

#[tokio::test]
async fn cutover_status_reports_the_recorded_parity_gate() {
    let dir = tempfile::tempdir().unwrap();
    let report_path = dir.path().join("parity.json");
    let path = report_path.clone();
    let service = TestService::start_with(|config| config.parity_report_path = Some(path));

    let (_, missing) = service.get("/internal/v1/cutover/status").await;
    assert!(missing["parity_gate"]["error"].is_string(), "{missing}");
    assert_eq!(missing["authority_writer_active"], true);

    let report = json!({
        "schema": "openagents.runtime.shadow_parity.v1",
        "legacy_manifest": "legacy/manifest.json",
        "rust_manifest": "rust/manifest.json",
        "diffs": [],
        "totals": {"critical": 0, "warning": 0, "compared_fields": 14},
        "gate": {"decision": "allow", "reason": "no differences"}
    });
    std::fs::write(&report_path, report.to_string()).unwrap();
    let (status, recorded) = service.get("/internal/v1/cutover/status").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        recorded["parity_gate"]["report"]["gate"]["decision"],
        "allow"
    );
    assert_eq!(
        recorded["parity_gate"]["report_path"],
        report_path.to_str().unwrap()
    );

    let unconfigured = TestService::start();
    let (_, none) = unconfigured.get("/internal/v1/cutover/status").await;
    assert!(none["parity_gate"].is_null());
}
