//! Reader threads: records are read back by stream and seq on connections
//! of their own, so reads never wait behind the writer's lock.
//!
//! A read blocks its caller until a reader thread answers, like a `pread`
//! on the file medium does. The threads connect when first used and again
//! after a failure.

use crate::connect::{Connector, error_text};
use crate::rows::{self, to_i64};
use openagents_event_log::{OwnedRecord, ReadError, RecordPos, RecordRef, Source};
use postgres::{Client, Statement};
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
            let owned_stream = stream.to_owned();
            let records = self.ask(move |conn| conn.stream_range(&owned_stream, seq, wanted))?;
            if records.len() != wanted {
                // The index holds records the database does not: it was
                // restored or changed underneath the running service.
                return Err(ReadError::Unavailable(format!(
                    "the database holds {} of the {wanted} records of {stream} from seq {seq}",
                    records.len()
                )));
            }
            for record in &records {
                // A row served as another record would be a wrong answer,
                // not a slow one: checked on every read.
                if record.record.stream != stream || record.seq != seq {
                    return Err(ReadError::Damaged {
                        offset: record.lsn,
                        reason: format!(
                            "expected {stream} #{seq} but the database returned {} #{}",
                            record.record.stream, record.seq
                        ),
                    });
                }
                each(record.as_ref());
                seq += 1;
            }
        }
        Ok(())
    }

    fn archived_key(&self, stream: &str, key: &str) -> Result<Option<u64>, ReadError> {
        let (stream, key) = (stream.to_owned(), key.to_owned());
        self.ask(move |conn| conn.seq_for_key(&stream, &key))
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
            client,
        })
    }
}
