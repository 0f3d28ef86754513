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
//! - `queries`: the filtered, paged run and worker lists over the index;
//! - `projectors`: projections behind the log and their checkpoint file;
//! - `fanout`, `khala`, `firehose`: live delivery, topic polling and its
//!   auth, and the per-user firehoses;
//! - `storage`: the configured backend (embedded file or PostgreSQL);
//! - `retention`: which histories move to the archive, in the background
//!   and in the offline `archive` command;
//! - `core`: the recovered state the routes serve from;
//! - `cutover`: write-mode controls and the recorded parity gate;
//! - `server`: router, extractors and handlers;
//! - `metrics`: the Prometheus registry;
//! - `error`: the one mapping of failures to the JSON envelope.

pub mod authority;
pub mod config;
pub mod core;
pub(crate) mod credentials;
pub(crate) mod cutover;
pub(crate) mod error;
pub(crate) mod fanout;
pub(crate) mod firehose;
pub(crate) mod khala;
pub mod metrics;
pub mod orchestration;
pub mod projectors;
pub(crate) mod queries;
pub(crate) mod reload;
pub mod retention;
pub mod server;
pub mod storage;
pub(crate) mod subscription;
pub(crate) mod sync_auth;
pub mod types;
pub(crate) mod workers;

use crate::config::Config;
use crate::core::{Core, StartError};
use crate::server::AppState;
use std::future::Future;
use std::sync::{Arc, Weak};
use tokio::net::TcpListener;

/// How often shutdown checks whether every live stream has ended.
const STREAM_DRAIN_POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// Serves on `listener` until `shutdown` resolves: the listener answers
/// `/healthz` and `/readyz` (503) at once, while the log is recovered in the
/// background; then every route is served. On shutdown the listener stops
/// accepting, waiting long-polls are answered at once, live streams end
/// with a frame that says so, in-flight requests and streams get `RUNTIME_SHUTDOWN_GRACE_MS` to finish, then the log's writer drains
/// and the projections are written.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let metrics = Arc::new(metrics::Metrics::default());
    let state = AppState::new(config.clone(), Arc::clone(&metrics));
    let app = server::router(state.clone());
    let (stop_accepting, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server::connections::serve(
        listener,
        app,
        server::connections::ConnectionLimits::of(&config),
        Arc::clone(&metrics),
        stopped,
    ));
    let recovery_config = config.clone();
    let (core, recovery) =
        tokio::task::spawn_blocking(move || Core::open_with(&recovery_config, metrics))
            .await
            .expect("recovery does not panic")?;
    tracing::info!(
        records = recovery.log.records,
        streams = recovery.log.streams,
        truncated_bytes = recovery.log.truncated_bytes,
        snapshot_lsn = recovery.log.snapshot.map(|snapshot| snapshot.lsn),
        records_replayed = recovery.log.replayed,
        segments = recovery.log.segments,
        // True whenever projections were rebuilt from the log, in part or
        // whole: a missing snapshot rebuilds them all.
        projections_rebuilt =
            recovery.projections.rebuilt_from_scratch || recovery.projections.records_applied > 0,
        projection_checkpoint_discarded = recovery.projections.rebuilt_from_scratch,
        projection_streams_caught_up = recovery.projections.streams_caught_up,
        projection_records_applied = recovery.projections.records_applied,
        location = core.authority.log().location(),
        "event log recovered"
    );
    let core = Arc::new(core);
    state.set_core(Arc::clone(&core));
    let hangups = tokio::spawn(reload_on_hangup(state.clone(), Arc::downgrade(&core)));
    shutdown.await;
    hangups.abort();
    // Long-polls answer now rather than at their deadlines.
    core.khala.close();
    let _ = stop_accepting.send(());
    // Upgraded WebSockets left their connections: wait for their last
    // frames as well.
    let drained = async {
        let served = server.await;
        while core.khala.streaming() > 0 {
            tokio::time::sleep(STREAM_DRAIN_POLL).await;
        }
        served
    };
    match tokio::time::timeout(config.shutdown_grace, drained).await {
        Ok(Err(error)) => tracing::error!(%error, "http server stopped with an error"),
        Ok(Ok(())) => {}
        Err(_) => tracing::warn!(
            grace_ms = config.shutdown_grace.as_millis() as u64,
            "in-flight requests did not finish within the shutdown grace period"
        ),
    }
    tokio::task::spawn_blocking(move || core.shutdown())
        .await
        .expect("shutdown does not panic");
    tracing::info!("stopped");
    Ok(())
}

/// Makes the reloaded files (JWKS, revoked `jti`s, credentials) be read at
/// once on every SIGHUP, on top of their polling.
async fn reload_on_hangup(state: AppState, core: Weak<Core>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("no SIGHUP handler; the reloaded files are still polled");
        return;
    };
    while hangups.recv().await.is_some() {
        tracing::info!("SIGHUP: reading the reloaded files now");
        state.reload_files_now();
        if let Some(core) = core.upgrade() {
            core.reload_files_now();
        }
    }
}
