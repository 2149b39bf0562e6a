//! Process-wide counters of the log, read by the server's `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

pub(crate) static BYTES_WRITTEN: AtomicU64 = AtomicU64::new(0);
pub(crate) static FSYNCS: AtomicU64 = AtomicU64::new(0);
pub(crate) static FSYNC_NANOS: AtomicU64 = AtomicU64::new(0);
pub(crate) static SEGMENTS_ROLLED: AtomicU64 = AtomicU64::new(0);
pub(crate) static CORRUPT_BATCHES: AtomicU64 = AtomicU64::new(0);
pub(crate) static TRUNCATED_BYTES: AtomicU64 = AtomicU64::new(0);
pub(crate) static COMMIT_LOG_COMMITS: AtomicU64 = AtomicU64::new(0);
pub(crate) static CHECKPOINTS: AtomicU64 = AtomicU64::new(0);
pub(crate) static SEGMENT_FILE_OPENS: AtomicU64 = AtomicU64::new(0);

/// Counts one opening of a segment's `.log` or `.idx` file for reading.
pub(crate) fn count_file_open() {
    SEGMENT_FILE_OPENS.fetch_add(1, Ordering::Relaxed);
}

/// Counters of one [`crate::Log`] (the statics above add up every log in the process).
#[derive(Debug, Default)]
pub(crate) struct LogCounters {
    /// Times the writer checkpointed or would have (free when nothing was
    /// written since the last one): before truncates and deletes, on sync.
    pub checkpoint_passes: AtomicU64,
}

/// Counts `n` file syncs that took `elapsed` together.
pub(crate) fn record_fsync(n: u64, elapsed: std::time::Duration) {
    FSYNCS.fetch_add(n, Ordering::Relaxed);
    FSYNC_NANOS.fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
}

/// A reading of the log's counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogMetrics {
    /// Bytes of batch frames written.
    pub bytes_written: u64,
    /// `fdatasync` calls made for appends.
    pub fsyncs: u64,
    /// Wall time spent in those syncs, in nanoseconds.
    pub fsync_nanos: u64,
    /// Segments sealed.
    pub segments_rolled: u64,
    /// Corrupt batches met by readers (skipped).
    pub corrupt_batches: u64,
    /// Bytes of torn or corrupt tail truncated by recovery.
    pub truncated_bytes: u64,
    /// Group commits made durable by one sync of the shared commit log.
    pub commit_log_commits: u64,
    /// Commit log checkpoints (segment files synced, a new generation started).
    pub checkpoints: u64,
    /// Segment `.log` and `.idx` files opened for reading (by recovery, by
    /// readers whose file was not in the descriptor cache, and for indexes).
    pub segment_file_opens: u64,
}

/// Current values of the counters.
pub fn snapshot() -> LogMetrics {
    LogMetrics {
        bytes_written: BYTES_WRITTEN.load(Ordering::Relaxed),
        fsyncs: FSYNCS.load(Ordering::Relaxed),
        fsync_nanos: FSYNC_NANOS.load(Ordering::Relaxed),
        segments_rolled: SEGMENTS_ROLLED.load(Ordering::Relaxed),
        corrupt_batches: CORRUPT_BATCHES.load(Ordering::Relaxed),
        truncated_bytes: TRUNCATED_BYTES.load(Ordering::Relaxed),
        commit_log_commits: COMMIT_LOG_COMMITS.load(Ordering::Relaxed),
        checkpoints: CHECKPOINTS.load(Ordering::Relaxed),
        segment_file_opens: SEGMENT_FILE_OPENS.load(Ordering::Relaxed),
    }
}

/// A reading of one log's own counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Checkpoints the writer made or found nothing to do for.
    pub checkpoint_passes: u64,
    /// Segment files held open for reading (see [`crate::LogConfig::max_open_segment_files`]).
    pub open_segment_files: usize,
}
