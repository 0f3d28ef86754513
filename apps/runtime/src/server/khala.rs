//! Handlers of the Khala routes.

use super::extract::{Authorization, Path, Query};
use crate::error::ApiError;
use crate::khala::KhalaError;
use crate::server::AppState;
use axum::Json;
use axum::extract::State;
use openagents_khala::poll::PollParams;
use openagents_khala::topic::Topic;
use serde::Deserialize;
use serde_json::{Value, json};

/// The poll query, kept as text so the Khala crate's rules judge it.
#[derive(Debug, Deserialize)]
pub(crate) struct PollQuery {
    after_seq: Option<String>,
    limit: Option<String>,
    wait_ms: Option<String>,
}

/// `GET /internal/v1/khala/topics/{topic}/messages`.
pub(crate) async fn messages(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    Query(query): Query<PollQuery>,
    Authorization(authorization): Authorization,
) -> Result<Json<Value>, ApiError> {
    let core = state.fresh_core().await?;
    let result = poll(core, &topic, &query, authorization.as_deref())
        .await
        .map_err(ApiError::from);
    match &result {
        Ok(_) => state.metrics().khala_outcome(None),
        Err(error) if error.status().as_u16() == 410 => {
            state.metrics().khala_outcome(Some("stale_cursor"))
        }
        Err(error)
            if matches!(error.status().as_u16(), 401 | 403)
                || error.reason_code() == Some("sync_auth_not_configured") =>
        {
            let reason = error.reason_code().unwrap_or_default();
            // The reason code only: the token itself is never logged.
            tracing::warn!(%topic, reason, "khala request denied");
            state.metrics().khala_outcome(Some(reason));
        }
        Err(_) => {}
    }
    let response = result?;
    Ok(Json(
        serde_json::to_value(response).map_err(|e| ApiError::internal(e.to_string()))?,
    ))
}

async fn poll(
    core: &crate::core::Core,
    topic: &str,
    query: &PollQuery,
    authorization: Option<&[u8]>,
) -> Result<crate::khala::PollResponse, KhalaError> {
    let khala = &core.khala;
    let log = core.authority.log();
    let principal = khala.authenticate(authorization)?;
    let topic: Topic = topic.parse()?;
    let params = PollParams::from_query(
        query.after_seq.as_deref(),
        query.limit.as_deref(),
        query.wait_ms.as_deref(),
    )?;
    let access = khala.authorize(log, &principal, &topic)?;
    khala.poll(log, &principal, &topic, access, &params).await
}

/// `GET /internal/v1/khala/fanout/hooks`.
pub(crate) async fn hooks(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let core = state.core()?;
    let driver = core.khala.driver();
    Ok(Json(
        json!({"driver": driver.name(), "hooks": driver.hooks()}),
    ))
}
