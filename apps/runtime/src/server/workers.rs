//! Handlers of the worker routes.

use super::extract::{Json, Path, Query};
use crate::credentials::WrittenBy;
use crate::error::ApiError;
use crate::server::AppState;
use crate::workers::{self, HeartbeatBody, OwnerFields, RegisterBody, StatusBody, WorkerView};
use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use openagents_authority::StreamId;
use serde_json::json;

fn answer(status: StatusCode, view: WorkerView) -> Response {
    (status, axum::Json(json!({"worker": view}))).into_response()
}

/// `POST /internal/v1/workers`.
pub(crate) async fn register(
    State(state): State<AppState>,
    writer: Option<Extension<WrittenBy>>,
    Json(body): Json<RegisterBody>,
) -> Result<Response, ApiError> {
    let core = state.core()?;
    let stale_after = core.heartbeat_stale_after_ms;
    let worker =
        workers::register(&core.authority, body, stale_after, WrittenBy::name(writer)).await?;
    Ok(answer(
        StatusCode::CREATED,
        WorkerView::now(worker, stale_after),
    ))
}

/// `GET /internal/v1/workers/{worker_id}?owner_user_id=|owner_guest_scope=`.
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(worker_id): Path<String>,
    Query(owner): Query<OwnerFields>,
) -> Result<Response, ApiError> {
    let core = state.fresh_core().await?;
    let worker = workers::read_owned(&core.authority, &worker_id, &owner.owner()?)?;
    Ok(answer(
        StatusCode::OK,
        WorkerView::now(worker, core.heartbeat_stale_after_ms),
    ))
}

/// `POST /internal/v1/workers/{worker_id}/heartbeat`.
pub(crate) async fn heartbeat(
    State(state): State<AppState>,
    writer: Option<Extension<WrittenBy>>,
    Path(worker_id): Path<String>,
    Json(body): Json<HeartbeatBody>,
) -> Result<Response, ApiError> {
    let core = state.core()?;
    let stale_after = core.heartbeat_stale_after_ms;
    let worker = workers::heartbeat(
        &core.authority,
        worker_id,
        body,
        stale_after,
        WrittenBy::name(writer),
    )
    .await?;
    Ok(answer(StatusCode::OK, WorkerView::now(worker, stale_after)))
}

/// `POST /internal/v1/workers/{worker_id}/status`.
pub(crate) async fn status(
    State(state): State<AppState>,
    writer: Option<Extension<WrittenBy>>,
    Path(worker_id): Path<String>,
    Json(body): Json<StatusBody>,
) -> Result<Response, ApiError> {
    let core = state.core()?;
    let stale_after = core.heartbeat_stale_after_ms;
    let worker = workers::set_status(
        &core.authority,
        worker_id,
        body,
        stale_after,
        WrittenBy::name(writer),
    )
    .await?;
    Ok(answer(StatusCode::OK, WorkerView::now(worker, stale_after)))
}

/// `GET /internal/v1/workers/{worker_id}/checkpoint`. Owner fields are
/// optional here; when given they must match.
pub(crate) async fn checkpoint(
    State(state): State<AppState>,
    Path(worker_id): Path<String>,
    Query(owner): Query<OwnerFields>,
) -> Result<Response, ApiError> {
    let core = state.fresh_core().await?;
    let checked = workers::checked_worker_id(&worker_id)?;
    if !owner.is_empty() {
        workers::read_owned(&core.authority, &worker_id, &owner.owner()?)?;
    }
    let checkpoint = core
        .projections
        .checkpoint(&StreamId::Worker(checked).topic())
        .ok_or_else(|| ApiError::not_found(format!("no checkpoint for worker {worker_id}")))?;
    Ok(axum::Json(json!({"checkpoint": checkpoint})).into_response())
}
