//! A partition: one directory of segments, read by many, written by the writer thread.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use tracing::{error, warn};

use crate::files::FileCache;
use crate::frame::{self, BatchHeader, HEADER_LEN};
use crate::segment::{IndexEntry, NO_TIMESTAMP, Segment, idx_path, log_path, read_index_file};
use crate::{Clock, LogError};

/// One record as read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub offset: u64,
    pub timestamp_ms: i64,
    pub epoch: u64,
    /// Whether the record was stored encrypted.
    pub encrypted: bool,
    pub key: Bytes,
    pub value: Bytes,
}

/// What a read returned and where the partition stood at that moment.
#[derive(Debug, Clone, Default)]
pub struct ReadOutcome {
    pub records: Vec<StoredRecord>,
    /// Offset to read from next.
    pub next_offset: u64,
    /// One past the last readable record when the read was served.
    pub end_offset: u64,
    /// Timestamp of the last readable record, if any.
    pub end_timestamp_ms: Option<i64>,
}

/// Readers' view of a partition, published by the writer.
#[derive(Debug)]
pub(crate) struct PartitionState {
    pub segments: Vec<Arc<Segment>>,
    pub next_offset: u64,
    pub last_timestamp: i64,
}

/// The writer thread's private handle on the active segment.
#[derive(Debug)]
pub(crate) struct ActiveWriter {
    pub segment: Arc<Segment>,
    pub file: Arc<File>,
    pub idx_file: File,
    pub position: u64,
    pub next_offset: u64,
    pub last_timestamp: i64,
    pub bytes_since_index: u64,
    /// Position up to which writeback of the segment file has been started.
    pub written_back: u64,
    pub first_timestamp: i64,
    pub idx_pending: Vec<u8>,
    /// Segments created since the last publish.
    pub new_segments: Vec<Arc<Segment>>,
    /// Sealed segments whose final length is yet to be published.
    pub sealed: Vec<(Arc<Segment>, u64)>,
    /// Set after a failed sync: the page cache no longer tells what is on disk.
    pub poisoned: bool,
    /// After a failed roll: no new attempt before this time.
    pub roll_retry_at_ms: i64,
    pub roll_backoff_ms: i64,
}

/// A partition of the log. Obtain one from [`crate::Log::create_partition`] or [`crate::Log::partition`].
#[derive(Debug)]
pub struct Partition {
    pub(crate) id: String,
    pub(crate) dir: PathBuf,
    pub(crate) state: RwLock<PartitionState>,
    pub(crate) writer: Mutex<Option<ActiveWriter>>,
    pub(crate) deleted: AtomicBool,
    pub(crate) sealed: AtomicBool,
    pub(crate) retention_ms: AtomicI64,
    /// Signalled whenever readers may see something new (appends, a seal).
    pub(crate) changes: tokio::sync::watch::Sender<u64>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) cipher: crate::CipherSlot,
    /// Set when the directory held no segment file at open, so whatever data
    /// the partition had is gone (its segments were created and synced before
    /// anyone could know of it).
    pub(crate) found_empty: bool,
}

impl Partition {
    /// True when the partition's directory held no segment file when the log
    /// was opened: an owner that knew the partition has lost its data.
    pub fn found_without_segments(&self) -> bool {
        self.found_empty
    }

    /// Closes the read descriptors of its segments.
    pub(crate) fn close_files(&self) {
        for seg in &self.state.read().segments {
            seg.close();
        }
    }

    /// The partition's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// A receiver that wakes whenever new records become readable or the
    /// partition is sealed: push consumers wait on it instead of polling.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub(crate) fn notify(&self) {
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Whether the partition refuses appends.
    pub fn is_sealed(&self) -> bool {
        self.sealed.load(Ordering::Acquire)
    }

    /// Marks the partition sealed or open without waiting for queued appends
    /// (see [`crate::Log::seal`] for the ordered version).
    pub fn set_sealed(&self, sealed: bool) {
        self.sealed.store(sealed, Ordering::Release);
        self.notify();
    }

    /// Sets how long records stay readable.
    pub fn set_retention_ms(&self, ms: i64) {
        self.retention_ms.store(ms, Ordering::Relaxed);
    }

    /// How long records stay readable.
    pub fn retention_ms(&self) -> i64 {
        self.retention_ms.load(Ordering::Relaxed)
    }

    /// One past the last readable record.
    pub fn end_offset(&self) -> u64 {
        self.state.read().next_offset
    }

    /// Timestamp of the last readable record, if any.
    pub fn last_timestamp(&self) -> Option<i64> {
        let ts = self.state.read().last_timestamp;
        (ts != NO_TIMESTAMP).then_some(ts)
    }

    fn cutoff(&self) -> i64 {
        self.clock.now_ms().saturating_sub(self.retention_ms())
    }

    /// The first offset still within retention: the trim horizon.
    pub fn start_offset(&self) -> Result<u64, LogError> {
        let cutoff = self.cutoff();
        let (segments, end) = self.snapshot();
        first_at_or_after(&segments, end, cutoff)
    }

    /// The first offset whose record was appended at or after `ts_ms`
    /// (the end offset if there is none), never before the trim horizon.
    pub fn offset_for_timestamp(&self, ts_ms: i64) -> Result<u64, LogError> {
        let (segments, end) = self.snapshot();
        first_at_or_after(&segments, end, ts_ms.max(self.cutoff()))
    }

    fn snapshot(&self) -> (Vec<Arc<Segment>>, u64) {
        let st = self.state.read();
        (st.segments.clone(), st.next_offset)
    }

    /// Reads up to `max_records` records whose keys and values add up to at most
    /// `max_bytes` (but always at least one record if one is available), starting
    /// at `from` or at the trim horizon if `from` is older.
    pub fn read(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<ReadOutcome, LogError> {
        // One consistent snapshot: the segments, how much of each is readable,
        // and the end offset those bytes add up to.
        let (segments, limits, end, end_ts) = {
            let st = self.state.read();
            // Segments sealed before this process have no published length
            // until first read (finding it takes I/O, done below, unlocked).
            let limits: Vec<Option<u64>> = st.segments.iter().map(|s| s.published_len()).collect();
            (
                st.segments.clone(),
                limits,
                st.next_offset,
                st.last_timestamp,
            )
        };
        let end_timestamp_ms = (end_ts != NO_TIMESTAMP).then_some(end_ts);
        let cutoff = self.cutoff();
        let mut next = from;
        if segments
            .first()
            .is_some_and(|s| s.first_timestamp() != NO_TIMESTAMP && s.first_timestamp() < cutoff)
        {
            next = next.max(first_at_or_after(&segments, end, cutoff)?);
        } else if let Some(first) = segments.first() {
            next = next.max(first.base_offset);
        }
        let mut out = ReadOutcome {
            records: Vec::new(),
            next_offset: next,
            end_offset: end,
            end_timestamp_ms,
        };
        if next >= end || max_records == 0 {
            return Ok(out);
        }
        let mut bytes = 0usize;
        let start_seg = segments
            .partition_point(|s| s.base_offset <= next)
            .saturating_sub(1);
        'segments: for (seg, &limit) in segments[start_seg..].iter().zip(&limits[start_seg..]) {
            let limit = match limit {
                Some(limit) => limit,
                None => seg.len()?,
            };
            let mut pos = if seg.base_offset < next {
                seg.position_for_offset(next)?
            } else {
                0
            };
            while pos < limit {
                let Some((header, frame)) = seg.read_frame_at(pos, limit)? else {
                    // A frame inside published data that fails its checksum is
                    // corruption on disk: skip to the next indexed batch rather than
                    // serve garbage or stop the partition forever.
                    match self.skip_corrupt(seg, pos, limit)? {
                        Some((p, off)) => {
                            pos = p;
                            next = next.max(off);
                            continue;
                        }
                        None => {
                            next = next.max(
                                segments
                                    .iter()
                                    .find(|s| s.base_offset > seg.base_offset)
                                    .map_or(end, |s| s.base_offset),
                            );
                            continue 'segments;
                        }
                    }
                };
                pos += u64::from(header.frame_len);
                if header.next_offset() <= next {
                    continue;
                }
                let encrypted = header.flags & frame::FLAG_ENCRYPTED != 0;
                let records = if encrypted {
                    let cipher = self.cipher.read().clone().ok_or_else(|| {
                        LogError::Cipher(frame::CipherError::Malformed(
                            "no cipher configured for encrypted data".into(),
                        ))
                    })?;
                    let plain = cipher.open(&frame[HEADER_LEN..])?;
                    let mut buf = Vec::with_capacity(HEADER_LEN + plain.len());
                    buf.extend_from_slice(&frame[..HEADER_LEN]);
                    buf.extend_from_slice(&plain);
                    frame::decode_records(&header, &Bytes::from(buf))?
                } else {
                    frame::decode_records(&header, &frame)?
                };
                for (i, (key, value)) in records.into_iter().enumerate() {
                    let offset = header.base_offset + i as u64;
                    if offset < next {
                        continue;
                    }
                    // Published lengths move on while we read; the offset snapshot
                    // taken above is the end this read reports, so it stops there.
                    if offset >= end {
                        break 'segments;
                    }
                    let size = key.len() + value.len();
                    if out.records.len() >= max_records
                        || (!out.records.is_empty() && bytes + size > max_bytes)
                    {
                        break 'segments;
                    }
                    bytes += size;
                    out.records.push(StoredRecord {
                        offset,
                        timestamp_ms: header.timestamp_ms,
                        epoch: header.epoch,
                        encrypted,
                        key,
                        value,
                    });
                    next = offset + 1;
                }
                if out.records.len() >= max_records || bytes >= max_bytes {
                    break 'segments;
                }
            }
        }
        out.next_offset = next.min(end);
        Ok(out)
    }

    fn skip_corrupt(
        &self,
        seg: &Segment,
        pos: u64,
        limit: u64,
    ) -> Result<Option<(u64, u64)>, LogError> {
        error!(partition = %self.id, segment = %seg.log_path.display(), position = pos, "corrupt batch in log: skipping it");
        crate::metrics::CORRUPT_BATCHES.fetch_add(1, Ordering::Relaxed);
        // If the damaged frame's length field still points at a valid frame that
        // continues its offsets, only this batch is lost.
        if let Ok(head) =
            seg.read_exact_at(pos, crate::frame::HEADER_LEN.min((limit - pos) as usize))
            && let Some(h) = BatchHeader::parse(&head)
        {
            let next = pos + u64::from(h.frame_len);
            if next == limit {
                return Ok(Some((next, h.next_offset())));
            }
            if let Some((n, _)) = seg.read_frame_at(next, limit)?
                && n.base_offset == h.next_offset()
            {
                return Ok(Some((next, n.base_offset)));
            }
        }
        let idx = seg.index()?;
        Ok(idx
            .iter()
            .find(|e| e.position > pos && e.position < limit)
            .map(|e| (e.position, e.offset)))
    }
}

/// First offset of a record with timestamp >= `ts` in the given segments.
fn first_at_or_after(segments: &[Arc<Segment>], end: u64, ts: i64) -> Result<u64, LogError> {
    // Segments whose first timestamp is below `ts` may still hold the answer in their tail.
    let n = segments.partition_point(|s| {
        let f = s.first_timestamp();
        f != NO_TIMESTAMP && f < ts
    });
    if n == 0 {
        return Ok(segments.first().map_or(end, |s| s.base_offset));
    }
    let seg = &segments[n - 1];
    let limit = seg.len()?;
    let mut pos = seg.position_for_timestamp(ts)?;
    while let Some((h, _)) = seg.read_frame_at(pos, limit)? {
        if h.timestamp_ms >= ts {
            return Ok(h.base_offset);
        }
        pos += u64::from(h.frame_len);
    }
    Ok(segments.get(n).map_or(end, |s| s.base_offset).min(end))
}

/// Opens the segments of an existing partition directory, verifying the tail of
/// the active segment and truncating a torn or corrupt suffix.
pub(crate) fn recover(
    id: String,
    dir: PathBuf,
    retention_ms: i64,
    clock: Arc<dyn Clock>,
    cipher: crate::CipherSlot,
    files: Arc<FileCache>,
) -> Result<Arc<Partition>, LogError> {
    let mut bases: Vec<u64> = Vec::new();
    for entry in fs::read_dir(&dir).map_err(|e| LogError::io(&dir, e))? {
        let entry = entry.map_err(|e| LogError::io(&dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".log")
            && let Ok(base) = stem.parse::<u64>()
        {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    if bases.is_empty() {
        warn!(partition = %id, dir = %dir.display(), "partition directory holds no segment file: starting it empty");
        let mut part = create_fresh(id, dir, 0, retention_ms, clock, cipher, files)?;
        if let Some(p) = Arc::get_mut(&mut part) {
            p.found_empty = true;
        }
        return Ok(part);
    }
    let mut segments = Vec::with_capacity(bases.len());
    let last = bases.len() - 1;
    let mut last_timestamp = NO_TIMESTAMP;
    for (i, &base) in bases.iter().enumerate() {
        if i < last {
            // Sealed segments were fully synced before the next one was
            // created; they are opened when first read, so start-up costs the
            // same however much data there is.
            segments.push(Arc::new(Segment::sealed(
                &dir,
                base,
                bases[i + 1],
                files.clone(),
            )));
        } else {
            let path = log_path(&dir, base);
            let file = File::open(&path).map_err(|e| LogError::io(&path, e))?;
            crate::metrics::count_file_open();
            let len = file.metadata().map_err(|e| LogError::io(&path, e))?.len();
            let (seg, next, ts) = recover_active(&dir, base, file, len, &files)?;
            if ts != NO_TIMESTAMP {
                last_timestamp = ts;
            }
            segments.push(Arc::new(seg));
            let prev_ts = if last_timestamp == NO_TIMESTAMP && i > 0 {
                segments[i - 1]
                    .last_header()?
                    .map_or(NO_TIMESTAMP, |h| h.timestamp_ms)
            } else {
                last_timestamp
            };
            let state = PartitionState {
                segments,
                next_offset: next,
                last_timestamp: prev_ts,
            };
            return Ok(Arc::new(Partition {
                id,
                dir,
                state: RwLock::new(state),
                writer: Mutex::new(None),
                deleted: AtomicBool::new(false),
                sealed: AtomicBool::new(false),
                retention_ms: AtomicI64::new(retention_ms),
                changes: tokio::sync::watch::Sender::new(0),
                clock,
                cipher,
                found_empty: false,
            }));
        }
    }
    unreachable!("the loop returns at the last segment")
}

fn recover_active(
    dir: &Path,
    base: u64,
    file: File,
    len: u64,
    files: &Arc<FileCache>,
) -> Result<(Segment, u64, i64), LogError> {
    let path = log_path(dir, base);
    let entries = read_index_file(&idx_path(dir, base), base, len);
    let probe = Probe {
        file: &file,
        path: &path,
    };
    // Resume the scan from the last index entry that still points at a valid frame.
    let mut keep = entries.len();
    let mut resume = (0u64, base);
    while keep > 0 {
        let e = entries[keep - 1];
        if let Some(h) = probe.read_frame_at(e.position, len)?
            && h.base_offset == e.offset
        {
            resume = (e.position, e.offset);
            keep -= 1;
            break;
        }
        keep -= 1;
    }
    let mut index: Vec<IndexEntry> = entries[..keep].to_vec();
    let (mut pos, mut next) = resume;
    let mut last_ts = index.last().map_or(NO_TIMESTAMP, |e| e.timestamp_ms);
    let mut first_ts = entries
        .first()
        .filter(|_| keep > 0)
        .map_or(NO_TIMESTAMP, |e| e.timestamp_ms);
    let mut since_index = u64::MAX;
    while let Some(h) = probe.read_frame_at(pos, len)? {
        if h.base_offset != next {
            break;
        }
        if since_index >= crate::INDEX_INTERVAL_BYTES || index.is_empty() {
            index.push(IndexEntry {
                offset: h.base_offset,
                timestamp_ms: h.timestamp_ms,
                position: pos,
            });
            since_index = 0;
        }
        if first_ts == NO_TIMESTAMP {
            first_ts = h.timestamp_ms;
        }
        since_index += u64::from(h.frame_len);
        last_ts = h.timestamp_ms;
        pos += u64::from(h.frame_len);
        next = h.next_offset();
    }
    if pos < len {
        warn!(segment = %path.display(), valid_bytes = pos, dropped_bytes = len - pos, "torn or corrupt tail in the active segment: truncating to the last good batch");
        crate::metrics::TRUNCATED_BYTES.fetch_add(len - pos, Ordering::Relaxed);
        let f = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| LogError::io(&path, e))?;
        f.set_len(pos).map_err(|e| LogError::io(&path, e))?;
        f.sync_all().map_err(|e| LogError::io(&path, e))?;
    }
    // The index is rewritten to match the data exactly.
    let mut raw = Vec::with_capacity(index.len() * crate::segment::INDEX_ENTRY_LEN);
    for e in &index {
        e.encode(&mut raw);
    }
    let ipath = idx_path(dir, base);
    fs::write(&ipath, &raw).map_err(|e| LogError::io(&ipath, e))?;
    let seg = Segment::new(dir, base, files.clone(), pos, first_ts, Some(index));
    Ok((seg, next, last_ts))
}

/// Reads frames of the active segment during recovery, with the file recovery opened.
struct Probe<'a> {
    file: &'a File,
    path: &'a Path,
}

impl Probe<'_> {
    /// The header of the frame at `pos` if a valid frame is there.
    fn read_frame_at(&self, pos: u64, limit: u64) -> Result<Option<BatchHeader>, LogError> {
        use std::os::unix::fs::FileExt;
        if pos + HEADER_LEN as u64 > limit {
            return Ok(None);
        }
        let mut head = [0u8; HEADER_LEN];
        let io = |e| LogError::io(self.path, e);
        self.file.read_exact_at(&mut head, pos).map_err(io)?;
        let Some(header) = BatchHeader::parse(&head) else {
            return Ok(None);
        };
        if pos + u64::from(header.frame_len) > limit {
            return Ok(None);
        }
        let mut frame = vec![0u8; header.frame_len as usize];
        self.file.read_exact_at(&mut frame, pos).map_err(io)?;
        Ok(header.crc_matches(&frame).then_some(header))
    }
}

/// Creates a partition directory with one empty segment starting at `base`.
pub(crate) fn create_fresh(
    id: String,
    dir: PathBuf,
    base: u64,
    retention_ms: i64,
    clock: Arc<dyn Clock>,
    cipher: crate::CipherSlot,
    files: Arc<FileCache>,
) -> Result<Arc<Partition>, LogError> {
    fs::create_dir_all(&dir).map_err(|e| LogError::io(&dir, e))?;
    let path = log_path(&dir, base);
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| LogError::io(&path, e))?;
    let ipath = idx_path(&dir, base);
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(&ipath)
        .map_err(|e| LogError::io(&ipath, e))?;
    crate::sync_dir(&dir)?;
    if let Some(parent) = dir.parent() {
        crate::sync_dir(parent)?;
    }
    let seg = Segment::new(&dir, base, files, 0, NO_TIMESTAMP, Some(Vec::new()));
    Ok(Arc::new(Partition {
        id,
        dir,
        state: RwLock::new(PartitionState {
            segments: vec![Arc::new(seg)],
            next_offset: base,
            last_timestamp: NO_TIMESTAMP,
        }),
        writer: Mutex::new(None),
        deleted: AtomicBool::new(false),
        sealed: AtomicBool::new(false),
        retention_ms: AtomicI64::new(retention_ms),
        changes: tokio::sync::watch::Sender::new(0),
        clock,
        cipher,
        found_empty: false,
    }))
}

impl Partition {
    /// Headers of every readable batch, in order (for tests and tools).
    pub fn batch_headers(&self) -> Result<Vec<BatchHeader>, LogError> {
        let (segments, _) = self.snapshot();
        let mut out = Vec::new();
        for seg in segments {
            let limit = seg.len()?;
            let mut pos = 0;
            while let Some((h, _)) = seg.read_frame_at(pos, limit)? {
                pos += u64::from(h.frame_len);
                out.push(h);
            }
        }
        Ok(out)
    }

    /// Paths of the segment files, oldest first.
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        self.state
            .read()
            .segments
            .iter()
            .map(|s| s.log_path.clone())
            .collect()
    }
}
