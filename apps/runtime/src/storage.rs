//! The configured storage backend (`RUNTIME_STORAGE_BACKEND`): where the
//! event log and its index snapshot (which carries the projections) are
//! kept, and moving an embedded log into PostgreSQL.
//!
//! Everything above this module is the same on both backends: the log's
//! writer, decisions, index and observers come from `openagents-event-log`,
//! whichever medium is under them.

use crate::config::{Config, StorageBackend};
use crate::core::StartError;
use openagents_authority::Stream;
use openagents_event_log::{EventLog, LogOptions, OpenReport, OwnedRecord, RecordPos, RecordRef};
use openagents_event_log_postgres::PgOptions;
use std::io::BufRead;
use std::path::Path;

/// Reader threads (and at most as many connections) per instance.
const DATABASE_READERS: usize = 4;

/// Opens the configured log and recovers its index.
pub fn open_log(
    config: &Config,
    options: LogOptions<Stream>,
) -> Result<(EventLog<Stream>, OpenReport), StartError> {
    match &config.storage_backend {
        StorageBackend::Jsonl => {
            let options = LogOptions {
                snapshot_path: Some(config.checkpoint_path.clone()),
                archive_dir: Some(config.archive_dir.clone()),
                ..options
            };
            Ok(EventLog::open(&config.event_log_path, options)?)
        }
        StorageBackend::Postgres { url } => {
            let pg = PgOptions {
                url: url.clone(),
                readers: DATABASE_READERS,
            };
            Ok(openagents_event_log_postgres::open(&pg, options)?)
        }
    }
}

/// Why an embedded log could not be moved into PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The service is not configured for PostgreSQL.
    #[error("import-log needs RUNTIME_STORAGE_BACKEND=postgres and RUNTIME_DATABASE_URL")]
    NotPostgres,
    /// The file is not a valid log (or another process holds it).
    #[error(transparent)]
    Open(#[from] openagents_event_log::OpenError),
    /// The database refused the import.
    #[error(transparent)]
    Database(#[from] openagents_event_log_postgres::PgError),
}

/// Copies the embedded log at `file` into the configured database, whose
/// log must be empty; returns the number of records copied. The file is
/// opened as the service would open it first, so a damaged log is refused
/// before anything reaches the database.
pub fn import_log(config: &Config, file: &Path) -> Result<u64, ImportError> {
    let StorageBackend::Postgres { url } = &config.storage_backend else {
        return Err(ImportError::NotPostgres);
    };
    let (log, _) = EventLog::<Stream>::open(file, LogOptions::default())?;
    let lines = std::fs::File::open(file).map(std::io::BufReader::new);
    let records = match lines {
        Ok(lines) => file_records(lines),
        Err(error) => Box::new(std::iter::once(Err(error))),
    };
    let copied = openagents_event_log_postgres::import(url, records)?;
    drop(log);
    Ok(copied)
}

/// The records of a log file's lines, in file (lsn) order.
fn file_records(
    lines: impl BufRead + Send + 'static,
) -> Box<dyn Iterator<Item = std::io::Result<OwnedRecord>> + Send> {
    Box::new(lines.split(b'\n').map(|line| {
        let line = line?;
        let record = RecordRef::decode(&line)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        Ok(OwnedRecord::from_ref(
            &record,
            RecordPos { offset: 0, len: 0 },
        ))
    }))
}
