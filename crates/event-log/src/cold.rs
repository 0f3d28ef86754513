//! The cold store: where a stream's history goes when it leaves the hot
//! log (the service's *archive*: runs sealed long ago, erased runs, old
//! worker heartbeats).
//!
//! A stream's cold history covers its seqs `1 ..= base` and holds the
//! records of them its domain chose to keep (every one for an archived run,
//! only the tombstone of an erased one, the lifecycle of a worker), the
//! stream's folded state at `base` and its creation key. Once it is durable
//! the index serves those seqs from here (see
//! [`StreamEntry::cold_base`](crate::StreamEntry::cold_base)) and the
//! medium's own copies are dead.
//!
//! The file store ([`ColdDir`]) is a folder of its own, which may sit on
//! other storage than the log:
//!
//! - `streams/<stream>.zst`, one file per stream, replaced whole (temporary
//!   file, `fsync`, rename, folder `fsync`) when the history grows or is
//!   erased. It is self-describing:
//!
//!   ```text
//!   {"format":"openagents-runtime-archive","version":1,"meta_bytes":…,"meta_crc32c":…}\n
//!   {"stream":…,"base":…,"records":…,"create_key":…,"state":{…},"frames":[…]}
//!   <zstd frame><zstd frame>…
//!   ```
//!
//!   The records are the log's own checksummed lines, in seq order, cut
//!   into zstd frames of about [`FRAME_RAW_BYTES`]; the meta lists each
//!   frame's seq range, place and CRC-32C, so a page of a long history
//!   reads one frame, and every byte read is checked.
//! - `catalog.jsonl`, one checksummed line per history written, appended and
//!   `fdatasync`ed after the file is in place: it is the durable word that
//!   a history is cold. A start reads it whole (one line per stream, not
//!   per event) and checks that every file it names is there.
//!
//! A crash leaves the previous file or the new one, and the catalog line
//! or not: a file without its line is taken for what it says at the next
//! start, and a line whose file is missing refuses the start, because the
//! records it covers are no longer anywhere else.

use crate::error::{ColdMoveError, OpenError, ReadError};
use crate::file::{replace_atomically, sync_folder};
use crate::index::{Index, StreamState};
use crate::record::RecordRef;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const FORMAT: &str = "openagents-runtime-archive";
/// The archive file format's version; a reader refuses others.
pub const COLD_VERSION: u32 = 1;
/// Uncompressed bytes of records per zstd frame.
pub const FRAME_RAW_BYTES: usize = 256 << 10;
const ZSTD_LEVEL: i32 = 3;
/// Longest header line read before the meta.
const HEADER_MAX_BYTES: usize = 512;
const CATALOG: &str = "catalog.jsonl";
const STREAMS: &str = "streams";

/// Why the cold store could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ColdError {
    /// A file of the store could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A file of the store is not what it should be.
    #[error("{path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The medium refused (a database store).
    #[error("{0}")]
    Medium(String),
}

/// One stream's cold history as the catalog describes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ColdEntry {
    /// The stream.
    pub stream: String,
    /// Every seq up to this one is covered.
    pub base: u64,
    /// How many records it keeps.
    pub records: u64,
    /// Size of its file (compressed).
    pub bytes: u64,
    /// The log-wide key that created the stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_key: Option<String>,
    /// The stream's folded state at `base`, as its `StreamState` serializes.
    pub state: Box<RawValue>,
    /// Whether some records were kept as husks only ([`Keep::Husk`]): the
    /// hot log's copies hold content that must leave the disk.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub scrub: bool,
}

/// The kept records of a cold history, compressed frame by frame as they
/// are pushed, so moving a long history holds its compressed bytes only.
pub struct ColdBody {
    frames: Vec<Frame>,
    body: Vec<u8>,
    raw: Vec<u8>,
    first_seq: u64,
    last_seq: u64,
    records: u64,
}

impl Default for ColdBody {
    fn default() -> Self {
        ColdBody {
            frames: Vec::new(),
            body: Vec::new(),
            raw: Vec::with_capacity(FRAME_RAW_BYTES + 4096),
            first_seq: 0,
            last_seq: 0,
            records: 0,
        }
    }
}

impl ColdBody {
    /// Adds the next kept record (seqs rise).
    pub fn push(&mut self, record: &RecordRef<'_>) -> std::io::Result<()> {
        debug_assert!(
            record.seq > self.last_seq,
            "cold records are pushed in seq order"
        );
        if self.raw.is_empty() {
            self.first_seq = record.seq;
        }
        record.encode_into(&mut self.raw);
        self.last_seq = record.seq;
        self.records += 1;
        if self.raw.len() >= FRAME_RAW_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// How many records were pushed.
    pub fn records(&self) -> u64 {
        self.records
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.raw.is_empty() {
            return Ok(());
        }
        let compressed = zstd::bulk::compress(&self.raw, ZSTD_LEVEL)?;
        self.frames.push(Frame {
            first_seq: self.first_seq,
            last_seq: self.last_seq,
            offset: self.body.len() as u64,
            len: compressed.len() as u64,
            raw_len: self.raw.len() as u64,
            crc32c: crc32c::crc32c(&compressed),
        });
        self.body.extend_from_slice(&compressed);
        self.raw.clear();
        Ok(())
    }
}

/// Encodes a history as an archive file (the same bytes whatever keeps
/// them), filling in the entry's `records` and `bytes`.
pub fn encode_archive(entry: &mut ColdEntry, mut body: ColdBody) -> std::io::Result<Vec<u8>> {
    body.flush()?;
    entry.records = body.records;
    let meta_of = |entry: &ColdEntry| {
        serde_json::to_vec(&MetaOut {
            entry,
            frames: &body.frames,
        })
        .map_err(std::io::Error::other)
    };
    // The size is part of the meta: encode once to learn it, then again
    // with it (its digits can only change the length by a few bytes, so a
    // third pass settles it).
    let mut file = Vec::new();
    for _ in 0..3 {
        let meta = meta_of(entry)?;
        let header = Header {
            format: FORMAT.to_owned(),
            version: COLD_VERSION,
            meta_bytes: meta.len() as u64,
            meta_crc32c: crc32c::crc32c(&meta),
        };
        file = serde_json::to_vec(&header).map_err(std::io::Error::other)?;
        file.push(b'\n');
        file.extend_from_slice(&meta);
        file.extend_from_slice(&body.body);
        if entry.bytes == file.len() as u64 {
            break;
        }
        entry.bytes = file.len() as u64;
    }
    Ok(file)
}

/// Calls `each` for the records of an archive held in memory (a database
/// store's value) with `after_seq < seq <= upto`, at most `limit`.
pub fn read_archive_bytes(
    bytes: &[u8],
    stream: &str,
    after_seq: u64,
    upto: u64,
    limit: usize,
    each: &mut dyn FnMut(RecordRef<'_>),
) -> Result<usize, ReadError> {
    let place = Path::new(stream);
    let opened = Opened::open_in(InMemory(bytes), place).map_err(|error| ReadError::Damaged {
        offset: 0,
        reason: error.to_string(),
    })?;
    opened.read(place, stream, after_seq, upto, limit, each)
}

/// What a cold history keeps of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// The record as it is.
    Whole,
    /// Its place only: stream, seq, lsn, type, time, writer and creation
    /// key, with the payload `null` and no attributes or idempotency key
    /// (an erased run's events, whose places other streams' merges count).
    Husk,
    /// Nothing: the seq reads as absent. Unlike a husk, the hot log's copy
    /// is then reclaimed only when compaction finds its segment worth it.
    Drop,
}

/// Where a medium keeps the cold histories of its streams.
pub trait ColdStore: Send + Sync + 'static {
    /// Makes `body` (described by `entry`, whose `records` and `bytes` the
    /// store fills in) the stream's cold history, replacing an earlier one,
    /// durably: once it returns, the history is read back after any crash.
    /// A medium that does not compact (a database) also deletes its own
    /// copies of the covered records here, in the same transaction.
    fn put(&self, entry: ColdEntry, body: ColdBody) -> Result<ColdEntry, ColdError>;

    /// Calls `each` for the kept records of `stream` with `after_seq < seq
    /// <= upto`, in order, at most `limit` of them; returns how many.
    fn read(
        &self,
        stream: &str,
        after_seq: u64,
        upto: u64,
        limit: usize,
        each: &mut dyn FnMut(RecordRef<'_>),
    ) -> Result<usize, ReadError>;

    /// The seq of the kept record of `stream` that used idempotency key
    /// `key`, if one did.
    fn key(&self, stream: &str, key: &str) -> Result<Option<u64>, ReadError>;

    /// The newest entry of `stream`, if it has a cold history.
    fn entry(&self, stream: &str) -> Option<ColdEntry>;

    /// The newest entry of every stream, for a start.
    fn catalog(&self) -> Result<Vec<ColdEntry>, ColdError>;

    /// Bytes the store holds.
    fn bytes(&self) -> u64;

    /// Where it is, for messages.
    fn describe(&self) -> String;
}

/// The header line of an archive file.
#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    version: u32,
    meta_bytes: u64,
    meta_crc32c: u32,
}

/// One zstd frame of an archive file.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Frame {
    first_seq: u64,
    last_seq: u64,
    /// Offset from the end of the meta.
    offset: u64,
    len: u64,
    raw_len: u64,
    crc32c: u32,
}

#[derive(Deserialize)]
struct Meta {
    entry: ColdEntry,
    frames: Vec<Frame>,
}

#[derive(Serialize)]
struct MetaOut<'a> {
    entry: &'a ColdEntry,
    frames: &'a [Frame],
}

/// Bytes an archive is read from: its file, or a copy in memory.
trait ReadAt {
    fn read_at(&self, buffer: &mut [u8], offset: u64) -> std::io::Result<usize>;

    fn read_exact_at(&self, buffer: &mut [u8], offset: u64) -> std::io::Result<()> {
        let read = self.read_at(buffer, offset)?;
        if read == buffer.len() {
            Ok(())
        } else {
            Err(std::io::ErrorKind::UnexpectedEof.into())
        }
    }
}

impl ReadAt for File {
    fn read_at(&self, buffer: &mut [u8], offset: u64) -> std::io::Result<usize> {
        FileExt::read_at(self, buffer, offset)
    }

    fn read_exact_at(&self, buffer: &mut [u8], offset: u64) -> std::io::Result<()> {
        FileExt::read_exact_at(self, buffer, offset)
    }
}

struct InMemory<'a>(&'a [u8]);

impl ReadAt for InMemory<'_> {
    fn read_at(&self, buffer: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.0.len());
        let end = start.saturating_add(buffer.len()).min(self.0.len());
        buffer[..end - start].copy_from_slice(&self.0[start..end]);
        Ok(end - start)
    }
}

/// An archive opened for reading: its meta, checked.
struct Opened<R> {
    file: R,
    meta: Meta,
    body_start: u64,
}

impl Opened<File> {
    fn open(path: &Path) -> Result<Option<Self>, ColdError> {
        match File::open(path) {
            Ok(file) => Self::open_in(file, path).map(Some),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ColdError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }
}

impl<R: ReadAt> Opened<R> {
    fn open_in(file: R, path: &Path) -> Result<Self, ColdError> {
        let io = |source| ColdError::Io {
            path: path.to_owned(),
            source,
        };
        let corrupt = |reason: String| ColdError::Corrupt {
            path: path.to_owned(),
            reason,
        };
        let mut head = vec![0; HEADER_MAX_BYTES];
        let read = file.read_at(&mut head, 0).map_err(io)?;
        let end = memchr::memchr(b'\n', &head[..read])
            .ok_or_else(|| corrupt("no archive header line".into()))?;
        let header: Header = serde_json::from_slice(&head[..end])
            .map_err(|error| corrupt(format!("archive header: {error}")))?;
        if header.format != FORMAT || header.version != COLD_VERSION {
            return Err(corrupt(format!(
                "archive format {:?} version {} is not {FORMAT:?} version {COLD_VERSION}",
                header.format, header.version
            )));
        }
        let meta_len =
            usize::try_from(header.meta_bytes).map_err(|_| corrupt("meta too long".into()))?;
        let mut meta = vec![0; meta_len];
        file.read_exact_at(&mut meta, end as u64 + 1).map_err(io)?;
        if crc32c::crc32c(&meta) != header.meta_crc32c {
            return Err(corrupt("archive meta checksum mismatch".into()));
        }
        let meta: Meta = serde_json::from_slice(&meta)
            .map_err(|error| corrupt(format!("archive meta: {error}")))?;
        Ok(Opened {
            file,
            meta,
            body_start: end as u64 + 1 + header.meta_bytes,
        })
    }

    /// The uncompressed lines of one frame, checked.
    fn frame(&self, frame: &Frame, path: &Path) -> Result<Vec<u8>, ReadError> {
        let damaged = |reason: String| ReadError::Damaged {
            offset: frame.offset,
            reason: format!("{}: {reason}", path.display()),
        };
        let len = usize::try_from(frame.len).map_err(|_| damaged("frame too long".into()))?;
        let mut compressed = vec![0; len];
        self.file
            .read_exact_at(&mut compressed, self.body_start + frame.offset)
            .map_err(|error| damaged(error.to_string()))?;
        if crc32c::crc32c(&compressed) != frame.crc32c {
            return Err(damaged("frame checksum mismatch".into()));
        }
        let raw_len =
            usize::try_from(frame.raw_len).map_err(|_| damaged("frame too long".into()))?;
        let raw = zstd::bulk::decompress(&compressed, raw_len)
            .map_err(|error| damaged(format!("frame does not decompress: {error}")))?;
        if raw.len() != raw_len {
            return Err(damaged("frame is shorter than its meta says".into()));
        }
        Ok(raw)
    }

    /// Calls `each` for the records with `after < seq <= upto`, at most
    /// `limit`; returns how many.
    fn read(
        &self,
        path: &Path,
        stream: &str,
        after: u64,
        upto: u64,
        limit: usize,
        each: &mut dyn FnMut(RecordRef<'_>),
    ) -> Result<usize, ReadError> {
        let mut taken = 0;
        for frame in &self.meta.frames {
            if frame.last_seq <= after || frame.first_seq > upto || taken == limit {
                continue;
            }
            let raw = self.frame(frame, path)?;
            for line in raw.split(|byte| *byte == b'\n').filter(|l| !l.is_empty()) {
                let record = RecordRef::decode(line).map_err(|error| ReadError::Damaged {
                    offset: frame.offset,
                    reason: format!("{}: {error}", path.display()),
                })?;
                if record.stream != stream {
                    return Err(ReadError::Damaged {
                        offset: frame.offset,
                        reason: format!("{} holds a record of {}", path.display(), record.stream),
                    });
                }
                if record.seq > after && record.seq <= upto && taken < limit {
                    each(record);
                    taken += 1;
                }
            }
        }
        Ok(taken)
    }
}

/// The file cold store: a folder holding one archive file per stream and
/// the catalog (see the module doc).
pub struct ColdDir {
    root: PathBuf,
    catalog: Mutex<Catalog>,
}

struct Catalog {
    file: File,
    newest: HashMap<String, ColdEntry>,
    lines: usize,
    bytes: u64,
}

impl ColdDir {
    /// Opens (creating) the store at `root`, reads its catalog (cutting off
    /// a torn last line) and checks that every history it names is there.
    pub fn open(root: &Path) -> Result<Self, ColdError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| ColdError::Io { path, source }
        };
        let streams = root.join(STREAMS);
        std::fs::create_dir_all(&streams).map_err(io(&streams))?;
        let catalog_path = root.join(CATALOG);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&catalog_path)
            .map_err(io(&catalog_path))?;
        file.try_lock().map_err(|error| ColdError::Corrupt {
            path: catalog_path.clone(),
            reason: format!("the archive is in use by another process: {error}"),
        })?;
        sync_folder(root).map_err(io(root))?;
        let mut text = Vec::new();
        file.read_to_end(&mut text).map_err(io(&catalog_path))?;
        let (entries, valid_len) = parse_catalog(&text, &catalog_path)?;
        if valid_len < text.len() {
            tracing::warn!(catalog = %catalog_path.display(), bytes = text.len() - valid_len, "cutting off a torn last line of the archive catalog");
            file.set_len(valid_len as u64).map_err(io(&catalog_path))?;
            file.sync_all().map_err(io(&catalog_path))?;
        }
        let lines = entries.len();
        let mut newest = HashMap::new();
        for entry in entries {
            newest.insert(entry.stream.clone(), entry);
        }
        let store = ColdDir {
            root: root.to_owned(),
            catalog: Mutex::new(Catalog {
                file,
                newest: HashMap::new(),
                lines,
                bytes: 0,
            }),
        };
        store.check_files(newest)?;
        store.remove_temporaries();
        Ok(store)
    }

    /// Every catalog entry's file must be there; one that was replaced
    /// after its line was written (a crash before the new line) is taken
    /// for what it says and gets its line now.
    fn check_files(&self, newest: HashMap<String, ColdEntry>) -> Result<(), ColdError> {
        let mut catalog = self.catalog.lock().expect("cold catalog lock");
        for (stream, entry) in newest {
            let path = self.path_of(&stream);
            let size = std::fs::metadata(&path).map(|meta| meta.len());
            let entry = match size {
                Ok(size) if size == entry.bytes => entry,
                Ok(_) => {
                    let opened = Opened::open(&path)?.ok_or_else(|| missing(&path, &stream))?;
                    let mut found = opened.meta.entry;
                    if found.stream != stream || found.base < entry.base {
                        return Err(ColdError::Corrupt {
                            path,
                            reason: format!(
                                "holds an older history than the catalog says (base {} < {})",
                                found.base, entry.base
                            ),
                        });
                    }
                    found.bytes = opened
                        .file
                        .metadata()
                        .map_err(|source| ColdError::Io {
                            path: path.clone(),
                            source,
                        })?
                        .len();
                    append_line(&mut catalog.file, &found, &self.root.join(CATALOG))?;
                    catalog.lines += 1;
                    found
                }
                Err(_) => return Err(missing(&path, &stream)),
            };
            catalog.bytes += entry.bytes;
            catalog.newest.insert(stream, entry);
        }
        Ok(())
    }

    fn remove_temporaries(&self) {
        let Ok(listing) = std::fs::read_dir(self.root.join(STREAMS)) else {
            return;
        };
        for entry in listing.flatten() {
            if entry.file_name().to_string_lossy().ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// The archive file of `stream`: its name with every byte but ASCII
    /// letters, digits, `-`, `_` and `.` written as `%XX`.
    fn path_of(&self, stream: &str) -> PathBuf {
        let mut name = String::with_capacity(stream.len() + 8);
        for byte in stream.bytes() {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.') {
                name.push(byte as char);
            } else {
                name.push_str(&format!("%{byte:02X}"));
            }
        }
        name.push_str(".zst");
        self.root.join(STREAMS).join(name)
    }

    fn opened(&self, stream: &str) -> Result<Option<(Opened<File>, PathBuf)>, ReadError> {
        let path = self.path_of(stream);
        Opened::open(&path)
            .map(|opened| opened.map(|opened| (opened, path)))
            .map_err(|error| ReadError::Damaged {
                offset: 0,
                reason: error.to_string(),
            })
    }

    /// Rewrites the catalog with one line per stream once most of its
    /// lines are superseded, so it stays as long as the streams it names.
    fn shrink_catalog(&self, catalog: &mut Catalog) -> Result<(), ColdError> {
        if catalog.lines <= 2 * catalog.newest.len() + 64 {
            return Ok(());
        }
        let path = self.root.join(CATALOG);
        let mut text = Vec::new();
        for entry in catalog.newest.values() {
            text.extend_from_slice(&catalog_line(entry));
        }
        replace_atomically(&path, &text).map_err(|source| ColdError::Io {
            path: path.clone(),
            source,
        })?;
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|source| ColdError::Io {
                path: path.clone(),
                source,
            })?;
        file.try_lock().map_err(|error| ColdError::Corrupt {
            path: path.clone(),
            reason: format!("relocking the rewritten catalog: {error}"),
        })?;
        catalog.file = file;
        catalog.lines = catalog.newest.len();
        Ok(())
    }
}

fn missing(path: &Path, stream: &str) -> ColdError {
    ColdError::Corrupt {
        path: path.to_owned(),
        reason: format!(
            "the archived history of {stream} is missing; restore the archive folder from its backup"
        ),
    }
}

impl ColdStore for ColdDir {
    fn put(&self, mut entry: ColdEntry, body: ColdBody) -> Result<ColdEntry, ColdError> {
        let path = self.path_of(&entry.stream);
        let io = |source| ColdError::Io {
            path: path.clone(),
            source,
        };
        let bytes = encode_archive(&mut entry, body).map_err(io)?;
        replace_atomically(&path, &bytes).map_err(io)?;
        let len = entry.bytes;
        let mut catalog = self.catalog.lock().expect("cold catalog lock");
        append_line(&mut catalog.file, &entry, &self.root.join(CATALOG))?;
        catalog.lines += 1;
        let replaced = catalog.newest.insert(entry.stream.clone(), entry.clone());
        catalog.bytes = catalog.bytes + len - replaced.map_or(0, |old| old.bytes);
        self.shrink_catalog(&mut catalog)?;
        Ok(entry)
    }

    fn read(
        &self,
        stream: &str,
        after_seq: u64,
        upto: u64,
        limit: usize,
        each: &mut dyn FnMut(RecordRef<'_>),
    ) -> Result<usize, ReadError> {
        match self.opened(stream)? {
            Some((opened, path)) => opened.read(&path, stream, after_seq, upto, limit, each),
            None => Err(ReadError::Damaged {
                offset: 0,
                reason: missing(&self.path_of(stream), stream).to_string(),
            }),
        }
    }

    fn key(&self, stream: &str, key: &str) -> Result<Option<u64>, ReadError> {
        let mut found = None;
        if let Some((opened, path)) = self.opened(stream)? {
            opened.read(&path, stream, 0, u64::MAX, usize::MAX, &mut |record| {
                if found.is_none() && record.key.as_deref() == Some(key) {
                    found = Some(record.seq);
                }
            })?;
        }
        Ok(found)
    }

    fn entry(&self, stream: &str) -> Option<ColdEntry> {
        let catalog = self.catalog.lock().expect("cold catalog lock");
        catalog.newest.get(stream).cloned()
    }

    fn catalog(&self) -> Result<Vec<ColdEntry>, ColdError> {
        let catalog = self.catalog.lock().expect("cold catalog lock");
        Ok(catalog.newest.values().cloned().collect())
    }

    fn bytes(&self) -> u64 {
        self.catalog.lock().expect("cold catalog lock").bytes
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
    }
}

/// A catalog line: the CRC-32C of the JSON as 8 hex digits, a space, the
/// JSON, `\n`.
fn catalog_line(entry: &ColdEntry) -> Vec<u8> {
    let json = serde_json::to_vec(entry).expect("a catalog entry serializes");
    let mut line = format!("{:08x} ", crc32c::crc32c(&json)).into_bytes();
    line.extend_from_slice(&json);
    line.push(b'\n');
    line
}

fn append_line(file: &mut File, entry: &ColdEntry, path: &Path) -> Result<(), ColdError> {
    file.write_all(&catalog_line(entry))
        .and_then(|()| file.sync_data())
        .map_err(|source| ColdError::Io {
            path: path.to_owned(),
            source,
        })
}

/// The entries of a catalog and the length of its valid part: a damaged
/// or unterminated last line is a torn append, anything else damaged
/// refuses.
fn parse_catalog(text: &[u8], path: &Path) -> Result<(Vec<ColdEntry>, usize), ColdError> {
    let mut entries = Vec::new();
    let mut offset = 0;
    while offset < text.len() {
        let Some(end) = memchr::memchr(b'\n', &text[offset..]).map(|end| offset + end) else {
            break;
        };
        let line = &text[offset..end];
        match parse_line(line) {
            Some(entry) => entries.push(entry),
            None if end + 1 == text.len() => break,
            None => {
                return Err(ColdError::Corrupt {
                    path: path.to_owned(),
                    reason: format!("damaged catalog line at byte {offset}"),
                });
            }
        }
        offset = end + 1;
    }
    Ok((entries, offset))
}

fn parse_line(line: &[u8]) -> Option<ColdEntry> {
    let (crc, json) = (line.get(..8)?, line.get(9..)?);
    let crc = u32::from_str_radix(std::str::from_utf8(crc).ok()?, 16).ok()?;
    (crc32c::crc32c(json) == crc && line[8] == b' ')
        .then(|| serde_json::from_slice(json).ok())
        .flatten()
}

/// Builds a stream's new cold history from its records in seq order: the
/// kept ones, its creation key, and its state at the base (folded from the
/// earlier history's state when the base is below the head).
pub(crate) struct Mover<'a, S> {
    stream: &'a str,
    body: ColdBody,
    create_key: Option<String>,
    earlier_base: u64,
    state: Option<S>,
    /// The state is known already (the base is the head).
    state_known: bool,
    /// A record was kept as a husk.
    scrub: bool,
}

impl<'a, S: StreamState> Mover<'a, S> {
    pub(crate) fn new(
        stream: &'a str,
        earlier: Option<&ColdEntry>,
        state_at_base: Option<S>,
    ) -> Result<Self, ColdMoveError> {
        let state_known = state_at_base.is_some();
        let state = match (state_at_base, earlier) {
            (Some(state), _) => Some(state),
            (None, Some(entry)) => {
                Some(serde_json::from_str(entry.state.get()).map_err(|error| {
                    ColdMoveError::Fold {
                        stream: stream.to_owned(),
                        reason: format!("the archived state does not decode: {error}"),
                    }
                })?)
            }
            (None, None) => None,
        };
        Ok(Mover {
            stream,
            body: ColdBody::default(),
            create_key: earlier.and_then(|entry| entry.create_key.clone()),
            earlier_base: earlier.map_or(0, |entry| entry.base),
            state,
            state_known,
            scrub: false,
        })
    }

    pub(crate) fn push(
        &mut self,
        record: &RecordRef<'_>,
        keep: &mut dyn FnMut(&RecordRef<'_>) -> Keep,
    ) -> Result<(), ColdMoveError> {
        if let Some(key) = &record.create_key {
            self.create_key = Some(key.to_string());
        }
        if record.seq > self.earlier_base && !self.state_known {
            let fold_error = |error: S::Error| ColdMoveError::Fold {
                stream: self.stream.to_owned(),
                reason: error.to_string(),
            };
            match &mut self.state {
                Some(state) => state.apply(record).map_err(fold_error)?,
                None => self.state = Some(S::open(record).map_err(fold_error)?),
            }
        }
        let pushed = match keep(record) {
            Keep::Whole => self.body.push(record),
            Keep::Husk => {
                self.scrub = true;
                self.body.push(&husk(record))
            }
            Keep::Drop => return Ok(()),
        };
        pushed.map_err(|source| {
            ColdMoveError::Store(ColdError::Io {
                path: PathBuf::from(self.stream),
                source,
            })
        })
    }

    pub(crate) fn finish(self, base: u64) -> Result<(ColdEntry, ColdBody), ColdMoveError> {
        let state = self.state.ok_or_else(|| ColdMoveError::BeyondHead {
            stream: self.stream.to_owned(),
            base,
        })?;
        let state =
            serde_json::value::to_raw_value(&state).map_err(|error| ColdMoveError::Fold {
                stream: self.stream.to_owned(),
                reason: error.to_string(),
            })?;
        let entry = ColdEntry {
            stream: self.stream.to_owned(),
            base,
            records: 0,
            bytes: 0,
            create_key: self.create_key,
            state,
            scrub: self.scrub,
        };
        Ok((entry, self.body))
    }
}

/// The place of `record` without its content (see [`Keep::Husk`]).
fn husk<'a>(record: &RecordRef<'a>) -> RecordRef<'a> {
    static NULL: std::sync::OnceLock<Box<RawValue>> = std::sync::OnceLock::new();
    let null = NULL.get_or_init(|| RawValue::from_string("null".to_owned()).expect("null is JSON"));
    RecordRef {
        payload: null,
        attrs: None,
        key: None,
        hash: None,
        ..record.clone()
    }
}

/// At open, before the medium's records are scanned: applies every entry
/// of the cold store's catalog to `index` (see [`Index::apply_cold`]), and
/// shows `replayed` (when there is one) the cold records of every stream
/// whose state came from the catalog, after the head the index had, so
/// derived state is rebuilt too.
pub fn apply_catalog<S: StreamState>(
    index: &mut Index<S>,
    cold: &dyn ColdStore,
    mut replayed: Option<&mut dyn FnMut(&RecordRef<'_>)>,
) -> Result<(), OpenError> {
    let archive_error =
        |reason: String| OpenError::Archive(format!("{}: {reason}", cold.describe()));
    let mut entries = cold
        .catalog()
        .map_err(|error| archive_error(error.to_string()))?;
    entries.sort_by(|a, b| a.stream.cmp(&b.stream));
    for entry in entries {
        let state: S = serde_json::from_str(entry.state.get()).map_err(|error| {
            archive_error(format!(
                "the state of {} does not decode: {error}",
                entry.stream
            ))
        })?;
        let installed = index.apply_cold(
            &entry.stream,
            entry.base,
            entry.scrub,
            state,
            entry.create_key.as_deref(),
        );
        if let (Some(previous_head), Some(replayed)) = (installed, replayed.as_mut()) {
            cold.read(
                &entry.stream,
                previous_head,
                entry.base,
                usize::MAX,
                &mut |record| replayed(&record),
            )
            .map_err(|error| archive_error(error.to_string()))?;
        }
    }
    Ok(())
}
