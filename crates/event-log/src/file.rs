//! The file medium: an append-only JSONL log in segment files (see
//! `segments`), locked against a second process, written with one `write`
//! and one `fdatasync` per batch and read back with `pread`. Sealed
//! segments are indexed on disk (see `archive`), and the index snapshot
//! sits beside the first segment as `<file>.snapshot` (see `snapshot`).
//! Sealed segments may be compacted (see `compact`): a start settles an
//! interrupted compaction first, and lays segments out by the logical
//! length and lsn range a compacted header names.

use crate::archive::Archive;
use crate::cold::ColdStore;
use crate::compact::{self, Medium, OpenedSegment};
use crate::error::{OpenError, ReadError};
use crate::index::{Index, RecordPos, StreamState};
use crate::record::RecordRef;
use crate::recovery;
use crate::segments::{Segment, Segments, beside, later_segments, segment_path};
use crate::snapshot::{self, Snapshot, SnapshotError};
use crate::storage::{OwnedRecord, Sink, SinkFailure, SnapshotStore, Source, StagedBatch, Storage};
use crate::{CommitObserver, OpenReport, SnapshotWritten};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::RwLock;
use std::time::SystemTime;

/// Largest gap between two records that is still read in one go rather than
/// skipped, and largest span read at once.
const COALESCE_GAP_BYTES: u64 = 16 << 10;
const COALESCE_SPAN_BYTES: u64 = 4 << 20;
/// Most archived positions read from a segment index at once, so a long
/// read holds a bounded number of them.
const ARCHIVED_READ_RECORDS: u64 = 4096;

/// Opens (creating if needed) and locks the log whose first segment is the
/// file at `path`, and recovers its index: every sealed segment gets its
/// on-disk index (built when missing), then the newest valid snapshot is
/// loaded and only the records after it are scanned; without one, every
/// segment is scanned in order. The cold store's catalog is applied before
/// the scan, so the records it made dead are skipped. A torn final write of the last segment is
/// cut off, anything else wrong refuses. A segment that reaches
/// `segment_bytes` is followed by a new one.
pub(crate) fn open<S: StreamState>(
    path: &Path,
    snapshot_file: &Path,
    segment_bytes: u64,
    observer: Option<&dyn CommitObserver<S>>,
    cold: Option<Arc<dyn ColdStore>>,
) -> Result<(Storage<S>, OpenReport, Arc<Medium>), OpenError> {
    let files = compact::settle(open_files(path)?)?;
    let archive = Arc::new(Archive::new());
    let mut start = 0;
    let mut starts = Vec::with_capacity(files.len());
    let mut next_lsn = 1;
    for (number, segment) in files.iter().enumerate() {
        starts.push(start);
        start += segment.layout.logical_len();
        check_first_lsn(next_lsn - 1, segment.first_lsn, &segment.path)?;
        if number + 1 < files.len() {
            let records = archive.add(
                number as u32,
                &segment.path,
                &segment.file,
                segment.first_lsn,
                start,
            )?;
            if records == 0 && segment.layout.header.is_none() {
                return Err(OpenError::Corrupt {
                    path: segment.path.clone(),
                    offset: 0,
                    reason: "an empty segment is followed by another".into(),
                });
            }
            next_lsn = segment.layout.next_lsn(segment.first_lsn, records);
        }
    }
    let restored = restore_snapshot::<S>(snapshot_file, &files, &starts, archive.floor());
    let snapshot = restored.as_ref().map(|start| SnapshotWritten {
        lsn: start.snapshot.index.last_lsn(),
        bytes: start.bytes,
        at: start.written_at,
    });
    let (mut index, from, snapshot_at, extension) = match restored {
        Some(start) => (
            start.snapshot.index,
            start.end,
            start.last_at,
            start.snapshot.extension,
        ),
        None => (Index::default(), 0, None, None),
    };
    index.archive_below(archive.floor());
    let mut replayed = |record: &RecordRef<'_>| {
        if let Some(observer) = observer {
            observer.replayed(record);
        }
    };
    if let Some(observer) = observer {
        observer.restoring(extension.as_deref());
    }
    if let Some(cold) = &cold {
        let replay: Option<&mut dyn FnMut(&RecordRef<'_>)> = match observer {
            Some(_) => Some(&mut replayed),
            None => None,
        };
        crate::cold::apply_catalog(&mut index, &**cold, replay)?;
    }
    let mut recovered = recover::<S>(files, index, from, &mut replayed)?;
    recovered.last_at = recovered.last_at.or(snapshot_at);
    let report = OpenReport {
        records: recovered.index.record_count(),
        streams: recovered.index.streams().count(),
        truncated_bytes: recovered.truncated_bytes,
        snapshot,
        replayed: recovered.replayed,
        segments: recovered.segments.len(),
    };
    let segments = Arc::new(Segments::new(recovered.segments));
    let gate = Arc::new(RwLock::new(()));
    let medium = Arc::new(Medium::new(
        Arc::clone(&segments),
        Arc::clone(&archive),
        Arc::clone(&gate),
    ));
    let storage = Storage {
        index: recovered.index,
        sink: Box::new(FileSink {
            base: path.to_owned(),
            segments: Arc::clone(&segments),
            active: recovered.active,
            active_len: recovered.active_len,
            end_offset: recovered.end_offset,
            segment_bytes,
            indexer: Indexer::start(Arc::clone(&archive), Arc::clone(&segments)).map_err(
                |source| OpenError::Io {
                    path: path.to_owned(),
                    source,
                },
            )?,
        }),
        source: Arc::new(FileSource {
            segments,
            archive,
            gate,
        }),
        last_at: recovered.last_at.unwrap_or(SystemTime::UNIX_EPOCH),
        location: path.display().to_string(),
        snapshots: Some(Arc::new(FileSnapshots {
            path: snapshot_file.to_owned(),
        })),
        cold,
    };
    Ok((storage, report, medium))
}

/// Opens and locks the first segment (creating it) and opens every later
/// one, by first lsn.
fn open_files(path: &Path) -> Result<Vec<(u64, PathBuf, File)>, OpenError> {
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
    Ok(files)
}

/// A valid snapshot, with where its last record ends in the log's byte
/// space and that record's time.
struct SnapshotStart<S> {
    snapshot: Snapshot<S>,
    end: u64,
    last_at: Option<SystemTime>,
    bytes: u64,
    written_at: SystemTime,
}

/// The snapshot beside the log, and where and when its last record ends,
/// when it is valid for the log as it is; otherwise `None`, with a
/// warning saying why the start scans the whole log.
fn restore_snapshot<S: StreamState>(
    location: &Path,
    files: &[OpenedSegment],
    starts: &[u64],
    archive_floor: u64,
) -> Option<SnapshotStart<S>> {
    let written_at = std::fs::metadata(location)
        .and_then(|meta| meta.modified())
        .unwrap_or_else(|_| SystemTime::now());
    let checked = snapshot::read_file(location)
        .map_err(SnapshotError::from)
        .and_then(|bytes| match bytes {
            Some(bytes) => {
                snapshot::decode_snapshot::<S>(&bytes).map(|s| Some((s, bytes.len() as u64)))
            }
            None => Ok(None),
        })
        .and_then(|snapshot| match snapshot {
            Some((snapshot, bytes)) => {
                if snapshot.index.archive_floor() > archive_floor {
                    return Err(SnapshotError::Ahead(
                        "it counts on segment indexes the log does not have".into(),
                    ));
                }
                let (end, last_at) = snapshot_end(&snapshot.index, files, starts)?;
                Ok(Some(SnapshotStart {
                    snapshot,
                    end,
                    last_at,
                    bytes,
                    written_at,
                }))
            }
            None => Ok(None),
        });
    match checked {
        Ok(Some(restored)) => Some(restored),
        Ok(None) => None,
        Err(error) => {
            tracing::warn!(snapshot = %location.display(), %error, "ignoring the index snapshot; scanning the whole log");
            None
        }
    }
}

/// Where the snapshot's last record ends in the log's byte space, and its
/// time, after checking that the log holds that record there.
fn snapshot_end<S: StreamState>(
    index: &Index<S>,
    files: &[OpenedSegment],
    starts: &[u64],
) -> Result<(u64, Option<SystemTime>), SnapshotError> {
    let Some(pos) = index.last_pos() else {
        return Ok((0, None));
    };
    let ahead = |reason: String| SnapshotError::Ahead(reason);
    let segment = starts.partition_point(|start| *start <= pos.offset) - 1;
    // Compaction moved that segment's records (and may have dropped the
    // snapshot's last one): its positions there say nothing any more.
    if files[segment].layout.header.is_some() {
        return Err(ahead(format!(
            "record {} is in a segment compacted since",
            index.last_lsn()
        )));
    }
    let mut line = vec![0; pos.len as usize + 1];
    files[segment]
        .file
        .read_exact_at(&mut line, pos.offset - starts[segment])
        .map_err(|error| {
            ahead(format!(
                "record {} is not in the log: {error}",
                index.last_lsn()
            ))
        })?;
    let found = (line.pop() == Some(b'\n'))
        .then(|| RecordRef::decode(&line).ok())
        .flatten()
        .filter(|record| record.lsn == index.last_lsn())
        .ok_or_else(|| {
            ahead(format!(
                "the log does not hold record {} at byte {}",
                index.last_lsn(),
                pos.offset
            ))
        })?;
    Ok((
        pos.offset + u64::from(pos.len) + 1,
        humantime::parse_rfc3339(&found.at).ok(),
    ))
}

/// The folder a log file sits in.
pub(crate) fn folder_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Makes the folder's entries durable: a created segment survives a crash.
pub(crate) fn sync_folder(folder: &Path) -> std::io::Result<()> {
    File::open(folder).and_then(|dir| dir.sync_all())
}

/// Replaces the file at `path` with `bytes` (a segment index, the
/// snapshot): a temporary file beside it, synced, renamed over it, and the
/// folder synced, so a crash leaves the old file or the new one, never a
/// mix.
pub(crate) fn replace_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = beside(path, ".tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, path)?;
    sync_folder(folder_of(path))
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
    replayed: u64,
}

/// Scans every segment from byte `from` of the log's byte space on into
/// `index` (which holds every record before it).
fn recover<S: StreamState>(
    files: Vec<OpenedSegment>,
    mut index: Index<S>,
    from: u64,
    replayed: &mut dyn FnMut(&RecordRef<'_>),
) -> Result<Recovered<S>, OpenError> {
    let total_bytes: u64 = files
        .iter()
        .map(|segment| segment.layout.logical_len())
        .sum();
    let mut progress = recovery::Progress::new(from, total_bytes);
    let records_before = index.record_count();
    let mut segments = Vec::with_capacity(files.len());
    let mut start = 0u64;
    let mut last_at = None;
    let count = files.len();
    let mut active = None;
    let mut truncated_bytes = 0;
    for (position, segment) in files.into_iter().enumerate() {
        let OpenedSegment {
            first_lsn,
            path,
            file,
            layout,
        } = segment;
        let io_error = |source| OpenError::Io {
            path: path.clone(),
            source,
        };
        let is_last = position + 1 == count;
        let file_len = layout.file_len;
        let scanned = if start + layout.logical_len() <= from && !is_last {
            // Wholly before the snapshot: its records are in the index.
            recovery::Scanned {
                valid_len: file_len,
                torn_bytes: 0,
                last_at: None,
            }
        } else {
            let mut skip = from.saturating_sub(start);
            if skip == 0 {
                check_first_lsn(index.last_lsn(), first_lsn, &path)?;
                skip = layout.body_start;
            }
            let mut target = recovery::ScanTarget {
                index: &mut index,
                progress: &mut progress,
                replayed: &mut *replayed,
            };
            recovery::scan::<S>(&file, &path, start, skip, &layout, &mut target)?
        };
        if let Some(header) = &layout.header {
            // The dead records at its end are gone too; the next segment
            // still begins after them.
            index.skip_dead_to(header.last_lsn);
        }
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
            id: position as u32,
            first_lsn,
            start,
            file: Arc::new(reader),
            path,
        });
        start += match &layout.header {
            Some(header) => header.logical_len,
            None => scanned.valid_len,
        };
        if is_last {
            active = Some((file, scanned.valid_len));
        }
    }
    let (active, active_len) = active.expect("a log has its first segment");
    let replayed = index.record_count() - records_before;
    Ok(Recovered {
        index,
        segments,
        active,
        active_len,
        end_offset: start,
        truncated_bytes,
        last_at,
        replayed,
    })
}

/// A segment must begin right after the records before it (the last of
/// which is `previous_lsn`), as its name says.
fn check_first_lsn(previous_lsn: u64, first_lsn: u64, path: &Path) -> Result<(), OpenError> {
    let expected_first = previous_lsn + 1;
    if first_lsn == expected_first {
        return Ok(());
    }
    Err(OpenError::Corrupt {
        path: path.to_owned(),
        offset: 0,
        reason: format!(
            "the segment is named for log position {first_lsn} but follows position {}",
            expected_first - 1
        ),
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
    /// Indexes each segment once it is sealed.
    indexer: Indexer,
}

impl FileSink {
    /// Starts the segment whose first record will have log position
    /// `first_lsn`, once the active one is full. Its folder entry is made
    /// durable before anything is written into it; the full segment is
    /// handed to the indexer.
    fn roll(&mut self, first_lsn: u64) -> std::io::Result<()> {
        let path = segment_path(&self.base, first_lsn);
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .open(&path)?;
        sync_folder(folder_of(&path))?;
        let reader = file.try_clone()?;
        let sealed = self.segments.push(Segment {
            id: 0,
            first_lsn,
            start: self.end_offset,
            file: Arc::new(reader),
            path,
        });
        self.active = file;
        self.active_len = 0;
        self.indexer.seal(sealed);
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

/// The thread that writes the index of each sealed segment and adds it to
/// the archive, in order, so a roll never waits for it. Until a segment is
/// archived its positions stay in the in-memory index; if indexing fails
/// they stay there (more memory, same answers) and the next start rebuilds
/// the index file.
struct Indexer {
    queue: Option<std::sync::mpsc::Sender<u32>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Indexer {
    fn start(archive: Arc<Archive>, segments: Arc<Segments>) -> std::io::Result<Self> {
        let (queue, sealed) = std::sync::mpsc::channel::<u32>();
        let thread = std::thread::Builder::new()
            .name("event-log-indexer".into())
            .spawn(move || {
                for id in sealed {
                    if let Err(error) = index_sealed(&archive, &segments, id) {
                        tracing::error!(%error, "indexing a sealed segment failed; its positions stay in memory");
                        return;
                    }
                }
            })?;
        Ok(Indexer {
            queue: Some(queue),
            thread: Some(thread),
        })
    }

    /// Segment `id` is full and will not change again.
    fn seal(&self, id: u32) {
        if let Some(queue) = &self.queue {
            // A stopped indexer already logged why; the next start indexes.
            let _ = queue.send(id);
        }
    }
}

impl Drop for Indexer {
    /// Finishes the segments already sealed, so that a log opened again in
    /// the same process never races a late index write.
    fn drop(&mut self) {
        self.queue.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Indexes sealed segment `id` (only ever the one after the last archived:
/// compaction touches archived segments only, so it is still there).
fn index_sealed(archive: &Archive, segments: &Segments, id: u32) -> Result<(), OpenError> {
    let Some((segment, Some(next))) = segments.with_next(id) else {
        unreachable!("a sealed segment is followed by another until it is archived");
    };
    archive.add(
        id,
        &segment.path,
        &segment.file,
        segment.first_lsn,
        next.start,
    )?;
    Ok(())
}

/// The snapshot file beside the log.
struct FileSnapshots {
    path: PathBuf,
}

impl SnapshotStore for FileSnapshots {
    fn save(&self, _lsn: u64, bytes: &[u8]) -> Result<(), String> {
        replace_atomically(&self.path, bytes)
            .map_err(|error| format!("{}: {error}", self.path.display()))
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

/// The readers' handle on the segments.
struct FileSource {
    segments: Arc<Segments>,
    archive: Arc<Archive>,
    /// Held (shared) from taking archived positions to reading them, so a
    /// compaction's swap never falls in between (see `compact`).
    gate: Arc<RwLock<()>>,
}

impl FileSource {
    fn gate(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.gate.read().expect("readers' gate poisoned")
    }

    /// `count` archived records of `stream` from `first_seq`; the caller
    /// holds the gate.
    fn read_archived_in_gate(
        &self,
        stream: &str,
        first_seq: u64,
        count: u64,
        each: &mut dyn FnMut(RecordRef<'_>),
    ) -> Result<(), ReadError> {
        let positions = self
            .archive
            .positions(&self.segments, stream, first_seq, count)?;
        self.read(stream, first_seq, &positions, each)
    }
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

    /// Positions from the sealed segments' index files, a bounded number
    /// at a time, then read like the index's own.
    fn read_archived(
        &self,
        stream: &str,
        first_seq: u64,
        count: u64,
        each: &mut dyn FnMut(RecordRef<'_>),
    ) -> Result<(), ReadError> {
        let mut done = 0;
        while done < count {
            let step = (count - done).min(ARCHIVED_READ_RECORDS);
            let seq = first_seq + done;
            // A chunk at a time, so a long read never holds a swap off.
            let _gate = self.gate();
            self.read_archived_in_gate(stream, seq, step, each)?;
            done += step;
        }
        Ok(())
    }

    /// Candidates by the key's hash, each confirmed on its record, all
    /// under the gate: a candidate does not vanish before it is read.
    fn archived_key(&self, stream: &str, key: &str) -> Result<Option<u64>, ReadError> {
        let _gate = self.gate();
        for seq in self.archive.key_candidates(stream, key)? {
            let mut matches = false;
            self.read_archived_in_gate(stream, seq, 1, &mut |record| {
                matches = record.key.as_deref() == Some(key);
            })?;
            if matches {
                return Ok(Some(seq));
            }
        }
        Ok(None)
    }

    fn archive_floor(&self) -> u64 {
        self.archive.floor()
    }

    fn segment_count(&self) -> usize {
        self.segments.count()
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
