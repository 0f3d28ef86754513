//! The on-disk indexes of sealed segments, and the archive they make: the
//! file medium locates every record of a sealed segment by stream and seq
//! without the in-memory index holding a position for it.
//!
//! A sealed segment `<segment>` has an index file `<segment>.idx`, written
//! once (to a temporary name, synced, renamed, folder synced) and never
//! changed. It groups the segment's records by stream:
//!
//! ```text
//! magic "OAIDX001"
//! header   first_lsn u64, segment_len u64, records u32, streams u32, keys u32,
//!          table_len u32 (bytes of the table)
//! table    per stream: name_len u16, name, first_seq u64, count u32,
//!          entry_start u32, key_start u32, key_count u32
//! crc32c   of magic, header and table (u32)
//! entries  per record, grouped by stream in seq order:
//!          offset in the segment u64, line length u32
//! keys     per idempotency key, grouped by stream, sorted by hash:
//!          FNV-1a hash of the key u64, seq u64
//! crc32c   of entries and keys (u32)
//! ```
//!
//! Integers are little-endian. At open the whole file is read once to check
//! both checksums, and the table is kept as [`Span`]s: per stream and
//! sealed segment, where its records are. That is the only per-stream cost
//! of a sealed segment; entries and keys stay on disk and are read with
//! `pread` when a read or a retry needs them. Every record read through an
//! entry is still checked to be the stream and seq it was asked for, and a
//! key found by its hash is confirmed against the record itself.
//!
//! An index file is derived data: a missing or damaged one is rebuilt from
//! its segment with a warning, at open or after a roll (in the background,
//! on the indexer thread).
//!
//! A compacted segment (see `compact`) is indexed like any other, from the
//! line after its header, and its records may skip log positions (the dead
//! ones it dropped) within the range its header names. Segments are named
//! here by their id (see [`Segment::id`](crate::segments::Segment)), which
//! a compaction that merges segments does not change for the others.

use crate::compact::Layout;
use crate::error::ReadError;
use crate::record::RecordRef;
use crate::segments::Segments;
use crate::{OpenError, RecordPos};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

const MAGIC: &[u8; 8] = b"OAIDX001";
const HEADER_BYTES: usize = 8 + 8 + 8 + 4 + 4 + 4 + 4;
const ENTRY_BYTES: u64 = 12;
const KEY_BYTES: u64 = 16;
/// Read buffer of an index build.
const BUILD_BUFFER_BYTES: usize = 4 << 20;

/// Where the records of one stream in one sealed segment are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    /// The segment, by its id.
    segment: u32,
    first_seq: u64,
    count: u32,
    entry_start: u32,
    key_start: u32,
    key_count: u32,
}

/// One stream's records in a segment, as the index file groups them.
#[derive(Debug, Default)]
struct Group {
    first_seq: u64,
    entries: Vec<(u64, u32)>,
    keys: Vec<(u64, u64)>,
}

/// The content of a segment's index file, built from the segment.
#[derive(Debug)]
pub(crate) struct SegmentTable {
    first_lsn: u64,
    segment_len: u64,
    groups: Vec<(String, Group)>,
}

/// One indexed segment's file, open for reading entries and keys.
pub(crate) struct IndexFile {
    file: File,
    entries_at: u64,
    keys_at: u64,
    records: u64,
}

/// One stream's records in a sealed segment, as its index file's table
/// says: what compaction plans with.
#[derive(Debug, Clone)]
pub(crate) struct StreamRun {
    pub(crate) stream: String,
    pub(crate) first_seq: u64,
    pub(crate) count: u64,
    entry_start: u32,
}

/// Every indexed sealed segment and the spans of every stream in them.
pub(crate) struct Archive {
    files: RwLock<BTreeMap<u32, IndexFile>>,
    spans: RwLock<HashMap<String, Vec<Span>>>,
    floor: AtomicU64,
}

/// The index file of segment `segment_path`.
pub(crate) fn index_path(segment_path: &Path) -> PathBuf {
    crate::segments::beside(segment_path, ".idx")
}

/// The FNV-1a hash of an idempotency key: stable across processes, which
/// the standard library's hasher is not.
fn key_hash(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl SegmentTable {
    /// Reads a sealed segment, a buffer at a time, and groups its records
    /// by stream. A line that does not decode, or a segment that does not
    /// end in a complete record, is damage of acknowledged history.
    pub(crate) fn build(
        file: &File,
        path: &Path,
        first_lsn: u64,
        layout: &Layout,
    ) -> Result<Self, OpenError> {
        let io_error = |source| OpenError::Io {
            path: path.to_owned(),
            source,
        };
        let segment_len = file.metadata().map_err(io_error)?.len();
        let corrupt = |offset: u64, reason: String| OpenError::Corrupt {
            path: path.to_owned(),
            offset,
            reason,
        };
        let mut reader = BufReader::with_capacity(
            BUILD_BUFFER_BYTES,
            At {
                file,
                offset: layout.body_start,
            },
        );
        let mut groups: Vec<(String, Group)> = Vec::new();
        let mut by_name: HashMap<String, usize> = HashMap::new();
        let (mut start, mut lsn, mut line) = (layout.body_start, first_lsn, Vec::new());
        while start < segment_len {
            line.clear();
            let read = reader.read_until(b'\n', &mut line).map_err(io_error)?;
            if line.pop() != Some(b'\n') {
                return Err(corrupt(
                    start,
                    "a sealed segment ends in an incomplete record".into(),
                ));
            }
            let record =
                RecordRef::decode(&line).map_err(|error| corrupt(start, error.to_string()))?;
            if !layout.accepts_lsn(lsn, record.lsn) {
                return Err(corrupt(
                    start,
                    format!("log position {} where {lsn} was expected", record.lsn),
                ));
            }
            lsn = record.lsn;
            let slot = match by_name.get(record.stream.as_ref()) {
                Some(slot) => *slot,
                None => {
                    let group = Group {
                        first_seq: record.seq,
                        ..Group::default()
                    };
                    groups.push((record.stream.to_string(), group));
                    by_name.insert(record.stream.to_string(), groups.len() - 1);
                    groups.len() - 1
                }
            };
            let group = &mut groups[slot].1;
            if record.seq != group.first_seq + group.entries.len() as u64 {
                return Err(corrupt(
                    start,
                    format!(
                        "sequence {} of stream {} out of order",
                        record.seq, record.stream
                    ),
                ));
            }
            group.entries.push((start, line.len() as u32));
            if let Some(key) = &record.key {
                group.keys.push((key_hash(key), record.seq));
            }
            lsn += 1;
            start += read as u64;
        }
        for (_, group) in &mut groups {
            group.keys.sort_unstable();
        }
        Ok(SegmentTable {
            first_lsn,
            segment_len,
            groups,
        })
    }

    /// The index file's bytes.
    fn encode(&self) -> Vec<u8> {
        let records: usize = self.groups.iter().map(|(_, g)| g.entries.len()).sum();
        let keys: usize = self.groups.iter().map(|(_, g)| g.keys.len()).sum();
        let mut table = Vec::new();
        let (mut entry_start, mut key_start) = (0u32, 0u32);
        for (name, group) in &self.groups {
            table.extend_from_slice(&(name.len() as u16).to_le_bytes());
            table.extend_from_slice(name.as_bytes());
            table.extend_from_slice(&group.first_seq.to_le_bytes());
            table.extend_from_slice(&(group.entries.len() as u32).to_le_bytes());
            table.extend_from_slice(&entry_start.to_le_bytes());
            table.extend_from_slice(&key_start.to_le_bytes());
            table.extend_from_slice(&(group.keys.len() as u32).to_le_bytes());
            entry_start += group.entries.len() as u32;
            key_start += group.keys.len() as u32;
        }
        let mut out = Vec::with_capacity(HEADER_BYTES + table.len() + 8 + records * 12 + keys * 16);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.first_lsn.to_le_bytes());
        out.extend_from_slice(&self.segment_len.to_le_bytes());
        for count in [records, self.groups.len(), keys, table.len()] {
            out.extend_from_slice(&(count as u32).to_le_bytes());
        }
        out.extend_from_slice(&table);
        let table_crc = crc32c::crc32c(&out);
        out.extend_from_slice(&table_crc.to_le_bytes());
        let body = out.len();
        for (_, group) in &self.groups {
            for (offset, len) in &group.entries {
                out.extend_from_slice(&offset.to_le_bytes());
                out.extend_from_slice(&len.to_le_bytes());
            }
        }
        for (_, group) in &self.groups {
            for (hash, seq) in &group.keys {
                out.extend_from_slice(&hash.to_le_bytes());
                out.extend_from_slice(&seq.to_le_bytes());
            }
        }
        let body_crc = crc32c::crc32c(&out[body..]);
        out.extend_from_slice(&body_crc.to_le_bytes());
        out
    }

    /// Writes the index file of `segment_path` atomically.
    pub(crate) fn write(&self, segment_path: &Path) -> std::io::Result<()> {
        crate::file::replace_atomically(&index_path(segment_path), &self.encode())
    }
}

/// Reads a file from a position with `pread`, leaving the file's own
/// cursor alone (other handles of the segment share it).
pub(crate) struct At<'a> {
    pub(crate) file: &'a File,
    pub(crate) offset: u64,
}

impl Read for At<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.file.read_at(buffer, self.offset)?;
        self.offset += read as u64;
        Ok(read)
    }
}

/// Little-endian reader over a byte slice; `None` past its end.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(len)?;
        let slice = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(slice)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// An index file's table, read and checked against its segment.
pub(crate) struct Loaded {
    file: IndexFile,
    spans: Vec<(String, Span)>,
    records: u64,
}

/// Reads and checks the index file of segment number `segment` (at
/// `segment_path`, `segment_len` bytes, first record `first_lsn`).
/// `Ok(None)` when it is missing, does not describe that segment, or fails
/// a checksum: the caller rebuilds it.
fn load(
    segment: u32,
    segment_path: &Path,
    first_lsn: u64,
    segment_len: u64,
) -> std::io::Result<Option<Loaded>> {
    let path = index_path(segment_path);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let Some((table, table_end)) = check(segment, &bytes, first_lsn, segment_len) else {
        return Ok(None);
    };
    Ok(Some(Loaded {
        records: table.records,
        spans: table.spans,
        file: IndexFile {
            file: File::open(&path)?,
            entries_at: table_end,
            keys_at: table_end + table.records * ENTRY_BYTES,
            records: table.records,
        },
    }))
}

/// The table of a whole index file, and where its entries start, when
/// both checksums hold, the lengths add up and it describes the segment.
fn check(segment: u32, bytes: &[u8], first_lsn: u64, segment_len: u64) -> Option<(Table, u64)> {
    let header = bytes.get(..HEADER_BYTES)?;
    let table_len = u32::from_le_bytes(header[HEADER_BYTES - 4..].try_into().ok()?);
    let table_end = HEADER_BYTES
        .checked_add(table_len as usize)?
        .checked_add(4)?;
    let table = parse_table(segment, bytes.get(..table_end)?, first_lsn, segment_len)?;
    let body_end = (table_end as u64)
        .checked_add(table.records * ENTRY_BYTES)?
        .checked_add(table.keys * KEY_BYTES)?;
    if body_end + 4 != bytes.len() as u64 {
        return None;
    }
    let (body, crc) = bytes[table_end..].split_at(bytes.len() - table_end - 4);
    (crc32c::crc32c(body).to_le_bytes() == crc).then_some((table, table_end as u64))
}

/// An index file's table.
struct Table {
    spans: Vec<(String, Span)>,
    records: u64,
    keys: u64,
}

/// Parses the header and table in `bytes` (which end with the table's
/// checksum) and checks that they describe the segment.
fn parse_table(segment: u32, bytes: &[u8], first_lsn: u64, segment_len: u64) -> Option<Table> {
    let mut cursor = Cursor { bytes, at: 0 };
    if cursor.take(8)? != MAGIC || cursor.u64()? != first_lsn || cursor.u64()? != segment_len {
        return None;
    }
    let (records, streams, keys, _table_len) =
        (cursor.u32()?, cursor.u32()?, cursor.u32()?, cursor.u32()?);
    let mut spans = Vec::with_capacity(streams as usize);
    for _ in 0..streams {
        let name_len = cursor.u16()? as usize;
        let name = std::str::from_utf8(cursor.take(name_len)?).ok()?.to_owned();
        let span = Span {
            segment,
            first_seq: cursor.u64()?,
            count: cursor.u32()?,
            entry_start: cursor.u32()?,
            key_start: cursor.u32()?,
            key_count: cursor.u32()?,
        };
        spans.push((name, span));
    }
    let table_end = cursor.at;
    if table_end + 4 != bytes.len() || cursor.u32()? != crc32c::crc32c(&bytes[..table_end]) {
        return None;
    }
    Some(Table {
        spans,
        records: u64::from(records),
        keys: u64::from(keys),
    })
}

impl IndexFile {
    /// The positions (in the segment) of entries `first .. first + count`.
    fn entries(&self, first: u32, count: u32) -> Result<Vec<(u64, u32)>, ReadError> {
        let mut bytes = vec![0; count as usize * ENTRY_BYTES as usize];
        self.file
            .read_exact_at(&mut bytes, self.entries_at + u64::from(first) * ENTRY_BYTES)?;
        Ok(bytes
            .chunks_exact(ENTRY_BYTES as usize)
            .map(|entry| {
                let offset = u64::from_le_bytes(entry[..8].try_into().expect("8 bytes"));
                let len = u32::from_le_bytes(entry[8..].try_into().expect("4 bytes"));
                (offset, len)
            })
            .collect())
    }

    /// The table of streams, read again from the file (compaction plans
    /// with it; the archive keeps only spans in memory).
    fn runs(&self) -> Result<Vec<StreamRun>, ReadError> {
        let mut bytes = vec![0; self.entries_at as usize];
        self.file.read_exact_at(&mut bytes, 0)?;
        let damaged = || ReadError::Damaged {
            offset: 0,
            reason: "a segment index changed on disk".into(),
        };
        let (first_lsn, segment_len) = {
            let mut cursor = Cursor {
                bytes: &bytes,
                at: MAGIC.len(),
            };
            (
                cursor.u64().ok_or_else(damaged)?,
                cursor.u64().ok_or_else(damaged)?,
            )
        };
        let table = parse_table(0, &bytes, first_lsn, segment_len).ok_or_else(damaged)?;
        Ok(table
            .spans
            .into_iter()
            .map(|(stream, span)| StreamRun {
                stream,
                first_seq: span.first_seq,
                count: u64::from(span.count),
                entry_start: span.entry_start,
            })
            .collect())
    }

    /// The key pair at `index`: a key's hash and its seq.
    fn key_pair(&self, index: u64) -> Result<(u64, u64), ReadError> {
        let mut pair = [0; KEY_BYTES as usize];
        self.file
            .read_exact_at(&mut pair, self.keys_at + index * KEY_BYTES)?;
        let hash = u64::from_le_bytes(pair[..8].try_into().expect("8 bytes"));
        let seq = u64::from_le_bytes(pair[8..].try_into().expect("8 bytes"));
        Ok((hash, seq))
    }

    /// The seqs whose key has `hash`, among keys `first .. first + count`
    /// (sorted by hash): a binary search, one `pread` a step.
    fn seqs_with_hash(&self, first: u32, count: u32, hash: u64) -> Result<Vec<u64>, ReadError> {
        let (mut low, mut high) = (u64::from(first), u64::from(first) + u64::from(count));
        while low < high {
            let middle = low + (high - low) / 2;
            if self.key_pair(middle)?.0 < hash {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        let mut seqs = Vec::new();
        let end = u64::from(first) + u64::from(count);
        while low < end {
            let (candidate, seq) = self.key_pair(low)?;
            if candidate != hash {
                break;
            }
            seqs.push(seq);
            low += 1;
        }
        Ok(seqs)
    }
}

impl Archive {
    /// An archive of no segment yet.
    pub(crate) fn new() -> Self {
        Archive {
            files: RwLock::new(BTreeMap::new()),
            spans: RwLock::new(HashMap::new()),
            floor: AtomicU64::new(0),
        }
    }

    /// Takes in the index of the next sealed segment, `segment` (its id),
    /// found at `segment_path`; builds and writes it first when it is
    /// missing or damaged. `next_start` is where the segment after it
    /// starts in the log's byte space: the archive locates everything below.
    /// Returns how many records the segment holds.
    pub(crate) fn add(
        &self,
        segment: u32,
        segment_path: &Path,
        segment_file: &File,
        first_lsn: u64,
        next_start: u64,
    ) -> Result<u64, OpenError> {
        let loaded = Self::load_or_build(segment, segment_path, segment_file, first_lsn, true)?;
        let records = loaded.records;
        let mut files = self.files.write().expect("archive lock poisoned");
        assert!(
            files
                .last_key_value()
                .is_none_or(|(last, _)| *last < segment),
            "segments are archived in order"
        );
        files.insert(segment, loaded.file);
        let mut spans = self.spans.write().expect("archive lock poisoned");
        for (name, span) in loaded.spans {
            spans.entry(name).or_default().push(span);
        }
        drop(spans);
        drop(files);
        self.floor.store(next_start, Ordering::Release);
        Ok(records)
    }

    /// The index of segment `segment` as its file says, built and written
    /// first when it is missing or damaged (with a warning when `warn`: a
    /// compaction builds it on purpose).
    pub(crate) fn load_or_build(
        segment: u32,
        segment_path: &Path,
        segment_file: &File,
        first_lsn: u64,
        warn: bool,
    ) -> Result<Loaded, OpenError> {
        let io_error = |path: &Path| {
            let path = path.to_owned();
            move |source| OpenError::Io { path, source }
        };
        let segment_len = segment_file
            .metadata()
            .map_err(io_error(segment_path))?
            .len();
        let loaded = load(segment, segment_path, first_lsn, segment_len)
            .map_err(io_error(&index_path(segment_path)))?;
        if let Some(loaded) = loaded {
            return Ok(loaded);
        }
        if warn {
            tracing::warn!(segment = %segment_path.display(), "building the index of a sealed segment");
        }
        let layout = Layout::of(segment_file, segment_path)?;
        let table = SegmentTable::build(segment_file, segment_path, first_lsn, &layout)?;
        table
            .write(segment_path)
            .map_err(io_error(&index_path(segment_path)))?;
        load(segment, segment_path, first_lsn, segment_len)
            .map_err(io_error(&index_path(segment_path)))?
            .ok_or_else(|| OpenError::Corrupt {
                path: index_path(segment_path),
                offset: 0,
                reason: "a segment index just written does not read back".into(),
            })
    }

    /// Puts the index of a compacted segment in the place of segments
    /// `removed` (the first of which keeps its id, `loaded`'s): `streams`
    /// names every stream that had records in them. An in-memory swap; the
    /// caller holds the readers' gate.
    pub(crate) fn replace(&self, removed: &[u32], loaded: Loaded, streams: &[String]) {
        let mut files = self.files.write().expect("archive lock poisoned");
        let mut spans = self.spans.write().expect("archive lock poisoned");
        for id in removed {
            files.remove(id);
        }
        let kept = removed[0];
        files.insert(kept, loaded.file);
        for name in streams {
            if let Some(list) = spans.get_mut(name) {
                list.retain(|span| !removed.contains(&span.segment));
                if list.is_empty() {
                    spans.remove(name);
                }
            }
        }
        for (name, span) in loaded.spans {
            let list = spans.entry(name).or_default();
            let at = list.partition_point(|other| other.first_seq < span.first_seq);
            list.insert(at, span);
        }
    }

    /// Everything below this position of the log's byte space is archived.
    pub(crate) fn floor(&self) -> u64 {
        self.floor.load(Ordering::Acquire)
    }

    /// The ids of the archived segments, in log order.
    pub(crate) fn ids(&self) -> Vec<u32> {
        let files = self.files.read().expect("archive lock poisoned");
        files.keys().copied().collect()
    }

    /// How many records archived segment `id` holds, and its streams.
    pub(crate) fn runs_of(&self, id: u32) -> Result<(u64, Vec<StreamRun>), ReadError> {
        let files = self.files.read().expect("archive lock poisoned");
        let file = files.get(&id).ok_or_else(|| ReadError::Damaged {
            offset: 0,
            reason: format!("segment {id} is not archived"),
        })?;
        Ok((file.records, file.runs()?))
    }

    /// Bytes of the first `count` records of `run` in segment `id`, each
    /// with its newline.
    pub(crate) fn bytes_of(&self, id: u32, run: &StreamRun, count: u64) -> Result<u64, ReadError> {
        let files = self.files.read().expect("archive lock poisoned");
        let Some(file) = files.get(&id) else {
            return Ok(0);
        };
        let mut total = 0;
        let mut done = 0;
        while done < count {
            let step = (count - done).min(4096) as u32;
            let entries = file.entries(run.entry_start + done as u32, step)?;
            total += entries
                .iter()
                .map(|(_, len)| u64::from(*len) + 1)
                .sum::<u64>();
            done += u64::from(step);
        }
        Ok(total)
    }

    /// The spans of `stream` that hold seqs in `first_seq .. first_seq + count`.
    fn spans_of(&self, stream: &str, first_seq: u64, count: u64) -> Vec<Span> {
        let spans = self.spans.read().expect("archive lock poisoned");
        let Some(all) = spans.get(stream) else {
            return Vec::new();
        };
        let end = first_seq + count;
        let start = all.partition_point(|span| span.first_seq + u64::from(span.count) <= first_seq);
        all[start..]
            .iter()
            .take_while(|span| span.first_seq < end)
            .copied()
            .collect()
    }

    /// The positions, in the log's byte space, of seqs `first_seq ..
    /// first_seq + count` of `stream`, in order. The caller holds the
    /// readers' gate until it has read them, so no compaction moves them.
    pub(crate) fn positions(
        &self,
        segments: &Segments,
        stream: &str,
        first_seq: u64,
        count: u64,
    ) -> Result<Vec<RecordPos>, ReadError> {
        let mut positions = Vec::with_capacity(count as usize);
        let files = self.files.read().expect("archive lock poisoned");
        for span in self.spans_of(stream, first_seq, count) {
            if span.first_seq > first_seq + positions.len() as u64 {
                // The seqs before this span are no longer in the hot log.
                break;
            }
            let skip = first_seq.saturating_sub(span.first_seq);
            let wanted =
                (u64::from(span.count) - skip).min(first_seq + count - span.first_seq - skip);
            let (Some(file), Some(start)) =
                (files.get(&span.segment), segments.start_of(span.segment))
            else {
                break;
            };
            for (offset, len) in file.entries(span.entry_start + skip as u32, wanted as u32)? {
                positions.push(RecordPos {
                    offset: start + offset,
                    len,
                });
            }
        }
        if positions.len() as u64 != count {
            return Err(ReadError::Damaged {
                offset: 0,
                reason: format!(
                    "the segment indexes hold {} of the {count} archived records of {stream} from seq {first_seq}",
                    positions.len()
                ),
            });
        }
        Ok(positions)
    }

    /// The candidate seqs of `stream` whose idempotency key hashes like
    /// `key`, newest segment first; the caller confirms each on its record.
    pub(crate) fn key_candidates(&self, stream: &str, key: &str) -> Result<Vec<u64>, ReadError> {
        let hash = key_hash(key);
        let spans = match self
            .spans
            .read()
            .expect("archive lock poisoned")
            .get(stream)
        {
            Some(spans) => spans.clone(),
            None => return Ok(Vec::new()),
        };
        let files = self.files.read().expect("archive lock poisoned");
        let mut candidates = Vec::new();
        for span in spans.iter().rev().filter(|span| span.key_count > 0) {
            if let Some(file) = files.get(&span.segment) {
                candidates.extend(file.seqs_with_hash(span.key_start, span.key_count, hash)?);
            }
        }
        Ok(candidates)
    }
}
