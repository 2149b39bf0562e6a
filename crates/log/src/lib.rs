//! The shard log: durable, segmented, append-only storage for record batches.
//!
//! A [`Log`] owns a directory of *partitions*. Each partition is a directory of
//! segments (`{base_offset:020}.log` plus a sparse `.idx`), written only by the
//! log's writer thread and read concurrently by anyone holding the
//! [`Partition`]. The log knows bytes, offsets, timestamps and leader epochs;
//! it knows nothing of Kinesis.
//!
//! Durability: callers append [`PendingBatch`]es; the writer thread gathers every
//! append that arrives while it is busy into one commit window, writes them,
//! makes them durable, publishes the new end to readers and only then resolves
//! the appends ([`FsyncPolicy::Always`], group commit). A small window is made
//! durable by one `fdatasync` of a commit log shared by all partitions (the
//! segment files are synced later, at checkpoints, and the commit log is
//! replayed into them after a crash); a large one by one `fdatasync` per
//! touched segment file, in parallel. Readers never see data that is not yet
//! acknowledged.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use ripstream_log::{BatchBuilder, Log, LogConfig};
//! let dir = tempfile::tempdir().unwrap();
//! let log = Log::open(LogConfig::new(dir.path(), 1)).unwrap();
//! let part = log.create_partition("p0", i64::MAX).unwrap();
//! let mut batch = BatchBuilder::with_capacity(16);
//! batch.push(b"key", b"hello");
//! let appended = log.append(&part, batch.finish().unwrap()).await.unwrap();
//! assert_eq!(appended.base_offset, 0);
//! let read = part.read(0, 10, 1 << 20).unwrap();
//! assert_eq!(&read.records[0].value[..], b"hello");
//! log.shutdown();
//! # }
//! ```
//!
//! The API is shaped like a Raft log (append with an epoch per batch, truncate
//! a suffix, purge a prefix) so a replicated log can be built on it later.

mod commit_log;
mod fault;
mod files;
mod frame;
pub mod metrics;
mod partition;
mod segment;
mod trash;
mod writer;

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::sync::oneshot;

pub use files::DEFAULT_MAX_OPEN_SEGMENT_FILES;
pub use frame::{
    BatchBuilder, BatchCipher, BatchHeader, CipherError, FLAG_ENCRYPTED, HEADER_LEN, MAX_FRAME_LEN,
    PendingBatch, record_encoded_len,
};
pub use partition::{Partition, ReadOutcome, StoredRecord};

use writer::Command;

/// Default size of the shared commit log.
pub const DEFAULT_COMMIT_LOG_BYTES: u64 = 32 * 1024 * 1024;
/// Default largest group commit (in commit log bytes) that goes through the
/// commit log. Above it the window's bytes, not the number of files, dominate
/// the cost of its sync, and writing them twice would halve the disk bandwidth
/// left for ingest.
pub const DEFAULT_COMMIT_LOG_MAX_WINDOW: usize = 256 * 1024;

/// A batch is indexed at least every this many bytes.
pub const INDEX_INTERVAL_BYTES: u64 = 16 * 1024;

/// Errors of the log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("corrupt log data: {0}")]
    Corrupt(String),
    #[error("partition {0} does not exist")]
    NoSuchPartition(String),
    #[error("invalid partition id {0:?}")]
    InvalidPartitionId(String),
    #[error("partition {0} refuses writes after a failed write or sync; restart to recover")]
    Poisoned(String),
    #[error(
        "the commit log could not be retired after a failed sync, so partitions cannot be truncated or deleted; restart to recover"
    )]
    CommitLogStuck,
    #[error("partition {0} is sealed and takes no more appends")]
    Sealed(String),
    #[error("cannot decrypt batch: {0}")]
    Cipher(#[from] CipherError),
    #[error("the log is shut down")]
    Closed,
}

impl LogError {
    pub(crate) fn io(path: &Path, source: io::Error) -> LogError {
        LogError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// When appended bytes are forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Acknowledge only after `fdatasync` (group commit). The default.
    Always,
    /// Acknowledge after the write reaches the OS; sync at this interval.
    Interval(Duration),
    /// Acknowledge after the write reaches the OS; let the OS flush.
    Never,
}

impl FromStr for FsyncPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            _ => match s.strip_prefix("interval:").map(str::parse::<u64>) {
                Some(Ok(ms)) if ms > 0 => Ok(FsyncPolicy::Interval(Duration::from_millis(ms))),
                _ => Err(format!(
                    "invalid fsync policy {s:?}: expected always, interval:<ms> or never"
                )),
            },
        }
    }
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsyncPolicy::Always => f.write_str("always"),
            FsyncPolicy::Interval(d) => write!(f, "interval:{}", d.as_millis()),
            FsyncPolicy::Never => f.write_str("never"),
        }
    }
}

/// Source of append timestamps (milliseconds since the Unix epoch); replaceable in tests.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// Settings of a [`Log`].
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Directory holding one sub-directory per partition.
    pub dir: PathBuf,
    /// Leader epoch stamped on every batch appended by this process.
    pub epoch: u64,
    pub fsync: FsyncPolicy,
    /// A segment is sealed once it reaches this size.
    pub segment_max_bytes: u64,
    /// A segment is sealed once its first record is this old, so retention can
    /// delete whole segments.
    pub segment_max_age_ms: i64,
    /// Size of the shared commit log ([`FsyncPolicy::Always`] only); 0 turns it
    /// off, so every group commit syncs each touched segment file.
    pub commit_log_bytes: u64,
    /// Windows of up to this many bytes go through the commit log; larger
    /// ones sync their segment files directly, so big batches are written once.
    pub commit_log_max_window: usize,
    /// Most segment files kept open for reading, across all partitions;
    /// others are opened when read, closing the least recently used.
    pub max_open_segment_files: usize,
    pub clock: Arc<dyn Clock>,
}

impl LogConfig {
    /// Defaults: group-commit fsync through a 32 MiB commit log for windows up
    /// to 256 KiB, 64 MiB or 1 hour segments, the system clock.
    pub fn new(dir: impl Into<PathBuf>, epoch: u64) -> LogConfig {
        LogConfig {
            dir: dir.into(),
            epoch,
            fsync: FsyncPolicy::Always,
            segment_max_bytes: 64 * 1024 * 1024,
            segment_max_age_ms: 60 * 60 * 1000,
            commit_log_bytes: DEFAULT_COMMIT_LOG_BYTES,
            commit_log_max_window: DEFAULT_COMMIT_LOG_MAX_WINDOW,
            max_open_segment_files: DEFAULT_MAX_OPEN_SEGMENT_FILES,
            clock: Arc::new(SystemClock),
        }
    }
}

/// What an append was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: u64,
    pub record_count: u32,
    pub timestamp_ms: i64,
    pub epoch: u64,
}

/// The cipher partitions use to open encrypted batches, settable after open.
pub type CipherSlot = Arc<RwLock<Option<Arc<dyn BatchCipher>>>>;

/// The log: a set of partitions and the writer thread that appends to them.
#[derive(Debug)]
pub struct Log {
    config: LogConfig,
    cipher: CipherSlot,
    partitions: RwLock<HashMap<String, Arc<Partition>>>,
    tx: Mutex<Option<mpsc::Sender<Command>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    trash_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    files: Arc<files::FileCache>,
    counters: Arc<metrics::LogCounters>,
    /// Faults the log's tests inject into the writer.
    #[cfg_attr(not(test), allow(dead_code))]
    faults: Arc<fault::Faults>,
}

/// Ids name directories: no separators, and no leading dot, which `.`, `..`
/// and the log's own [`trash::DIR_NAME`] have.
pub(crate) fn valid_partition_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 200
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Creates `dir` and any missing ancestors like `fs::create_dir_all`, and
/// fsyncs the parent of each directory it creates, so the new directory is
/// still there after a power loss (a file synced inside a directory whose own
/// entry was never synced can vanish with it).
pub fn create_dir_all_durable(dir: &Path) -> Result<(), LogError> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        create_dir_all_durable(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(LogError::io(dir, e)),
    }
    sync_dir(parent.unwrap_or(Path::new(".")))
}

/// Raises this process's soft limit on open files to its hard limit (the
/// soft default, often 1024, is far below what thousands of shards need).
/// Returns the limit now in force.
pub fn raise_open_file_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                tracing::debug!(
                    from = lim.rlim_cur,
                    to = lim.rlim_max,
                    "raised the open file limit"
                );
                lim = raised;
            } else {
                tracing::warn!(error = %io::Error::last_os_error(), limit = lim.rlim_cur, "cannot raise the open file limit");
            }
        }
    }
    Some(lim.rlim_cur)
}

#[cfg(test)]
thread_local! {
    /// Directories this thread fsynced, for tests of directory durability.
    pub(crate) static SYNCED_DIRS: std::cell::RefCell<Vec<PathBuf>> = const { std::cell::RefCell::new(Vec::new()) };
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    #[cfg(test)]
    SYNCED_DIRS.with(|d| d.borrow_mut().push(dir.to_path_buf()));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LogError::io(dir, e))
}

impl Log {
    /// Opens (or creates) the log in `config.dir`, recovering every partition found there.
    pub fn open(config: LogConfig) -> Result<Log, LogError> {
        create_dir_all_durable(&config.dir)?;
        raise_open_file_limit();
        let (trash, trash_thread) = trash::Trash::open(&config.dir)?;
        let files = files::FileCache::new(config.max_open_segment_files);
        // Batches that only the commit log made durable go back into their
        // segment files first, so recovery below sees every acknowledged one.
        let replayed = commit_log::replay(&config.dir)?;
        let cipher: CipherSlot = Arc::default();
        let mut partitions = HashMap::new();
        for entry in fs::read_dir(&config.dir).map_err(|e| LogError::io(&config.dir, e))? {
            let entry = entry.map_err(|e| LogError::io(&config.dir, e))?;
            let id = entry.file_name().to_string_lossy().into_owned();
            if !entry.path().is_dir() || !valid_partition_id(&id) {
                continue;
            }
            let part = partition::recover(
                id.clone(),
                entry.path(),
                i64::MAX,
                config.clock.clone(),
                cipher.clone(),
                files.clone(),
            )?;
            partitions.insert(id, part);
        }
        let path = config.dir.join(commit_log::FILE_NAME);
        let mut commit_log = None;
        if config.fsync == FsyncPolicy::Always && config.commit_log_bytes > 0 {
            match commit_log::CommitLog::start(
                &config.dir,
                config.commit_log_bytes,
                replayed.generation,
            ) {
                Ok(log) => commit_log = Some(log),
                // Not fatal: replay already synced everything it held, and
                // direct syncs of the segment files work without it.
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the commit log: syncing segment files directly")
                }
            }
        }
        if commit_log.is_none() && path.exists() {
            // What it held is in the segment files now; left behind, it would
            // write stale batches back after a later truncate or delete.
            fs::remove_file(&path).map_err(|e| LogError::io(&path, e))?;
            sync_dir(&config.dir)?;
        }
        let (tx, rx) = mpsc::channel();
        let faults = Arc::new(fault::Faults::default());
        let counters = Arc::new(metrics::LogCounters::default());
        let ctx = writer::Writer::new(&config, commit_log, faults.clone(), counters.clone(), trash);
        let handle = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || ctx.run(rx))
            .map_err(|e| LogError::io(&config.dir, e))?;
        Ok(Log {
            config,
            cipher,
            partitions: RwLock::new(partitions),
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(handle)),
            trash_thread: Mutex::new(Some(trash_thread)),
            files,
            counters,
            faults,
        })
    }

    /// Sets the cipher that opens encrypted batches on read.
    pub fn set_cipher(&self, cipher: Arc<dyn BatchCipher>) {
        *self.cipher.write() = Some(cipher);
    }

    /// The configuration the log was opened with.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Ids of every partition.
    pub fn partition_ids(&self) -> Vec<String> {
        self.partitions.read().keys().cloned().collect()
    }

    /// The partition with this id, if it exists.
    pub fn partition(&self, id: &str) -> Option<Arc<Partition>> {
        self.partitions.read().get(id).cloned()
    }

    /// Creates an empty partition, or returns the existing one with its retention updated.
    pub fn create_partition(
        &self,
        id: &str,
        retention_ms: i64,
    ) -> Result<Arc<Partition>, LogError> {
        if !valid_partition_id(id) {
            return Err(LogError::InvalidPartitionId(id.to_string()));
        }
        let mut map = self.partitions.write();
        if let Some(p) = map.get(id) {
            p.set_retention_ms(retention_ms);
            return Ok(p.clone());
        }
        let part = partition::create_fresh(
            id.to_string(),
            self.config.dir.join(id),
            0,
            retention_ms,
            self.config.clock.clone(),
            self.cipher.clone(),
            self.files.clone(),
        )?;
        map.insert(id.to_string(), part.clone());
        Ok(part)
    }

    fn send(&self, cmd: Command) -> Result<(), LogError> {
        let tx = self.tx.lock();
        tx.as_ref()
            .ok_or(LogError::Closed)?
            .send(cmd)
            .map_err(|_| LogError::Closed)
    }

    /// Appends a batch; resolves once it is durable under the fsync policy.
    pub fn append(
        &self,
        part: &Arc<Partition>,
        batch: PendingBatch,
    ) -> impl std::future::Future<Output = Result<Appended, LogError>> + Send + 'static {
        let (reply, rx) = oneshot::channel();
        let sent = self.send(Command::Append {
            partition: part.clone(),
            batch,
            reply,
        });
        async move {
            sent?;
            rx.await.map_err(|_| LogError::Closed)?
        }
    }

    /// Deletes a partition and its files; pending appends to it fail.
    pub async fn delete_partition(&self, id: &str) -> Result<(), LogError> {
        self.delete_partitions(&[id]).await
    }

    /// Deletes partitions and their files with one checkpoint for all of
    /// them; pending appends to them fail. Their directories are moved into
    /// the log's trash and removed in the background.
    pub async fn delete_partitions<S: AsRef<str>>(&self, ids: &[S]) -> Result<(), LogError> {
        let partitions: Vec<Arc<Partition>> = {
            let mut map = self.partitions.write();
            ids.iter()
                .filter_map(|id| map.remove(id.as_ref()))
                .collect()
        };
        if partitions.is_empty() {
            return Ok(());
        }
        let (reply, rx) = oneshot::channel();
        self.send(Command::Delete { partitions, reply })?;
        rx.await.map_err(|_| LogError::Closed)?
    }

    /// This log's own counters.
    pub fn stats(&self) -> metrics::LogStats {
        metrics::LogStats {
            checkpoint_passes: self
                .counters
                .checkpoint_passes
                .load(std::sync::atomic::Ordering::Relaxed),
            open_segment_files: self.files.open_files(),
        }
    }

    /// Drops every record after `offset` (a batch boundary), as a replica does
    /// when its leader's log diverges. Only the active segment can be truncated.
    pub async fn truncate_after(&self, part: &Arc<Partition>, offset: u64) -> Result<(), LogError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Truncate {
            partition: part.clone(),
            keep_until: offset + 1,
            reply,
        })?;
        rx.await.map_err(|_| LogError::Closed)?
    }

    /// Seals a partition: appends queued before this call land, later ones fail
    /// with [`LogError::Sealed`]. Returns the final end offset. Sealing lives in
    /// memory only; the owner persists it (and re-applies it with
    /// [`Partition::set_sealed`] after a restart).
    pub async fn seal(&self, part: &Arc<Partition>) -> Result<u64, LogError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Seal {
            partition: part.clone(),
            reply,
        })?;
        rx.await.map_err(|_| LogError::Closed)?
    }

    /// Forces everything written so far to disk.
    pub async fn sync(&self) -> Result<(), LogError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Sync { reply })?;
        rx.await.map_err(|_| LogError::Closed)?
    }

    /// Deletes whole segments whose records are all past their partition's
    /// retention, and seals expired active segments so the next pass can delete
    /// them. Returns the number of segment files deleted.
    pub fn enforce_retention(&self) -> usize {
        let now = self.config.clock.now_ms();
        let parts: Vec<Arc<Partition>> = self.partitions.read().values().cloned().collect();
        let mut deleted = 0;
        for part in parts {
            let cutoff = now.saturating_sub(part.retention_ms());
            let mut doomed = Vec::new();
            let mut roll = false;
            {
                let mut st = part.state.write();
                while st.segments.len() > 1 {
                    let next_first = st.segments[1].first_timestamp();
                    let bound = if next_first == segment::NO_TIMESTAMP {
                        st.last_timestamp
                    } else {
                        next_first
                    };
                    if bound >= cutoff {
                        break;
                    }
                    doomed.push(st.segments.remove(0));
                }
                if let Some(active) = st.segments.last()
                    && st.next_offset > active.base_offset
                    && st.last_timestamp != segment::NO_TIMESTAMP
                    && st.last_timestamp < cutoff
                {
                    roll = true;
                }
            }
            for seg in doomed {
                // Its descriptor closes when the last reader's snapshot drops
                // it (the cache holds segments weakly), so a read racing this
                // one still finds its file open.
                let _ = fs::remove_file(&seg.log_path);
                let _ = fs::remove_file(&seg.idx_path);
                deleted += 1;
                tracing::debug!(partition = %part.id, segment = %seg.log_path.display(), "deleted expired segment");
            }
            if roll {
                let (reply, _rx) = oneshot::channel();
                let _ = self.send(Command::Roll {
                    partition: part,
                    reply,
                });
            }
        }
        deleted
    }

    /// Syncs everything, stops the writer thread and waits for it.
    pub fn shutdown(&self) {
        // Dropping the sender ends the writer's loop; it syncs before exiting.
        drop(self.tx.lock().take());
        if let Some(h) = self.writer.lock().take() {
            let _ = h.join();
        }
        // The writer held the trash's sender: the thread ends once it has
        // removed what it was given.
        if let Some(h) = self.trash_thread.lock().take() {
            let _ = h.join();
        }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests;
