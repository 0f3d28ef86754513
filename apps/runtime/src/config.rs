//! Service configuration: every `RUNTIME_*` variable, read once at start.
//!
//! A bad value refuses to start with one line naming the variable and the
//! value. Defaults make `cargo run -p openagents-runtime-service` work on a
//! fresh machine with data under `.runtime-data/`.

use crate::credentials::CredentialSet;
use openagents_artifacts::ReceiptSigner;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

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
#[derive(Debug, Clone, PartialEq, Eq)]
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
    expected: &'static str,
}

/// Everything the service reads from its environment.
#[derive(Debug, Clone)]
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
    /// The projection checkpoint file.
    pub checkpoint_path: PathBuf,
    /// Cutover control for this service's writes.
    pub authority_write_mode: AuthorityWriteMode,
    /// Whether the legacy runtime's writes are frozen (reported only).
    pub legacy_write_freeze: bool,
    /// Where the shadow harness records the last parity report (`--record`).
    pub parity_report_path: Option<PathBuf>,
    /// How often changed projections are written to the checkpoint file.
    pub checkpoint_flush_interval: std::time::Duration,
    /// Bearer token every `/internal/v1/*` route except Khala's requires.
    pub internal_auth_token: Option<String>,
    /// How long in-flight requests may take to finish at shutdown.
    pub shutdown_grace: std::time::Duration,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
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
                expected: "at least RUNTIME_FANOUT_WINDOW_MAX_BYTES",
            });
        }
        Ok(Config {
            bind_addr: vars.parsed(
                "RUNTIME_BIND_ADDR",
                "127.0.0.1:4100",
                "a socket address like 127.0.0.1:4100",
            )?,
            service_name: vars.text("RUNTIME_SERVICE_NAME", "runtime"),
            fanout_driver: vars.fanout_driver(&storage_backend)?,
            storage_backend,
            build_sha: vars.text("RUNTIME_BUILD_SHA", "dev"),
            event_log_path: vars
                .text(
                    "RUNTIME_EVENT_LOG_PATH",
                    ".runtime-data/runtime-events.jsonl",
                )
                .into(),
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
            internal_auth_token: vars.optional("RUNTIME_INTERNAL_AUTH_TOKEN"),
            shutdown_grace: std::time::Duration::from_millis(vars.bounded(
                "RUNTIME_SHUTDOWN_GRACE_MS",
                10_000,
                0..=600_000,
            )?),
            max_body_bytes: vars.bounded("RUNTIME_MAX_BODY_BYTES", 1_048_576, 1024..=64 << 20)?,
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
            sync_token_signing_key: vars.optional("RUNTIME_SYNC_TOKEN_SIGNING_KEY"),
            sync_token_issuer: vars.text("RUNTIME_SYNC_TOKEN_ISSUER", "https://openagents.com"),
            sync_token_audience: vars.text("RUNTIME_SYNC_TOKEN_AUDIENCE", "openagents-sync"),
            sync_revoked_jtis: vars
                .optional("RUNTIME_SYNC_REVOKED_JTIS")
                .map(|list| {
                    list.split(',')
                        .map(str::trim)
                        .filter(|jti| !jti.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
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
        })
    }

    /// The configuration tests start from: every default, data under `dir`.
    pub fn for_tests(dir: &std::path::Path) -> Self {
        let mut config = Self::from_lookup(|_| None).expect("defaults are valid");
        config.bind_addr = "127.0.0.1:0".parse().expect("valid address");
        config.event_log_path = dir.join("runtime-events.jsonl");
        config.checkpoint_path = dir.join("projection-state.json");
        config
    }
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
                    expected: "a PostgreSQL URL when RUNTIME_STORAGE_BACKEND=postgres",
                }),
            },
            other => Err(ConfigError {
                variable: "RUNTIME_STORAGE_BACKEND",
                value: other.to_owned(),
                expected: "jsonl or postgres",
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
                expected,
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
                expected: "a readable credentials file (see README)",
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
            expected: "a readable file holding a secp256k1 secret key in hex",
        })?;
        match ReceiptSigner::from_hex(&text) {
            Ok(signer) => Ok(Some(signer)),
            Err(_) => Err(ConfigError {
                variable: VARIABLE,
                value: path,
                expected: "a file holding a 32-byte secp256k1 secret key as 64 hex digits \
                           (nonzero, below the curve order)",
            }),
        }
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
            expected,
        })
    }

    fn boolean(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.optional(name).as_deref() {
            None => Ok(default),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(other) => Err(ConfigError {
                variable: name,
                value: other.to_owned(),
                expected: "true or false",
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
        T: FromStr + PartialOrd + Copy,
    {
        let Some(value) = self.optional(name) else {
            return Ok(default);
        };
        match value.parse::<T>() {
            Ok(parsed) if range.contains(&parsed) => Ok(parsed),
            _ => Err(ConfigError {
                variable: name,
                value,
                expected: "a whole number in the allowed range (see README)",
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
    fn revoked_jtis_are_a_trimmed_comma_list() {
        let config = with(&[("RUNTIME_SYNC_REVOKED_JTIS", " a, b ,,c")]).unwrap();
        assert_eq!(config.sync_revoked_jtis, vec!["a", "b", "c"]);
    }
}
