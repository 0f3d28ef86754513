//! Handlers of the projector routes.

use super::extract::{Query, RunId};
use crate::error::ApiError;
use crate::server::AppState;
use axum::Json;
use axum::extract::State;
use openagents_authority::{StreamId, StreamKind, parse_run_id, split_topic};
use serde::Deserialize;
use serde_json::{Value, json};

/// `GET /internal/v1/projectors/checkpoints/{run_id}`.
pub(crate) async fn checkpoint(
    State(state): State<AppState>,
    RunId(run_id): RunId,
) -> Result<Json<Value>, ApiError> {
    let core = state.fresh_core().await?;
    core.authority.refuse_erased(run_id)?;
    let checkpoint = core
        .projections
        .checkpoint(&StreamId::Run(run_id).topic())
        .ok_or_else(|| ApiError::not_found(format!("no checkpoint for run {run_id}")))?;
    Ok(Json(json!({"checkpoint": checkpoint})))
}

/// `GET /internal/v1/projectors/run-summary/{run_id}`.
pub(crate) async fn run_summary(
    State(state): State<AppState>,
    RunId(run_id): RunId,
) -> Result<Json<Value>, ApiError> {
    let core = state.fresh_core().await?;
    core.authority.refuse_erased(run_id)?;
    let summary = core
        .projections
        .run_summary(&run_id.to_string())
        .ok_or_else(|| ApiError::not_found(format!("no summary for run {run_id}")))?;
    Ok(Json(json!({"summary": summary})))
}

/// Query of the drift route.
#[derive(Debug, Deserialize)]
pub(crate) struct DriftQuery {
    topic: Option<String>,
}

/// `GET /internal/v1/projectors/drift?topic=`.
pub(crate) async fn drift(
    State(state): State<AppState>,
    Query(query): Query<DriftQuery>,
) -> Result<Json<Value>, ApiError> {
    let core = state.fresh_core().await?;
    let topic = query
        .topic
        .filter(|topic| !topic.is_empty())
        .ok_or_else(|| ApiError::invalid_request("the topic query parameter is required"))?;
    if let Some((StreamKind::Run, run_id)) = split_topic(&topic)
        && let Ok(run_id) = parse_run_id(run_id)
    {
        core.authority.refuse_erased(run_id)?;
    }
    let drift = core
        .projections
        .drift(&topic)
        .ok_or_else(|| ApiError::not_found(format!("no drift report for topic {topic}")))?;
    Ok(Json(json!({"drift": drift})))
}
