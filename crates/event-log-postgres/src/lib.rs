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
//! - `snapshot`: the shared index snapshot row (the index and the
//!   projections), which a start loads before it reads the rows after it;
//! - `cold`: the cold store, the `archived_streams` table: a stream's
//!   history moved out of the hot log, whose `events` rows are deleted with
//!   the move;
//! - `import`: copying an embedded log into an empty database.
//!
//! The table constraints hold the log's rules on their own: a stream's seqs
//! and the log's lsns are unique and contiguous from 1 (but where a cold
//! history deleted rows), idempotency keys are unique per stream and
//! creation keys log-wide.

mod cold;
mod connect;
mod import;
mod listen;
mod rows;
mod schema;
mod sink;
mod snapshot;
mod source;

pub use connect::Connector;
pub use import::import;

use openagents_event_log::{
    ColdStore, CommitObserver, EventLog, Index, LogOptions, OpenReport, RecordRef, SnapshotWritten,
    Storage, StreamState, apply_catalog,
};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How often a long start says how far it got.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

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

/// Connects, applies pending migrations, loads the index from the shared
/// snapshot, the archive table's catalog and the `events` rows after the
/// snapshot (or from every row), and starts the writer, the readers and the
/// listener. The observer sees the snapshot's extension, the cold records
/// of histories the snapshot did not have, and every row read, as on the
/// file medium.
pub fn open<S: StreamState>(
    options: &PgOptions,
    log_options: LogOptions<S>,
) -> Result<(EventLog<S>, OpenReport), PgError> {
    let connector = Connector::new(&options.url)?;
    let observer = log_options.observer.clone();
    // The readers connect at their first read, which comes after the
    // migrations below (the catalog is read through them).
    let source = Arc::new(source::PgSource::start(connector.clone(), options.readers)?);
    let cold = Arc::new(cold::PgColdStore::new(
        connector.clone(),
        Arc::clone(&source),
    ));
    let (sink, loaded) = connect::off_runtime(|| {
        let mut client = connector.connect_at_start()?;
        schema::migrate(&mut client, &connector)?;
        let loaded = load_index::<S>(&mut client, &connector, &cold, observer.as_deref())?;
        Ok::<_, PgError>((sink::PgSink::new(connector.clone(), client), loaded))
    })?;
    let report = OpenReport {
        records: loaded.index.record_count(),
        streams: loaded.index.streams().count(),
        truncated_bytes: 0,
        snapshot: loaded.snapshot,
        replayed: loaded.replayed,
        segments: 0,
    };
    let storage = Storage {
        index: loaded.index,
        sink: Box::new(sink),
        source,
        last_at: loaded.last_at,
        location: connector.location().to_owned(),
        snapshots: Some(Arc::new(snapshot::SnapshotTable::new(connector.clone()))),
        cold: Some(cold as Arc<dyn ColdStore>),
    };
    let log = EventLog::start(storage, log_options)?;
    listen::spawn(connector, log.refresher())?;
    Ok((log, report))
}

/// The index a start built, and from what.
struct Loaded<S> {
    index: Index<S>,
    last_at: SystemTime,
    replayed: u64,
    snapshot: Option<SnapshotWritten>,
}

/// Starts from the shared snapshot when it is usable, applies the archive
/// table's catalog, then streams every later record in lsn order into the
/// index and to the observer.
fn load_index<S: StreamState>(
    client: &mut postgres::Client,
    connector: &Connector,
    cold: &Arc<cold::PgColdStore>,
    observer: Option<&dyn CommitObserver<S>>,
) -> Result<Loaded<S>, PgError> {
    let restored = snapshot::restore::<S>(client);
    let written = restored.as_ref().map(|restored| restored.written);
    let (mut index, extension, mut last_at) = match restored {
        Some(restored) => (
            restored.snapshot.index,
            restored.snapshot.extension,
            restored.last_at.unwrap_or(SystemTime::UNIX_EPOCH),
        ),
        None => (Index::default(), None, SystemTime::UNIX_EPOCH),
    };
    // The database locates every record by stream and seq: the index keeps
    // no positions (see `PgSource::archive_floor`).
    index.archive_below(u64::MAX);
    if let Some(observer) = observer {
        observer.restoring(extension.as_deref());
    }
    let failed = |reason: String| connector.database_error(reason);
    // The catalog and the rows are read in one snapshot: a history another
    // instance moves cold meanwhile is either in both (its rows deleted,
    // its row there) or in neither.
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .map_err(|e| failed(connect::error_text(&e)))?;
    let entries = cold::entries(client, None).map_err(failed)?;
    if let Some(at) = cold::newest_time(client)
        .map_err(failed)?
        .and_then(|at| rows::parse_time(&at))
    {
        last_at = last_at.max(at);
    }
    cold.remember(&entries);
    let at_start = cold::AtStart {
        entries,
        store: Arc::clone(cold),
    };
    let mut replayed = |record: &RecordRef<'_>| {
        if let Some(observer) = observer {
            observer.replayed(record);
        }
    };
    let replay: Option<&mut dyn FnMut(&RecordRef<'_>)> = match observer {
        Some(_) => Some(&mut replayed),
        None => None,
    };
    // The cold records it replays come through the readers, outside this
    // snapshot: an archive only ever grows its base, so they still hold
    // every record up to the base read here (unless a later move erased
    // some, which only the observer's derived state would miss).
    apply_catalog(&mut index, &at_start, replay).map_err(|error| failed(error.to_string()))?;
    let before = index.record_count();
    let mut after = index.last_lsn();
    let (started, mut reported) = (Instant::now(), Instant::now());
    loop {
        if reported.elapsed() >= PROGRESS_EVERY {
            reported = Instant::now();
            tracing::info!(
                records = index.record_count() - before,
                lsn = after,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "loading the event log from PostgreSQL"
            );
        }
        let records = rows::after_lsn(client, after, rows::PULL_PAGE)
            .map_err(|reason| connector.database_error(reason))?;
        let Some(last) = records.last() else { break };
        after = last.lsn;
        for record in &records {
            // A batch's rows commit together, numbered from the head (see
            // `rows::APPEND_SQL`), so a scan never sees a later row without
            // the earlier ones: a gap in the lsns can only be rows a cold
            // history deleted (`cold::PgColdStore::put`).
            if record.lsn > index.last_lsn() + 1 {
                index.skip_dead_to(record.lsn - 1);
            }
            index
                .recover(&record.as_ref(), record.pos)
                .map_err(|reason| PgError::Corrupt {
                    location: connector.location().to_owned(),
                    lsn: record.lsn,
                    reason,
                })?;
            if let Some(observer) = observer {
                observer.replayed(&record.as_ref());
            }
        }
        if let Some(at) = records.last().and_then(|r| rows::parse_time(&r.at)) {
            last_at = last_at.max(at);
        }
    }
    // The newest rows may all have gone cold: the head, read in the same
    // snapshot, is where the next append goes.
    let head: i64 = client
        .query_one("SELECT lsn FROM log_head WHERE id = 1", &[])
        .map_err(|e| failed(connect::error_text(&e)))?
        .get(0);
    index.skip_dead_to(u64::try_from(head).unwrap_or(0));
    client
        .batch_execute("COMMIT")
        .map_err(|e| failed(connect::error_text(&e)))?;
    Ok(Loaded {
        replayed: index.record_count() - before,
        index,
        last_at,
        snapshot: written,
    })
}
