//! `openagents-runtime-service`: the runtime's HTTP service.
//!
//! This crate is the composition layer. The rules live in the domain crates
//! (`openagents-run-state`, `openagents-event-log`, `openagents-artifacts`,
//! `openagents-projectors`, `openagents-workers`, `openagents-khala`); the
//! modules here wire them to storage, HTTP and configuration:
//!
//! - `config`: every `RUNTIME_*` variable, validated once;
//! - `authority`: stream folds and write decisions on the log's writer;
//! - `orchestration`: run operations as the routes need them;
//! - `workers`: worker operations and liveness;
//! - `projectors`: projections behind the log and their checkpoint file;
//! - `fanout`, `khala`: live delivery, topic polling and its auth;
//! - `core`: the recovered state the routes serve from;
//! - `cutover`: write-mode controls and the recorded parity gate;
//! - `server`: router, extractors and handlers;
//! - `error`: the one mapping of failures to the JSON envelope.

pub mod authority;
pub mod config;
pub mod core;
pub mod cutover;
pub mod error;
pub mod fanout;
pub mod khala;
pub mod orchestration;
pub mod projectors;
pub mod server;
pub mod types;
pub mod workers;

use crate::config::Config;
use crate::core::{Core, StartError};
use crate::server::AppState;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Serves on `listener` until `shutdown` resolves: the listener answers
/// `/healthz` and `/readyz` (503) at once, while the log is recovered in the
/// background; then every route is served.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let state = AppState::new(config.clone());
    let app = server::router(state.clone());
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    });
    let recovery_config = config.clone();
    let (core, recovery) = tokio::task::spawn_blocking(move || Core::open(&recovery_config))
        .await
        .expect("recovery does not panic")?;
    tracing::info!(
        records = recovery.log.records,
        streams = recovery.log.streams,
        truncated_bytes = recovery.log.truncated_bytes,
        projections_rebuilt = recovery.projections.rebuilt_from_scratch,
        projection_records_applied = recovery.projections.records_applied,
        path = %config.event_log_path.display(),
        "event log recovered"
    );
    let core = Arc::new(core);
    state.set_core(Arc::clone(&core));
    let served = server.await;
    core.shutdown();
    if let Ok(Err(error)) = served {
        tracing::error!(%error, "http server stopped with an error");
    }
    Ok(())
}
