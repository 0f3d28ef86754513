//! The recovered service core: the authority over the open log, and
//! everything derived from it. Built once at start, after recovery.

use crate::authority::Authority;
use crate::config::Config;
use crate::fanout::WindowFanout;
use crate::khala::Khala;
use crate::metrics::Metrics;
use crate::projectors::{CatchUp, ProjectionStore};
use crate::reload::Reloader;
use crate::retention::{Policy, Retention};
use crate::storage;
use crate::sync_auth;
use openagents_authority::Stream;
use openagents_event_log::{
    BatchStats, CommitObserver, EventLog, ExtensionEncoder, Index, LogOptions, OpenError,
    OpenReport, RecordRef,
};
use openagents_event_log_postgres::PgError;
use serde_json::value::RawValue;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Everything that exists only once the log is recovered.
pub struct Core {
    /// The write authority and its log.
    pub authority: Authority,
    /// Projections and their checkpoint file.
    pub projections: Arc<ProjectionStore>,
    /// Live delivery.
    pub(crate) khala: Arc<Khala>,
    /// Heartbeat age after which a live worker is stale.
    pub(crate) heartbeat_stale_after_ms: u64,
    flusher: Flusher,
    /// Moves histories to the archive, when a retention policy is set.
    retention: Option<Retention>,
    /// Reloads the sync-auth files, when any is configured.
    sync_auth_reloader: Option<Reloader>,
}

/// What recovery found, for the start-up log line.
#[derive(Debug)]
pub struct Recovery {
    /// The log's recovery.
    pub(crate) log: OpenReport,
    /// The projections' catch-up.
    pub(crate) projections: CatchUp,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The event log could not be opened or recovered.
    #[error(transparent)]
    Log(#[from] OpenError),
    /// The PostgreSQL log could not be reached, migrated or loaded.
    #[error(transparent)]
    Postgres(#[from] PgError),
    /// The projections could not be caught up from the log.
    #[error("catching up projections from the event log: {0}")]
    Projections(String),
    /// Khala could not be set up or its aggregate lane rebuilt.
    #[error("khala: {0}")]
    Khala(String),
}

impl Core {
    /// [`Core::open_with`] with metrics of its own (tests, tools).
    pub fn open(config: &Config) -> Result<(Core, Recovery), StartError> {
        Self::open_with(config, Arc::new(Metrics::default()))
    }

    /// [`Core::open`] without the background retention pass, for a command
    /// that runs its own (`archive`).
    pub fn open_without_retention(config: &Config) -> Result<(Core, Recovery), StartError> {
        Self::open_as(config, Arc::new(Metrics::default()), false)
    }

    /// Opens and recovers the log, then catches projections up; log batches
    /// are counted in `metrics`. Blocking: run it off the async runtime.
    pub fn open_with(
        config: &Config,
        metrics: Arc<Metrics>,
    ) -> Result<(Core, Recovery), StartError> {
        Self::open_as(config, metrics, true)
    }

    fn open_as(
        config: &Config,
        metrics: Arc<Metrics>,
        with_retention: bool,
    ) -> Result<(Core, Recovery), StartError> {
        let projections = Arc::new(ProjectionStore::default());
        let khala =
            Arc::new(Khala::new(config, Arc::new(fanout(config))).map_err(StartError::Khala)?);
        let watches = khala
            .verifier()
            .map(|verifier| sync_auth::watches(config, &verifier, &metrics))
            .unwrap_or_default();
        let sync_auth_reloader = Reloader::start(watches, Arc::clone(&metrics));
        let feed = CommitFeed {
            projections: Arc::clone(&projections),
            khala: Arc::clone(&khala),
            metrics: Arc::clone(&metrics),
        };
        let options = LogOptions {
            observer: Some(Arc::new(feed)),
            segment_bytes: config.event_log_segment_bytes,
            compact_bytes_per_second: config.compaction_bytes_per_sec,
            compact_interval: config.retention_interval,
            ..LogOptions::default()
        };
        let (log, log_report) = storage::open_log(config, options)?;
        if let Some(snapshot) = &log_report.snapshot {
            metrics.snapshot(snapshot);
        }
        metrics.start_replayed(log_report.replayed);
        let catch_up = projections.recover(&log).map_err(StartError::Projections)?;
        // Write what the start replayed now (nothing after a clean stop), so
        // that a crash soon after start does not replay the same records.
        match projections.flush(&log) {
            Ok(written) => written.iter().for_each(|written| metrics.snapshot(written)),
            Err(error) => {
                tracing::warn!(%error, "writing the snapshot after the start failed; will retry");
            }
        }
        khala.recover(&log).map_err(StartError::Khala)?;
        let log = Arc::new(log);
        let retention = with_retention
            .then(|| {
                Retention::start(
                    Arc::clone(&log),
                    Policy::of(config),
                    config.retention_interval,
                    snapshot_after_moves(Arc::clone(&log), Arc::clone(&metrics)),
                )
            })
            .flatten();
        let core = Core {
            retention,
            khala,
            flusher: Flusher::start(
                Arc::clone(&projections),
                Arc::clone(&log),
                metrics,
                config.checkpoint_flush_interval,
            ),
            authority: Authority::new(log, config.authority_write_mode),
            projections,
            heartbeat_stale_after_ms: config.worker_heartbeat_stale_after_ms,
            sync_auth_reloader,
        };
        Ok((
            core,
            Recovery {
                log: log_report,
                projections: catch_up,
            },
        ))
    }

    /// Reads the JWKS and revoked-`jti` files now (SIGHUP).
    pub(crate) fn reload_files_now(&self) {
        if let Some(reloader) = &self.sync_auth_reloader {
            reloader.poll_now();
        }
    }

    /// Durable records the projections have not applied yet.
    pub(crate) fn projector_lag(&self) -> u64 {
        let last = self.authority.log().index().last_lsn();
        last.saturating_sub(self.projections.applied_lsn())
    }

    /// Bytes of the archive (0 without one).
    pub(crate) fn archive_bytes(&self) -> u64 {
        self.authority
            .log()
            .cold_store()
            .map_or(0, |cold| cold.bytes())
    }

    /// The hot log's compaction counters.
    pub(crate) fn compaction(&self) -> openagents_event_log::CompactionStats {
        self.authority.log().compaction_stats()
    }

    /// Runs whose history is served from the archive: one pass over the
    /// index's streams.
    pub(crate) fn archived_runs(&self) -> u64 {
        let log = self.authority.log();
        let index = log.index();
        index
            .streams()
            .filter(|(_, entry)| entry.cold_base() > 0 && entry.state().as_run().is_some())
            .count() as u64
    }

    /// Writes the snapshot (or checkpoint) a last time, then stops the
    /// writer after the writes already queued; what they add is replayed at
    /// the next start.
    pub fn shutdown(&self) {
        if let Some(retention) = &self.retention {
            retention.stop();
        }
        self.flusher.stop();
        if let Err(error) = self.projections.flush(self.authority.log()) {
            tracing::error!(%error, "writing the snapshot at shutdown failed");
        }
        self.authority.log().shutdown();
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// After a retention pass moved histories: a snapshot, so the next start
/// finds their cold bases in it (the log position did not change, so the
/// flusher would not write one).
fn snapshot_after_moves(
    log: Arc<EventLog<Stream>>,
    metrics: Arc<Metrics>,
) -> impl Fn(&crate::retention::PassReport) + Send + 'static {
    move |_| match log.write_snapshot() {
        Ok(written) => metrics.snapshot(&written),
        Err(error) => tracing::warn!(%error, "writing the snapshot after a retention pass failed"),
    }
}

/// The fanout driver of the configured backend, sized by the configuration.
fn fanout(config: &Config) -> WindowFanout {
    let capacity = NonZeroUsize::new(config.fanout_queue_capacity).unwrap_or(NonZeroUsize::MIN);
    let topics = NonZeroUsize::new(config.fanout_max_topics).unwrap_or(NonZeroUsize::MIN);
    WindowFanout::new(
        config.fanout_driver,
        capacity,
        topics,
        config.fanout_window_max_bytes,
        config.fanout_max_total_bytes,
    )
}

/// Hands every durable batch to the projections, then to live delivery, on
/// the writer thread and in log order.
struct CommitFeed {
    projections: Arc<ProjectionStore>,
    khala: Arc<Khala>,
    metrics: Arc<Metrics>,
}

impl CommitObserver<Stream> for CommitFeed {
    fn synced(&self, batch: &BatchStats) {
        self.metrics.batch(batch.records, batch.write_and_sync);
    }

    fn committed(&self, records: &[RecordRef<'_>], index: &Index<Stream>) {
        self.projections.committed(records, index);
        self.khala.committed(records, index);
    }

    fn snapshot_extension(&self) -> Option<ExtensionEncoder> {
        Some(self.projections.snapshot_extension())
    }

    fn restoring(&self, extension: Option<&RawValue>) {
        self.projections.restoring(extension);
    }

    fn replayed(&self, record: &RecordRef<'_>) {
        self.projections.replayed(record);
    }
}

/// The background thread that writes the snapshot (or the projection
/// checkpoint) once per interval when something changed: the log, or the
/// segments under it (a compaction).
struct Flusher {
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Flusher {
    fn start(
        projections: Arc<ProjectionStore>,
        log: Arc<EventLog<Stream>>,
        metrics: Arc<Metrics>,
        interval: Duration,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("snapshot-flusher".into())
            .spawn(move || {
                let mut compacted = log.compaction_generation();
                while !stopping.load(Ordering::Acquire) {
                    std::thread::park_timeout(interval);
                    // A compaction moved records, so the last snapshot's
                    // end may be gone: a new one keeps the next start fast.
                    let generation = log.compaction_generation();
                    let flushed = match projections.flush(&log) {
                        Ok(None) if generation != compacted => log
                            .write_snapshot()
                            .map(Some)
                            .map_err(|error| error.to_string()),
                        flushed => flushed,
                    };
                    if flushed.is_ok() {
                        compacted = generation;
                    }
                    match flushed {
                        Ok(Some(written)) => metrics.snapshot(&written),
                        Ok(None) => {}
                        Err(error) => {
                            tracing::error!(%error, "writing the snapshot failed; will retry");
                        }
                    }
                }
            })
            .expect("spawning the snapshot flusher");
        Flusher {
            stop,
            thread: Mutex::new(Some(thread)),
        }
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.lock().expect("flusher lock").take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}
