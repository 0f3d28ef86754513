//! Prometheus metrics of the service, in one registry rendered by
//! `GET /metrics` (OpenMetrics text, which Prometheus scrapes natively).
//!
//! Counters and histograms are updated where things happen (the request
//! middleware, the log's batch hook, the Khala handler, the snapshot
//! flusher); gauges that mirror state (projector lag, waiting long-polls,
//! segment count, snapshot age) are read when scraped.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::time::Duration;

/// Labels of a served request. Every label has a bounded set of values,
/// whatever clients send: see [`method_label`] and [`UNMATCHED_ROUTE`].
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    /// The route template, e.g. `/internal/v1/runs/{run_id}/events`, or
    /// [`UNMATCHED_ROUTE`].
    pub(crate) route: String,
    /// HTTP method, from [`method_label`].
    pub(crate) method: &'static str,
    /// Response status code.
    pub(crate) status: u16,
}

/// The route label of a request that matched no route.
pub(crate) const UNMATCHED_ROUTE: &str = "unmatched";

/// The method as a label: the methods of RFC 9110 by name, any other
/// method (clients may send any token) as `other`.
pub(crate) fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// Labels of a latency histogram per route.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    /// The route template.
    pub(crate) route: String,
}

/// Labels of a Khala denial.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabels {
    /// The contract's reason code.
    pub(crate) reason: String,
}

/// Labels of a reload of a watched file.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReloadLabels {
    /// `jwks`, `revoked_jtis` or `credentials`.
    pub(crate) file: &'static str,
    /// `ok`, or `failed` (the previous set stays in force).
    pub(crate) outcome: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The state mirrored by gauges, read when `/metrics` is scraped.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Scraped {
    pub(crate) projector_lag: u64,
    pub(crate) khala_waiters: usize,
    pub(crate) khala_streams: usize,
    pub(crate) log_segments: usize,
    pub(crate) archive_bytes: u64,
    pub(crate) archived_runs: u64,
    pub(crate) compaction: openagents_event_log::CompactionStats,
}

/// A count as a gauge's value.
fn gauge_value(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Every metric the service exports.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: HistogramFamily<RouteLabels>,
    batch_records: Histogram,
    sync_seconds: Histogram,
    events_appended: Counter,
    projector_lag: Gauge,
    khala_polls: Counter,
    khala_stale_cursors: Counter,
    khala_waiters: Gauge,
    khala_streams: Gauge,
    khala_denials: Family<ReasonLabels, Counter>,
    sync_key_set_version: Gauge,
    file_reloads: Family<ReloadLabels, Counter>,
    connections_shed: Counter,
    snapshot_bytes: Gauge,
    snapshot_lsn: Gauge,
    snapshot_age_seconds: Gauge,
    /// Unix time (s) of the newest snapshot; 0 before the first.
    snapshot_written_unix: std::sync::atomic::AtomicU64,
    start_records_replayed: Gauge,
    log_segments: Gauge,
    archive_bytes: Gauge,
    archived_runs: Gauge,
    hot_log_bytes: Gauge,
    compaction_segments_compacted: Gauge,
    compaction_segments_deleted: Gauge,
    compaction_bytes_reclaimed: Gauge,
    compaction_bytes_pending: Gauge,
    compaction_running: Gauge,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~26 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("runtime");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            requests.clone(),
        );
        let request_seconds: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "Request latency by route (appends include the durable write)",
            request_seconds.clone(),
        );
        let batch_records = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        registry.register(
            "log_batch_records",
            "Records per group-committed batch",
            batch_records.clone(),
        );
        let sync_seconds = latency_histogram();
        registry.register(
            "log_write_sync_seconds",
            "Time of each batch's write and fdatasync",
            sync_seconds.clone(),
        );
        let events_appended = Counter::default();
        registry.register(
            "log_records_appended",
            "Records made durable",
            events_appended.clone(),
        );
        let projector_lag = Gauge::default();
        registry.register(
            "projector_lag_records",
            "Durable records not yet applied to projections",
            projector_lag.clone(),
        );
        let khala_polls = Counter::default();
        registry.register("khala_polls", "Khala polls answered", khala_polls.clone());
        let khala_stale_cursors = Counter::default();
        registry.register(
            "khala_stale_cursors",
            "Khala polls refused with stale_cursor",
            khala_stale_cursors.clone(),
        );
        let khala_waiters = Gauge::default();
        registry.register(
            "khala_waiters",
            "Khala long-polls waiting now",
            khala_waiters.clone(),
        );
        let khala_streams = Gauge::default();
        registry.register(
            "khala_streams",
            "Khala live streams open now",
            khala_streams.clone(),
        );
        let khala_denials = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "khala_auth_denials",
            "Khala requests refused, by reason code",
            khala_denials.clone(),
        );
        let sync_key_set_version = Gauge::default();
        registry.register(
            "sync_key_set_version",
            "Version of the sync token key set: 1 at start, +1 per JWKS reload put in force",
            sync_key_set_version.clone(),
        );
        let file_reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "file_reloads",
            "Reloads of the JWKS, revoked-jti and credentials files, by file and outcome",
            file_reloads.clone(),
        );
        let connections_shed = Counter::default();
        registry.register(
            "http_connections_shed",
            "Connections closed on arrival because RUNTIME_MAX_CONNECTIONS were open",
            connections_shed.clone(),
        );
        let snapshot_bytes = Gauge::default();
        registry.register(
            "snapshot_bytes",
            "Size of the newest index snapshot (written, or loaded at start)",
            snapshot_bytes.clone(),
        );
        let snapshot_lsn = Gauge::default();
        registry.register(
            "snapshot_lsn",
            "Log position the newest index snapshot describes",
            snapshot_lsn.clone(),
        );
        let snapshot_age_seconds = Gauge::default();
        registry.register(
            "snapshot_age_seconds",
            "Seconds since the newest index snapshot was written (0 before the first)",
            snapshot_age_seconds.clone(),
        );
        let start_records_replayed = Gauge::default();
        registry.register(
            "start_records_replayed",
            "Records read from the log at start: those after the snapshot, or all",
            start_records_replayed.clone(),
        );
        let log_segments = Gauge::default();
        registry.register(
            "log_segments",
            "Segment files of the embedded log (0 on PostgreSQL)",
            log_segments.clone(),
        );
        let archive_bytes = Gauge::default();
        registry.register(
            "archive_bytes",
            "Bytes of the archive of histories that left the hot log",
            archive_bytes.clone(),
        );
        let archived_runs = Gauge::default();
        registry.register(
            "archived_runs",
            "Runs whose history is served from the archive",
            archived_runs.clone(),
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let gauge = Gauge::default();
            registry.register(name, help, gauge.clone());
            gauge
        };
        let hot_log_bytes = gauge(
            &mut registry,
            "hot_log_bytes",
            "Bytes of the embedded log's segment files (0 on PostgreSQL)",
        );
        let compaction_segments_compacted = gauge(
            &mut registry,
            "compaction_segments_compacted",
            "Segments rewritten without their dead records since start",
        );
        let compaction_segments_deleted = gauge(
            &mut registry,
            "compaction_segments_deleted",
            "Segments merged into a compacted one and deleted since start",
        );
        let compaction_bytes_reclaimed = gauge(
            &mut registry,
            "compaction_bytes_reclaimed",
            "Bytes of disk compaction gave back since start",
        );
        let compaction_bytes_pending = gauge(
            &mut registry,
            "compaction_bytes_pending",
            "Dead bytes still on disk as the last compaction pass found them",
        );
        let compaction_running = gauge(
            &mut registry,
            "compaction_running",
            "1 while a compaction pass runs",
        );
        Metrics {
            hot_log_bytes,
            compaction_segments_compacted,
            compaction_segments_deleted,
            compaction_bytes_reclaimed,
            compaction_bytes_pending,
            compaction_running,
            archive_bytes,
            archived_runs,
            snapshot_bytes,
            snapshot_lsn,
            snapshot_age_seconds,
            snapshot_written_unix: std::sync::atomic::AtomicU64::new(0),
            start_records_replayed,
            log_segments,
            sync_key_set_version,
            file_reloads,
            registry,
            connections_shed,
            requests,
            request_seconds,
            batch_records,
            sync_seconds,
            events_appended,
            projector_lag,
            khala_polls,
            khala_stale_cursors,
            khala_waiters,
            khala_streams,
            khala_denials,
        }
    }
}

impl Metrics {
    /// Records one served request.
    pub(crate) fn request(&self, labels: RequestLabels, elapsed: Duration) {
        let route = RouteLabels {
            route: labels.route.clone(),
        };
        self.requests.get_or_create(&labels).inc();
        self.request_seconds
            .get_or_create(&route)
            .observe(elapsed.as_secs_f64());
    }

    /// Records a connection closed on arrival (the limit was reached).
    pub(crate) fn connection_shed(&self) {
        self.connections_shed.inc();
    }

    /// Records one durable batch of the log.
    pub(crate) fn batch(&self, records: usize, write_and_sync: Duration) {
        self.batch_records.observe(records as f64);
        self.sync_seconds.observe(write_and_sync.as_secs_f64());
        self.events_appended.inc_by(records as u64);
    }

    /// Records one answered Khala poll, or its refusal reason.
    pub(crate) fn khala_outcome(&self, reason: Option<&str>) {
        match reason {
            None => {
                self.khala_polls.inc();
            }
            Some("stale_cursor") => {
                self.khala_stale_cursors.inc();
            }
            Some(reason) => {
                self.khala_denials
                    .get_or_create(&ReasonLabels {
                        reason: reason.to_owned(),
                    })
                    .inc();
            }
        }
    }

    /// Records the version of the sync token key set in force.
    pub(crate) fn sync_key_set_version(&self, version: u64) {
        self.sync_key_set_version
            .set(i64::try_from(version).unwrap_or(i64::MAX));
    }

    /// Records one reload of a watched file.
    pub(crate) fn file_reload(&self, file: &'static str, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        self.file_reloads
            .get_or_create(&ReloadLabels { file, outcome })
            .inc();
    }

    /// Records the newest index snapshot.
    pub(crate) fn snapshot(&self, written: &openagents_event_log::SnapshotWritten) {
        self.snapshot_bytes.set(gauge_value(written.bytes));
        self.snapshot_lsn.set(gauge_value(written.lsn));
        let unix = written
            .at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        self.snapshot_written_unix
            .store(unix, std::sync::atomic::Ordering::Release);
    }

    /// Records how many records the start read from the log.
    pub(crate) fn start_replayed(&self, records: u64) {
        self.start_records_replayed.set(gauge_value(records));
    }

    /// Renders every metric, after setting the gauges read at scrape time.
    pub(crate) fn render(&self, scraped: &Scraped) -> String {
        self.projector_lag.set(gauge_value(scraped.projector_lag));
        self.khala_waiters
            .set(gauge_value(scraped.khala_waiters as u64));
        self.khala_streams
            .set(gauge_value(scraped.khala_streams as u64));
        self.log_segments
            .set(gauge_value(scraped.log_segments as u64));
        self.archive_bytes.set(gauge_value(scraped.archive_bytes));
        self.archived_runs.set(gauge_value(scraped.archived_runs));
        let compaction = &scraped.compaction;
        self.hot_log_bytes
            .set(gauge_value(compaction.hot_log_bytes));
        self.compaction_segments_compacted
            .set(gauge_value(compaction.segments_compacted));
        self.compaction_segments_deleted
            .set(gauge_value(compaction.segments_deleted));
        self.compaction_bytes_reclaimed
            .set(gauge_value(compaction.bytes_reclaimed));
        self.compaction_bytes_pending
            .set(gauge_value(compaction.bytes_pending));
        self.compaction_running
            .set(i64::from(compaction.pass_in_progress));
        let written = self
            .snapshot_written_unix
            .load(std::sync::atomic::Ordering::Acquire);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let age = if written == 0 {
            0
        } else {
            now.saturating_sub(written)
        };
        self.snapshot_age_seconds.set(gauge_value(age));
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}
