//! Middleware around every route: request ids, the one log line and the
//! metrics of each request, and the optional internal bearer token.

use crate::error::ApiError;
use crate::metrics::RequestLabels;
use crate::server::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::Instant;
use subtle::ConstantTimeEq;

/// Header carrying the request id, echoed on every response.
const REQUEST_ID: &str = "x-request-id";
/// Longest client-supplied request id kept; longer ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Assigns the request id (the client's, if sane, else a new one), then logs
/// one line and records the metrics when the response is ready.
pub(crate) async fn observe(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let request_id =
        client_request_id(&request).unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let mut response = next.run(request).await;
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    tracing::info!(
        request_id = %request_id,
        method = %method,
        route = %route,
        status,
        latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        "request"
    );
    state.metrics().request(
        RequestLabels {
            route,
            method,
            status,
        },
        elapsed,
    );
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

fn client_request_id(request: &Request) -> Option<String> {
    let value = request.headers().get(REQUEST_ID)?.to_str().ok()?;
    let sane = !value.is_empty()
        && value.len() <= MAX_REQUEST_ID_LEN
        && value.bytes().all(|byte| byte.is_ascii_graphic());
    sane.then(|| value.to_owned())
}

/// With `RUNTIME_INTERNAL_AUTH_TOKEN` set, every `/internal/v1/*` route but
/// Khala's topic routes (which have their own sync tokens) requires
/// `Authorization: Bearer <token>`, compared in constant time.
pub(crate) async fn internal_auth(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = &state.config().internal_auth_token else {
        return next.run(request).await;
    };
    let path = request.uri().path();
    let guarded =
        path.starts_with("/internal/v1/") && !path.starts_with("/internal/v1/khala/topics/");
    if guarded && !presents_token(&request, expected) {
        return ApiError::custom(
            axum::http::StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this route requires the internal bearer token",
        )
        .with_reason("invalid_internal_token")
        .into_response();
    }
    next.run(request).await
}

fn presents_token(request: &Request, expected: &str) -> bool {
    let Some(value) = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, token)) = value.split_once(' ') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer")
        && bool::from(token.trim().as_bytes().ct_eq(expected.as_bytes()))
}
