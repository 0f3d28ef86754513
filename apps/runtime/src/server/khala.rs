//! Handlers of the Khala routes.

use super::extract::{Authorization, Path};
use crate::error::ApiError;
use crate::khala::KhalaError;
use crate::server::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::Uri;
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
    uri: Uri,
    Authorization(authorization): Authorization,
) -> Result<Json<Value>, ApiError> {
    let core = state.fresh_core().await?;
    let result = poll(core, &topic, &uri, &authorization).await;
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
            // The reason code only: the token itself is never logged, and
            // the topic only as a short prefix.
            let topic = crate::error::clip(&topic);
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

/// The checks in `docs/KHALA.md`'s order: token, topic, query (read here,
/// not by an extractor, so that a request without a token is told so
/// first), access; then the poll.
async fn poll(
    core: &crate::core::Core,
    topic: &str,
    uri: &Uri,
    authorization: &[Box<[u8]>],
) -> Result<crate::khala::PollResponse, ApiError> {
    let khala = &core.khala;
    let log = core.authority.log();
    let principal = khala.authenticate(authorization)?;
    let topic: Topic = topic.parse().map_err(KhalaError::from)?;
    let axum::extract::Query(query) = axum::extract::Query::<PollQuery>::try_from_uri(uri)
        .map_err(|rejection| ApiError::invalid_request(rejection.body_text()))?;
    let params = PollParams::from_query(
        query.after_seq.as_deref(),
        query.limit.as_deref(),
        query.wait_ms.as_deref(),
    )
    .map_err(KhalaError::from)?;
    let access = khala.authorize(log, &principal, &topic)?;
    Ok(khala.poll(log, &principal, &topic, access, &params).await?)
}

/// `GET /internal/v1/khala/fanout/hooks`.
pub(crate) async fn hooks(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let core = state.core()?;
    let driver = core.khala.driver();
    Ok(Json(
        json!({"driver": driver.name(), "hooks": driver.hooks()}),
    ))
}
