//! The `openagents-runtime-service` binary: reads the configuration, starts
//! logging, binds the listener and serves until SIGINT or SIGTERM.
//!
//! `openagents-runtime-service reproject` instead drops the projections,
//! rebuilds them from the event log, prints what changed and exits (the
//! service must be stopped: the log is locked while it runs).

use anyhow::Context;
use openagents_runtime_service::config::Config;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let config = Config::from_env()?;
    match std::env::args().nth(1).as_deref() {
        None => {}
        Some("reproject") => return reproject(&config),
        Some(other) => anyhow::bail!("unknown command {other:?}; the only command is `reproject`"),
    }
    if !config.authority_write_mode.writes_enabled() && config.legacy_write_freeze {
        tracing::warn!(
            authority_write_mode = config.authority_write_mode.as_str(),
            "neither runtime can write: this service is frozen and LEGACY_RUNTIME_WRITE_FREEZE=true"
        );
    }
    let listener = tokio::net::TcpListener::bind(config.bind_addr)
        .await
        .with_context(|| format!("binding RUNTIME_BIND_ADDR={}", config.bind_addr))?;
    tracing::info!(addr = %listener.local_addr()?, "listening");
    openagents_runtime_service::serve(config, listener, shutdown_signal()).await?;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutdown requested");
}

/// Rebuilds the projections from the log and prints what changed.
fn reproject(config: &Config) -> anyhow::Result<()> {
    use openagents_event_log::{EventLog, LogOptions};
    use openagents_runtime_service::authority::Stream;
    use openagents_runtime_service::projectors::{ProjectionStore, describe_changes};
    let (log, report) = EventLog::<Stream>::open(&config.event_log_path, LogOptions::default())
        .context("opening the event log (is the service still running?)")?;
    let store = ProjectionStore::new(&config.checkpoint_path);
    let (before, after) = store.reproject(&log).map_err(anyhow::Error::msg)?;
    let changes = describe_changes(&before, &after);
    for change in &changes {
        println!("{change}");
    }
    println!(
        "reprojected {} records of {} streams into {}: {} topics changed",
        report.records,
        report.streams,
        config.checkpoint_path.display(),
        changes.len()
    );
    Ok(())
}
