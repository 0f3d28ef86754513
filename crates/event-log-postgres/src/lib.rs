//! PostgreSQL as the medium of the runtime's event log, so that several
//! service instances can share one log.
//!
//! The writer, its decisions and the in-memory index are those of
//! `openagents-event-log`; this crate supplies the medium (see its `storage`
//! seam):
//!
//! - `schema`: the tables, applied at start by embedded, versioned
//!   migrations;
//! - `sink`: the writer's connection. Before deciding a batch it locks the
//!   single `log_head` row, so batches from every instance are decided and
//!   committed one at a time in lsn order, and it folds in whatever other
//!   instances committed since its last batch. The batch is inserted and the
//!   head advanced in one transaction;
//! - `source`: reader threads that read records back by stream and seq;
//! - `listen`: a `LISTEN` connection that wakes the writer to take in other
//!   instances' appends within milliseconds;
//! - `checkpoint`: the shared projection checkpoint row;
//! - `import`: copying an embedded log into an empty database.
//!
//! The table constraints hold the log's rules on their own: a stream's seqs
//! and the log's lsns are unique and contiguous from 1, idempotency keys are
//! unique per stream and creation keys log-wide.

mod checkpoint;
mod connect;
mod import;
mod listen;
mod rows;
mod schema;
mod sink;
mod source;

pub use checkpoint::CheckpointTable;
pub use connect::Connector;
pub use import::import;

use openagents_event_log::{EventLog, Index, LogOptions, OpenReport, Storage, StreamState};
use std::sync::Arc;
use std::time::SystemTime;

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// A `postgres://` URL or a `key=value` connection string.
    pub url: String,
    /// Reader threads (each holds one connection once it has read).
    pub readers: usize,
}

/// Why the PostgreSQL log could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    /// The URL does not parse.
    #[error("RUNTIME_DATABASE_URL is not a valid PostgreSQL connection string: {0}")]
    Config(String),
    /// The database did not answer.
    #[error("cannot reach PostgreSQL at {location}: {reason}")]
    Unreachable {
        /// The database, without credentials.
        location: String,
        /// What the driver said.
        reason: String,
    },
    /// A statement failed while setting up or reading the log.
    #[error("PostgreSQL at {location}: {reason}")]
    Database {
        /// The database, without credentials.
        location: String,
        /// What failed.
        reason: String,
    },
    /// The stored records break the log's rules.
    #[error("PostgreSQL at {location}: record at lsn {lsn}: {reason}")]
    Corrupt {
        /// The database, without credentials.
        location: String,
        /// The offending record.
        lsn: u64,
        /// Which rule broke.
        reason: openagents_event_log::IndexError,
    },
    /// A record to import could not be read.
    #[error("reading the log to import: {0}")]
    ImportSource(#[source] std::io::Error),
    /// The writer thread could not be started.
    #[error("starting the event log writer: {0}")]
    Start(#[from] std::io::Error),
}

/// Connects, applies pending migrations, loads the index from the `events`
/// table, and starts the writer, the readers and the listener.
pub fn open<S: StreamState>(
    options: &PgOptions,
    log_options: LogOptions<S>,
) -> Result<(EventLog<S>, OpenReport), PgError> {
    let connector = Connector::new(&options.url)?;
    let (sink, index, last_at) = connect::off_runtime(|| {
        let mut client = connector.connect_at_start()?;
        schema::migrate(&mut client, &connector)?;
        let (index, last_at) = load_index::<S>(&mut client, &connector)?;
        Ok::<_, PgError>((sink::PgSink::new(connector.clone(), client), index, last_at))
    })?;
    let report = OpenReport {
        records: index.record_count(),
        streams: index.streams().count(),
        truncated_bytes: 0,
        snapshot: None,
        replayed: index.record_count(),
        segments: 0,
    };
    let storage = Storage {
        index,
        sink: Box::new(sink),
        source: Arc::new(source::PgSource::start(connector.clone(), options.readers)?),
        last_at,
        location: connector.location().to_owned(),
        snapshots: None,
    };
    let log = EventLog::start(storage, log_options)?;
    listen::spawn(connector, log.refresher())?;
    Ok((log, report))
}

/// Streams every record in lsn order into a new index.
fn load_index<S: StreamState>(
    client: &mut postgres::Client,
    connector: &Connector,
) -> Result<(Index<S>, SystemTime), PgError> {
    let mut index = Index::default();
    // The database locates every record by stream and seq: the index keeps
    // no positions (see `PgSource::archive_floor`).
    index.archive_below(u64::MAX);
    let mut last_at = SystemTime::UNIX_EPOCH;
    let mut after = 0;
    loop {
        let records = rows::after_lsn(client, after, rows::PULL_PAGE)
            .map_err(|reason| connector.database_error(reason))?;
        let Some(last) = records.last() else { break };
        after = last.lsn;
        for record in &records {
            index
                .recover(&record.as_ref(), record.pos)
                .map_err(|reason| PgError::Corrupt {
                    location: connector.location().to_owned(),
                    lsn: record.lsn,
                    reason,
                })?;
        }
        if let Some(at) = records.last().and_then(|r| rows::parse_time(&r.at)) {
            last_at = last_at.max(at);
        }
    }
    Ok((index, last_at))
}
