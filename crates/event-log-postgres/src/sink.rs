//! The writer's connection: the right to append is the lock on the
//! `log_head` row, held from before a batch is decided until it commits.
//!
//! A connection lost during `COMMIT` leaves the batch's fate open: the
//! database may have made it durable before the answer was lost. The sink
//! then reconnects and looks: once it holds the `log_head` lock (which waits
//! out the lost transaction), the batch's lsn range either holds exactly its
//! records (committed) or does not (rolled back). Only when that cannot be
//! learned before [`OUTCOME_DEADLINE`] is the outcome reported unknown.

use crate::connect::{Connector, error_text};
use crate::rows::{self, APPEND_SQL, Columns, PULL_PAGE, to_i64};
use openagents_event_log::{OwnedRecord, RecordPos, Sink, SinkFailure, StagedBatch};
use postgres::{Client, Statement};
use std::time::{Duration, Instant};

/// How long the sink keeps trying to learn whether a batch whose `COMMIT`
/// answer was lost committed, before it reports the outcome unknown.
const OUTCOME_DEADLINE: Duration = Duration::from_secs(10);
/// Pause between attempts to reach the database while learning an outcome.
const OUTCOME_RETRY: Duration = Duration::from_millis(100);

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

    /// Whether `batch`, which followed the head at `from`, is in the log.
    /// Taking the head's lock first waits until a transaction that still
    /// holds it (the lost commit, on a backend that is going away) is over.
    fn holds(&mut self, batch: &[OwnedRecord], from: u64) -> Result<bool, String> {
        let to = from + batch.len() as u64;
        self.client
            .batch_execute("BEGIN; SET LOCAL lock_timeout = '2s'")
            .map_err(text)?;
        let head: i64 = self
            .client
            .query_one(&self.lock_head, &[])
            .map_err(text)?
            .get(0);
        let found = if head < to_i64(to) {
            Vec::new()
        } else {
            rows::lsn_range(&mut self.client, from, to)?
        };
        self.client.batch_execute("ROLLBACK").map_err(text)?;
        let same = |(ours, theirs): (&OwnedRecord, &OwnedRecord)| {
            ours.lsn == theirs.lsn
                && ours.seq == theirs.seq
                && ours.at == theirs.at
                && ours.record.stream == theirs.record.stream
                && ours.record.event_type == theirs.record.event_type
                && ours.record.idempotency_key == theirs.record.idempotency_key
                && ours.record.content_hash == theirs.record.content_hash
                && ours.record.create_key == theirs.record.create_key
                && ours.record.payload.get() == theirs.record.payload.get()
        };
        match found.len() {
            0 => Ok(false),
            n if n == batch.len() && batch.iter().zip(&found).all(same) => Ok(true),
            // Another instance's records in the range: ours did not commit
            // (one transaction puts all of a batch there or none of it).
            _ if found
                .first()
                .zip(batch.first())
                .is_some_and(|pair| !same(pair)) =>
            {
                Ok(false)
            }
            _ => Err(format!(
                "lsns {}..={to} hold part of the batch only",
                from + 1
            )),
        }
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

    /// After the answer to `COMMIT` was lost (`lost` says how): whether the
    /// batch committed, asked of a new connection until the deadline.
    fn learn_outcome(
        &mut self,
        batch: &[OwnedRecord],
        from: u64,
        lost: String,
    ) -> Result<(), SinkFailure> {
        let deadline = Instant::now() + OUTCOME_DEADLINE;
        loop {
            match self.with_conn(|conn| conn.holds(batch, from)) {
                Ok(true) => {
                    tracing::warn!(reason = %lost, "the answer to COMMIT was lost; the batch committed");
                    return Ok(());
                }
                Ok(false) => {
                    return Err(self.unavailable(format!("{lost}; the batch did not commit")));
                }
                Err(failure) if Instant::now() + OUTCOME_RETRY >= deadline => {
                    return Err(SinkFailure::OutcomeUnknown(self.describe(format!(
                        "{lost}; whether the batch committed is unknown after {} s: {failure}",
                        OUTCOME_DEADLINE.as_secs()
                    ))));
                }
                Err(_) => std::thread::sleep(OUTCOME_RETRY),
            }
        }
    }

    fn fatal(&self, reason: String) -> SinkFailure {
        SinkFailure::Fatal(self.describe(reason))
    }

    fn unavailable(&self, reason: String) -> SinkFailure {
        SinkFailure::Unavailable(self.describe(reason))
    }

    fn describe(&self, reason: String) -> String {
        format!("PostgreSQL at {}: {reason}", self.connector.location())
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
        follows(after_lsn, &records, Some(head)).map_err(|reason| self.fatal(reason))?;
        Ok(records)
    }

    fn commit(&mut self, batch: StagedBatch<'_>) -> Result<Vec<RecordPos>, SinkFailure> {
        let from = self.locked_head;
        let columns = Columns::of(batch.records, from);
        let committed = self.with_conn(|conn| {
            let moved = conn
                .client
                .execute(&conn.append, &columns.params())
                .map_err(text)?;
            if moved != 1 {
                // The head moved without this writer's lock: refuse rather
                // than commit records decided against a stale log.
                return Err(format!(
                    "log head is no longer at lsn {from}, or the batch is not numbered from it"
                ));
            }
            // Until here a failure rolled the batch back; a failed COMMIT may
            // not have, so it is not the step's failure but its outcome.
            Ok(conn.client.batch_execute("COMMIT").map_err(text))
        })?;
        if let Err(lost) = committed {
            self.conn = None;
            self.learn_outcome(batch.records, from, lost)?;
        }
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
        let records = self.with_conn(|conn| conn.records_after(after_lsn, u64::MAX))?;
        follows(after_lsn, &records, None).map_err(|reason| self.fatal(reason))?;
        Ok(records)
    }
}

/// Checks that `records` continue the writer's log from `after` (up to
/// `head`, when known). Rows leave `events` only when another instance
/// moves a history cold; if that took rows this instance had not taken in
/// yet, its index cannot learn that history but at a start (the writer
/// applies no archive catalog), so the log stops writing and says so rather
/// than decide against a wrong index.
fn follows(after: u64, records: &[OwnedRecord], head: Option<u64>) -> Result<(), String> {
    let gap = |from: u64, to: u64| {
        format!(
            "lsns {from}..={to} moved to archived_streams (another instance moved a history \
             cold) before this instance took them in; restart it to load the archive"
        )
    };
    let mut expected = after + 1;
    for record in records {
        if record.lsn != expected {
            return Err(gap(expected, record.lsn.saturating_sub(1)));
        }
        expected += 1;
    }
    match head {
        Some(head) if head >= expected => Err(gap(expected, head)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::follows;
    use openagents_event_log::{NewRecord, OwnedRecord, RecordPos};
    use serde_json::value::RawValue;

    fn at(lsn: u64) -> OwnedRecord {
        OwnedRecord {
            record: NewRecord {
                stream: "s".into(),
                event_type: "t".into(),
                payload: RawValue::from_string("1".into()).unwrap(),
                idempotency_key: None,
                content_hash: None,
                create_key: None,
                attrs: None,
                written_by: None,
            },
            lsn,
            seq: lsn,
            at: String::new(),
            pos: RecordPos {
                offset: lsn,
                len: 0,
            },
        }
    }

    #[test]
    fn records_taken_in_across_deleted_rows_are_refused() {
        assert!(follows(3, &[at(4), at(5)], Some(5)).is_ok());
        assert!(follows(3, &[], Some(3)).is_ok());
        assert!(follows(3, &[], None).is_ok());
        let inside = follows(3, &[at(4), at(7)], None).unwrap_err();
        assert!(inside.contains("lsns 5..=6"), "{inside}");
        let on_top = follows(3, &[at(4)], Some(9)).unwrap_err();
        assert!(on_top.contains("lsns 5..=9"), "{on_top}");
    }
}
