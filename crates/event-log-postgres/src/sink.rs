//! The writer's connection: the right to append is the lock on the
//! `log_head` row, held from before a batch is decided until it commits.

use crate::connect::{Connector, error_text};
use crate::rows::{self, APPEND_SQL, Columns, PULL_PAGE, to_i64};
use openagents_event_log::{OwnedRecord, RecordPos, Sink, SinkFailure, StagedBatch};
use postgres::{Client, Statement};

/// A connection with the writer's statements prepared on it.
struct WriterConn {
    client: Client,
    lock_head: Statement,
    after_lsn: Statement,
    append: Statement,
}

impl WriterConn {
    fn prepare(mut client: Client) -> Result<Self, postgres::Error> {
        Ok(WriterConn {
            lock_head: client.prepare("SELECT lsn FROM log_head WHERE id = 1 FOR UPDATE")?,
            after_lsn: client.prepare(&rows::after_lsn_sql())?,
            append: client.prepare(APPEND_SQL)?,
            client,
        })
    }

    /// Every record after `after` up to `head`, page by page.
    fn records_after(&mut self, mut after: u64, head: u64) -> Result<Vec<OwnedRecord>, String> {
        let mut records = Vec::new();
        while after < head {
            let page = rows::fetch(
                &mut self.client,
                &self.after_lsn,
                &[&to_i64(after), &PULL_PAGE],
            )?;
            let Some(last) = page.last() else { break };
            after = last.lsn;
            records.extend(page);
        }
        Ok(records)
    }
}

/// The writer's half of the PostgreSQL medium. Any failure drops the
/// connection (an open transaction dies with it) and the next batch connects
/// again, so the log recovers by itself when the database is back.
pub(crate) struct PgSink {
    connector: Connector,
    conn: Option<WriterConn>,
    /// Head as locked by `begin`, which the batch's commit must move from.
    locked_head: u64,
}

impl PgSink {
    /// A sink starting on the connection that loaded the index. If its
    /// statements cannot be prepared, the first batch connects afresh.
    pub(crate) fn new(connector: Connector, client: Client) -> Self {
        PgSink {
            conn: WriterConn::prepare(client).ok(),
            connector,
            locked_head: 0,
        }
    }

    /// Runs `step` on the connection (connecting first if needed); on
    /// failure drops the connection and reports the medium unavailable.
    fn with_conn<T>(
        &mut self,
        step: impl FnOnce(&mut WriterConn) -> Result<T, String>,
    ) -> Result<T, SinkFailure> {
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => self
                .connector
                .connect()
                .and_then(WriterConn::prepare)
                .map_err(|error| self.unavailable(error_text(&error)))?,
        };
        let mut conn = conn;
        match step(&mut conn) {
            Ok(value) => {
                self.conn = Some(conn);
                Ok(value)
            }
            Err(reason) => Err(self.unavailable(reason)),
        }
    }

    fn unavailable(&self, reason: String) -> SinkFailure {
        SinkFailure::Unavailable(format!(
            "PostgreSQL at {}: {reason}",
            self.connector.location()
        ))
    }
}

fn text(error: postgres::Error) -> String {
    error_text(&error)
}

impl Sink for PgSink {
    fn begin(&mut self, after_lsn: u64) -> Result<Vec<OwnedRecord>, SinkFailure> {
        let (head, records) = self.with_conn(|conn| {
            conn.client.batch_execute("BEGIN").map_err(text)?;
            let head: i64 = conn
                .client
                .query_one(&conn.lock_head, &[])
                .map_err(text)?
                .get(0);
            let head = u64::try_from(head).map_err(|_| "negative log head".to_string())?;
            Ok((head, conn.records_after(after_lsn, head)?))
        })?;
        self.locked_head = head;
        Ok(records)
    }

    fn commit(&mut self, batch: StagedBatch<'_>) -> Result<Vec<RecordPos>, SinkFailure> {
        let from = self.locked_head;
        let columns = Columns::of(batch.records, from);
        self.with_conn(|conn| {
            let moved = conn
                .client
                .execute(&conn.append, &columns.params())
                .map_err(text)?;
            if moved != 1 {
                // The head moved without this writer's lock: refuse rather
                // than commit records decided against a stale log.
                return Err(format!("log head is no longer at lsn {from}"));
            }
            conn.client.batch_execute("COMMIT").map_err(text)
        })?;
        Ok(batch
            .records
            .iter()
            .map(|record| RecordPos {
                offset: record.lsn,
                len: 0,
            })
            .collect())
    }

    fn release(&mut self) -> Result<(), SinkFailure> {
        self.with_conn(|conn| conn.client.batch_execute("ROLLBACK").map_err(text))
    }

    fn pull(&mut self, after_lsn: u64) -> Result<Vec<OwnedRecord>, SinkFailure> {
        self.with_conn(|conn| conn.records_after(after_lsn, u64::MAX))
    }
}
