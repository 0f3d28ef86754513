//! The shared projection checkpoint: one row holding the newest snapshot any
//! instance wrote. Every instance folds the same log, so any instance's
//! snapshot serves all of them; an older snapshot never replaces a newer one.
//!
//! The checkpoint is read at start and written every few seconds, so each
//! call opens a connection of its own rather than keeping one.

use crate::PgError;
use crate::connect::{Connector, error_text, off_runtime};
use crate::rows::to_i64;
use postgres::Client;

/// The `projection_checkpoint` row.
pub struct CheckpointTable {
    connector: Connector,
}

impl CheckpointTable {
    /// The row of the database `connector` reaches.
    pub fn new(connector: Connector) -> Self {
        CheckpointTable { connector }
    }

    /// The stored snapshot, if any instance wrote one.
    pub fn load(&self) -> Result<Option<Vec<u8>>, PgError> {
        self.with(|client| {
            let row = client.query_opt(
                "SELECT snapshot FROM projection_checkpoint WHERE id = 1",
                &[],
            )?;
            Ok(row.map(|row| row.get(0)))
        })
    }

    /// Stores `snapshot`, folded up to `applied_lsn`, unless a snapshot
    /// folded further is already stored.
    pub fn save(&self, applied_lsn: u64, snapshot: &[u8]) -> Result<(), PgError> {
        self.with(|client| {
            client.execute(
                "INSERT INTO projection_checkpoint (id, applied_lsn, snapshot) VALUES (1, $1, $2)
                 ON CONFLICT (id) DO UPDATE
                 SET applied_lsn = EXCLUDED.applied_lsn, snapshot = EXCLUDED.snapshot,
                     written_at = now()
                 WHERE projection_checkpoint.applied_lsn <= EXCLUDED.applied_lsn",
                &[&to_i64(applied_lsn), &snapshot],
            )?;
            Ok(())
        })
    }

    /// Runs `step` on a new connection.
    fn with<T: Send>(
        &self,
        step: impl FnOnce(&mut Client) -> Result<T, postgres::Error> + Send,
    ) -> Result<T, PgError> {
        off_runtime(|| {
            let mut client = self.connector.connect()?;
            step(&mut client)
        })
        .map_err(|error| self.connector.database_error(error_text(&error)))
    }
}
