//! The file medium: an append-only JSONL log in segment files (see
//! `segments`), locked against a second process, written with one `write`
//! and one `fdatasync` per batch and read back with `pread`.

use crate::OpenReport;
use crate::error::{OpenError, ReadError};
use crate::index::{Index, RecordPos, StreamState};
use crate::record::RecordRef;
use crate::recovery;
use crate::segments::{Segment, Segments, later_segments, segment_path};
use crate::storage::{OwnedRecord, Sink, SinkFailure, Source, StagedBatch, Storage};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

/// Largest gap between two records that is still read in one go rather than
/// skipped, and largest span read at once.
const COALESCE_GAP_BYTES: u64 = 16 << 10;
const COALESCE_SPAN_BYTES: u64 = 4 << 20;

/// Opens (creating if needed) and locks the log whose first segment is the
/// file at `path`, and recovers its index from every segment in order: a
/// torn final write of the last segment is cut off, anything else wrong
/// refuses. A segment that reaches `segment_bytes` is followed by a new one.
pub(crate) fn open<S: StreamState>(
    path: &Path,
    segment_bytes: u64,
) -> Result<(Storage<S>, OpenReport), OpenError> {
    let io_error = |path: &Path| {
        let path = path.to_owned();
        move |source| OpenError::Io { path, source }
    };
    let folder = folder_of(path);
    std::fs::create_dir_all(folder).map_err(io_error(path))?;
    let existed = path.exists();
    let first = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(io_error(path))?;
    // The first segment's lock keeps a second process off the whole log.
    first.try_lock().map_err(|error| match error {
        std::fs::TryLockError::WouldBlock => OpenError::Locked {
            path: path.to_owned(),
        },
        std::fs::TryLockError::Error(source) => io_error(path)(source),
    })?;
    if !existed {
        sync_folder(folder).map_err(io_error(path))?;
    }
    let mut files = vec![(1, path.to_owned(), first)];
    for (first_lsn, segment) in later_segments(path).map_err(io_error(path))? {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&segment)
            .map_err(io_error(&segment))?;
        files.push((first_lsn, segment, file));
    }
    let recovered = recover::<S>(files)?;
    let report = OpenReport {
        records: recovered.index.record_count(),
        streams: recovered.index.streams().count(),
        truncated_bytes: recovered.truncated_bytes,
    };
    let segments = Arc::new(Segments::new(recovered.segments));
    let storage = Storage {
        index: recovered.index,
        sink: Box::new(FileSink {
            base: path.to_owned(),
            segments: Arc::clone(&segments),
            active: recovered.active,
            active_len: recovered.active_len,
            end_offset: recovered.end_offset,
            segment_bytes,
        }),
        source: Arc::new(FileSource { segments }),
        last_at: recovered.last_at.unwrap_or(SystemTime::UNIX_EPOCH),
        location: path.display().to_string(),
    };
    Ok((storage, report))
}

/// The folder a log file sits in.
fn folder_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Makes the folder's entries durable: a created segment survives a crash.
fn sync_folder(folder: &Path) -> std::io::Result<()> {
    File::open(folder).and_then(|dir| dir.sync_all())
}

/// The index and segments of every segment file, scanned in log order.
struct Recovered<S> {
    index: Index<S>,
    segments: Vec<Segment>,
    /// The last segment, which the writer appends to.
    active: File,
    active_len: u64,
    end_offset: u64,
    truncated_bytes: u64,
    last_at: Option<SystemTime>,
}

fn recover<S: StreamState>(files: Vec<(u64, PathBuf, File)>) -> Result<Recovered<S>, OpenError> {
    let total_bytes = files
        .iter()
        .map(|(_, _, file)| file.metadata().map_or(0, |m| m.len()))
        .sum();
    let mut progress = recovery::Progress::new(total_bytes);
    let mut index = Index::default();
    let mut segments = Vec::with_capacity(files.len());
    let mut start = 0u64;
    let mut last_at = None;
    let count = files.len();
    let mut active = None;
    let mut truncated_bytes = 0;
    for (position, (first_lsn, path, file)) in files.into_iter().enumerate() {
        let io_error = |source| OpenError::Io {
            path: path.clone(),
            source,
        };
        let is_last = position + 1 == count;
        let expected_first = index.last_lsn() + 1;
        if first_lsn != expected_first {
            return Err(OpenError::Corrupt {
                path: path.clone(),
                offset: 0,
                reason: format!(
                    "the segment is named for log position {first_lsn} but follows position {}",
                    expected_first - 1
                ),
            });
        }
        let scanned = recovery::scan::<S>(&file, &path, start, &mut index, &mut progress)?;
        if scanned.torn_bytes > 0 {
            if !is_last {
                return Err(OpenError::Corrupt {
                    path: path.clone(),
                    offset: scanned.valid_len,
                    reason: "a full segment ends in an incomplete record".into(),
                });
            }
            tracing::warn!(
                path = %path.display(),
                offset = scanned.valid_len,
                bytes = scanned.torn_bytes,
                "cutting off a torn final write of the event log"
            );
            file.set_len(scanned.valid_len).map_err(io_error)?;
            file.sync_all().map_err(io_error)?;
            truncated_bytes = scanned.torn_bytes;
        }
        if !is_last && scanned.valid_len == 0 {
            return Err(OpenError::Corrupt {
                path: path.clone(),
                offset: 0,
                reason: "an empty segment is followed by another".into(),
            });
        }
        last_at = scanned.last_at.or(last_at);
        let reader = file.try_clone().map_err(io_error)?;
        segments.push(Segment {
            first_lsn,
            start,
            file: Arc::new(reader),
        });
        start += scanned.valid_len;
        if is_last {
            active = Some((file, scanned.valid_len));
        }
    }
    let (active, active_len) = active.expect("a log has its first segment");
    Ok(Recovered {
        index,
        segments,
        active,
        active_len,
        end_offset: start,
        truncated_bytes,
        last_at,
    })
}

/// The writer's handle on the log. This process holds the log's lock, so no
/// one else appends: `begin` and `pull` never find foreign records.
struct FileSink {
    /// The first segment's path, which later segments are named after.
    base: PathBuf,
    segments: Arc<Segments>,
    /// The last segment, appended to.
    active: File,
    /// Bytes in the active segment.
    active_len: u64,
    /// Bytes in the whole log: where the next record lands.
    end_offset: u64,
    segment_bytes: u64,
}

impl FileSink {
    /// Starts the segment whose first record will have log position
    /// `first_lsn`, once the active one is full. Its folder entry is made
    /// durable before anything is written into it.
    fn roll(&mut self, first_lsn: u64) -> std::io::Result<()> {
        let path = segment_path(&self.base, first_lsn);
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .open(&path)?;
        sync_folder(folder_of(&path))?;
        let reader = file.try_clone()?;
        self.segments.push(Segment {
            first_lsn,
            start: self.end_offset,
            file: Arc::new(reader),
        });
        self.active = file;
        self.active_len = 0;
        Ok(())
    }
}

impl Sink for FileSink {
    fn begin(&mut self, _after_lsn: u64) -> Result<Vec<OwnedRecord>, SinkFailure> {
        Ok(Vec::new())
    }

    /// One write and one `fdatasync` for the whole batch, into a new segment
    /// when the active one is full.
    fn commit(&mut self, batch: StagedBatch<'_>) -> Result<Vec<RecordPos>, SinkFailure> {
        let location = self.base.display().to_string();
        let fatal = |error: std::io::Error| SinkFailure::Fatal(format!("{location}: {error}"));
        if self.active_len >= self.segment_bytes
            && let Some(first) = batch.records.first()
        {
            self.roll(first.lsn).map_err(fatal)?;
        }
        self.active
            .write_all(batch.lines)
            .and_then(|()| self.active.sync_data())
            .map_err(fatal)?;
        let base = self.end_offset;
        self.end_offset += batch.lines.len() as u64;
        self.active_len += batch.lines.len() as u64;
        Ok(batch
            .records
            .iter()
            .map(|staged| RecordPos {
                offset: base + staged.pos.offset,
                len: staged.pos.len,
            })
            .collect())
    }

    fn release(&mut self) -> Result<(), SinkFailure> {
        Ok(())
    }

    fn pull(&mut self, _after_lsn: u64) -> Result<Vec<OwnedRecord>, SinkFailure> {
        Ok(Vec::new())
    }
}

/// The readers' handle on the segments.
struct FileSource {
    segments: Arc<Segments>,
}

impl Source for FileSource {
    fn read(
        &self,
        stream: &str,
        first_seq: u64,
        positions: &[RecordPos],
        each: &mut dyn FnMut(RecordRef<'_>),
    ) -> Result<(), ReadError> {
        let mut seq = first_seq;
        for chunk in coalesce(positions, &self.segments) {
            let segment = self.segments.find(chunk[0].offset);
            let span = read_span(&segment, chunk)?;
            let base = chunk[0].offset;
            for pos in chunk {
                let start = (pos.offset - base) as usize;
                let line = &span[start..start + pos.len as usize];
                let damaged = |reason: String| ReadError::Damaged {
                    offset: pos.offset,
                    reason,
                };
                let record = RecordRef::decode(line).map_err(|error| damaged(error.to_string()))?;
                // A position that points at another record would serve it as
                // this one: checked on every read, not only in debug builds.
                if record.stream != stream || record.seq != seq {
                    return Err(damaged(format!(
                        "expected {stream} #{seq} but found {} #{}",
                        record.stream, record.seq
                    )));
                }
                each(record);
                seq += 1;
            }
        }
        Ok(())
    }
}

/// Splits positions (in seq order) into runs close enough in one segment to
/// be read with one `pread` each.
fn coalesce<'a>(
    positions: &'a [RecordPos],
    segments: &'a Segments,
) -> impl Iterator<Item = &'a [RecordPos]> + 'a {
    let mut rest = positions;
    std::iter::from_fn(move || {
        let first = *rest.first()?;
        let segment_end = segments.end_of(first.offset).unwrap_or(u64::MAX);
        let mut end = first.offset + u64::from(first.len);
        let mut taken = 1;
        for pos in &rest[1..] {
            let near = pos.offset >= end && pos.offset - end <= COALESCE_GAP_BYTES;
            let new_end = pos.offset + u64::from(pos.len);
            if !near || new_end - first.offset > COALESCE_SPAN_BYTES || new_end > segment_end {
                break;
            }
            end = new_end;
            taken += 1;
        }
        let (chunk, tail) = rest.split_at(taken);
        rest = tail;
        Some(chunk)
    })
}

fn read_span(segment: &Segment, chunk: &[RecordPos]) -> std::io::Result<Vec<u8>> {
    let first = chunk[0];
    let last = chunk[chunk.len() - 1];
    let len = (last.offset + u64::from(last.len) - first.offset) as usize;
    let mut span = vec![0; len];
    segment
        .file
        .read_exact_at(&mut span, first.offset - segment.start)?;
    Ok(span)
}
