//! The writer thread: one per log, owning every active segment's write handle.
//!
//! Each loop turn takes every command that has queued up (a commit window),
//! writes the batches, syncs each touched file once (in parallel), publishes the
//! new ends to readers and then answers. Many concurrent requests therefore
//! share one `fdatasync`: of the shared commit log when the window is small
//! (see [`crate::commit_log`]), else of each touched segment file in parallel.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Instant;

use tokio::sync::oneshot;
use tracing::error;

use crate::commit_log::{self, CommitLog};
use crate::fault::{self, Faults};
use crate::frame::PendingBatch;
use crate::metrics::LogCounters;
use crate::partition::{ActiveWriter, Partition};
use crate::segment::{IndexEntry, NO_TIMESTAMP, Segment, idx_path, log_path};
use crate::trash::Trash;
use crate::{
    Appended, Clock, FsyncPolicy, INDEX_INTERVAL_BYTES, LogConfig, LogError, metrics, sync_dir,
};

type Reply<T> = oneshot::Sender<Result<T, LogError>>;

pub(crate) enum Command {
    Append {
        partition: Arc<Partition>,
        batch: PendingBatch,
        reply: Reply<Appended>,
    },
    Delete {
        partitions: Vec<Arc<Partition>>,
        reply: Reply<()>,
    },
    Truncate {
        partition: Arc<Partition>,
        keep_until: u64,
        reply: Reply<()>,
    },
    Sync {
        reply: Reply<()>,
    },
    Seal {
        partition: Arc<Partition>,
        reply: Reply<u64>,
    },
    Roll {
        partition: Arc<Partition>,
        reply: Reply<()>,
    },
}

/// Backoff of the retries of a failed roll.
pub(crate) const ROLL_RETRY_MIN_MS: i64 = 100;
const ROLL_RETRY_MAX_MS: i64 = 30_000;

/// Most commands taken into one commit window; more wait for the next.
const MAX_WINDOW_COMMANDS: usize = 4096;
/// Most bytes taken into one commit window.
const MAX_WINDOW_BYTES: usize = 64 * 1024 * 1024;

pub(crate) struct Writer {
    epoch: u64,
    policy: FsyncPolicy,
    segment_max_bytes: u64,
    segment_max_age_ms: i64,
    clock: Arc<dyn Clock>,
    /// Partitions written since their last sync (interval and never policies).
    unsynced: Vec<Arc<Partition>>,
    /// The shared commit log (always policy only), while it is usable.
    commit_log: Option<CommitLog>,
    commit_log_max_window: usize,
    /// Partitions whose segment files hold batches that only the commit log
    /// has made durable; a checkpoint syncs them.
    log_dirty: Vec<Arc<Partition>>,
    /// Set when the commit log was given up but had to stay on disk (a segment
    /// file it covers failed to sync): replay would then write its batches
    /// back, so truncating or deleting a partition is refused until restart.
    commit_log_stuck: bool,
    faults: Arc<Faults>,
    counters: Arc<LogCounters>,
    /// The log's directory.
    dir: PathBuf,
    trash: Trash,
}

struct Pending {
    partition: Arc<Partition>,
    reply: Reply<Appended>,
    result: Result<Appended, LogError>,
    /// The frame as written, with its segment's base offset and its position there.
    written: Option<(PendingBatch, u64, u64)>,
}

/// Writeback of a segment file is started once this many bytes that only the
/// commit log made durable have piled up, so checkpoints find little to sync.
const WRITEBACK_KICK_BYTES: u64 = 1024 * 1024;

impl Writer {
    pub fn new(
        config: &LogConfig,
        commit_log: Option<CommitLog>,
        faults: Arc<Faults>,
        counters: Arc<LogCounters>,
        trash: Trash,
    ) -> Writer {
        Writer {
            epoch: config.epoch,
            policy: config.fsync,
            segment_max_bytes: config.segment_max_bytes,
            segment_max_age_ms: config.segment_max_age_ms,
            clock: config.clock.clone(),
            unsynced: Vec::new(),
            commit_log,
            commit_log_max_window: config.commit_log_max_window,
            log_dirty: Vec::new(),
            commit_log_stuck: false,
            faults,
            counters,
            dir: config.dir.clone(),
            trash,
        }
    }

    pub fn run(mut self, rx: Receiver<Command>) {
        let mut last_sync = Instant::now();
        loop {
            let first = match self.policy {
                FsyncPolicy::Interval(every) if !self.unsynced.is_empty() => {
                    let wait = every.saturating_sub(last_sync.elapsed());
                    match rx.recv_timeout(wait) {
                        Ok(cmd) => cmd,
                        Err(RecvTimeoutError::Timeout) => {
                            self.sync_unsynced();
                            last_sync = Instant::now();
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                _ => match rx.recv() {
                    Ok(cmd) => cmd,
                    Err(_) => break,
                },
            };
            let mut window = vec![first];
            let mut bytes = 0;
            while window.len() < MAX_WINDOW_COMMANDS && bytes < MAX_WINDOW_BYTES {
                match rx.try_recv() {
                    Ok(cmd) => {
                        if let Command::Append { batch, .. } = &cmd {
                            bytes += batch.frame_len();
                        }
                        window.push(cmd);
                    }
                    Err(_) => break,
                }
            }
            self.commit(window);
            if let FsyncPolicy::Interval(every) = self.policy
                && last_sync.elapsed() >= every
            {
                self.sync_unsynced();
                last_sync = Instant::now();
            }
        }
        self.sync_unsynced();
        let _ = self.checkpoint();
    }

    fn commit(&mut self, window: Vec<Command>) {
        let mut pending: Vec<Pending> = Vec::with_capacity(window.len());
        let mut dirty: Vec<Arc<Partition>> = Vec::new();
        let mut after: Vec<Reply<()>> = Vec::new();
        let mut sync_all = false;
        for cmd in window {
            match cmd {
                Command::Append {
                    partition,
                    mut batch,
                    reply,
                } => {
                    let (result, written) = match self.write(&partition, &mut batch) {
                        Ok((appended, segment_base, position)) => {
                            (Ok(appended), Some((batch, segment_base, position)))
                        }
                        Err(e) => (Err(e), None),
                    };
                    if result.is_ok() && !dirty.iter().any(|p| Arc::ptr_eq(p, &partition)) {
                        dirty.push(partition.clone());
                    }
                    pending.push(Pending {
                        partition,
                        reply,
                        result,
                        written,
                    });
                }
                Command::Seal { partition, reply } => {
                    // Everything appended before the seal is made durable and
                    // published first, so the end offset returned is final.
                    self.finish(&mut pending, &mut dirty);
                    partition.sealed.store(true, Ordering::Release);
                    partition.notify();
                    let _ = reply.send(Ok(partition.end_offset()));
                }
                Command::Sync { reply } => {
                    sync_all = true;
                    after.push(reply);
                }
                Command::Roll { partition, reply } => {
                    let r = self.roll_now(&partition);
                    if r.is_ok() && !dirty.iter().any(|p| Arc::ptr_eq(p, &partition)) {
                        dirty.push(partition);
                    }
                    let _ = reply.send(r);
                }
                Command::Truncate {
                    partition,
                    keep_until,
                    reply,
                } => {
                    // Truncation publishes itself; earlier appends of this window are
                    // published first so the order of operations holds. The
                    // checkpoint keeps replay from writing the dropped batches back.
                    self.finish(&mut pending, &mut dirty);
                    let r = self
                        .retire_commit_log()
                        .and_then(|()| self.truncate(&partition, keep_until));
                    let _ = reply.send(r);
                }
                Command::Delete { partitions, reply } => {
                    // One checkpoint for all of them: it is the expensive part,
                    // and every partition's ingest waits behind it.
                    self.finish(&mut pending, &mut dirty);
                    if let Err(e) = self.retire_commit_log() {
                        let _ = reply.send(Err(e));
                        continue;
                    }
                    let _ = reply.send(self.delete(&partitions));
                }
            }
        }
        self.finish(&mut pending, &mut dirty);
        let mut failed_id = None;
        if sync_all {
            self.sync_unsynced();
            failed_id = self.checkpoint().first().map(|p| p.id.clone());
        }
        for reply in after {
            let _ = reply.send(match &failed_id {
                None => Ok(()),
                Some(id) => Err(LogError::Poisoned(id.clone())),
            });
        }
    }

    /// Syncs (per policy), publishes and answers the appends written so far.
    fn finish(&mut self, pending: &mut Vec<Pending>, dirty: &mut Vec<Arc<Partition>>) {
        if dirty.is_empty() && pending.is_empty() {
            return;
        }
        let failed = if self.policy == FsyncPolicy::Always {
            self.make_durable(pending, dirty)
        } else {
            for p in dirty.iter() {
                if !self.unsynced.iter().any(|u| Arc::ptr_eq(u, p)) {
                    self.unsynced.push(p.clone());
                }
            }
            Vec::new()
        };
        // Index entries go out only now, and only where the sync worked, so one
        // found on disk after a crash points at a batch that was durable, with
        // everything before it.
        let synced: Vec<Arc<Partition>> = dirty
            .iter()
            .filter(|p| !failed.iter().any(|f| Arc::ptr_eq(f, p)))
            .cloned()
            .collect();
        flush_index(&synced);
        for p in dirty.iter() {
            if failed.iter().any(|f| Arc::ptr_eq(f, p)) {
                continue;
            }
            publish(p);
        }
        for mut item in pending.drain(..) {
            if failed.iter().any(|f| Arc::ptr_eq(f, &item.partition)) {
                item.result = Err(LogError::Poisoned(item.partition.id.clone()));
            }
            let _ = item.reply.send(item.result);
        }
        dirty.clear();
    }

    /// Makes the window's batches durable: by one sync of the commit log when
    /// the window is small enough, else by syncing each touched segment file.
    /// Returns the partitions whose sync failed.
    fn make_durable(
        &mut self,
        pending: &[Pending],
        dirty: &[Arc<Partition>],
    ) -> Vec<Arc<Partition>> {
        if dirty.is_empty() {
            return Vec::new();
        }
        let bytes: usize = pending
            .iter()
            .filter_map(|p| {
                let (batch, _, _) = p.written.as_ref()?;
                Some(commit_log::batch_record_len(
                    &p.partition.id,
                    batch.frame_len(),
                ))
            })
            .sum();
        let use_log = matches!(&self.commit_log,
            Some(log) if bytes <= self.commit_log_max_window && log.could_ever_fit(bytes));
        if !use_log {
            let failed = sync_partitions(dirty, &self.faults);
            // Those files are synced now, with whatever the commit log held for them.
            self.log_dirty.retain(|p| {
                !dirty.iter().any(|d| Arc::ptr_eq(d, p)) || failed.iter().any(|f| Arc::ptr_eq(f, p))
            });
            return failed;
        }
        let mut failed = Vec::new();
        if self.commit_log.as_ref().is_some_and(|log| !log.fits(bytes)) {
            failed = self.checkpoint();
        }
        let Some(log) = self.commit_log.as_mut() else {
            // The checkpoint gave up on the commit log. Partitions whose sync
            // failed there fail here too: a second fdatasync of the same file
            // would report success without the data being on disk.
            failed.extend(sync_partitions(dirty, &self.faults));
            return failed;
        };
        for item in pending {
            if let (Ok(_), Some((batch, segment_base, position))) = (&item.result, &item.written) {
                log.add_batch(&item.partition.id, *segment_base, *position, &batch.buf);
            }
        }
        let committed = if self.faults.commit_log_sync() {
            log.fail_commit(fault::injected())
        } else {
            log.commit()
        };
        match committed {
            Ok(()) => {
                metrics::COMMIT_LOG_COMMITS.fetch_add(1, Ordering::Relaxed);
                for p in dirty {
                    if !self.log_dirty.iter().any(|d| Arc::ptr_eq(d, p)) {
                        self.log_dirty.push(p.clone());
                    }
                }
                start_writeback(dirty);
                Vec::new()
            }
            Err(e) => {
                error!(path = %log.path().display(), error = %e, "commit log write or sync failed: syncing segment files directly from now on");
                self.abandon_commit_log(dirty)
            }
        }
    }

    /// Syncs every segment file the commit log holds batches for and starts a
    /// new generation, so replay no longer needs (or writes back) any of them.
    /// Returns the partitions whose sync failed (then the commit log is kept
    /// on disk for replay, and no longer written).
    fn checkpoint(&mut self) -> Vec<Arc<Partition>> {
        let Some(log) = self.commit_log.as_mut() else {
            return Vec::new();
        };
        self.counters
            .checkpoint_passes
            .fetch_add(1, Ordering::Relaxed);
        if log.is_empty() && self.log_dirty.is_empty() {
            return Vec::new();
        }
        let parts = std::mem::take(&mut self.log_dirty);
        let failed = sync_partitions(&parts, &self.faults);
        if !failed.is_empty() {
            // The commit log still holds what those files may have lost.
            error!(
                "commit log checkpoint failed: keeping it for replay at restart and syncing segment files directly from now on"
            );
            self.commit_log = None;
            self.commit_log_stuck = true;
            return failed;
        }
        if let Err(e) = log.reset() {
            error!(path = %log.path().display(), error = %e, "commit log reset failed: syncing segment files directly from now on");
            return self.abandon_commit_log(&[]);
        }
        Vec::new()
    }

    /// Makes sure replay can no longer write back anything written so far:
    /// needed before a partition is truncated or deleted.
    fn retire_commit_log(&mut self) -> Result<(), LogError> {
        if let Some(p) = self.checkpoint().first() {
            return Err(LogError::Poisoned(p.id.clone()));
        }
        if self.commit_log_stuck {
            return Err(LogError::CommitLogStuck);
        }
        Ok(())
    }

    /// Stops using the commit log after a failure: syncs every segment file it
    /// covers (and `dirty`), then removes it so replay cannot write stale
    /// batches back. Returns the partitions whose sync failed.
    fn abandon_commit_log(&mut self, dirty: &[Arc<Partition>]) -> Vec<Arc<Partition>> {
        let Some(log) = self.commit_log.take() else {
            return sync_partitions(dirty, &self.faults);
        };
        let mut parts = std::mem::take(&mut self.log_dirty);
        for p in dirty {
            if !parts.iter().any(|q| Arc::ptr_eq(q, p)) {
                parts.push(p.clone());
            }
        }
        let failed = sync_partitions(&parts, &self.faults);
        if !failed.is_empty() {
            self.commit_log_stuck = true;
        } else {
            let removed = fs::remove_file(log.path())
                .map_err(|e| LogError::io(log.path(), e))
                .and_then(|()| match log.path().parent() {
                    Some(dir) => sync_dir(dir),
                    None => Ok(()),
                });
            if let Err(e) = removed {
                error!(error = %e, "could not remove the abandoned commit log");
                self.commit_log_stuck = true;
            }
        }
        failed
    }

    /// Takes deleted partitions out of the log: each directory is renamed
    /// into the trash directory (cheap, and atomic for recovery), the renames
    /// are made durable, and the trash thread removes the files.
    fn delete(&mut self, partitions: &[Arc<Partition>]) -> Result<(), LogError> {
        let mut first_error = None;
        let mut moved = Vec::with_capacity(partitions.len());
        for partition in partitions {
            partition.deleted.store(true, Ordering::Release);
            *partition.writer.lock() = None;
            self.unsynced.retain(|p| !Arc::ptr_eq(p, partition));
            self.log_dirty.retain(|p| !Arc::ptr_eq(p, partition));
            partition.close_files();
            let to = self.trash.entry_for(&partition.id);
            match fs::rename(&partition.dir, &to) {
                Ok(()) => moved.push(to),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    error!(partition = %partition.id, error = %e, "cannot move a deleted partition into the trash");
                    first_error.get_or_insert(LogError::io(&partition.dir, e));
                }
            }
        }
        if !moved.is_empty() {
            let synced = sync_dir(&self.dir).and_then(|()| sync_dir(self.trash.dir()));
            if let Err(e) = synced {
                first_error.get_or_insert(e);
            }
            for path in moved {
                self.trash.remove_later(path);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn sync_unsynced(&mut self) {
        if self.unsynced.is_empty() {
            return;
        }
        let parts = std::mem::take(&mut self.unsynced);
        flush_index(&parts);
        let _ = sync_partitions(&parts, &self.faults);
    }

    /// Writes a batch into its partition's active segment. Returns what the
    /// append was given, the segment's base offset and the frame's position.
    fn write(
        &mut self,
        part: &Arc<Partition>,
        batch: &mut PendingBatch,
    ) -> Result<(Appended, u64, u64), LogError> {
        if part.deleted.load(Ordering::Acquire) {
            return Err(LogError::NoSuchPartition(part.id.clone()));
        }
        if part.sealed.load(Ordering::Acquire) {
            return Err(LogError::Sealed(part.id.clone()));
        }
        let mut guard = part.writer.lock();
        if guard.is_none() {
            *guard = Some(open_active(part)?);
        }
        let w = guard.as_mut().expect("opened above");
        if w.poisoned {
            return Err(LogError::Poisoned(part.id.clone()));
        }
        let now = self.clock.now_ms();
        let len = batch.frame_len() as u64;
        let too_big = w.position > 0 && w.position + len > self.segment_max_bytes;
        let too_old =
            w.first_timestamp != NO_TIMESTAMP && now - w.first_timestamp >= self.segment_max_age_ms;
        if (too_big || too_old) && now >= w.roll_retry_at_ms {
            match roll(part, w, &self.faults) {
                Ok(()) => w.roll_backoff_ms = 0,
                Err(e) if w.poisoned => return Err(e),
                Err(e) => {
                    // Not worth failing the append for (out of descriptors, a
                    // full directory): the segment grows past its limit until
                    // a retry works, and retries back off so as not to cost
                    // every append a failing syscall.
                    w.roll_backoff_ms =
                        (w.roll_backoff_ms * 2).clamp(ROLL_RETRY_MIN_MS, ROLL_RETRY_MAX_MS);
                    w.roll_retry_at_ms = now.saturating_add(w.roll_backoff_ms);
                    tracing::warn!(partition = %part.id, error = %e, retry_in_ms = w.roll_backoff_ms, "cannot roll the segment: appending to it until a retry works");
                }
            }
        }
        let ts = now.max(w.last_timestamp);
        let base = w.next_offset;
        let (segment_base, position) = (w.segment.base_offset, w.position);
        let frame = batch.seal(base, ts, self.epoch);
        if let Err(e) = w.file.write_all_at(frame, w.position) {
            // Nothing past `position` is published, so the next write overwrites
            // whatever part of this one reached the file.
            error!(partition = %part.id, error = %e, "log write failed");
            return Err(LogError::io(&w.segment.log_path, e));
        }
        metrics::BYTES_WRITTEN.fetch_add(len, Ordering::Relaxed);
        if w.bytes_since_index >= INDEX_INTERVAL_BYTES {
            let entry = IndexEntry {
                offset: base,
                timestamp_ms: ts,
                position: w.position,
            };
            w.segment.push_index(entry);
            entry.encode(&mut w.idx_pending);
            w.bytes_since_index = 0;
        }
        if w.first_timestamp == NO_TIMESTAMP {
            w.first_timestamp = ts;
            w.segment.set_first_timestamp(ts);
        }
        w.position += len;
        w.bytes_since_index += len;
        w.next_offset += u64::from(batch.record_count());
        w.last_timestamp = ts;
        let appended = Appended {
            base_offset: base,
            record_count: batch.record_count(),
            timestamp_ms: ts,
            epoch: self.epoch,
        };
        Ok((appended, segment_base, position))
    }

    fn roll_now(&mut self, part: &Arc<Partition>) -> Result<(), LogError> {
        if part.deleted.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut guard = part.writer.lock();
        if guard.is_none() {
            *guard = Some(open_active(part)?);
        }
        let w = guard.as_mut().expect("opened above");
        if w.position == 0 {
            return Ok(());
        }
        roll(part, w, &self.faults)
    }

    fn truncate(&mut self, part: &Arc<Partition>, keep_until: u64) -> Result<(), LogError> {
        let mut guard = part.writer.lock();
        if guard.is_none() {
            *guard = Some(open_active(part)?);
        }
        let w = guard.as_mut().expect("opened above");
        if w.poisoned {
            return Err(LogError::Poisoned(part.id.clone()));
        }
        if keep_until >= w.next_offset {
            return Ok(());
        }
        let seg = w.segment.clone();
        if keep_until < seg.base_offset {
            return Err(LogError::Corrupt(format!(
                "cannot truncate to {keep_until}: before the active segment at {}",
                seg.base_offset
            )));
        }
        // Truncation is rare: a plain scan of the active segment finds the
        // boundary and the timestamps that remain.
        let (mut pos, mut first_ts, mut last_ts) = (0u64, NO_TIMESTAMP, NO_TIMESTAMP);
        loop {
            let Some((h, _)) = seg.read_frame_at(pos, w.position)? else {
                return Err(LogError::Corrupt(format!(
                    "offset {keep_until} is not a batch boundary"
                )));
            };
            if h.base_offset == keep_until {
                break;
            }
            if h.next_offset() > keep_until {
                return Err(LogError::Corrupt(format!(
                    "offset {keep_until} is not a batch boundary"
                )));
            }
            if first_ts == NO_TIMESTAMP {
                first_ts = h.timestamp_ms;
            }
            last_ts = h.timestamp_ms;
            pos += u64::from(h.frame_len);
        }
        if let Err(e) = w.file.set_len(pos).and_then(|()| w.file.sync_data()) {
            w.poisoned = true;
            return Err(LogError::io(&seg.log_path, e));
        }
        let kept: Vec<IndexEntry> = seg
            .index()?
            .iter()
            .copied()
            .filter(|e| e.position < pos)
            .collect();
        let mut raw = Vec::new();
        for e in &kept {
            e.encode(&mut raw);
        }
        w.idx_file
            .set_len(0)
            .map_err(|e| LogError::io(&seg.idx_path, e))?;
        w.idx_file
            .write_all_at(&raw, 0)
            .map_err(|e| LogError::io(&seg.idx_path, e))?;
        w.idx_pending.clear();
        w.bytes_since_index = kept
            .last()
            .map_or(INDEX_INTERVAL_BYTES, |e| pos - e.position);
        *seg.index_lock().write() = Some(kept);
        w.position = pos;
        w.next_offset = keep_until;
        w.first_timestamp = first_ts;
        seg.set_first_timestamp(first_ts);
        if last_ts != NO_TIMESTAMP {
            w.last_timestamp = last_ts;
        }
        let mut st = part.state.write();
        seg.set_readable_len(pos);
        st.next_offset = keep_until;
        st.last_timestamp = w.last_timestamp;
        Ok(())
    }
}

fn open_active(part: &Partition) -> Result<ActiveWriter, LogError> {
    let st = part.state.read();
    let seg = st
        .segments
        .last()
        .cloned()
        .ok_or_else(|| LogError::Corrupt(format!("partition {} has no segment", part.id)))?;
    let file = OpenOptions::new()
        .write(true)
        .open(&seg.log_path)
        .map_err(|e| LogError::io(&seg.log_path, e))?;
    let idx_file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&seg.idx_path)
        .map_err(|e| LogError::io(&seg.idx_path, e))?;
    let position = seg.readable_len();
    let bytes_since_index = seg
        .index()?
        .last()
        .map_or(INDEX_INTERVAL_BYTES, |e| position - e.position);
    Ok(ActiveWriter {
        first_timestamp: seg.first_timestamp(),
        segment: seg,
        file: Arc::new(file),
        idx_file,
        position,
        next_offset: st.next_offset,
        last_timestamp: st.last_timestamp,
        bytes_since_index,
        written_back: position,
        idx_pending: Vec::new(),
        new_segments: Vec::new(),
        sealed: Vec::new(),
        poisoned: false,
        roll_retry_at_ms: i64::MIN,
        roll_backoff_ms: 0,
    })
}

/// Seals the active segment (always synced, whatever the policy, so recovery
/// only ever has to verify the last segment) and starts a new one.
fn roll(part: &Partition, w: &mut ActiveWriter, faults: &Faults) -> Result<(), LogError> {
    if w.poisoned {
        // Syncing again would "succeed" (see `sync_partitions`) and seal a
        // segment that may be missing acknowledged batches.
        return Err(LogError::Poisoned(part.id.clone()));
    }
    let synced = if faults.segment_sync() {
        Err(fault::injected())
    } else {
        w.file.sync_data()
    };
    if let Err(e) = synced {
        // A failed sync leaves the page cache saying nothing about the disk: a
        // retry would "succeed" and seal a segment missing acknowledged data.
        w.poisoned = true;
        return Err(LogError::io(&w.segment.log_path, e));
    }
    // Every step that can fail comes before the writer's state changes, so a
    // failed roll leaves the segment as it was and can simply be retried.
    if !w.idx_pending.is_empty() {
        let before = w.idx_file.metadata().map(|m| m.len());
        if let Err(e) = w.idx_file.write_all(&w.idx_pending) {
            // No torn entry may stay for the retry to append after.
            if let Ok(len) = before {
                let _ = w.idx_file.set_len(len);
            }
            return Err(LogError::io(&w.segment.idx_path, e));
        }
        w.idx_pending.clear();
    }
    w.idx_file
        .sync_data()
        .map_err(|e| LogError::io(&w.segment.idx_path, e))?;
    let base = w.next_offset;
    let (file, idx_file) = match create_segment_files(&part.dir, base, faults) {
        Ok(files) => files,
        Err(e) => {
            // A new segment left behind would, after a restart, be taken for
            // the active one and hide every batch appended to this one since.
            if !remove_segment_files(&part.dir, base) {
                w.poisoned = true;
            }
            return Err(e);
        }
    };
    w.sealed.push((w.segment.clone(), w.position));
    w.segment.unpin();
    let seg = Arc::new(Segment::new(
        &part.dir,
        base,
        w.segment.files.clone(),
        0,
        NO_TIMESTAMP,
        Some(Vec::new()),
    ));
    w.new_segments.push(seg.clone());
    w.segment = seg;
    w.file = Arc::new(file);
    w.idx_file = idx_file;
    w.position = 0;
    w.written_back = 0;
    w.bytes_since_index = INDEX_INTERVAL_BYTES;
    w.first_timestamp = NO_TIMESTAMP;
    metrics::SEGMENTS_ROLLED.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Creates the files of a segment starting at `base` and makes them durable.
fn create_segment_files(
    dir: &std::path::Path,
    base: u64,
    faults: &Faults,
) -> Result<(File, File), LogError> {
    let path = log_path(dir, base);
    if faults.roll_create() {
        return Err(LogError::io(&path, fault::injected()));
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| LogError::io(&path, e))?;
    let ipath = idx_path(dir, base);
    let idx_file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&ipath)
        .map_err(|e| LogError::io(&ipath, e))?;
    idx_file.set_len(0).map_err(|e| LogError::io(&ipath, e))?;
    sync_dir(dir)?;
    Ok((file, idx_file))
}

/// Removes what a failed [`create_segment_files`] left; false if it may remain.
fn remove_segment_files(dir: &std::path::Path, base: u64) -> bool {
    let mut removed = true;
    for path in [log_path(dir, base), idx_path(dir, base)] {
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                error!(path = %path.display(), error = %e, "cannot remove the segment of a failed roll");
                removed = false;
            }
        }
    }
    removed && sync_dir(dir).is_ok()
}

/// Starts (without waiting for) writeback of what the commit log made durable
/// in these partitions' segment files, once enough has piled up.
fn start_writeback(parts: &[Arc<Partition>]) {
    for p in parts {
        let mut guard = p.writer.lock();
        let Some(w) = guard.as_mut() else { continue };
        if w.position < w.written_back + WRITEBACK_KICK_BYTES {
            continue;
        }
        let (from, len) = (w.written_back, w.position - w.written_back);
        // SAFETY: a plain syscall on a file descriptor that `w.file` keeps open;
        // no memory is shared with the kernel.
        let r = unsafe {
            libc::sync_file_range(
                w.file.as_raw_fd(),
                from as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            )
        };
        if r != 0 {
            // Only a hint: the checkpoint's fdatasync does the real work.
            tracing::debug!(partition = %p.id, error = %std::io::Error::last_os_error(), "sync_file_range failed");
        }
        w.written_back = w.position;
    }
}

fn flush_index(parts: &[Arc<Partition>]) {
    for p in parts {
        if let Some(w) = p.writer.lock().as_mut()
            && !w.idx_pending.is_empty()
        {
            // The index is a hint rebuilt on recovery, so it is written but not synced.
            if let Err(e) = w.idx_file.write_all(&w.idx_pending) {
                error!(partition = %p.id, error = %e, "index write failed");
            }
            w.idx_pending.clear();
        }
    }
}

/// `fdatasync`s the active file of each partition, in parallel when there are
/// several. Returns the partitions whose sync failed; they are poisoned, since
/// after a failed sync the page cache no longer tells what is on disk.
///
/// A partition poisoned earlier counts as failed without being synced again:
/// Linux reports a writeback error to one `fdatasync` only and then marks the
/// lost pages clean, so a second call would return success for data that never
/// reached the disk, and the caller would discard the commit log generation
/// that still holds it.
fn sync_partitions(parts: &[Arc<Partition>], faults: &Faults) -> Vec<Arc<Partition>> {
    let mut failed = Vec::new();
    let mut files: Vec<(Arc<Partition>, Arc<File>)> = Vec::with_capacity(parts.len());
    for p in parts {
        match p.writer.lock().as_ref() {
            Some(w) if w.poisoned => failed.push(p.clone()),
            Some(w) => files.push((p.clone(), w.file.clone())),
            None => {}
        }
    }
    let sync = |f: &File| {
        if faults.segment_sync() {
            Err(fault::injected())
        } else {
            f.sync_data()
        }
    };
    let started = Instant::now();
    let results: Vec<std::io::Result<()>> = if files.len() <= 1 {
        files.iter().map(|(_, f)| sync(f)).collect()
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = files[1..]
                .iter()
                .map(|(_, f)| s.spawn(move || sync(f)))
                .collect();
            let mut out = vec![sync(&files[0].1)];
            for h in handles {
                out.push(
                    h.join()
                        .unwrap_or_else(|_| Err(std::io::Error::other("sync thread panicked"))),
                );
            }
            out
        })
    };
    metrics::record_fsync(files.len() as u64, started.elapsed());
    for ((p, _), r) in files.into_iter().zip(results) {
        if let Err(e) = r {
            error!(partition = %p.id, error = %e, "fdatasync failed: the partition refuses writes until restart");
            if let Some(w) = p.writer.lock().as_mut() {
                w.poisoned = true;
            }
            failed.push(p);
        }
    }
    failed
}

/// Makes everything the writer wrote visible to readers.
fn publish(part: &Partition) {
    let mut guard = part.writer.lock();
    let Some(w) = guard.as_mut() else { return };
    if w.poisoned {
        // Its position may count bytes whose sync failed: never readable.
        return;
    }
    let mut st = part.state.write();
    for (seg, len) in w.sealed.drain(..) {
        seg.set_readable_len(len);
    }
    st.segments.append(&mut w.new_segments);
    w.segment.set_readable_len(w.position);
    st.next_offset = w.next_offset;
    st.last_timestamp = w.last_timestamp;
    drop(st);
    drop(guard);
    part.notify();
}
