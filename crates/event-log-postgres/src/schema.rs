//! The schema, as embedded, numbered migrations applied at start.
//!
//! Each migration runs once, in order, inside one transaction together with
//! the row that records it; an advisory lock makes instances that start at
//! the same moment take turns, so applying is idempotent however many
//! instances start.

use crate::PgError;
use crate::connect::{Connector, error_text};
use postgres::Client;

/// Every migration, in order; the position is the version.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_event_log.sql"),
    include_str!("../migrations/0002_written_by.sql"),
    include_str!("../migrations/0003_archived_streams.sql"),
];

/// Arbitrary key of the advisory lock that serializes migrations.
const MIGRATION_LOCK: i64 = 0x6f61_5f6d_6967;

/// Applies the migrations the database has not seen yet.
pub(crate) fn migrate(client: &mut Client, connector: &Connector) -> Result<(), PgError> {
    let failed = |error: postgres::Error| connector.database_error(error_text(&error));
    ensure_schema_selected(client, connector)?;
    let mut txn = client.transaction().map_err(failed)?;
    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(failed)?;
    txn.batch_execute(
        "CREATE TABLE IF NOT EXISTS openagents_schema_version (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .map_err(failed)?;
    let applied: i32 = txn
        .query_one(
            "SELECT coalesce(max(version), 0) FROM openagents_schema_version",
            &[],
        )
        .map_err(failed)?
        .get(0);
    for (version, sql) in (1..).zip(MIGRATIONS).skip(applied as usize) {
        txn.batch_execute(sql).map_err(failed)?;
        txn.execute(
            "INSERT INTO openagents_schema_version (version) VALUES ($1)",
            &[&version],
        )
        .map_err(failed)?;
        tracing::info!(version, "applied database migration");
    }
    txn.commit().map_err(failed)
}

/// Refuses, saying what to do, a connection whose `search_path` names no
/// schema that exists: PostgreSQL itself would only say `3F000: no schema
/// has been selected to create in` at the first `CREATE TABLE`.
fn ensure_schema_selected(client: &mut Client, connector: &Connector) -> Result<(), PgError> {
    let failed = |error: postgres::Error| connector.database_error(error_text(&error));
    let row = client
        .query_one(
            "SELECT current_schema(), current_setting('search_path')",
            &[],
        )
        .map_err(failed)?;
    let (current, search_path): (Option<String>, String) = (row.get(0), row.get(1));
    if current.is_some() {
        return Ok(());
    }
    Err(connector.database_error(format!(
        "no schema on the search_path ({search_path}) exists: create it first \
         (CREATE SCHEMA <name>), or name an existing schema in RUNTIME_DATABASE_URL \
         with ?options=-csearch_path%3D<schema>"
    )))
}
