//! The shared projection checkpoint: one row holding the newest snapshot any
//! instance wrote. Every instance folds the same log, so any instance's
//! snapshot serves all of them; an older snapshot never replaces a newer one.

use crate::PgError;
use crate::connect::{Connector, error_text};
use crate::rows::to_i64;
use postgres::Client;
use std::sync::Mutex;

/// The `projection_checkpoint` row, over a connection of its own.
pub struct CheckpointTable {
    connector: Connector,
    client: Mutex<Option<Client>>,
}

impl CheckpointTable {
    /// A table reached through `connector` (connects on first use).
    pub fn new(connector: Connector) -> Self {
        CheckpointTable {
            connector,
            client: Mutex::new(None),
        }
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

    /// Runs `step` on the connection, connecting first if needed; a failure
    /// drops the connection.
    fn with<T>(
        &self,
        step: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, PgError> {
        let mut slot = self.client.lock().expect("checkpoint connection lock");
        let failed = |error: postgres::Error| self.connector.database_error(error_text(&error));
        let mut client = match slot.take() {
            Some(client) => client,
            None => self.connector.connect().map_err(failed)?,
        };
        let outcome = step(&mut client).map_err(failed)?;
        *slot = Some(client);
        Ok(outcome)
    }
}
