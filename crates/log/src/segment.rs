//! One segment: a `.log` file of batch frames and its sparse `.idx` file.
//!
//! The index holds one fixed-width entry `(base_offset u64, timestamp_ms i64,
//! position u64)` for the first batch of the segment and then for a batch
//! every `index_interval` bytes, so a seek by offset or by time is a binary
//! search followed by a scan of at most one interval.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::RwLock;
use tracing::warn;

use crate::LogError;
use crate::files::{FileCache, FileSlot};
use crate::frame::{BatchHeader, HEADER_LEN};

pub(crate) const INDEX_ENTRY_LEN: usize = 24;
/// Marks an unknown timestamp (an empty segment).
pub(crate) const NO_TIMESTAMP: i64 = i64::MIN;
/// Marks a first timestamp not read yet (a segment sealed before this process).
const NOT_LOADED: i64 = i64::MIN + 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub offset: u64,
    pub timestamp_ms: i64,
    pub position: u64,
}

impl IndexEntry {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.timestamp_ms.to_le_bytes());
        out.extend_from_slice(&self.position.to_le_bytes());
    }

    fn decode(b: &[u8]) -> IndexEntry {
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(w)
        };
        IndexEntry {
            offset: word(0),
            timestamp_ms: word(8) as i64,
            position: word(16),
        }
    }
}

pub(crate) fn log_path(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(format!("{base_offset:020}.log"))
}

pub(crate) fn idx_path(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(format!("{base_offset:020}.idx"))
}

/// Index entries that are plausible for a segment of `file_len` bytes:
/// increasing offsets and positions inside the file. A crash can leave the
/// index ahead of or behind the data; the caller verifies the tail.
pub(crate) fn read_index_file(path: &Path, base_offset: u64, file_len: u64) -> Vec<IndexEntry> {
    let mut raw = Vec::new();
    if let Ok(mut f) = File::open(path) {
        crate::metrics::count_file_open();
        let _ = f.read_to_end(&mut raw);
    }
    let mut out: Vec<IndexEntry> = Vec::with_capacity(raw.len() / INDEX_ENTRY_LEN);
    for chunk in raw.chunks_exact(INDEX_ENTRY_LEN) {
        let e = IndexEntry::decode(chunk);
        let ordered = match out.last() {
            Some(prev) => {
                e.offset > prev.offset
                    && e.position > prev.position
                    && e.timestamp_ms >= prev.timestamp_ms
            }
            None => e.offset == base_offset && e.position == 0,
        };
        if !ordered || e.position >= file_len {
            break;
        }
        out.push(e);
    }
    out
}

/// A segment as readers and the writer share it.
///
/// A segment sealed before this process started costs nothing at open: no
/// descriptor, no read. Its file is opened through the log's [`FileCache`] on
/// first read, its first timestamp comes from the first entry of its index,
/// and its readable length is found once, as the end of the batch that ends
/// at the next segment's base offset (so trailing garbage or zeroes a crash
/// or a tool left after it are never read).
#[derive(Debug)]
pub(crate) struct Segment {
    pub base_offset: u64,
    pub log_path: PathBuf,
    pub idx_path: PathBuf,
    pub files: Arc<FileCache>,
    slot: Arc<FileSlot>,
    /// Bytes readers may see: published by the writer once they are durable
    /// under the configured policy.
    readable_len: AtomicU64,
    /// False for a segment sealed before this process until its readable
    /// length has been found.
    len_known: AtomicBool,
    /// For a segment sealed before this process: the offset its last batch ends at.
    sealed_end: Option<u64>,
    /// Timestamp of the first batch, [`NO_TIMESTAMP`] while empty, or
    /// [`NOT_LOADED`].
    first_timestamp: AtomicI64,
    /// `None` until first needed for a sealed segment (lazy loading keeps start-up
    /// independent of the amount of data).
    index: RwLock<Option<Vec<IndexEntry>>>,
}

impl Segment {
    /// An active segment: this process knows its length, and its read
    /// descriptor is pinned until [`Segment::unpin`].
    pub fn new(
        dir: &Path,
        base_offset: u64,
        files: Arc<FileCache>,
        readable_len: u64,
        first_timestamp: i64,
        index: Option<Vec<IndexEntry>>,
    ) -> Segment {
        Segment {
            base_offset,
            log_path: log_path(dir, base_offset),
            idx_path: idx_path(dir, base_offset),
            files,
            slot: Arc::new(FileSlot::pinned()),
            readable_len: AtomicU64::new(readable_len),
            len_known: AtomicBool::new(true),
            sealed_end: None,
            first_timestamp: AtomicI64::new(first_timestamp),
            index: RwLock::new(index),
        }
    }

    /// A segment found sealed at open, whose batches end at offset `end`
    /// (the next segment's base). Nothing is read until it is needed.
    pub fn sealed(dir: &Path, base_offset: u64, end: u64, files: Arc<FileCache>) -> Segment {
        Segment {
            slot: Arc::default(),
            len_known: AtomicBool::new(false),
            sealed_end: Some(end),
            first_timestamp: AtomicI64::new(NOT_LOADED),
            ..Segment::new(dir, base_offset, files, 0, NOT_LOADED, None)
        }
    }

    /// The readable length as published, without any I/O; `None` for a
    /// segment sealed before this process whose length is not known yet
    /// (see [`Segment::len`]).
    pub fn published_len(&self) -> Option<u64> {
        self.len_known
            .load(Ordering::Acquire)
            .then(|| self.readable_len.load(Ordering::Acquire))
    }

    /// Bytes readers may see, finding them first for a segment sealed before
    /// this process.
    pub fn len(&self) -> Result<u64, LogError> {
        match self.published_len() {
            Some(len) => Ok(len),
            None => self.find_sealed_len(),
        }
    }

    /// The writer's view of the length (active segments are always known).
    pub fn readable_len(&self) -> u64 {
        self.readable_len.load(Ordering::Acquire)
    }

    pub fn set_readable_len(&self, len: u64) {
        self.readable_len.store(len, Ordering::Release);
        self.len_known.store(true, Ordering::Release);
    }

    /// Puts the read descriptor of a segment just sealed under the cache's bound.
    pub fn unpin(&self) {
        self.slot.unpin();
    }

    /// Closes the segment's read descriptor, if open.
    pub fn close(&self) {
        self.slot.close();
    }

    fn file(&self) -> Result<Arc<File>, LogError> {
        self.files
            .get(&self.slot, &self.log_path)
            .map_err(|e| LogError::io(&self.log_path, e))
    }

    /// Walks the batch headers of a segment sealed before this process from
    /// its last index entry to the batch ending at `sealed_end`.
    fn find_sealed_len(&self) -> Result<u64, LogError> {
        let end_offset = self.sealed_end.unwrap_or(u64::MAX);
        let file = self.file()?;
        let file_len = file
            .metadata()
            .map_err(|e| LogError::io(&self.log_path, e))?
            .len();
        let entries = read_index_file(&self.idx_path, self.base_offset, file_len);
        let header_at = |pos: u64| -> Option<BatchHeader> {
            if pos + HEADER_LEN as u64 > file_len {
                return None;
            }
            let mut head = [0u8; HEADER_LEN];
            file.read_exact_at(&mut head, pos).ok()?;
            BatchHeader::parse(&head)
        };
        let (mut pos, mut next) = entries
            .iter()
            .rev()
            .find(|e| header_at(e.position).is_some_and(|h| h.base_offset == e.offset))
            .map_or((0, self.base_offset), |e| (e.position, e.offset));
        while next < end_offset {
            let Some(h) = header_at(pos) else { break };
            let frame_end = pos + u64::from(h.frame_len);
            if h.base_offset != next || frame_end > file_len {
                break;
            }
            pos = frame_end;
            next = h.next_offset();
        }
        if next < end_offset {
            // Damage in the last index interval: readers resynchronise or skip
            // within the whole file, as before.
            warn!(segment = %self.log_path.display(), "sealed segment ends before its last batch: reading it to the end of the file");
            pos = file_len;
        } else if pos < file_len {
            warn!(segment = %self.log_path.display(), valid_bytes = pos, ignored_bytes = file_len - pos, "bytes after the last batch of a sealed segment are ignored");
        }
        {
            let mut idx = self.index.write();
            if idx.is_none() {
                *idx = Some(entries.into_iter().filter(|e| e.position < pos).collect());
            }
        }
        self.set_readable_len(pos);
        Ok(pos)
    }

    /// Timestamp of the first batch, or [`NO_TIMESTAMP`] if empty or unreadable.
    pub fn first_timestamp(&self) -> i64 {
        let ts = self.first_timestamp.load(Ordering::Acquire);
        if ts != NOT_LOADED {
            return ts;
        }
        match self.load_first_timestamp() {
            Ok(ts) => {
                self.first_timestamp.store(ts, Ordering::Release);
                ts
            }
            Err(e) => {
                // Not remembered: the next caller tries again.
                warn!(segment = %self.log_path.display(), error = %e, "cannot read the first timestamp of a segment");
                NO_TIMESTAMP
            }
        }
    }

    /// From the first index entry (it always indexes the first batch), or
    /// from the first batch when the index is missing or damaged.
    fn load_first_timestamp(&self) -> Result<i64, LogError> {
        if let Ok(f) = File::open(&self.idx_path) {
            crate::metrics::count_file_open();
            let mut raw = [0u8; INDEX_ENTRY_LEN];
            if f.read_exact_at(&mut raw, 0).is_ok() {
                let e = IndexEntry::decode(&raw);
                if e.offset == self.base_offset && e.position == 0 {
                    return Ok(e.timestamp_ms);
                }
            }
        }
        let limit = self.len()?;
        Ok(self
            .read_frame_at(0, limit)?
            .map_or(NO_TIMESTAMP, |(h, _)| h.timestamp_ms))
    }

    pub fn set_first_timestamp(&self, ts: i64) {
        self.first_timestamp.store(ts, Ordering::Release);
    }

    pub fn index_lock(&self) -> &RwLock<Option<Vec<IndexEntry>>> {
        &self.index
    }

    pub fn push_index(&self, entry: IndexEntry) {
        if let Some(idx) = self.index.write().as_mut() {
            idx.push(entry);
        }
    }

    /// Reads exactly `len` bytes at `pos`.
    pub fn read_exact_at(&self, pos: u64, len: usize) -> Result<Bytes, LogError> {
        let mut buf = vec![0u8; len];
        self.file()?
            .read_exact_at(&mut buf, pos)
            .map_err(|e| LogError::io(&self.log_path, e))?;
        Ok(Bytes::from(buf))
    }

    /// Reads and verifies the frame at `pos`; `Ok(None)` if it is not a valid frame.
    pub fn read_frame_at(
        &self,
        pos: u64,
        limit: u64,
    ) -> Result<Option<(BatchHeader, Bytes)>, LogError> {
        if pos + HEADER_LEN as u64 > limit {
            return Ok(None);
        }
        let head = self.read_exact_at(pos, HEADER_LEN)?;
        let Some(header) = BatchHeader::parse(&head) else {
            return Ok(None);
        };
        if pos + u64::from(header.frame_len) > limit {
            return Ok(None);
        }
        let frame = self.read_exact_at(pos, header.frame_len as usize)?;
        if !header.crc_matches(&frame) {
            return Ok(None);
        }
        Ok(Some((header, frame)))
    }

    /// The index entries, loading or rebuilding them on first use.
    pub fn index(
        &self,
    ) -> Result<parking_lot::MappedRwLockReadGuard<'_, Vec<IndexEntry>>, LogError> {
        // First, as finding a sealed segment's length also loads its index.
        let len = self.len()?;
        {
            let guard = self.index.read();
            if guard.is_some() {
                return Ok(parking_lot::RwLockReadGuard::map(guard, |g| {
                    g.as_ref().expect("checked above")
                }));
            }
        }
        let mut entries = read_index_file(&self.idx_path, self.base_offset, len);
        if entries.is_empty() && len > 0 {
            // A missing index is rebuilt from the data: one entry per batch.
            entries = self.scan_entries(len)?;
        }
        let mut w = self.index.write();
        if w.is_none() {
            *w = Some(entries);
        }
        drop(w);
        let guard = self.index.read();
        Ok(parking_lot::RwLockReadGuard::map(guard, |g| {
            g.as_ref().expect("set above")
        }))
    }

    /// Header of the last valid batch, found from the last index entry.
    pub fn last_header(&self) -> Result<Option<BatchHeader>, LogError> {
        let limit = self.len()?;
        let mut pos = self.index()?.last().map_or(0, |e| e.position);
        let mut last = None;
        while let Some((h, _)) = self.read_frame_at(pos, limit)? {
            pos += u64::from(h.frame_len);
            last = Some(h);
        }
        Ok(last)
    }

    fn scan_entries(&self, len: u64) -> Result<Vec<IndexEntry>, LogError> {
        let mut out = Vec::new();
        let mut pos = 0;
        while let Some((h, _)) = self.read_frame_at(pos, len)? {
            out.push(IndexEntry {
                offset: h.base_offset,
                timestamp_ms: h.timestamp_ms,
                position: pos,
            });
            pos += u64::from(h.frame_len);
        }
        Ok(out)
    }

    /// Position of the batch to start scanning from to find `offset`.
    pub fn position_for_offset(&self, offset: u64) -> Result<u64, LogError> {
        let limit = self.len()?;
        let idx = self.index()?;
        let i = idx.partition_point(|e| e.offset <= offset && e.position < limit);
        Ok(if i == 0 { 0 } else { idx[i - 1].position })
    }

    /// Position of the batch to start scanning from to find the first batch at or after `ts`.
    pub fn position_for_timestamp(&self, ts: i64) -> Result<u64, LogError> {
        let limit = self.len()?;
        let idx = self.index()?;
        let i = idx.partition_point(|e| e.timestamp_ms < ts && e.position < limit);
        Ok(if i == 0 { 0 } else { idx[i - 1].position })
    }
}
