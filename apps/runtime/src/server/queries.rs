//! Handlers of the list routes, `GET /internal/v1/runs` and
//! `GET /internal/v1/workers`: parse the filters, take one page from the
//! index (`crate::queries`) and answer it.

use super::extract::Query;
use crate::error::ApiError;
use crate::queries::{RunQuery, WorkerQuery, run_views};
use crate::server::AppState;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::time::SystemTime;

/// The query string as name/value pairs, in the order sent.
type Pairs = Vec<(String, String)>;

/// `GET /internal/v1/runs?status=&owner_user_id=|owner_guest_scope=&worker_id=
/// &created_after=&created_before=&updated_after=&cursor=&limit=`.
pub(crate) async fn runs(
    State(state): State<AppState>,
    Query(pairs): Query<Pairs>,
) -> Result<Response, ApiError> {
    let query = RunQuery::parse(pairs)?;
    let core = state.fresh_core().await?;
    // The read lock is held for the one pass and the copy of the page only.
    let page = {
        let index = core.authority.log().index();
        query.page(index.streams().map(|(_, entry)| entry.state()))
    };
    let body = json!({"runs": run_views(&page.rows), "next_cursor": page.next_cursor});
    Ok(axum::Json(body).into_response())
}

/// `GET /internal/v1/workers?owner_user_id=|owner_guest_scope=&status=
/// &heartbeat_state=&cursor=&limit=`.
pub(crate) async fn workers(
    State(state): State<AppState>,
    Query(pairs): Query<Pairs>,
) -> Result<Response, ApiError> {
    let query = WorkerQuery::parse(pairs)?;
    let core = state.fresh_core().await?;
    let stale_after_ms = core.heartbeat_stale_after_ms;
    let page = {
        let index = core.authority.log().index();
        let streams = index.streams().map(|(_, entry)| entry.state());
        query.page(streams, SystemTime::now(), stale_after_ms)
    };
    let body = json!({"workers": page.rows, "next_cursor": page.next_cursor});
    Ok(axum::Json(body).into_response())
}
