//! The `openagents-runtime-service` binary: reads the configuration, starts
//! logging, binds the listener and serves until SIGINT or SIGTERM.

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
