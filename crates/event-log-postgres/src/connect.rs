//! Connection settings and the one way this crate opens a connection.

use crate::PgError;
use postgres::{Client, Config, NoTls};
use std::str::FromStr;
use std::time::Duration;

/// How long a connection attempt may take before the database counts as
/// unreachable, unless the URL sets `connect_timeout`.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long sent data (a statement, a `COMMIT`) may go unacknowledged before
/// the connection counts as dead, unless the URL sets `tcp_user_timeout`:
/// without it, a database host that vanished holds a write for minutes.
const DEFAULT_TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

/// Opens connections to one database.
#[derive(Clone)]
pub struct Connector {
    config: Config,
    location: String,
}

impl Connector {
    /// Parses `url` (a `postgres://` URL or `key=value` pairs).
    pub fn new(url: &str) -> Result<Self, PgError> {
        let mut config = Config::from_str(url).map_err(|e| PgError::Config(e.to_string()))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(DEFAULT_TCP_USER_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("openagents-runtime-service");
        }
        let location = describe(&config);
        Ok(Connector { config, location })
    }

    /// The database as `host:port/dbname`, without credentials.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// A new connection.
    pub fn connect(&self) -> Result<Client, postgres::Error> {
        self.config.connect(NoTls)
    }

    /// A new connection, or the start-up error that names the database.
    pub fn connect_at_start(&self) -> Result<Client, PgError> {
        self.connect().map_err(|error| PgError::Unreachable {
            location: self.location.clone(),
            reason: error_text(&error),
        })
    }

    /// A failed statement during start-up, naming the database.
    pub(crate) fn database_error(&self, reason: String) -> PgError {
        PgError::Database {
            location: self.location.clone(),
            reason,
        }
    }
}

/// Runs `work` on a thread of its own and waits for it. The synchronous
/// client drives each connection with a small runtime of its own, which may
/// not be started (or dropped) on a thread of an async runtime; start-up,
/// import and checkpoint writes are rare enough to pay for a thread, and
/// then work from any caller.
pub(crate) fn off_runtime<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| match scope.spawn(work).join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// The driver's error with its cause: `postgres::Error`'s own message is
/// often just "error connecting to server".
pub(crate) fn error_text(error: &postgres::Error) -> String {
    use std::error::Error as _;
    match (error.as_db_error(), error.source()) {
        (Some(db), _) => format!("{}: {}", db.code().code(), db.message()),
        (None, Some(cause)) => format!("{error}: {cause}"),
        (None, None) => error.to_string(),
    }
}

fn describe(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(host)) => host.clone(),
        Some(postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let dbname = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{host}:{port}/{dbname}")
}
