//! Handlers of the run routes.

use super::extract::{Json, Query, RunId};
use crate::credentials::WrittenBy;
use crate::error::ApiError;
use crate::orchestration;
use crate::server::AppState;
use crate::server::streamed::blocking_body;
use crate::types::{
    AppendEventBody, CreateRunBody, EraseRunBody, EventView, EventsPageQuery, RunView,
    tombstone_view,
};
use axum::Extension;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use openagents_artifacts::{SIGNATURE_SCHEMA, SIGNATURE_SCHEME};
use serde_json::json;

/// `POST /internal/v1/runs`: 201 for a new run, 200 for a replayed creation.
pub(crate) async fn create(
    State(state): State<AppState>,
    writer: Option<Extension<WrittenBy>>,
    Json(body): Json<CreateRunBody>,
) -> Result<Response, ApiError> {
    let core = state.core()?;
    let write = orchestration::create_run(&core.authority, body, WrittenBy::name(writer)).await?;
    let status = if write.idempotent_replay {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, axum::Json(json!({"run": RunView::of(&write.run)}))).into_response())
}

/// `POST /internal/v1/runs/{run_id}/events`.
pub(crate) async fn append(
    State(state): State<AppState>,
    writer: Option<Extension<WrittenBy>>,
    RunId(run_id): RunId,
    Json(body): Json<AppendEventBody>,
) -> Result<Response, ApiError> {
    let core = state.core()?;
    let write =
        orchestration::append_event(&core.authority, run_id, body, WrittenBy::name(writer)).await?;
    let body = json!({
        "run": RunView::of(&write.run),
        "event": EventView {
            event: write.event,
            written_by: write.written_by,
        },
        "idempotent_replay": write.idempotent_replay,
    });
    Ok(axum::Json(body).into_response())
}

/// `GET /internal/v1/runs/{run_id}`.
pub(crate) async fn get(
    State(state): State<AppState>,
    RunId(run_id): RunId,
) -> Result<Response, ApiError> {
    let core = state.fresh_core().await?.clone();
    // Unknown runs answer 404 before any byte of the body is sent.
    let head = core.authority.run(run_id)?;
    let body = blocking_body(core, move |core, out| {
        orchestration::write_run(&core.authority, &head, out)
    });
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// `DELETE /internal/v1/runs/{run_id}` body `{reason, force?}`: appends the
/// run's tombstone and answers it.
pub(crate) async fn erase(
    State(state): State<AppState>,
    writer: Option<Extension<WrittenBy>>,
    RunId(run_id): RunId,
    Json(body): Json<EraseRunBody>,
) -> Result<Response, ApiError> {
    let core = state.fresh_core().await?;
    let erasure = orchestration::erase_run(core, run_id, body, WrittenBy::name(writer)).await?;
    let body = json!({"tombstone": tombstone_view(run_id, &erasure)});
    Ok(axum::Json(body).into_response())
}

/// `GET /internal/v1/runs/{run_id}/events?after_seq=&limit=`.
pub(crate) async fn events(
    State(state): State<AppState>,
    RunId(run_id): RunId,
    Query(query): Query<EventsPageQuery>,
) -> Result<Response, ApiError> {
    let core = state.fresh_core().await?.clone();
    let page = tokio::task::spawn_blocking(move || {
        orchestration::events_page(&core.authority, run_id, query.after_seq, query.limit)
    })
    .await
    .map_err(|error| ApiError::internal(error.to_string()))??;
    let body =
        json!({"events": page.events, "next_cursor": page.next_cursor, "head_seq": page.head_seq});
    Ok(axum::Json(body).into_response())
}

/// `GET /internal/v1/runs/{run_id}/receipt`.
pub(crate) async fn receipt(
    State(state): State<AppState>,
    RunId(run_id): RunId,
) -> Result<Response, ApiError> {
    let core = state.fresh_core().await?.clone();
    let signer = state.config().receipt_signer.clone();
    let bytes = tokio::task::spawn_blocking(move || {
        orchestration::receipt(&core.authority, run_id, signer.as_ref())
    })
    .await
    .map_err(|error| ApiError::internal(error.to_string()))??;
    Ok(([(header::CONTENT_TYPE, "application/json")], bytes).into_response())
}

/// `GET /internal/v1/receipts/signing-key`: the public key receipts are
/// signed with, or 404 `reason_code: signing_key_not_configured`.
pub(crate) async fn signing_key(State(state): State<AppState>) -> Result<Response, ApiError> {
    let signer = state.config().receipt_signer.as_ref().ok_or_else(|| {
        ApiError::not_found("receipts are not signed: RUNTIME_RECEIPT_SIGNING_KEY_FILE is not set")
            .with_reason("signing_key_not_configured")
    })?;
    let body = json!({
        "schema": SIGNATURE_SCHEMA,
        "scheme": SIGNATURE_SCHEME,
        "signer_pubkey": signer.public_key_hex(),
    });
    Ok(axum::Json(body).into_response())
}

/// `GET /internal/v1/runs/{run_id}/replay` as `application/x-ndjson`.
pub(crate) async fn replay(
    State(state): State<AppState>,
    RunId(run_id): RunId,
) -> Result<Response, ApiError> {
    let core = state.fresh_core().await?.clone();
    // Unknown runs answer 404 before any byte of the body is sent.
    core.authority.run(run_id)?;
    let body = blocking_body(core, move |core, out| {
        orchestration::replay(&core.authority, run_id, out)
    });
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}
