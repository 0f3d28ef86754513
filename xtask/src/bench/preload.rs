//! Writing large event logs quickly, in-process, with the service library.
//!
//! The preload opens the service core on a fresh data folder, creates the
//! runs, and submits the appends from many tokio tasks at once so that the
//! log's group commit writes them in large batches (one write and one
//! `fdatasync` per batch). The records are therefore exactly what the
//! service writes itself. The core is shut down cleanly at the end (log
//! writer stopped, projection checkpoint written), so the service binary
//! starts on a complete, caught-up folder.

use crate::bench::server::{CHECKPOINT, EVENT_LOG};
use anyhow::{Context, anyhow};
use openagents_runtime_service::config::Config;
use openagents_runtime_service::core::Core;
use openagents_runtime_service::orchestration::{append_event, create_run};
use openagents_runtime_service::types::{AppendEventBody, CreateRunBody};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use uuid::Uuid as RunId;

/// Appends in flight at once (well under the log's queue of 65,536 jobs).
const IN_FLIGHT: usize = 2048;

/// The `pad` of every bench payload: with `n` and the JSON around it, a
/// payload of about 200 bytes.
pub const PAD: &str = "openagents-bench-padding-openagents-bench-padding-openagents-bench-padding-\
openagents-bench-padding-openagents-bench-padding-openagents-bench-padding-0123456789";

/// The payload of the `n`-th bench event.
pub fn payload(n: u64) -> serde_json::Value {
    json!({"n": n, "pad": PAD})
}

/// The body of the `n`-th bench append, as the HTTP scenarios send it (the
/// same JSON as `payload`, formatted directly to keep the load generator
/// cheap).
pub fn append_body(n: u64) -> String {
    format!(r#"{{"event_type":"bench.note","payload":{{"n":{n},"pad":"{PAD}"}}}}"#)
}

/// What a preload wrote.
#[derive(Debug)]
pub struct Preloaded {
    /// The runs, in creation order.
    pub run_ids: Vec<RunId>,
    /// Events in the log (each run's `run.started` included).
    pub events: u64,
    /// Wall time of the whole preload, shutdown included.
    pub elapsed: Duration,
}

/// Writes `runs` runs holding `total_events` events in all (their
/// `run.started` included) into the empty data folder `dir`, spreading the
/// appends round-robin over the runs.
pub async fn preload(dir: &Path, runs: usize, total_events: u64) -> anyhow::Result<Preloaded> {
    let started = Instant::now();
    let config = data_config(dir)?;
    let (core, _recovery) = tokio::task::spawn_blocking(move || Core::open(&config))
        .await?
        .context("opening the service core on the preload folder")?;
    let core = Arc::new(core);
    let run_ids = create_runs(&core, runs).await?;
    let appends = total_events
        .checked_sub(runs as u64)
        .context("fewer events than runs")?;
    append_round_robin(&core, &run_ids, appends).await?;
    // Stops the writer after the queued writes and writes the checkpoint;
    // dropping the last handle then releases the log's lock.
    tokio::task::spawn_blocking(move || {
        core.shutdown();
        drop(core);
    })
    .await?;
    Ok(Preloaded {
        run_ids,
        events: total_events,
        elapsed: started.elapsed(),
    })
}

/// The service configuration of a data folder, every other value default.
fn data_config(dir: &Path) -> anyhow::Result<Config> {
    let log = dir.join(EVENT_LOG).display().to_string();
    let checkpoint = dir.join(CHECKPOINT).display().to_string();
    Config::from_lookup(|name| match name {
        "RUNTIME_EVENT_LOG_PATH" => Some(log.clone()),
        "RUNTIME_CHECKPOINT_PATH" => Some(checkpoint.clone()),
        _ => None,
    })
    .map_err(|error| anyhow!("{error}"))
}

/// Creates `count` runs concurrently.
async fn create_runs(core: &Arc<Core>, count: usize) -> anyhow::Result<Vec<RunId>> {
    let mut tasks = JoinSet::new();
    for index in 0..count {
        let core = Arc::clone(core);
        tasks.spawn(async move {
            let body = CreateRunBody {
                worker_id: None,
                metadata: None,
                owner_user_id: None,
                owner_guest_scope: None,
                idempotency_key: None,
            };
            let written = create_run(&core.authority, body, None).await?;
            anyhow::Ok((index, written.run.id))
        });
    }
    let mut ids = vec![RunId::nil(); count];
    while let Some(joined) = tasks.join_next().await {
        let (index, id) = joined??;
        ids[index] = id;
    }
    Ok(ids)
}

/// Appends `count` bench events, the `n`-th to run `n % runs`, from
/// `IN_FLIGHT` concurrent tasks.
async fn append_round_robin(core: &Arc<Core>, runs: &[RunId], count: u64) -> anyhow::Result<()> {
    let runs: Arc<[RunId]> = runs.into();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..IN_FLIGHT {
        let (core, runs, next) = (Arc::clone(core), Arc::clone(&runs), Arc::clone(&next));
        tasks.spawn(async move {
            // Each turn takes a fresh number, so all tasks together stop after `count` turns.
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    return anyhow::Ok(());
                }
                let run = runs[(n % runs.len() as u64) as usize];
                let body = AppendEventBody {
                    event_type: "bench.note".to_owned(),
                    payload: Some(payload(n)),
                    idempotency_key: None,
                    expected_previous_seq: None,
                };
                append_event(&core.authority, run, body, None)
                    .await
                    .with_context(|| format!("preload append {n}"))?;
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    Ok(())
}
