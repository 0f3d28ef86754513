//! Middleware around every route: request ids, the one log line and the
//! metrics of each request, the refusal of transfer codings the service
//! does not implement, and the credentials and scopes of the internal
//! routes; and around the Khala topic routes, the origin policy.

use crate::credentials::{Scope, WrittenBy};
use crate::error::ApiError;
use crate::metrics::{RequestLabels, UNMATCHED_ROUTE, method_label};
use crate::server::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::Instant;

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
    let method = method_label(request.method());
    let route = request.extensions().get::<MatchedPath>().map_or_else(
        || UNMATCHED_ROUTE.to_owned(),
        |path| path.as_str().to_owned(),
    );
    let mut response = next.run(request).await;
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    tracing::info!(
        request_id = %request_id,
        method,
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

/// Refuses a request whose `Transfer-Encoding` names any coding other than
/// `chunked` (`gzip, chunked`, say) with 501: the service implements no other
/// coding and must not read such a body as if it were plain (RFC 9112 §6.1).
pub(crate) async fn refuse_transfer_codings(request: Request, next: Next) -> Response {
    let unsupported = request
        .headers()
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&byte| byte == b','))
        .map(<[u8]>::trim_ascii)
        .any(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case(b"chunked"));
    if unsupported {
        return ApiError::unsupported_transfer_coding().into_response();
    }
    next.run(request).await
}

/// With credentials configured (`RUNTIME_INTERNAL_AUTH_TOKEN`,
/// `RUNTIME_CREDENTIALS_PATH`), every `/internal/v1/*` route but Khala's
/// topic routes (which have their own sync tokens) requires
/// `Authorization: Bearer <token>` of a known credential (else 401
/// `invalid_internal_token`) holding the route's scope (else 403
/// `missing_scope`).
pub(crate) async fn internal_auth(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(credentials) = state.credentials() else {
        return next.run(request).await;
    };
    let Some(required) = required_scope(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    let Some(credential) = bearer_token(&request).and_then(|token| credentials.find(token)) else {
        return ApiError::custom(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this route requires the bearer token of a known credential",
        )
        .with_reason("invalid_internal_token")
        .into_response();
    };
    if let Some(scope) = required
        && !credential.allows(scope)
    {
        return ApiError::custom(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "credential {:?} lacks the scope {} this route requires",
                credential.name,
                scope.as_str()
            ),
        )
        .with_reason("missing_scope")
        .into_response();
    }
    request.extensions_mut().insert(WrittenBy(credential.name));
    next.run(request).await
}

/// What a request to `path` needs: `None` for routes outside the
/// credential rule (health, metrics, Khala topics), `Some(None)` for an
/// internal path of no resource (any credential, then 404), else the scope.
/// Reads are `GET` (and `HEAD`); every other method needs the write scope,
/// but `DELETE` of a run (erasure) needs `admin`.
fn required_scope(method: &Method, path: &str) -> Option<Option<Scope>> {
    let internal = path.strip_prefix("/internal/v1/")?;
    if internal.starts_with("khala/topics/") {
        return None;
    }
    let read = method == Method::GET || method == Method::HEAD;
    let family = internal.split('/').next().unwrap_or_default();
    // Erasing a run destroys data a writer cannot restore: an operator's act.
    if family == "runs" && method == Method::DELETE {
        return Some(Some(Scope::Admin));
    }
    let scope = match (family, read) {
        ("runs" | "projectors" | "receipts", true) => Scope::RunsRead,
        ("runs" | "projectors" | "receipts", false) => Scope::RunsWrite,
        ("workers", true) => Scope::WorkersRead,
        ("workers", false) => Scope::WorkersWrite,
        ("cutover" | "khala", _) => Scope::Admin,
        _ => return Some(None),
    };
    Some(Some(scope))
}

/// The token of the request's one `Authorization` header, read by the same
/// `Bearer` rule as Khala's (`openagents_khala::auth::bearer_credentials`):
/// none with no header, two headers, another scheme or an empty token.
fn bearer_token(request: &Request) -> Option<&str> {
    let mut values = request.headers().get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return None;
    };
    let token = openagents_khala::auth::bearer_credentials(Some(value.as_bytes())).ok()?;
    std::str::from_utf8(token)
        .ok()
        .filter(|token| !token.is_empty())
}

/// How long a browser may cache a Khala preflight answer, in seconds.
const PREFLIGHT_MAX_AGE: &str = "600";

/// The origin policy of the Khala topic routes: a request naming an
/// `Origin` outside `RUNTIME_KHALA_ALLOWED_ORIGINS` is refused with 403
/// `origin_not_allowed`; a request naming none (not from a browser page) is
/// let through. An allowed origin gets the CORS headers, on its preflight
/// (`OPTIONS`, answered 204 by `khala::preflight`) the allowed methods and
/// headers too.
pub(crate) async fn khala_origin(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let khala = request
        .uri()
        .path()
        .starts_with("/internal/v1/khala/topics/");
    let origin = request.headers().get(header::ORIGIN).cloned();
    let Some(origin) = origin.filter(|_| khala) else {
        return next.run(request).await;
    };
    let allowed = state
        .config()
        .khala_allowed_origins
        .iter()
        .any(|listed| listed.as_bytes() == origin.as_bytes());
    if !allowed {
        let reason = openagents_khala::reason::ReasonCode::OriginNotAllowed;
        return ApiError::custom(
            StatusCode::FORBIDDEN,
            reason.error_code(),
            "this origin may not use the Khala routes",
        )
        .with_reason(reason.as_str())
        .into_response();
    }
    let preflight = request.method() == Method::OPTIONS;
    let mut response = next.run(request).await;
    if preflight {
        let headers = response.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, OPTIONS"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, last-event-id"),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(PREFLIGHT_MAX_AGE),
        );
    }
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.append(header::VARY, HeaderValue::from_static("origin"));
    response
}
