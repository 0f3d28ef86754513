//! Rows of the `events` table as records, and the statements that read and
//! append them.

use openagents_event_log::{NewRecord, OwnedRecord, RecordPos};
use postgres::types::ToSql;
use postgres::{Client, Row, Statement};
use serde_json::value::RawValue;
use std::time::SystemTime;

/// Records fetched per statement when catching up on many at once.
pub(crate) const PULL_PAGE: i64 = 10_000;

/// The columns [`decode`] reads, in its order.
const COLUMNS: &str = "stream, seq, lsn, event_type, recorded_at, idempotency_key, \
                       content_hash, create_key, attrs::text, payload::text, written_by";

/// Records with `lsn > $1`, oldest first, at most `$2`.
pub(crate) fn after_lsn_sql() -> String {
    format!("SELECT {COLUMNS} FROM events WHERE lsn > $1 ORDER BY lsn LIMIT $2")
}

/// Records of stream `$1` with `$2 <= seq < $2 + $3`, in seq order.
pub(crate) fn stream_range_sql() -> String {
    format!(
        "SELECT {COLUMNS} FROM events WHERE stream = $1 AND seq >= $2 AND seq < $2 + $3 \
         ORDER BY seq"
    )
}

/// Inserts a batch given as one array per column (`$1` to `$10`, and `$14`
/// for `written_by`) and moves the head from `$12` to `$11`, in one
/// statement; it touches one row when every record went in, numbered
/// `$12 + 1 ..= $11` (with `lsn` unique, `$13` records between those bounds
/// are contiguous), and the head was where the writer left it. The lsn rule
/// lives here rather than in a foreign key since cold histories delete rows
/// (migration 3).
pub(crate) const APPEND_SQL: &str = "
WITH inserted AS (
    INSERT INTO events (stream, seq, lsn, event_type, recorded_at, idempotency_key,
                        content_hash, create_key, attrs, payload, written_by)
    SELECT stream, seq, lsn, event_type, recorded_at, idempotency_key,
           content_hash, create_key, attrs::json, payload::json, written_by
    FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[],
                $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $14::text[])
         AS batch(stream, seq, lsn, event_type, recorded_at, idempotency_key,
                  content_hash, create_key, attrs, payload, written_by)
    RETURNING lsn
)
UPDATE log_head SET lsn = $11
WHERE id = 1 AND lsn = $12 AND (SELECT count(*) FROM inserted) = $13 AND $11 - $12 = $13
  AND (SELECT coalesce(min(lsn), $12 + 1) FROM inserted) = $12 + 1
  AND (SELECT coalesce(max(lsn), $11) FROM inserted) = $11";

/// A batch as the arrays [`APPEND_SQL`] takes, one per column.
pub(crate) struct Columns<'a> {
    streams: Vec<&'a str>,
    seqs: Vec<i64>,
    lsns: Vec<i64>,
    types: Vec<&'a str>,
    times: Vec<&'a str>,
    keys: Vec<Option<&'a str>>,
    hashes: Vec<Option<&'a str>>,
    create_keys: Vec<Option<&'a str>>,
    attrs: Vec<Option<&'a str>>,
    payloads: Vec<&'a str>,
    writers: Vec<Option<&'a str>>,
    to: i64,
    from: i64,
    count: i64,
}

impl<'a> Columns<'a> {
    /// The columns of `records`, which follow the log head at `from`.
    pub(crate) fn of(records: &'a [OwnedRecord], from: u64) -> Self {
        let texts = |f: fn(&'a OwnedRecord) -> &'a str| records.iter().map(f).collect();
        let options = |f: fn(&'a OwnedRecord) -> Option<&'a str>| records.iter().map(f).collect();
        Columns {
            streams: texts(|r| &r.record.stream),
            seqs: records.iter().map(|r| to_i64(r.seq)).collect(),
            lsns: records.iter().map(|r| to_i64(r.lsn)).collect(),
            types: texts(|r| &r.record.event_type),
            times: texts(|r| &r.at),
            keys: options(|r| r.record.idempotency_key.as_deref()),
            hashes: options(|r| r.record.content_hash.as_deref()),
            create_keys: options(|r| r.record.create_key.as_deref()),
            attrs: options(|r| r.record.attrs.as_deref().map(RawValue::get)),
            payloads: texts(|r| r.record.payload.get()),
            writers: options(|r| r.record.written_by.as_deref()),
            to: records.last().map_or(to_i64(from), |r| to_i64(r.lsn)),
            from: to_i64(from),
            count: records.len() as i64,
        }
    }

    /// The statement's parameters, `$1` to `$14`.
    pub(crate) fn params(&self) -> [&(dyn ToSql + Sync); 14] {
        [
            &self.streams,
            &self.seqs,
            &self.lsns,
            &self.types,
            &self.times,
            &self.keys,
            &self.hashes,
            &self.create_keys,
            &self.attrs,
            &self.payloads,
            &self.to,
            &self.from,
            &self.count,
            &self.writers,
        ]
    }
}

/// The records with `from < lsn <= to`, oldest first, with an unprepared
/// statement (only asked after a lost commit).
pub(crate) fn lsn_range(
    client: &mut Client,
    from: u64,
    to: u64,
) -> Result<Vec<OwnedRecord>, String> {
    let sql = format!("SELECT {COLUMNS} FROM events WHERE lsn > $1 AND lsn <= $2 ORDER BY lsn");
    let rows = client
        .query(&sql, &[&to_i64(from), &to_i64(to)])
        .map_err(|e| crate::connect::error_text(&e))?;
    rows.iter().map(decode).collect()
}

/// Fetches up to `limit` records after `after` with an unprepared
/// statement (start-up and import, where one round trip more is nothing).
pub(crate) fn after_lsn(
    client: &mut Client,
    after: u64,
    limit: i64,
) -> Result<Vec<OwnedRecord>, String> {
    let rows = client
        .query(&after_lsn_sql(), &[&to_i64(after), &limit])
        .map_err(|e| crate::connect::error_text(&e))?;
    rows.iter().map(decode).collect()
}

/// Runs a prepared record query and decodes its rows.
pub(crate) fn fetch(
    client: &mut Client,
    statement: &Statement,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<OwnedRecord>, String> {
    let rows = client
        .query(statement, params)
        .map_err(|e| crate::connect::error_text(&e))?;
    rows.iter().map(decode).collect()
}

/// One row as a record. The database keeps no byte positions: a record's
/// position is its lsn.
pub(crate) fn decode(row: &Row) -> Result<OwnedRecord, String> {
    let number = |index: usize| {
        u64::try_from(row.get::<_, i64>(index)).map_err(|_| "negative seq or lsn".to_string())
    };
    let json = |text: String| RawValue::from_string(text).map_err(|e| e.to_string());
    let lsn = number(2)?;
    Ok(OwnedRecord {
        record: NewRecord {
            stream: row.get(0),
            event_type: row.get(3),
            payload: json(row.get(9))?,
            idempotency_key: row.get(5),
            content_hash: row.get(6),
            create_key: row.get(7),
            attrs: row.get::<_, Option<String>>(8).map(json).transpose()?,
            written_by: row.get(10),
        },
        lsn,
        seq: number(1)?,
        at: row.get(4),
        pos: RecordPos {
            offset: lsn,
            len: 0,
        },
    })
}

/// A log position as the database's `bigint`.
pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).expect("log positions stay below 2^63")
}

/// A record's time, for keeping new times from going backwards.
pub(crate) fn parse_time(at: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(at).ok()
}
