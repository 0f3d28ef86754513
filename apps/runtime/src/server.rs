//! The HTTP surface: the router, the shared application state, and the
//! fallbacks that keep every answer a JSON envelope.
//!
//! Handlers live in `server/`, one file per resource; they parse, call the
//! service modules, and map typed errors through `ApiError`. Nothing here
//! decides a rule of the contract.

mod body;
pub(crate) mod connections;
mod console;
mod extract;
mod health;
mod khala;
mod middleware;
mod projectors;
mod queries;
mod runs;
mod streamed;
mod workers;

use crate::config::Config;
use crate::core::Core;
use crate::credentials::{CredentialSet, Credentials};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::reload::Reloader;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tower_http::catch_panic::CatchPanicLayer;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

struct Shared {
    /// The credentials the internal routes require; `None` when neither
    /// `RUNTIME_INTERNAL_AUTH_TOKEN` nor `RUNTIME_CREDENTIALS_PATH` is set.
    credentials: Option<Arc<Credentials>>,
    /// Reloads the credentials file while the state lives.
    reloader: Option<Reloader>,
    config: Config,
    metrics: Arc<Metrics>,
    started: Instant,
    /// Bytes of request bodies in flight (`RUNTIME_MAX_BODY_BYTES_IN_FLIGHT`).
    body_budget: Arc<Semaphore>,
    /// Set once recovery finished; routes needing state answer 503 before.
    core: OnceLock<Arc<Core>>,
}

/// What `/readyz` reports.
pub(crate) struct Readiness {
    /// The log is recovered and accepts writes.
    pub(crate) authority_ready: bool,
    /// Projections caught up with the log.
    pub(crate) projector_ready: bool,
    /// Workers are rebuilt.
    pub(crate) workers_ready: bool,
    /// Why the service is not ready, when it knows.
    pub(crate) reason: Option<String>,
}

impl AppState {
    /// State for a service whose recovery has not finished yet.
    pub fn new(config: Config, metrics: Arc<Metrics>) -> Self {
        let credentials = credentials(&config);
        let reloader = credentials
            .as_ref()
            .and_then(Credentials::watch)
            .and_then(|watch| Reloader::start(vec![watch], Arc::clone(&metrics)));
        AppState {
            inner: Arc::new(Shared {
                credentials,
                reloader,
                body_budget: Arc::new(Semaphore::new(config.max_body_bytes_in_flight)),
                config,
                metrics,
                started: Instant::now(),
                core: OnceLock::new(),
            }),
        }
    }

    /// Installs the recovered core; from now on routes are served.
    pub fn set_core(&self, core: Arc<Core>) {
        let _ = self.inner.core.set(core);
    }

    /// The recovered core, or 503 `not_ready`.
    pub(crate) fn core(&self) -> Result<&Arc<Core>, ApiError> {
        self.inner.core.get().ok_or_else(ApiError::not_ready)
    }

    /// The core, once its log includes everything the storage holds, for
    /// reads: on a database that other instances append to, a read here
    /// sees every append acknowledged anywhere before it began.
    pub(crate) async fn fresh_core(&self) -> Result<&Arc<Core>, ApiError> {
        let core = self.core()?;
        core.authority.catch_up().await?;
        Ok(core)
    }

    /// The service's metrics.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Reads the credentials file now (SIGHUP).
    pub(crate) fn reload_files_now(&self) {
        if let Some(reloader) = &self.inner.reloader {
            reloader.poll_now();
        }
    }

    /// The credentials internal routes require, when any is configured.
    pub(crate) fn credentials(&self) -> Option<&Credentials> {
        self.inner.credentials.as_deref()
    }

    /// The configuration read at start.
    pub(crate) fn config(&self) -> &Config {
        &self.inner.config
    }

    fn body_budget(&self) -> &Arc<Semaphore> {
        &self.inner.body_budget
    }

    fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    pub(crate) fn writer_active(&self) -> bool {
        self.config().authority_write_mode.writes_enabled()
            && self
                .inner
                .core
                .get()
                .is_some_and(|core| core.authority.log().poison_reason().is_none())
    }

    fn readiness(&self) -> Readiness {
        match self.inner.core.get() {
            None => Readiness {
                authority_ready: false,
                projector_ready: false,
                workers_ready: false,
                reason: Some("recovering the event log".into()),
            },
            Some(core) => {
                let log = core.authority.log();
                let reason = log.poison_reason().or_else(|| log.unavailable_reason());
                Readiness {
                    authority_ready: reason.is_none(),
                    projector_ready: true,
                    workers_ready: true,
                    reason,
                }
            }
        }
    }
}

/// The credentials of `config`. The file was checked when the configuration
/// was read; should it have changed to something unusable since, only the
/// internal token is accepted until the reloader finds a good file (closed,
/// not open).
fn credentials(config: &Config) -> Option<Arc<Credentials>> {
    if config.internal_auth_token.is_none() && config.credentials_path.is_none() {
        return None;
    }
    let token = config.internal_auth_token.as_deref();
    let set = match &config.credentials_path {
        None => CredentialSet::build(None, token),
        Some(path) => crate::reload::read(path)
            .and_then(|bytes| CredentialSet::build(Some(&bytes), token)),
    }
    .unwrap_or_else(|reason| {
        tracing::error!(%reason, "RUNTIME_CREDENTIALS_PATH is unusable; only RUNTIME_INTERNAL_AUTH_TOKEN is accepted until it is fixed");
        CredentialSet::build(None, token).unwrap_or_default()
    });
    Some(Arc::new(Credentials::new(
        set,
        config.credentials_path.clone(),
        config.internal_auth_token.clone(),
    )))
}

/// The service's router.
pub fn router(state: AppState) -> Router {
    let max_body = state.config().max_body_bytes;
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/console", get(console::page))
        .route("/console/assets/{name}", get(console::asset))
        .route("/internal/v1/cutover/status", get(health::cutover_status))
        .route("/internal/v1/runs", post(runs::create).get(queries::runs))
        .route(
            "/internal/v1/runs/{run_id}",
            get(runs::get).delete(runs::erase),
        )
        .route("/internal/v1/runs/{run_id}/receipt", get(runs::receipt))
        .route("/internal/v1/runs/{run_id}/replay", get(runs::replay))
        .route("/internal/v1/receipts/signing-key", get(runs::signing_key))
        .route(
            "/internal/v1/runs/{run_id}/events",
            post(runs::append).get(runs::events),
        )
        .route(
            "/internal/v1/projectors/checkpoints/{run_id}",
            get(projectors::checkpoint),
        )
        .route(
            "/internal/v1/projectors/run-summary/{run_id}",
            get(projectors::run_summary),
        )
        .route("/internal/v1/projectors/drift", get(projectors::drift))
        .route(
            "/internal/v1/workers",
            post(workers::register).get(queries::workers),
        )
        .route("/internal/v1/workers/{worker_id}", get(workers::get))
        .route(
            "/internal/v1/workers/{worker_id}/heartbeat",
            post(workers::heartbeat),
        )
        .route(
            "/internal/v1/workers/{worker_id}/status",
            post(workers::status),
        )
        .route(
            "/internal/v1/workers/{worker_id}/checkpoint",
            get(workers::checkpoint),
        )
        .route(
            "/internal/v1/khala/topics/{topic}/messages",
            get(khala::messages).options(khala::preflight),
        )
        .route(
            "/internal/v1/khala/topics/{topic}/stream",
            get(khala::stream).options(khala::preflight),
        )
        .route("/internal/v1/khala/topics/{topic}/ws", get(khala::ws))
        .route("/internal/v1/khala/fanout/hooks", get(khala::hooks))
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(panic_envelope())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            body::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::khala_origin,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::internal_auth,
        ))
        .layer(axum::middleware::from_fn(
            middleware::refuse_transfer_codings,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::observe,
        ))
        .with_state(state)
}

/// What a panic in a handler (a bug) answers: the 500 envelope instead of a
/// dropped connection.
type PanicResponse = fn(Box<dyn std::any::Any + Send>) -> axum::response::Response;

fn panic_envelope() -> CatchPanicLayer<PanicResponse> {
    CatchPanicLayer::custom(|_panic| {
        ApiError::internal("the request failed on an internal error").into_response()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    async fn boom() -> &'static str {
        panic!("a bug")
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_with_the_envelope() {
        let app: Router = Router::new().fallback(boom).layer(panic_envelope());
        let request = Request::get("/boom").body(Body::empty()).unwrap();
        let response = app.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"], "internal");
    }
}
