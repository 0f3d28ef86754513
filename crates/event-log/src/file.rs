//! The file medium: one append-only JSONL file, locked against a second
//! process, written with one `write` and one `fdatasync` per batch and read
//! back with `pread`.

use crate::OpenReport;
use crate::error::{OpenError, ReadError};
use crate::index::{RecordPos, StreamState};
use crate::record::RecordRef;
use crate::recovery;
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

/// Opens (creating if needed) and locks the file at `path`, and recovers its
/// index: a torn final write is cut off, anything else wrong refuses.
pub(crate) fn open<S: StreamState>(path: &Path) -> Result<(Storage<S>, OpenReport), OpenError> {
    let io_error = |source| OpenError::Io {
        path: path.to_owned(),
        source,
    };
    let folder = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(folder).map_err(io_error)?;
    let existed = path.exists();
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(io_error)?;
    file.try_lock().map_err(|error| match error {
        std::fs::TryLockError::WouldBlock => OpenError::Locked {
            path: path.to_owned(),
        },
        std::fs::TryLockError::Error(source) => io_error(source),
    })?;
    if !existed {
        File::open(folder)
            .and_then(|dir| dir.sync_all())
            .map_err(io_error)?;
    }
    let recovered = recovery::scan::<S>(&file, path)?;
    if recovered.torn_bytes > 0 {
        tracing::warn!(
            path = %path.display(),
            offset = recovered.valid_len,
            bytes = recovered.torn_bytes,
            "cutting off a torn final write of the event log"
        );
        file.set_len(recovered.valid_len).map_err(io_error)?;
        file.sync_all().map_err(io_error)?;
    }
    let report = OpenReport {
        records: recovered.index.record_count(),
        streams: recovered.index.streams().count(),
        truncated_bytes: recovered.torn_bytes,
    };
    let reader = file.try_clone().map_err(io_error)?;
    let storage = Storage {
        index: recovered.index,
        sink: Box::new(FileSink {
            path: path.to_owned(),
            file,
            end_offset: recovered.valid_len,
        }),
        source: Arc::new(FileSource { file: reader }),
        last_at: recovered.last_at.unwrap_or(SystemTime::UNIX_EPOCH),
        location: path.display().to_string(),
    };
    Ok((storage, report))
}

/// The writer's handle on the file. This process holds the file's lock, so
/// no one else appends: `begin` and `pull` never find foreign records.
struct FileSink {
    path: PathBuf,
    file: File,
    end_offset: u64,
}

impl Sink for FileSink {
    fn begin(&mut self, _after_lsn: u64) -> Result<Vec<OwnedRecord>, SinkFailure> {
        Ok(Vec::new())
    }

    /// One write and one `fdatasync` for the whole batch.
    fn commit(&mut self, batch: StagedBatch<'_>) -> Result<Vec<RecordPos>, SinkFailure> {
        self.file
            .write_all(batch.lines)
            .and_then(|()| self.file.sync_data())
            .map_err(|error| SinkFailure::Fatal(format!("{}: {error}", self.path.display())))?;
        let base = self.end_offset;
        self.end_offset += batch.lines.len() as u64;
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

/// The readers' handle on the file.
struct FileSource {
    file: File,
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
        for chunk in coalesce(positions) {
            let span = read_span(&self.file, chunk)?;
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

/// Splits positions (in seq order) into runs close enough in the file to be
/// read with one `pread` each.
fn coalesce(positions: &[RecordPos]) -> impl Iterator<Item = &[RecordPos]> {
    let mut rest = positions;
    std::iter::from_fn(move || {
        let first = *rest.first()?;
        let mut end = first.offset + u64::from(first.len);
        let mut taken = 1;
        for pos in &rest[1..] {
            let near = pos.offset >= end && pos.offset - end <= COALESCE_GAP_BYTES;
            let new_end = pos.offset + u64::from(pos.len);
            if !near || new_end - first.offset > COALESCE_SPAN_BYTES {
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

fn read_span(file: &File, chunk: &[RecordPos]) -> std::io::Result<Vec<u8>> {
    let first = chunk[0];
    let last = chunk[chunk.len() - 1];
    let len = (last.offset + u64::from(last.len) - first.offset) as usize;
    let mut span = vec![0; len];
    file.read_exact_at(&mut span, first.offset)?;
    Ok(span)
}
