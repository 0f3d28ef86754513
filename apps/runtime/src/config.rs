//! Service configuration: every `RUNTIME_*` variable, read once at start.
//!
//! A bad value refuses to start with one line naming the variable and the
//! value. Defaults make `cargo run -p openagents-runtime-service` work on a
//! fresh machine with data under `.runtime-data/`.

use crate::credentials::CredentialSet;
use openagents_artifacts::ReceiptSigner;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Smallest segment of the embedded log, so that rolls (a file creation and
/// a folder sync) stay rare next to batches.
const MIN_SEGMENT_BYTES: u64 = 64 << 10;
/// Largest segment of the embedded log.
const MAX_SEGMENT_BYTES: u64 = 16 << 30;

/// Who may write: the cutover control of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorityWriteMode {
    /// This service is the write authority.
    RustActive,
    /// This service mirrors; its write routes are frozen.
    ShadowOnly,
    /// Nothing may be written.
    ReadOnly,
}

impl AuthorityWriteMode {
    /// The contract's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RustActive => "rust_active",
            Self::ShadowOnly => "shadow_only",
            Self::ReadOnly => "read_only",
        }
    }

    /// Whether write routes are served.
    pub fn writes_enabled(self) -> bool {
        self == Self::RustActive
    }
}

impl FromStr for AuthorityWriteMode {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        match text {
            "rust_active" => Ok(Self::RustActive),
            "shadow_only" => Ok(Self::ShadowOnly),
            "read_only" => Ok(Self::ReadOnly),
            _ => Err(()),
        }
    }
}

/// Where the event log, the projection checkpoint and (through them) every
/// run and worker are kept.
#[derive(Clone, PartialEq, Eq)]
pub enum StorageBackend {
    /// The embedded JSONL log and checkpoint file: one instance.
    Jsonl,
    /// A PostgreSQL database that several instances share.
    Postgres {
        /// `RUNTIME_DATABASE_URL`.
        url: String,
    },
}

impl StorageBackend {
    /// The spelling of `RUNTIME_STORAGE_BACKEND` and `/healthz`.
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            Self::Jsonl => "jsonl",
            Self::Postgres { .. } => "postgres",
        }
    }
}

/// Shows the database URL without its password.
impl fmt::Debug for StorageBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Jsonl => f.write_str("Jsonl"),
            Self::Postgres { url } => f
                .debug_struct("Postgres")
                .field("url", &redact_url_password(url))
                .finish(),
        }
    }
}

/// `url` with the password of a `scheme://user:password@host` URL, or the
/// `password=` of a key-value connection string, replaced.
fn redact_url_password(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        if let Some((credentials, host)) = authority.rsplit_once('@')
            && let Some((user, _password)) = credentials.split_once(':')
        {
            return format!("{scheme}://{user}:<redacted>@{host}{tail}");
        }
        return url.to_owned();
    }
    url.split_whitespace()
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=<redacted>"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Where Khala topic windows are fed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FanoutDriverKind {
    /// This instance's own commits (embedded log).
    Memory,
    /// The shared `events` table, with `LISTEN`/`NOTIFY` wake-ups.
    PostgresNotify,
}

impl FanoutDriverKind {
    /// The spelling of `RUNTIME_FANOUT_DRIVER`, `/healthz` and polls.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::PostgresNotify => "postgres_notify",
        }
    }
}

/// A variable that holds a value the service cannot use.
#[derive(Debug, thiserror::Error)]
#[error("invalid {variable}={value:?}: expected {expected}")]
pub struct ConfigError {
    variable: &'static str,
    value: String,
    expected: String,
}

/// Longest `RUNTIME_SERVICE_NAME` or `RUNTIME_BUILD_SHA`, in characters.
const MAX_LABEL_CHARS: usize = 256;

/// Fails unless `path` can be a file this process writes: not a directory,
/// in a directory where files can be created.
fn check_writable_file(variable: &'static str, path: &std::path::Path) -> Result<(), ConfigError> {
    let refuse = |expected: String| ConfigError {
        variable,
        value: path.display().to_string(),
        expected,
    };
    if path.is_dir() {
        return Err(refuse("a file path, not a directory".into()));
    }
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => std::path::Path::new("."),
    };
    std::fs::create_dir_all(parent).map_err(|error| {
        refuse(format!(
            "a file in a directory that can be created ({error})"
        ))
    })?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let probe = parent.join(format!(".{name}.probe-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|error| refuse(format!("a file in a writable directory ({error})")))?;
    let _ = std::fs::remove_file(&probe);
    if path.exists() {
        std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|error| refuse(format!("a writable file ({error})")))?;
    }
    Ok(())
}

/// Everything the service reads from its environment. Its `Debug` output
/// never shows a secret (signing key, internal token, database password).
#[derive(Clone)]
pub struct Config {
    /// Address the HTTP server listens on.
    pub bind_addr: SocketAddr,
    /// Name reported by `/healthz`.
    pub service_name: String,
    /// Build identifier reported by `/healthz`.
    pub build_sha: String,
    /// Where the log is kept (`RUNTIME_STORAGE_BACKEND`).
    pub storage_backend: StorageBackend,
    /// The durable event log (embedded backend): its first segment file.
    pub event_log_path: PathBuf,
    /// Size at which a segment of the embedded log is full.
    pub event_log_segment_bytes: u64,
    /// The index snapshot of the embedded log (the index and the
    /// projections at one log position).
    pub checkpoint_path: PathBuf,
    /// Cutover control for this service's writes.
    pub authority_write_mode: AuthorityWriteMode,
    /// Whether the legacy runtime's writes are frozen (reported only).
    pub legacy_write_freeze: bool,
    /// Where the shadow harness records the last parity report (`--record`).
    pub parity_report_path: Option<PathBuf>,
    /// How often a snapshot is written while the log changes.
    pub checkpoint_flush_interval: std::time::Duration,
    /// Bearer token every `/internal/v1/*` route except Khala's requires.
    pub internal_auth_token: Option<String>,
    /// How long in-flight requests may take to finish at shutdown.
    pub shutdown_grace: std::time::Duration,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Bytes of request bodies all requests together may hold at once.
    pub max_body_bytes_in_flight: usize,
    /// Connections served at once; more are closed as they arrive.
    pub max_connections: usize,
    /// Longest a client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// Longest pause allowed between two parts of a request body.
    pub body_read_timeout: Duration,
    /// Slowest average rate a request body may arrive at, once the first
    /// `body_read_timeout` has passed.
    pub body_min_bytes_per_sec: u64,
    /// Longest a response write may wait for the client to read.
    pub write_timeout: Duration,
    /// Heartbeat age after which a live worker is `stale`.
    pub worker_heartbeat_stale_after_ms: u64,
    /// Khala fanout driver; follows the storage backend.
    pub fanout_driver: FanoutDriverKind,
    /// Messages kept per Khala topic.
    pub fanout_queue_capacity: usize,
    /// Khala topics held in memory at once.
    pub fanout_max_topics: usize,
    /// Bytes of messages one Khala topic window holds in memory; older
    /// messages of its retained window are read from the log.
    pub fanout_window_max_bytes: usize,
    /// Bytes of messages all Khala topic windows hold together.
    pub fanout_max_total_bytes: usize,
    /// Bytes of messages one Khala poll response carries before it ends
    /// early (it always carries at least one message).
    pub khala_max_response_bytes: usize,
    /// Khala long-polls allowed to wait at once.
    pub khala_max_waiters: usize,
    /// Khala live streams (SSE) open at once, in total.
    pub khala_max_streams: usize,
    /// Khala live streams one principal may hold open at once.
    pub khala_max_streams_per_principal: usize,
    /// Messages a live stream may fall behind its topic's head before it is
    /// ended with `slow_consumer`.
    pub khala_max_stream_lag: u64,
    /// Browser origins allowed on Khala routes; a request naming another
    /// `Origin` is refused.
    pub khala_allowed_origins: Vec<String>,
    /// HS256 key of sync tokens; Khala routes answer 503 without it.
    pub sync_token_signing_key: Option<String>,
    /// Required `iss` of sync tokens.
    pub sync_token_issuer: String,
    /// Required `aud` of sync tokens.
    pub sync_token_audience: String,
    /// Revoked sync token ids.
    pub sync_revoked_jtis: Vec<String>,
    /// The HS256 key of the previous rotation, still accepted
    /// (`RUNTIME_SYNC_TOKEN_SIGNING_KEY_PREVIOUS`).
    pub sync_token_previous_signing_key: Option<String>,
    /// A JWKS file of EdDSA, ES256 and RS256 sync token keys, reloaded on
    /// change (`RUNTIME_SYNC_TOKEN_JWKS_PATH`).
    pub sync_token_jwks_path: Option<PathBuf>,
    /// A file of revoked sync token ids, one a line, reloaded on change
    /// (`RUNTIME_SYNC_REVOKED_JTIS_PATH`).
    pub sync_revoked_jtis_path: Option<PathBuf>,
    /// The named credentials file (`RUNTIME_CREDENTIALS_PATH`), checked at
    /// start and reloaded on change.
    pub credentials_path: Option<PathBuf>,
    /// The key receipts are signed with (`RUNTIME_RECEIPT_SIGNING_KEY_FILE`);
    /// receipts carry no signature without it.
    pub receipt_signer: Option<ReceiptSigner>,
    /// The archive of histories that left the hot log (embedded backend;
    /// PostgreSQL keeps them in its archive table).
    pub archive_dir: PathBuf,
    /// How long after it was sealed a run moves to the archive
    /// (`RUNTIME_RETENTION_SEALED_AFTER`); `None`: runs stay hot.
    pub retention_sealed_after: Option<Duration>,
    /// How old a worker heartbeat must be before only the latest of the
    /// old ones is kept (`RUNTIME_RETENTION_HEARTBEATS_AFTER`); `None`:
    /// every heartbeat is kept.
    pub retention_heartbeats_after: Option<Duration>,
    /// How often the retention pass runs (and the compactor looks for
    /// dead bytes without being nudged).
    pub retention_interval: Duration,
    /// Bytes of segments compaction may read per second.
    pub compaction_bytes_per_sec: u64,
    /// Settings that were ignored, logged as warnings at start.
    pub warnings: Vec<String>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |secret: &Option<String>| secret.as_ref().map(|_| "<redacted>");
        f.debug_struct("Config")
            .field("bind_addr", &self.bind_addr)
            .field("service_name", &self.service_name)
            .field("build_sha", &self.build_sha)
            .field("storage_backend", &self.storage_backend)
            .field("event_log_path", &self.event_log_path)
            .field("event_log_segment_bytes", &self.event_log_segment_bytes)
            .field("checkpoint_path", &self.checkpoint_path)
            .field("authority_write_mode", &self.authority_write_mode)
            .field("legacy_write_freeze", &self.legacy_write_freeze)
            .field("parity_report_path", &self.parity_report_path)
            .field("checkpoint_flush_interval", &self.checkpoint_flush_interval)
            .field("internal_auth_token", &redacted(&self.internal_auth_token))
            .field("shutdown_grace", &self.shutdown_grace)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_body_bytes_in_flight", &self.max_body_bytes_in_flight)
            .field("max_connections", &self.max_connections)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("body_read_timeout", &self.body_read_timeout)
            .field("body_min_bytes_per_sec", &self.body_min_bytes_per_sec)
            .field("write_timeout", &self.write_timeout)
            .field(
                "worker_heartbeat_stale_after_ms",
                &self.worker_heartbeat_stale_after_ms,
            )
            .field("fanout_driver", &self.fanout_driver)
            .field("fanout_queue_capacity", &self.fanout_queue_capacity)
            .field("fanout_max_topics", &self.fanout_max_topics)
            .field("fanout_window_max_bytes", &self.fanout_window_max_bytes)
            .field("fanout_max_total_bytes", &self.fanout_max_total_bytes)
            .field("khala_max_response_bytes", &self.khala_max_response_bytes)
            .field("khala_max_waiters", &self.khala_max_waiters)
            .field("khala_max_streams", &self.khala_max_streams)
            .field(
                "khala_max_streams_per_principal",
                &self.khala_max_streams_per_principal,
            )
            .field("khala_max_stream_lag", &self.khala_max_stream_lag)
            .field("khala_allowed_origins", &self.khala_allowed_origins)
            .field(
                "sync_token_signing_key",
                &redacted(&self.sync_token_signing_key),
            )
            .field("sync_token_issuer", &self.sync_token_issuer)
            .field("sync_token_audience", &self.sync_token_audience)
            .field("sync_revoked_jtis", &self.sync_revoked_jtis)
            .field(
                "sync_token_previous_signing_key",
                &redacted(&self.sync_token_previous_signing_key),
            )
            .field("sync_token_jwks_path", &self.sync_token_jwks_path)
            .field("sync_revoked_jtis_path", &self.sync_revoked_jtis_path)
            .field("credentials_path", &self.credentials_path)
            .field(
                "receipt_signer",
                &self.receipt_signer.as_ref().map(|_| "<redacted>"),
            )
            .field("archive_dir", &self.archive_dir)
            .field("retention_sealed_after", &self.retention_sealed_after)
            .field(
                "retention_heartbeats_after",
                &self.retention_heartbeats_after,
            )
            .field("retention_interval", &self.retention_interval)
            .field("compaction_bytes_per_sec", &self.compaction_bytes_per_sec)
            .field("warnings", &self.warnings)
            .finish()
    }
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup`, so tests need no process
    /// environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Vars { lookup: &lookup };
        let storage_backend = vars.storage_backend()?;
        let fanout_window_max_bytes = vars.bounded(
            "RUNTIME_FANOUT_WINDOW_MAX_BYTES",
            8 << 20,
            64 << 10..=1 << 30,
        )?;
        let fanout_max_total_bytes = vars.bounded(
            "RUNTIME_FANOUT_MAX_TOTAL_BYTES",
            256 << 20,
            1 << 20..=64 << 30,
        )?;
        if fanout_max_total_bytes < fanout_window_max_bytes {
            return Err(ConfigError {
                variable: "RUNTIME_FANOUT_MAX_TOTAL_BYTES",
                value: fanout_max_total_bytes.to_string(),
                expected: "at least RUNTIME_FANOUT_WINDOW_MAX_BYTES".into(),
            });
        }
        let mut warnings = Vec::new();
        if storage_backend == StorageBackend::Jsonl
            && vars.optional("RUNTIME_DATABASE_URL").is_some()
        {
            warnings.push(
                "RUNTIME_DATABASE_URL is set but ignored: RUNTIME_STORAGE_BACKEND is jsonl"
                    .to_owned(),
            );
        }
        let event_log_path: PathBuf = vars
            .text(
                "RUNTIME_EVENT_LOG_PATH",
                ".runtime-data/runtime-events.jsonl",
            )
            .into();
        let max_body_bytes = vars.bounded("RUNTIME_MAX_BODY_BYTES", 1_048_576, 1024..=64 << 20)?;
        let max_body_bytes_in_flight = vars.bounded(
            "RUNTIME_MAX_BODY_BYTES_IN_FLIGHT",
            64 << 20,
            1024..=16 << 30,
        )?;
        if max_body_bytes_in_flight < max_body_bytes {
            return Err(ConfigError {
                variable: "RUNTIME_MAX_BODY_BYTES_IN_FLIGHT",
                value: max_body_bytes_in_flight.to_string(),
                expected: "at least RUNTIME_MAX_BODY_BYTES".into(),
            });
        }
        Ok(Config {
            bind_addr: vars.parsed(
                "RUNTIME_BIND_ADDR",
                "127.0.0.1:4100",
                "a socket address like 127.0.0.1:4100",
            )?,
            service_name: vars.label("RUNTIME_SERVICE_NAME", "runtime")?,
            fanout_driver: vars.fanout_driver(&storage_backend)?,
            storage_backend,
            build_sha: vars.label("RUNTIME_BUILD_SHA", "dev")?,
            event_log_path: event_log_path.clone(),
            event_log_segment_bytes: vars.bounded(
                "RUNTIME_EVENT_LOG_SEGMENT_BYTES",
                openagents_event_log::DEFAULT_SEGMENT_BYTES,
                MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES,
            )?,
            checkpoint_path: vars
                .text(
                    "RUNTIME_CHECKPOINT_PATH",
                    ".runtime-data/projection-state.json",
                )
                .into(),
            authority_write_mode: vars.parsed(
                "RUNTIME_AUTHORITY_WRITE_MODE",
                "rust_active",
                "one of rust_active, shadow_only, read_only",
            )?,
            legacy_write_freeze: vars.boolean("LEGACY_RUNTIME_WRITE_FREEZE", false)?,
            parity_report_path: vars
                .optional("RUNTIME_PARITY_REPORT_PATH")
                .map(PathBuf::from),
            checkpoint_flush_interval: std::time::Duration::from_millis(vars.bounded(
                "RUNTIME_CHECKPOINT_FLUSH_MS",
                5_000,
                10..=3_600_000,
            )?),
            internal_auth_token: vars.secret("RUNTIME_INTERNAL_AUTH_TOKEN")?,
            shutdown_grace: std::time::Duration::from_millis(vars.bounded(
                "RUNTIME_SHUTDOWN_GRACE_MS",
                10_000,
                0..=600_000,
            )?),
            max_body_bytes,
            max_body_bytes_in_flight,
            max_connections: vars.bounded("RUNTIME_MAX_CONNECTIONS", 10_000, 1..=1_000_000)?,
            header_read_timeout: Duration::from_millis(vars.bounded(
                "RUNTIME_HEADER_READ_TIMEOUT_MS",
                10_000,
                100..=600_000,
            )?),
            body_read_timeout: Duration::from_millis(vars.bounded(
                "RUNTIME_BODY_READ_TIMEOUT_MS",
                10_000,
                100..=600_000,
            )?),
            body_min_bytes_per_sec: vars.bounded(
                "RUNTIME_BODY_MIN_BYTES_PER_SEC",
                1024,
                1..=1 << 30,
            )?,
            write_timeout: Duration::from_millis(vars.bounded(
                "RUNTIME_WRITE_TIMEOUT_MS",
                30_000,
                100..=600_000,
            )?),
            worker_heartbeat_stale_after_ms: vars.bounded(
                "RUNTIME_WORKER_HEARTBEAT_STALE_AFTER_MS",
                120_000,
                1..=86_400_000,
            )?,
            fanout_queue_capacity: vars.bounded(
                "RUNTIME_FANOUT_QUEUE_CAPACITY",
                1024,
                1..=1_000_000,
            )?,
            fanout_max_topics: vars.bounded("RUNTIME_FANOUT_MAX_TOPICS", 10_000, 1..=1_000_000)?,
            fanout_window_max_bytes,
            fanout_max_total_bytes,
            khala_max_response_bytes: vars.bounded(
                "RUNTIME_KHALA_MAX_RESPONSE_BYTES",
                4 << 20,
                64 << 10..=256 << 20,
            )?,
            khala_max_waiters: vars.bounded("RUNTIME_KHALA_MAX_WAITERS", 10_000, 1..=1_000_000)?,
            khala_max_streams: vars.bounded("RUNTIME_KHALA_MAX_STREAMS", 10_000, 1..=1_000_000)?,
            khala_max_streams_per_principal: vars.bounded(
                "RUNTIME_KHALA_MAX_STREAMS_PER_PRINCIPAL",
                16,
                1..=100_000,
            )?,
            khala_max_stream_lag: vars.bounded(
                "RUNTIME_KHALA_MAX_STREAM_LAG",
                1000,
                1..=1_000_000,
            )?,
            khala_allowed_origins: comma_list(vars.optional("RUNTIME_KHALA_ALLOWED_ORIGINS")),
            sync_token_signing_key: vars.secret("RUNTIME_SYNC_TOKEN_SIGNING_KEY")?,
            sync_token_issuer: vars
                .not_blank("RUNTIME_SYNC_TOKEN_ISSUER", "https://openagents.com")?,
            sync_token_audience: vars
                .not_blank("RUNTIME_SYNC_TOKEN_AUDIENCE", "openagents-sync")?,
            sync_revoked_jtis: comma_list(vars.optional("RUNTIME_SYNC_REVOKED_JTIS")),
            sync_token_previous_signing_key: vars
                .optional("RUNTIME_SYNC_TOKEN_SIGNING_KEY_PREVIOUS"),
            sync_token_jwks_path: vars
                .optional("RUNTIME_SYNC_TOKEN_JWKS_PATH")
                .map(PathBuf::from),
            sync_revoked_jtis_path: vars
                .optional("RUNTIME_SYNC_REVOKED_JTIS_PATH")
                .map(PathBuf::from),
            credentials_path: vars.credentials_path()?,
            receipt_signer: vars.receipt_signer()?,
            archive_dir: vars.archive_dir(&event_log_path),
            retention_sealed_after: vars.duration("RUNTIME_RETENTION_SEALED_AFTER")?,
            retention_heartbeats_after: vars.duration("RUNTIME_RETENTION_HEARTBEATS_AFTER")?,
            retention_interval: Duration::from_millis(vars.bounded(
                "RUNTIME_RETENTION_INTERVAL_MS",
                60_000,
                100..=86_400_000,
            )?),
            compaction_bytes_per_sec: vars.bounded(
                "RUNTIME_COMPACTION_BYTES_PER_SEC",
                32 << 20,
                64 << 10..=16 << 30,
            )?,
            warnings,
        })
    }

    /// The variable naming where the log is kept, with its value (the
    /// database password redacted), for start-up errors.
    pub fn describe_storage(&self) -> String {
        match &self.storage_backend {
            StorageBackend::Jsonl => {
                format!(
                    "RUNTIME_EVENT_LOG_PATH={:?}",
                    self.event_log_path.display().to_string()
                )
            }
            StorageBackend::Postgres { url } => {
                format!("RUNTIME_DATABASE_URL={:?}", redact_url_password(url))
            }
        }
    }

    /// Checks, on the embedded backend, that the log and checkpoint paths
    /// name files that can be written (not directories, in a directory this
    /// process can create files in), creating missing parent directories as
    /// the service would. Touches no existing file.
    pub fn check_paths(&self) -> Result<(), ConfigError> {
        if self.storage_backend != StorageBackend::Jsonl {
            return Ok(());
        }
        check_writable_file("RUNTIME_EVENT_LOG_PATH", &self.event_log_path)?;
        check_writable_file("RUNTIME_CHECKPOINT_PATH", &self.checkpoint_path)?;
        check_writable_file(
            "RUNTIME_ARCHIVE_DIR",
            &self.archive_dir.join("catalog.jsonl"),
        )
    }

    /// The configuration tests start from: every default, data under `dir`.
    pub fn for_tests(dir: &std::path::Path) -> Self {
        let mut config = Self::from_lookup(|_| None).expect("defaults are valid");
        config.bind_addr = "127.0.0.1:0".parse().expect("valid address");
        config.event_log_path = dir.join("runtime-events.jsonl");
        config.checkpoint_path = dir.join("projection-state.json");
        config.archive_dir = dir.join("archive");
        config
    }
}

/// A comma-separated list, its items trimmed, empty items left out.
fn comma_list(list: Option<String>) -> Vec<String> {
    list.map(|list| {
        list.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect()
    })
    .unwrap_or_default()
}

/// Typed access to the variables, each failure naming its variable.
struct Vars<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl Vars<'_> {
    /// `RUNTIME_STORAGE_BACKEND`, with `RUNTIME_DATABASE_URL` for PostgreSQL.
    fn storage_backend(&self) -> Result<StorageBackend, ConfigError> {
        match self.text("RUNTIME_STORAGE_BACKEND", "jsonl").as_str() {
            "jsonl" => Ok(StorageBackend::Jsonl),
            "postgres" => match self.optional("RUNTIME_DATABASE_URL") {
                Some(url) => Ok(StorageBackend::Postgres { url }),
                None => Err(ConfigError {
                    variable: "RUNTIME_DATABASE_URL",
                    value: String::new(),
                    expected: "a PostgreSQL URL when RUNTIME_STORAGE_BACKEND=postgres".into(),
                }),
            },
            other => Err(ConfigError {
                variable: "RUNTIME_STORAGE_BACKEND",
                value: other.to_owned(),
                expected: "jsonl or postgres".into(),
            }),
        }
    }

    /// `RUNTIME_FANOUT_DRIVER`: each backend has one driver that keeps every
    /// instance's topics in step with its log, and it is the default.
    fn fanout_driver(&self, backend: &StorageBackend) -> Result<FanoutDriverKind, ConfigError> {
        let (driver, expected) = match backend {
            StorageBackend::Jsonl => (
                FanoutDriverKind::Memory,
                "memory (the driver of the embedded log)",
            ),
            StorageBackend::Postgres { .. } => (
                FanoutDriverKind::PostgresNotify,
                "postgres_notify (the driver of the postgres backend)",
            ),
        };
        match self.optional("RUNTIME_FANOUT_DRIVER") {
            None => Ok(driver),
            Some(value) if value == driver.as_str() => Ok(driver),
            Some(value) => Err(ConfigError {
                variable: "RUNTIME_FANOUT_DRIVER",
                value,
                expected: expected.into(),
            }),
        }
    }

    /// `RUNTIME_CREDENTIALS_PATH`, checked now (with
    /// `RUNTIME_INTERNAL_AUTH_TOKEN`) so that a bad file refuses the start.
    fn credentials_path(&self) -> Result<Option<PathBuf>, ConfigError> {
        const VARIABLE: &str = "RUNTIME_CREDENTIALS_PATH";
        let Some(path) = self.optional(VARIABLE) else {
            return Ok(None);
        };
        let internal = self.optional("RUNTIME_INTERNAL_AUTH_TOKEN");
        crate::reload::read(path.as_ref())
            .and_then(|bytes| CredentialSet::build(Some(&bytes), internal.as_deref()))
            .map_err(|reason| ConfigError {
                variable: VARIABLE,
                value: format!("{path} ({reason})"),
                expected: "a readable credentials file (see README)".into(),
            })?;
        Ok(Some(path.into()))
    }

    /// `RUNTIME_RECEIPT_SIGNING_KEY_FILE`: the file holds the secret key as
    /// 64 hex digits (surrounding whitespace ignored).
    fn receipt_signer(&self) -> Result<Option<ReceiptSigner>, ConfigError> {
        const VARIABLE: &str = "RUNTIME_RECEIPT_SIGNING_KEY_FILE";
        let Some(path) = self.optional(VARIABLE) else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(&path).map_err(|_| ConfigError {
            variable: VARIABLE,
            value: path.clone(),
            expected: "a readable file holding a secp256k1 secret key in hex".into(),
        })?;
        match ReceiptSigner::from_hex(&text) {
            Ok(signer) => Ok(Some(signer)),
            Err(_) => Err(ConfigError {
                variable: VARIABLE,
                value: path,
                expected: "a file holding a 32-byte secp256k1 secret key as 64 hex digits \
                           (nonzero, below the curve order)"
                    .into(),
            }),
        }
    }

    /// A secret that may be absent; set, it may not be empty or blank.
    fn secret(&self, name: &'static str) -> Result<Option<String>, ConfigError> {
        match (self.lookup)(name) {
            None => Ok(None),
            Some(value) if value.trim().is_empty() => Err(ConfigError {
                variable: name,
                value: String::new(),
                expected: "a value that is not empty or only whitespace (or leave it unset)".into(),
            }),
            Some(value) => Ok(Some(value)),
        }
    }

    /// Text with a default that, when set, may not be empty or blank.
    fn not_blank(&self, name: &'static str, default: &str) -> Result<String, ConfigError> {
        match (self.lookup)(name) {
            None => Ok(default.to_owned()),
            Some(value) if value.trim().is_empty() => Err(ConfigError {
                variable: name,
                value,
                expected: "a value that is not empty or only whitespace".into(),
            }),
            Some(value) => Ok(value),
        }
    }

    /// A name shown on `/healthz`: printable, at most 256 characters.
    fn label(&self, name: &'static str, default: &str) -> Result<String, ConfigError> {
        let value = self.text(name, default);
        if value.chars().count() > MAX_LABEL_CHARS || value.chars().any(char::is_control) {
            return Err(ConfigError {
                variable: name,
                value: crate::error::clip(&value),
                expected: "at most 256 characters, none of them control characters".into(),
            });
        }
        Ok(value)
    }

    fn optional(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|value| !value.is_empty())
    }

    fn text(&self, name: &str, default: &str) -> String {
        self.optional(name).unwrap_or_else(|| default.to_owned())
    }

    fn parsed<T: FromStr>(
        &self,
        name: &'static str,
        default: &str,
        expected: &'static str,
    ) -> Result<T, ConfigError> {
        let value = self.text(name, default);
        value.parse().map_err(|_| ConfigError {
            variable: name,
            value,
            expected: expected.into(),
        })
    }

    /// `RUNTIME_ARCHIVE_DIR`, by default the folder `archive` beside the
    /// event log, so that each log has its own.
    fn archive_dir(&self, event_log_path: &std::path::Path) -> PathBuf {
        match self.optional("RUNTIME_ARCHIVE_DIR") {
            Some(dir) => dir.into(),
            None => event_log_path
                .parent()
                .unwrap_or(std::path::Path::new(""))
                .join("archive"),
        }
    }

    /// A duration such as `30d`, `12h` or `90s` (humantime's units); unset:
    /// `None`.
    fn duration(&self, name: &'static str) -> Result<Option<Duration>, ConfigError> {
        let Some(value) = self.optional(name) else {
            return Ok(None);
        };
        match humantime::parse_duration(&value) {
            Ok(duration) if !duration.is_zero() => Ok(Some(duration)),
            _ => Err(ConfigError {
                variable: name,
                value,
                expected: "a duration above zero such as 30d, 12h or 90s".into(),
            }),
        }
    }

    fn boolean(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.optional(name).as_deref() {
            None => Ok(default),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(other) => Err(ConfigError {
                variable: name,
                value: other.to_owned(),
                expected: "true or false".into(),
            }),
        }
    }

    fn bounded<T>(
        &self,
        name: &'static str,
        default: T,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + Copy + fmt::Display,
    {
        let Some(value) = self.optional(name) else {
            return Ok(default);
        };
        match value.parse::<T>() {
            Ok(parsed) if range.contains(&parsed) => Ok(parsed),
            _ => Err(ConfigError {
                variable: name,
                value,
                expected: format!("a whole number from {} to {}", range.start(), range.end()),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_match_the_contract() {
        let config = with(&[]).unwrap();
        assert_eq!(config.bind_addr.to_string(), "127.0.0.1:4100");
        assert_eq!(config.authority_write_mode, AuthorityWriteMode::RustActive);
        assert_eq!(config.max_body_bytes, 1_048_576);
        assert_eq!(config.fanout_queue_capacity, 1024);
        assert!(config.sync_token_signing_key.is_none());
    }

    #[test]
    fn retention_durations_parse_and_a_bad_one_names_its_variable() {
        let config = with(&[
            ("RUNTIME_RETENTION_SEALED_AFTER", "30d"),
            ("RUNTIME_RETENTION_HEARTBEATS_AFTER", "90s"),
        ])
        .unwrap();
        assert_eq!(
            config.retention_sealed_after,
            Some(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(
            config.retention_heartbeats_after,
            Some(Duration::from_secs(90))
        );
        assert_eq!(with(&[]).unwrap().retention_sealed_after, None);
        let beside = with(&[("RUNTIME_EVENT_LOG_PATH", "/data/log/events.jsonl")]).unwrap();
        assert_eq!(beside.archive_dir, PathBuf::from("/data/log/archive"));
        for bad in ["30 parsecs", "0s", "-1d", "d30"] {
            let error = with(&[("RUNTIME_RETENTION_SEALED_AFTER", bad)])
                .unwrap_err()
                .to_string();
            assert!(error.contains("RUNTIME_RETENTION_SEALED_AFTER"), "{error}");
        }
    }

    #[test]
    fn a_bad_value_names_the_variable_and_the_value() {
        let error = with(&[("RUNTIME_AUTHORITY_WRITE_MODE", "both")])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("RUNTIME_AUTHORITY_WRITE_MODE") && error.contains("\"both\""),
            "{error}"
        );
        let error = with(&[("LEGACY_RUNTIME_WRITE_FREEZE", "yes")])
            .unwrap_err()
            .to_string();
        assert!(error.contains("LEGACY_RUNTIME_WRITE_FREEZE"), "{error}");
        let error = with(&[("RUNTIME_MAX_BODY_BYTES", "-1")])
            .unwrap_err()
            .to_string();
        assert!(error.contains("RUNTIME_MAX_BODY_BYTES"), "{error}");
        let error = with(&[("RUNTIME_BIND_ADDR", "nowhere")])
            .unwrap_err()
            .to_string();
        assert!(error.contains("RUNTIME_BIND_ADDR"), "{error}");
    }

    #[test]
    fn the_backend_picks_its_fanout_driver() {
        let config = with(&[]).unwrap();
        assert_eq!(config.storage_backend, StorageBackend::Jsonl);
        assert_eq!(config.fanout_driver, FanoutDriverKind::Memory);
        let url = "postgres://root@127.0.0.1/test";
        let config = with(&[
            ("RUNTIME_STORAGE_BACKEND", "postgres"),
            ("RUNTIME_DATABASE_URL", url),
        ])
        .unwrap();
        assert_eq!(
            config.storage_backend,
            StorageBackend::Postgres { url: url.into() }
        );
        assert_eq!(config.fanout_driver, FanoutDriverKind::PostgresNotify);
        let error = with(&[("RUNTIME_STORAGE_BACKEND", "postgres")]).unwrap_err();
        assert!(
            error.to_string().contains("RUNTIME_DATABASE_URL"),
            "{error}"
        );
        let error = with(&[("RUNTIME_FANOUT_DRIVER", "postgres_notify")]).unwrap_err();
        assert!(
            error.to_string().contains("RUNTIME_FANOUT_DRIVER"),
            "{error}"
        );
        let error = with(&[("RUNTIME_STORAGE_BACKEND", "sqlite")]).unwrap_err();
        assert!(error.to_string().contains("jsonl or postgres"), "{error}");
    }

    #[test]
    fn the_receipt_signing_key_is_read_from_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, format!("{}\n", "11".repeat(32))).unwrap();
        let path = key.to_str().unwrap();
        let config = with(&[("RUNTIME_RECEIPT_SIGNING_KEY_FILE", path)]).unwrap();
        assert_eq!(
            config.receipt_signer.unwrap().public_key_hex(),
            ReceiptSigner::from_hex(&"11".repeat(32))
                .unwrap()
                .public_key_hex()
        );
        std::fs::write(&key, "not a key").unwrap();
        let error = with(&[("RUNTIME_RECEIPT_SIGNING_KEY_FILE", path)])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("RUNTIME_RECEIPT_SIGNING_KEY_FILE") && error.contains("64 hex digits"),
            "{error}"
        );
        let missing = dir.path().join("missing");
        let error = with(&[(
            "RUNTIME_RECEIPT_SIGNING_KEY_FILE",
            missing.to_str().unwrap(),
        )])
        .unwrap_err()
        .to_string();
        assert!(error.contains("readable file"), "{error}");
        assert!(with(&[]).unwrap().receipt_signer.is_none());
    }

    #[test]
    fn a_credentials_file_with_a_repeated_name_refuses_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("credentials.json");
        let entry = |token: &str| {
            let hash = openagents_canonical::digest_bytes(token.as_bytes());
            format!(
                r#"{{"name": "ci", "token_sha256": "{}", "scopes": ["admin"]}}"#,
                &hash["sha256:".len()..]
            )
        };
        std::fs::write(&file, format!(r#"{{"credentials": [{}]}}"#, entry("a"))).unwrap();
        let path = file.to_str().unwrap();
        let config = with(&[("RUNTIME_CREDENTIALS_PATH", path)]).unwrap();
        assert_eq!(config.credentials_path.as_deref(), Some(file.as_path()));
        let twice = format!(r#"{{"credentials": [{}, {}]}}"#, entry("a"), entry("b"));
        std::fs::write(&file, twice).unwrap();
        let error = with(&[("RUNTIME_CREDENTIALS_PATH", path)])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("RUNTIME_CREDENTIALS_PATH")
                && error.contains("two credentials are named"),
            "{error}"
        );
    }

    #[test]
    fn khala_byte_budgets_have_defaults_ranges_and_an_order() {
        let config = with(&[]).unwrap();
        assert_eq!(config.fanout_window_max_bytes, 8 << 20);
        assert_eq!(config.fanout_max_total_bytes, 256 << 20);
        assert_eq!(config.khala_max_response_bytes, 4 << 20);
        for (variable, value) in [
            ("RUNTIME_FANOUT_WINDOW_MAX_BYTES", "1000"),
            ("RUNTIME_FANOUT_MAX_TOTAL_BYTES", "0"),
            ("RUNTIME_KHALA_MAX_RESPONSE_BYTES", "268435457"),
        ] {
            let error = with(&[(variable, value)]).unwrap_err().to_string();
            assert!(error.contains(variable), "{error}");
        }
        let error = with(&[
            ("RUNTIME_FANOUT_WINDOW_MAX_BYTES", "4194304"),
            ("RUNTIME_FANOUT_MAX_TOTAL_BYTES", "2097152"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("RUNTIME_FANOUT_MAX_TOTAL_BYTES") && error.contains("at least"),
            "{error}"
        );
    }

    #[test]
    fn debug_output_shows_no_secret() {
        let config = with(&[
            ("RUNTIME_STORAGE_BACKEND", "postgres"),
            (
                "RUNTIME_DATABASE_URL",
                "postgres://user:pa55word@db:5432/x?sslmode=off",
            ),
            ("RUNTIME_SYNC_TOKEN_SIGNING_KEY", "signing-secret"),
            ("RUNTIME_INTERNAL_AUTH_TOKEN", "internal-secret"),
        ])
        .unwrap();
        let debug = format!("{config:?}");
        for secret in ["pa55word", "signing-secret", "internal-secret"] {
            assert!(!debug.contains(secret), "{debug}");
        }
        assert!(
            debug.contains("postgres://user:<redacted>@db:5432/x?sslmode=off"),
            "{debug}"
        );
        assert_eq!(
            redact_url_password("host=db user=u password=p dbname=x"),
            "host=db user=u password=<redacted> dbname=x"
        );
        assert_eq!(redact_url_password("postgres://db/x"), "postgres://db/x");
    }

    #[test]
    fn set_secrets_and_names_may_not_be_blank() {
        for variable in [
            "RUNTIME_INTERNAL_AUTH_TOKEN",
            "RUNTIME_SYNC_TOKEN_SIGNING_KEY",
            "RUNTIME_SYNC_TOKEN_ISSUER",
            "RUNTIME_SYNC_TOKEN_AUDIENCE",
        ] {
            for blank in ["", " ", "\t\n"] {
                let error = with(&[(variable, blank)]).unwrap_err().to_string();
                assert!(error.contains(variable), "{error}");
            }
        }
        assert!(with(&[]).unwrap().internal_auth_token.is_none());
    }

    #[test]
    fn labels_are_short_and_printable() {
        for variable in ["RUNTIME_SERVICE_NAME", "RUNTIME_BUILD_SHA"] {
            assert!(with(&[(variable, &"x".repeat(256))]).is_ok());
            for bad in ["x".repeat(257), "a\u{1b}[31m".into(), "a\nb".into()] {
                let error = with(&[(variable, &bad)]).unwrap_err().to_string();
                assert!(error.contains(variable) && error.len() < 300, "{error}");
            }
        }
    }

    #[test]
    fn the_body_budget_holds_at_least_one_body() {
        let error = with(&[
            ("RUNTIME_MAX_BODY_BYTES", "65536"),
            ("RUNTIME_MAX_BODY_BYTES_IN_FLIGHT", "65535"),
        ])
        .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("RUNTIME_MAX_BODY_BYTES_IN_FLIGHT")
        );
        let error = with(&[("RUNTIME_HEADER_READ_TIMEOUT_MS", "50")]).unwrap_err();
        assert!(error.to_string().contains("from 100 to 600000"), "{error}");
    }

    #[test]
    fn a_database_url_on_the_embedded_log_is_a_warning() {
        let config = with(&[("RUNTIME_DATABASE_URL", "postgres://db/x")]).unwrap();
        assert_eq!(config.warnings.len(), 1);
        assert!(config.warnings[0].contains("RUNTIME_DATABASE_URL"));
    }

    #[test]
    fn paths_that_cannot_be_written_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::for_tests(dir.path());
        config.check_paths().unwrap();
        config.checkpoint_path = dir.path().to_owned();
        assert!(
            config
                .check_paths()
                .unwrap_err()
                .to_string()
                .contains("RUNTIME_CHECKPOINT_PATH")
        );
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        config.checkpoint_path = dir.path().join("p.json");
        config.event_log_path = file.join("events.jsonl");
        assert!(
            config
                .check_paths()
                .unwrap_err()
                .to_string()
                .contains("RUNTIME_EVENT_LOG_PATH")
        );
        config.event_log_path = dir.path().join("events.jsonl");
        config.archive_dir = file.join("archive");
        assert!(
            config
                .check_paths()
                .unwrap_err()
                .to_string()
                .contains("RUNTIME_ARCHIVE_DIR")
        );
        let mut leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        leftovers.sort();
        assert_eq!(
            leftovers,
            ["archive", "file"],
            "the probe files are removed"
        );
    }

    #[test]
    fn revoked_jtis_are_a_trimmed_comma_list() {
        let config = with(&[("RUNTIME_SYNC_REVOKED_JTIS", " a, b ,,c")]).unwrap();
        assert_eq!(config.sync_revoked_jtis, vec!["a", "b", "c"]);
    }
}
