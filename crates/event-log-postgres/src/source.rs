//! Reader threads: records are read back by stream and seq on connections
//! of their own, so reads never wait behind the writer's lock.
//!
//! A read blocks its caller until a reader thread answers, like a `pread`
//! on the file medium does. The threads connect when first used and again
//! after a failure. They also serve the cold store's reads of the
//! `archived_streams` table (see `cold`).
//!
//! Several instances share the database, and an instance's index learns
//! that another one moved a stream cold only at its next start. Until then
//! its reads of the stream's early seqs find no rows in `events`, so they
//! fall back to the archive row: every instance answers the same records.

use crate::cold::{self, ArchiveRow};
use crate::connect::{Connector, error_text};
use crate::rows::{self, to_i64};
use openagents_event_log::{
    ColdEntry, OwnedRecord, ReadError, RecordPos, RecordRef, Source, read_archive_bytes,
};
use postgres::{Client, IsolationLevel, Statement};
use std::sync::mpsc::{Receiver, Sender, channel, sync_channel};
use std::sync::{Arc, Mutex};

/// Work for a reader thread, run against its connection.
type ReadJob = Box<dyn FnOnce(&mut ReaderConn) + Send>;

/// The readers' half of the PostgreSQL medium.
pub(crate) struct PgSource {
    jobs: Mutex<Sender<ReadJob>>,
}

impl PgSource {
    /// Starts `readers` threads (at least one).
    pub(crate) fn start(connector: Connector, readers: usize) -> std::io::Result<Self> {
        let (jobs, queue) = channel::<ReadJob>();
        let queue = Arc::new(Mutex::new(queue));
        for number in 0..readers.max(1) {
            let queue = Arc::clone(&queue);
            let mut conn = ReaderConn {
                connector: connector.clone(),
                statements: None,
            };
            std::thread::Builder::new()
                .name(format!("event-log-reader-{number}"))
                .spawn(move || serve(&queue, &mut conn))?;
        }
        Ok(PgSource {
            jobs: Mutex::new(jobs),
        })
    }

    /// Runs `read` on a reader thread and waits for its answer.
    fn ask<T: Send + 'static>(
        &self,
        read: impl FnOnce(&mut ReaderConn) -> Result<T, String> + Send + 'static,
    ) -> Result<T, ReadError> {
        let (reply, answer) = sync_channel(1);
        let job: ReadJob = Box::new(move |conn| {
            let _ = reply.send(read(conn));
        });
        let sent = self.jobs.lock().expect("reader queue lock").send(job);
        if sent.is_err() {
            return Err(ReadError::Unavailable(
                "the reader threads have stopped".into(),
            ));
        }
        answer
            .recv()
            .map_err(|_| ReadError::Unavailable("a reader thread stopped mid-read".into()))?
            .map_err(ReadError::Unavailable)
    }
}

impl PgSource {
    /// The archive row of `stream`, if it has one.
    pub(crate) fn archive(&self, stream: &str) -> Result<Option<ArchiveRow>, ReadError> {
        let stream = stream.to_owned();
        self.ask(move |conn| conn.archive(&stream))
    }

    /// The catalog entry of `stream`, or of every stream (`None`).
    pub(crate) fn entries(&self, stream: Option<&str>) -> Result<Vec<ColdEntry>, ReadError> {
        let stream = stream.map(str::to_owned);
        self.ask(move |conn| conn.entries(stream.as_deref()))
    }

    /// The sum of the `bytes` column of `archived_streams`.
    pub(crate) fn archive_bytes(&self) -> Result<u64, ReadError> {
        self.ask(|conn| {
            conn.with(|s| {
                let row = s
                    .client
                    .query_one(
                        "SELECT coalesce(sum(bytes), 0)::bigint FROM archived_streams",
                        &[],
                    )
                    .map_err(|e| error_text(&e))?;
                u64::try_from(row.get::<_, i64>(0)).map_err(|_| "negative bytes".to_string())
            })
        })
    }

    /// The records of `stream` with `seq <= seq < page_end` from the
    /// archive row and `events` as one snapshot sees them: the archive's
    /// kept records up to its base, then every row after it, which must all
    /// be there.
    fn with_archive(
        &self,
        stream: &str,
        seq: u64,
        page_end: u64,
    ) -> Result<Vec<OwnedRecord>, ReadError> {
        let owned_stream = stream.to_owned();
        let (archive, rows) =
            self.ask(move |conn| conn.range_with_archive(&owned_stream, seq, page_end))?;
        let mut records = Vec::new();
        let base = match archive {
            Some(row) => {
                let upto = row.base.min(page_end - 1);
                if upto >= seq {
                    read_archive_bytes(
                        &row.archive,
                        stream,
                        seq - 1,
                        upto,
                        usize::MAX,
                        &mut |r| {
                            let pos = RecordPos {
                                offset: r.lsn,
                                len: 0,
                            };
                            records.push(OwnedRecord::from_ref(&r, pos));
                        },
                    )?;
                }
                row.base
            }
            None => 0,
        };
        let first_hot = seq.max(base + 1);
        let hot: Vec<OwnedRecord> = rows.into_iter().filter(|r| r.seq > base).collect();
        let expected = page_end.saturating_sub(first_hot);
        if hot.len() as u64 != expected {
            // The index holds records the database does not: it was
            // restored or changed underneath the running service.
            return Err(ReadError::Unavailable(format!(
                "the database holds {} of the {expected} records of {stream} from seq {first_hot}",
                hot.len()
            )));
        }
        records.extend(hot);
        Ok(records)
    }
}

/// Takes jobs until the source is dropped.
fn serve(queue: &Mutex<Receiver<ReadJob>>, conn: &mut ReaderConn) {
    loop {
        let job = match queue.lock().expect("reader queue lock").recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        job(conn);
    }
}

impl Source for PgSource {
    /// The index keeps no positions for this medium (its archive floor is
    /// the top), so a read by position is a read by stream and seq.
    fn read(
        &self,
        stream: &str,
        first_seq: u64,
        positions: &[RecordPos],
        each: &mut dyn FnMut(RecordRef<'_>),
    ) -> Result<(), ReadError> {
        self.read_archived(stream, first_seq, positions.len() as u64, each)
    }

    /// The database finds records by stream and seq itself, so the index
    /// holds no positions: every read comes here, a page at a time.
    fn read_archived(
        &self,
        stream: &str,
        first_seq: u64,
        count: u64,
        each: &mut dyn FnMut(RecordRef<'_>),
    ) -> Result<(), ReadError> {
        let mut seq = first_seq;
        let end = first_seq + count;
        while seq < end {
            let wanted = (end - seq).min(rows::PULL_PAGE as u64) as usize;
            let page_end = seq + wanted as u64;
            let owned_stream = stream.to_owned();
            let mut records =
                self.ask(move |conn| conn.stream_range(&owned_stream, seq, wanted))?;
            if records.len() != wanted {
                // Rows are missing: another instance moved the history cold
                // after this index was built (or the database changed under
                // the service, which the fallback reports).
                records = self.with_archive(stream, seq, page_end)?;
            }
            let mut next = seq;
            for record in &records {
                // A row served as another record would be a wrong answer,
                // not a slow one: checked on every read. Seqs only rise, and
                // skip only where an archive did not keep a record.
                if record.record.stream != stream || record.seq < next || record.seq >= page_end {
                    return Err(ReadError::Damaged {
                        offset: record.lsn,
                        reason: format!(
                            "expected {stream} #{next} or later but the database returned {} #{}",
                            record.record.stream, record.seq
                        ),
                    });
                }
                each(record.as_ref());
                next = record.seq + 1;
            }
            seq = page_end;
        }
        Ok(())
    }

    /// A keyed retry on a stream another instance moved cold finds no row
    /// in `events`: the key is then looked up in the archive.
    fn archived_key(&self, stream: &str, key: &str) -> Result<Option<u64>, ReadError> {
        let (owned_stream, owned_key) = (stream.to_owned(), key.to_owned());
        if let Some(seq) = self.ask(move |conn| conn.seq_for_key(&owned_stream, &owned_key))? {
            return Ok(Some(seq));
        }
        // Asked after `events`: a cold move that deleted the key's row had
        // committed its archive row with it.
        match self.archive(stream)? {
            Some(row) => cold::key_in(&row.archive, stream, key),
            None => Ok(None),
        }
    }

    /// Every record: the database locates them all.
    fn archive_floor(&self) -> u64 {
        u64::MAX
    }

    fn durable_lsn(&self) -> Result<Option<u64>, ReadError> {
        self.ask(|conn| conn.head()).map(Some)
    }

    fn is_shared(&self) -> bool {
        true
    }
}

/// A reader thread's connection and its prepared statements.
struct ReaderConn {
    connector: Connector,
    statements: Option<ReaderStatements>,
}

struct ReaderStatements {
    client: Client,
    stream_range: Statement,
    seq_for_key: Statement,
    head: Statement,
    archive: Statement,
}

impl ReaderConn {
    fn stream_range(
        &mut self,
        stream: &str,
        first_seq: u64,
        count: usize,
    ) -> Result<Vec<OwnedRecord>, String> {
        self.with(|s| {
            rows::fetch(
                &mut s.client,
                &s.stream_range,
                &[&stream, &to_i64(first_seq), &(count as i64)],
            )
        })
    }

    fn seq_for_key(&mut self, stream: &str, key: &str) -> Result<Option<u64>, String> {
        self.with(|s| {
            let row = s
                .client
                .query_opt(&s.seq_for_key, &[&stream, &key])
                .map_err(|e| error_text(&e))?;
            row.map(|row| {
                u64::try_from(row.get::<_, i64>(0)).map_err(|_| "negative seq".to_string())
            })
            .transpose()
        })
    }

    fn archive(&mut self, stream: &str) -> Result<Option<ArchiveRow>, String> {
        self.with(|s| {
            let row = s
                .client
                .query_opt(&s.archive, &[&stream])
                .map_err(|e| error_text(&e))?;
            row.map(|row| ArchiveRow::decode(&row)).transpose()
        })
    }

    fn entries(&mut self, stream: Option<&str>) -> Result<Vec<ColdEntry>, String> {
        self.with(|s| cold::entries(&mut s.client, stream))
    }

    /// The archive row and the rows of `seq <= seq < page_end`, in one
    /// snapshot, so a cold move committing between the two reads cannot
    /// hide records from both.
    fn range_with_archive(
        &mut self,
        stream: &str,
        seq: u64,
        page_end: u64,
    ) -> Result<(Option<ArchiveRow>, Vec<OwnedRecord>), String> {
        self.with(|s| {
            let text = |e: postgres::Error| error_text(&e);
            let mut txn = s
                .client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .map_err(text)?;
            let archive = txn
                .query_opt(&s.archive, &[&stream])
                .map_err(text)?
                .map(|row| ArchiveRow::decode(&row))
                .transpose()?;
            let count = to_i64(page_end - seq);
            let rows = txn
                .query(&s.stream_range, &[&stream, &to_i64(seq), &count])
                .map_err(text)?;
            txn.commit().map_err(text)?;
            let records = rows.iter().map(rows::decode).collect::<Result<_, _>>()?;
            Ok((archive, records))
        })
    }

    fn head(&mut self) -> Result<u64, String> {
        self.with(|s| {
            let row = s
                .client
                .query_one(&s.head, &[])
                .map_err(|e| error_text(&e))?;
            u64::try_from(row.get::<_, i64>(0)).map_err(|_| "negative log head".to_string())
        })
    }

    /// Runs `read` on the connection, connecting first if needed; a failure
    /// drops the connection so the next read starts afresh.
    fn with<T>(
        &mut self,
        read: impl FnOnce(&mut ReaderStatements) -> Result<T, String>,
    ) -> Result<T, String> {
        let location = self.connector.location().to_owned();
        let mut statements = match self.statements.take() {
            Some(statements) => statements,
            None => self
                .connect()
                .map_err(|e| format!("PostgreSQL at {location}: {}", error_text(&e)))?,
        };
        let outcome = read(&mut statements).map_err(|e| format!("PostgreSQL at {location}: {e}"));
        if outcome.is_ok() {
            self.statements = Some(statements);
        }
        outcome
    }

    fn connect(&self) -> Result<ReaderStatements, postgres::Error> {
        let mut client = self.connector.connect()?;
        Ok(ReaderStatements {
            stream_range: client.prepare(&rows::stream_range_sql())?,
            seq_for_key: client
                .prepare("SELECT seq FROM events WHERE stream = $1 AND idempotency_key = $2")?,
            head: client.prepare("SELECT lsn FROM log_head WHERE id = 1")?,
            archive: client.prepare(cold::ARCHIVE_SQL)?,
            client,
        })
    }
}
