//! The segments of the file medium: where each one is on disk and where it
//! sits in the log's byte space.
//!
//! The configured file is the first segment, read in place, so a log written
//! as one file opens as a log of one segment. Every later segment sits
//! beside it as `<file>.<lsn of its first record, 20 digits>`. Only the last
//! segment is appended to; once it holds at least the configured number of
//! bytes, the next batch starts a new one, and the full segment never
//! changes again.
//!
//! Record positions are offsets in the concatenation of the segments, in
//! order: segment `i` covers `[start_i, start_i + len_i)`. The index keeps
//! these 16-byte positions as before, and a read finds its segment by
//! binary search. A compacted segment (see `compact`) keeps its place in
//! that space: its file is shorter than the stretch it stands for, and the
//! next segment still starts where it did.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Digits of the lsn in a segment's name: every `u64` fits, and names sort
/// in log order.
const LSN_DIGITS: usize = 20;

/// One segment file.
#[derive(Clone)]
pub(crate) struct Segment {
    /// Names the segment for as long as the process runs, whatever is
    /// merged away before it (segments after the first get the next
    /// number as they are created; a compacted group keeps its first's).
    pub(crate) id: u32,
    /// Log position of its first record (1 for the first segment).
    pub(crate) first_lsn: u64,
    /// Offset of its first byte in the log's byte space.
    pub(crate) start: u64,
    /// Opened for reading.
    pub(crate) file: Arc<File>,
    /// Where it is.
    pub(crate) path: PathBuf,
}

/// Every segment, in log order, shared by the writer and the readers.
pub(crate) struct Segments {
    list: RwLock<Vec<Segment>>,
}

impl Segments {
    pub(crate) fn new(list: Vec<Segment>) -> Self {
        assert!(!list.is_empty(), "a log has its first segment");
        Segments {
            list: RwLock::new(list),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Segment>> {
        self.list.read().expect("segments lock poisoned")
    }

    /// The segment holding log offset `offset`.
    pub(crate) fn find(&self, offset: u64) -> Segment {
        let list = self.read();
        let index = list.partition_point(|segment| segment.start <= offset);
        list[index.saturating_sub(1)].clone()
    }

    /// Where the segment after the one holding `offset` starts, if there is
    /// one: a read must not run past it.
    pub(crate) fn end_of(&self, offset: u64) -> Option<u64> {
        let list = self.read();
        let index = list.partition_point(|segment| segment.start <= offset);
        list.get(index).map(|next| next.start)
    }

    /// How many segments there are.
    pub(crate) fn count(&self) -> usize {
        self.read().len()
    }

    /// Every segment as it is now.
    pub(crate) fn all(&self) -> Vec<Segment> {
        self.read().clone()
    }

    /// Where segment `id` is in the list (ids rise along it).
    fn place(list: &[Segment], id: u32) -> Option<usize> {
        list.binary_search_by_key(&id, |segment| segment.id).ok()
    }

    /// The segment named `id` and the one after it, if it is still there.
    pub(crate) fn with_next(&self, id: u32) -> Option<(Segment, Option<Segment>)> {
        let list = self.read();
        let place = Self::place(&list, id)?;
        Some((list[place].clone(), list.get(place + 1).cloned()))
    }

    /// Where segment `id` starts in the log's byte space.
    pub(crate) fn start_of(&self, id: u32) -> Option<u64> {
        let list = self.read();
        Self::place(&list, id).map(|place| list[place].start)
    }

    /// Adds the next segment (its id is the next number); returns the id
    /// of the one it seals.
    pub(crate) fn push(&self, mut segment: Segment) -> u32 {
        let mut list = self.list.write().expect("segments lock poisoned");
        let last = list.last().expect("a log has its first segment");
        assert!(
            segment.start >= last.start && segment.first_lsn > last.first_lsn,
            "segments are added in log order"
        );
        let sealed = last.id;
        segment.id = sealed + 1;
        list.push(segment);
        sealed
    }

    /// Puts `merged` in the place of segments `merged.id ..= last_id`
    /// (a compacted file that covers them all). Only an in-memory swap.
    pub(crate) fn replace(&self, merged: Segment, last_id: u32) {
        let mut list = self.list.write().expect("segments lock poisoned");
        let first = Self::place(&list, merged.id).expect("a compacted segment is in the list");
        let last = Self::place(&list, last_id).expect("a compacted segment is in the list");
        assert!(
            last + 1 < list.len(),
            "the active segment is never compacted"
        );
        list.splice(first..=last, [merged]);
    }
}

/// The name of the segment whose first record has log position `first_lsn`.
pub(crate) fn segment_path(base: &Path, first_lsn: u64) -> PathBuf {
    beside(base, &format!(".{first_lsn:0LSN_DIGITS$}"))
}

/// `path` with `suffix` appended to its file name: how every file that
/// belongs to a segment or to the log is named after it.
pub(crate) fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

/// The segments after the first that sit beside `base`, by first lsn.
pub(crate) fn later_segments(base: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let folder = base
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let Some(base_name) = base.file_name().and_then(|name| name.to_str()) else {
        return Ok(Vec::new());
    };
    let prefix = format!("{base_name}.");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(folder)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(lsn) = name
            .to_str()
            .and_then(|name| name.strip_prefix(&prefix))
            .filter(|digits| {
                digits.len() == LSN_DIGITS && digits.bytes().all(|b| b.is_ascii_digit())
            })
            .and_then(|digits| digits.parse::<u64>().ok())
        else {
            continue;
        };
        found.push((lsn, folder.join(name)));
    }
    found.sort_by_key(|(lsn, _)| *lsn);
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_in_log_order_and_are_found_again() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("log.jsonl");
        for lsn in [1_000, 7, 123_456_789] {
            std::fs::write(segment_path(&base, lsn), b"").unwrap();
        }
        std::fs::write(dir.path().join("log.jsonl.tmp"), b"").unwrap();
        std::fs::write(dir.path().join("other.jsonl.00000000000000000009"), b"").unwrap();
        let found: Vec<u64> = later_segments(&base)
            .unwrap()
            .into_iter()
            .map(|(lsn, _)| lsn)
            .collect();
        assert_eq!(found, [7, 1_000, 123_456_789]);
        assert!(segment_path(&base, 7).ends_with("log.jsonl.00000000000000000007"));
    }
}
