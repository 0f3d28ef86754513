//! The `openagents-runtime-service` binary: reads the configuration, starts
//! logging, binds the listener and serves until SIGINT or SIGTERM.
//!
//! Two commands run instead of the service:
//!
//! - `reproject` drops the projections, rebuilds them from the event log,
//!   prints what changed and exits (on the embedded log the service must be
//!   stopped: the file is locked while it runs);
//! - `import-log FILE` copies an embedded log file into the PostgreSQL
//!   database of `RUNTIME_DATABASE_URL`, whose log must be empty.

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
        Some("import-log") => return import_log(&config, std::env::args().nth(2)),
        Some(other) => {
            anyhow::bail!(
                "unknown command {other:?}; the commands are `reproject` and `import-log FILE`"
            )
        }
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
    use openagents_event_log::LogOptions;
    use openagents_runtime_service::projectors::{ProjectionStore, describe_changes};
    use openagents_runtime_service::storage::{self, CheckpointMedium};
    let (log, report) = storage::open_log(config, LogOptions::default())
        .context("opening the event log (is the service still running?)")?;
    let store = ProjectionStore::new(CheckpointMedium::of(config)?);
    let (before, after) = store.reproject(&log).map_err(anyhow::Error::msg)?;
    let changes = describe_changes(&before, &after);
    for change in &changes {
        println!("{change}");
    }
    println!(
        "reprojected {} records of {} streams into {}: {} topics changed",
        report.records,
        report.streams,
        store.checkpoint_location(),
        changes.len()
    );
    Ok(())
}

/// Copies the embedded log `file` into the configured database.
fn import_log(config: &Config, file: Option<String>) -> anyhow::Result<()> {
    let file = file.context("usage: openagents-runtime-service import-log FILE")?;
    let copied = openagents_runtime_service::storage::import_log(config, file.as_ref())
        .with_context(|| format!("importing {file}"))?;
    println!("imported {copied} records from {file}");
    Ok(())
}
