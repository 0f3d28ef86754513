//! `/healthz`, `/readyz` and the cutover status.

use crate::cutover::CutoverStatus;
use crate::metrics::Scraped;
use crate::server::AppState;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// `GET /healthz`: 200 while the process serves.
pub(crate) async fn healthz(State(state): State<AppState>) -> Response {
    let config = state.config();
    axum::Json(json!({
        "status": "ok",
        "service": config.service_name,
        "build_sha": config.build_sha,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.uptime().as_secs(),
        "authority_write_mode": config.authority_write_mode.as_str(),
        "authority_writer_active": state.writer_active(),
        "legacy_write_freeze": config.legacy_write_freeze,
        "storage_backend": config.storage_backend.as_str(),
        "fanout_driver": config.fanout_driver.as_str(),
    }))
    .into_response()
}

/// `GET /readyz`: 200 once the log is recovered and projections caught up,
/// 503 before that or after the log was poisoned.
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    let readiness = state.readiness();
    let ready = readiness.authority_ready && readiness.projector_ready && readiness.workers_ready;
    let mut body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "authority_ready": readiness.authority_ready,
        "projector_ready": readiness.projector_ready,
        "workers_ready": readiness.workers_ready,
        "authority_writer_active": state.writer_active(),
        "fanout_driver": state.config().fanout_driver.as_str(),
    });
    if let Some(reason) = readiness.reason {
        body["reason"] = json!(reason);
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// `GET /internal/v1/cutover/status`: served before recovery finishes too,
/// since operators check it during a cutover.
pub(crate) async fn cutover_status(State(state): State<AppState>) -> Response {
    axum::Json(CutoverStatus::now(state.config(), state.writer_active())).into_response()
}

/// `GET /metrics`: Prometheus (OpenMetrics) text.
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let scraped = match state.core() {
        Ok(core) => Scraped {
            projector_lag: core.projector_lag(),
            khala_waiters: core.khala.waiting(),
            khala_streams: core.khala.streaming(),
            log_segments: core.authority.log().segment_count(),
            archive_bytes: core.archive_bytes(),
            archived_runs: core.archived_runs(),
            compaction: core.compaction(),
        },
        Err(_) => Scraped::default(),
    };
    let text = state.metrics().render(&scraped);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
