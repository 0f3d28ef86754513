//! Moving an embedded log into PostgreSQL: every record, with its lsn, seq,
//! time and keys unchanged, in one transaction, into a database whose log is
//! empty. Either the whole log arrives or nothing does.

use crate::connect::{Connector, error_text, off_runtime};
use crate::rows::{APPEND_SQL, Columns};
use crate::{PgError, schema};
use openagents_event_log::OwnedRecord;
use std::time::{Duration, Instant};

/// Records inserted per statement.
const IMPORT_CHUNK: usize = 1_000;
/// Longest time between two progress lines of a long import.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Copies `records` (in lsn order, from 1) into the empty log of the
/// database at `url`; returns how many were copied. A record that could not
/// be read (`Err`) abandons the import with nothing written.
pub fn import(
    url: &str,
    records: impl IntoIterator<Item = std::io::Result<OwnedRecord>> + Send,
) -> Result<u64, PgError> {
    let connector = Connector::new(url)?;
    off_runtime(|| copy(&connector, records))
}

fn copy(
    connector: &Connector,
    records: impl IntoIterator<Item = std::io::Result<OwnedRecord>>,
) -> Result<u64, PgError> {
    let mut client = connector.connect_at_start()?;
    schema::migrate(&mut client, connector)?;
    let failed = |error: postgres::Error| connector.database_error(error_text(&error));
    let mut txn = client.transaction().map_err(failed)?;
    let head: i64 = txn
        .query_one("SELECT lsn FROM log_head WHERE id = 1 FOR UPDATE", &[])
        .map_err(failed)?
        .get(0);
    if head != 0 {
        return Err(connector.database_error(format!(
            "the database already holds a log (head lsn {head}); import needs an empty one"
        )));
    }
    let append = txn.prepare(APPEND_SQL).map_err(failed)?;
    let mut chunk = Vec::with_capacity(IMPORT_CHUNK);
    let mut copied = 0u64;
    let mut reported = Instant::now();
    let mut records = records.into_iter().peekable();
    while records.peek().is_some() {
        chunk.clear();
        for record in records.by_ref().take(IMPORT_CHUNK) {
            chunk.push(record.map_err(PgError::ImportSource)?);
        }
        let from = copied;
        copied += chunk.len() as u64;
        let columns = Columns::of(&chunk, from);
        let moved = txn.execute(&append, &columns.params()).map_err(failed)?;
        if moved != 1 {
            return Err(connector.database_error(format!(
                "records after lsn {from} are not numbered from {}",
                from + 1
            )));
        }
        if reported.elapsed() >= PROGRESS_EVERY {
            reported = Instant::now();
            tracing::info!(copied, "importing the log");
        }
    }
    tracing::info!(copied, "committing the import");
    txn.commit().map_err(failed)?;
    Ok(copied)
}
