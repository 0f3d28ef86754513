//! The on-disk record format (version 1) and its codec.
//!
//! One record is one line of JSON:
//!
//! ```text
//! {"v":1,"lsn":7,"stream":"run:…","seq":3,"type":"tool.call.completed","at":"…","key":"k1","hash":"sha256:…","payload":{…},"crc":"1a2b3c4d"}
//! ```
//!
//! - `v` is the format version; a reader refuses versions it does not know.
//! - `lsn` is the record's position in the whole log (1, 2, 3, …), `seq` its
//!   position in its stream (1, 2, 3, …); recovery checks both for gaps.
//! - `key`/`hash` are the stream-local idempotency key and the content hash it
//!   is compared with; `create_key`, only on a stream's first record, is the
//!   log-wide key that created the stream; `attrs` are opaque attributes the
//!   domain needs to rebuild the stream (a run's creation body, say); `by`
//!   names the credential that wrote the record. All four are omitted when
//!   absent, so a record without them is byte for byte what versions before
//!   `by` wrote, and those versions read a record with `by` by ignoring it.
//! - `crc` is the CRC-32C of every byte of the line before `,"crc":`, written
//!   as 8 lowercase hex digits. It is always the last field, so the checksum is
//!   verified before the line is parsed, and every line stays plain JSON that
//!   `jq` can read.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;

/// The record format this crate writes and reads.
pub const RECORD_VERSION: u8 = 1;

/// `,"crc":"` + 8 hex digits + `"}`.
const CRC_SUFFIX_LEN: usize = 18;
const CRC_FIELD: &[u8] = b",\"crc\":\"";

/// A record to append, as the domain proposes it. The writer assigns `lsn`,
/// `seq` and the timestamp.
#[derive(Debug, Clone)]
pub struct NewRecord {
    /// Stream the record belongs to, e.g. `run:<uuid>` or `worker:<id>`.
    pub stream: String,
    /// The event's type.
    pub event_type: String,
    /// The event's body, already serialized.
    pub payload: Box<RawValue>,
    /// Stream-local idempotency key.
    pub idempotency_key: Option<String>,
    /// Hash of the request content the key is compared with on a retry.
    pub content_hash: Option<String>,
    /// Log-wide key under which this record creates its stream.
    pub create_key: Option<String>,
    /// Domain attributes needed to rebuild the stream from the log.
    pub attrs: Option<Box<RawValue>>,
    /// Name of the credential that wrote the record, when the writer knew one.
    pub written_by: Option<String>,
}

/// A decoded record, borrowing from the line it was read from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordRef<'a> {
    /// Format version.
    pub v: u8,
    /// Position in the whole log.
    pub lsn: u64,
    /// Stream the record belongs to.
    #[serde(borrow)]
    pub stream: Cow<'a, str>,
    /// Position in the stream.
    pub seq: u64,
    /// The event's type.
    #[serde(rename = "type", borrow)]
    pub event_type: Cow<'a, str>,
    /// When the writer accepted the record (RFC 3339 UTC, microseconds).
    #[serde(borrow)]
    pub at: Cow<'a, str>,
    /// Stream-local idempotency key.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub key: Option<Cow<'a, str>>,
    /// Content hash compared on an idempotent retry.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub hash: Option<Cow<'a, str>>,
    /// Log-wide key that created the stream (first record only).
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub create_key: Option<Cow<'a, str>>,
    /// Domain attributes needed to rebuild the stream.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub attrs: Option<&'a RawValue>,
    /// Name of the credential that wrote the record.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub by: Option<Cow<'a, str>>,
    /// The event's body.
    #[serde(borrow)]
    pub payload: &'a RawValue,
}

/// Why a line is not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The line does not end with the checksum field.
    #[error("line has no trailing crc field")]
    MissingChecksum,
    /// The checksum does not match the line's bytes.
    #[error("crc mismatch: line says {stored:08x}, bytes give {computed:08x}")]
    ChecksumMismatch {
        /// Checksum written in the line.
        stored: u32,
        /// Checksum of the bytes read.
        computed: u32,
    },
    /// The checksum matched but the line is not a record.
    #[error("record is not valid JSON of the v1 format: {0}")]
    Malformed(String),
    /// A record written by a newer format.
    #[error("unsupported record version {0}")]
    UnsupportedVersion(u8),
}

impl<'a> RecordRef<'a> {
    /// Borrows a new record as the record it will become once `lsn`, `seq` and
    /// `at` are assigned.
    pub fn proposed(new: &'a NewRecord, lsn: u64, seq: u64, at: &'a str) -> Self {
        RecordRef {
            v: RECORD_VERSION,
            lsn,
            stream: Cow::Borrowed(&new.stream),
            seq,
            event_type: Cow::Borrowed(&new.event_type),
            at: Cow::Borrowed(at),
            key: new.idempotency_key.as_deref().map(Cow::Borrowed),
            hash: new.content_hash.as_deref().map(Cow::Borrowed),
            create_key: new.create_key.as_deref().map(Cow::Borrowed),
            attrs: new.attrs.as_deref(),
            by: new.written_by.as_deref().map(Cow::Borrowed),
            payload: &new.payload,
        }
    }

    /// Appends this record as one checksummed line (with `\n`) to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        serde_json::to_writer(&mut *out, self).expect("records serialize into a Vec");
        // Replace the closing brace with the checksum field and close again.
        debug_assert_eq!(out.last(), Some(&b'}'));
        out.pop();
        let crc = crc32c::crc32c(&out[start..]);
        out.extend_from_slice(CRC_FIELD);
        out.extend_from_slice(format!("{crc:08x}").as_bytes());
        out.extend_from_slice(b"\"}\n");
    }

    /// Decodes one line (without its `\n`), verifying the checksum first.
    pub fn decode(line: &'a [u8]) -> Result<Self, DecodeError> {
        let body_len = line
            .len()
            .checked_sub(CRC_SUFFIX_LEN)
            .ok_or(DecodeError::MissingChecksum)?;
        let (body, suffix) = line.split_at(body_len);
        if !suffix.starts_with(CRC_FIELD) || !suffix.ends_with(b"\"}") {
            return Err(DecodeError::MissingChecksum);
        }
        let stored = parse_crc(&suffix[CRC_FIELD.len()..CRC_FIELD.len() + 8])
            .ok_or(DecodeError::MissingChecksum)?;
        let computed = crc32c::crc32c(body);
        if stored != computed {
            return Err(DecodeError::ChecksumMismatch { stored, computed });
        }
        let record: RecordRef<'a> =
            serde_json::from_slice(line).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if record.v != RECORD_VERSION {
            return Err(DecodeError::UnsupportedVersion(record.v));
        }
        Ok(record)
    }
}

/// Parses exactly 8 lowercase hex digits, the only spelling the writer uses,
/// so that a flipped letter case is caught like any other damage.
fn parse_crc(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0u32, |acc, &digit| {
        let nibble = match digit {
            b'0'..=b'9' => digit - b'0',
            b'a'..=b'f' => digit - b'a' + 10,
            _ => return None,
        };
        Some(acc << 4 | u32::from(nibble))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> NewRecord {
        NewRecord {
            stream: "run:abc".into(),
            event_type: "tool.call.completed".into(),
            payload: RawValue::from_string(r#"{"b":"é\n","a":[1,2.5,null]}"#.into()).unwrap(),
            idempotency_key: Some("k\"1".into()),
            content_hash: Some("sha256:00".into()),
            create_key: None,
            attrs: Some(RawValue::from_string(r#"{"metadata":{}}"#.into()).unwrap()),
            written_by: Some("ci".into()),
        }
    }

    #[test]
    fn a_record_round_trips_through_its_line() {
        let new = sample();
        let mut line = Vec::new();
        RecordRef::proposed(&new, 7, 3, "2026-01-01T00:00:00.000000Z").encode_into(&mut line);
        assert_eq!(line.last(), Some(&b'\n'));
        let decoded = RecordRef::decode(&line[..line.len() - 1]).unwrap();
        assert_eq!((decoded.lsn, decoded.seq), (7, 3));
        assert_eq!(decoded.key.as_deref(), Some("k\"1"));
        assert_eq!(decoded.payload.get(), new.payload.get());
        assert_eq!(decoded.attrs.map(RawValue::get), Some(r#"{"metadata":{}}"#));
        assert_eq!(decoded.by.as_deref(), Some("ci"));
        // Every line is plain JSON.
        serde_json::from_slice::<serde_json::Value>(&line).unwrap();
    }

    #[test]
    fn a_record_without_a_writer_keeps_the_old_bytes_and_old_lines_still_read() {
        let new = NewRecord {
            written_by: None,
            ..sample()
        };
        let mut line = Vec::new();
        RecordRef::proposed(&new, 7, 3, "t").encode_into(&mut line);
        let text = String::from_utf8(line.clone()).unwrap();
        assert!(!text.contains("\"by\""), "{text}");
        // A line of the format before `by` (this one) decodes with no writer.
        let decoded = RecordRef::decode(&line[..line.len() - 1]).unwrap();
        assert_eq!(decoded.by, None);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_the_decoder(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = RecordRef::decode(&bytes);
        }

        #[test]
        fn any_flipped_byte_is_detected(index in any::<prop::sample::Index>(), flip in 1u8..=255) {
            let new = sample();
            let mut line = Vec::new();
            RecordRef::proposed(&new, 1, 1, "t").encode_into(&mut line);
            line.pop();
            let at = index.index(line.len());
            line[at] ^= flip;
            prop_assert!(RecordRef::decode(&line).is_err());
        }
    }
}
