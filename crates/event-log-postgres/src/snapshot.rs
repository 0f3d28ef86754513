//! The shared index snapshot: one row (`projection_checkpoint`, the table's
//! name from when it held the projections alone) holding the newest
//! snapshot any instance wrote: the index and the projections at one log
//! position. Every instance folds the same log, so any instance's snapshot
//! serves all of them, and an older one never replaces a newer one.
//!
//! A start loads it, checks that the events table holds its last record as
//! the snapshot's index says (or that the record went cold with its
//! stream's history), and reads only the rows after it; a snapshot that
//! fails a check is ignored with a warning and the whole table is read.
//! It is written every few seconds, so each write opens a connection of its
//! own rather than keeping one.

use crate::connect::{Connector, error_text, off_runtime};
use crate::rows::{parse_time, to_i64};
use openagents_event_log::{
    Snapshot, SnapshotStore, SnapshotWritten, StreamState, decode_snapshot,
};
use postgres::Client;
use std::time::SystemTime;

/// The snapshot row.
pub(crate) struct SnapshotTable {
    connector: Connector,
}

/// A snapshot that passed its checks, with the time of its last record.
pub(crate) struct Restored<S> {
    pub(crate) snapshot: Snapshot<S>,
    pub(crate) written: SnapshotWritten,
    pub(crate) last_at: Option<SystemTime>,
}

impl SnapshotTable {
    pub(crate) fn new(connector: Connector) -> Self {
        SnapshotTable { connector }
    }
}

impl SnapshotStore for SnapshotTable {
    fn save(&self, lsn: u64, bytes: &[u8]) -> Result<(), String> {
        off_runtime(|| {
            let mut client = self.connector.connect()?;
            client.execute(
                "INSERT INTO projection_checkpoint (id, applied_lsn, snapshot) VALUES (1, $1, $2)
                 ON CONFLICT (id) DO UPDATE
                 SET applied_lsn = EXCLUDED.applied_lsn, snapshot = EXCLUDED.snapshot,
                     written_at = now()
                 WHERE projection_checkpoint.applied_lsn <= EXCLUDED.applied_lsn",
                &[&to_i64(lsn), &bytes],
            )?;
            Ok(())
        })
        .map_err(|error: postgres::Error| {
            format!(
                "PostgreSQL at {}: {}",
                self.connector.location(),
                error_text(&error)
            )
        })
    }

    fn describe(&self) -> String {
        "the projection_checkpoint table".into()
    }
}

/// The stored snapshot when it is usable for the log in the database;
/// otherwise `None`, with a warning saying why the start reads every row.
pub(crate) fn restore<S: StreamState>(client: &mut Client) -> Option<Restored<S>> {
    match try_restore(client) {
        Ok(restored) => restored,
        Err(reason) => {
            tracing::warn!(%reason, "ignoring the index snapshot; reading the whole events table");
            None
        }
    }
}

fn try_restore<S: StreamState>(client: &mut Client) -> Result<Option<Restored<S>>, String> {
    let row = client
        .query_opt(
            "SELECT snapshot, written_at FROM projection_checkpoint WHERE id = 1",
            &[],
        )
        .map_err(|e| error_text(&e))?;
    let Some(row) = row else {
        return Ok(None);
    };
    let bytes: Vec<u8> = row.get(0);
    let written_at: SystemTime = row.get(1);
    let snapshot = decode_snapshot::<S>(&bytes).map_err(|e| e.to_string())?;
    let lsn = snapshot.index.last_lsn();
    let last_at = last_record_time(client, &snapshot, lsn)?;
    Ok(Some(Restored {
        written: SnapshotWritten {
            lsn,
            bytes: bytes.len() as u64,
            at: written_at,
        },
        snapshot,
        last_at,
    }))
}

/// Checks that the events table holds the snapshot's last record as the
/// last record of its stream in the snapshot, and returns its time.
fn last_record_time<S: StreamState>(
    client: &mut Client,
    snapshot: &Snapshot<S>,
    lsn: u64,
) -> Result<Option<SystemTime>, String> {
    if lsn == 0 {
        return Ok(None);
    }
    let row = client
        .query_opt(
            "SELECT stream, seq, recorded_at FROM events WHERE lsn = $1",
            &[&to_i64(lsn)],
        )
        .map_err(|e| error_text(&e))?;
    let Some(row) = row else {
        return moved_cold(client, lsn);
    };
    let (stream, seq, at): (String, i64, String) = (row.get(0), row.get(1), row.get(2));
    let head = snapshot.index.stream(&stream).map(|entry| entry.head());
    if head != u64::try_from(seq).ok() {
        return Err(format!(
            "record {lsn} is {stream} #{seq} in the database, not the last record of its stream in the snapshot"
        ));
    }
    Ok(parse_time(&at))
}

/// The snapshot's last row is gone: that is fine when the log did reach it
/// and a history was moved cold (the only way rows leave `events`), since
/// the catalog the start applies next covers it. The time then comes from
/// the archive table (see `cold::newest_time`) and the later rows.
fn moved_cold(client: &mut Client, lsn: u64) -> Result<Option<SystemTime>, String> {
    let row = client
        .query_one(
            "SELECT (SELECT lsn FROM log_head WHERE id = 1) >= $1
                    AND EXISTS (SELECT 1 FROM archived_streams)",
            &[&to_i64(lsn)],
        )
        .map_err(|e| error_text(&e))?;
    if row.get::<_, Option<bool>>(0) == Some(true) {
        Ok(None)
    } else {
        Err(format!("the snapshot is ahead of the log: no record {lsn}"))
    }
}
