//! The trash directory inside the log's directory.
//!
//! Deleting a partition must not hold the writer thread (and with it every
//! partition's ingest) for as long as removing its files takes. The writer
//! only renames the partition's directory in here, which is atomic, and makes
//! the rename durable; a background thread removes the files. Whatever a crash
//! leaves here is removed when the log is next opened.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use tracing::warn;

use crate::{LogError, sync_dir};

/// Name of the trash directory inside the log's directory. Partition ids may
/// not start with a dot, so it can never be taken for a partition.
pub(crate) const DIR_NAME: &str = ".trash";

/// The writer's handle on the trash.
#[derive(Debug)]
pub(crate) struct Trash {
    dir: PathBuf,
    tx: mpsc::Sender<PathBuf>,
    /// Makes entry names unique within this process.
    seq: u64,
    /// Makes entry names unique across processes (leftovers are removed at
    /// open, but one that could not be removed must not block a rename).
    stamp: u128,
}

impl Trash {
    /// Creates the trash directory if needed, removes what an earlier process
    /// left in it and starts the thread that removes deleted partitions.
    pub fn open(log_dir: &Path) -> Result<(Trash, JoinHandle<()>), LogError> {
        let dir = log_dir.join(DIR_NAME);
        if !dir.exists() {
            fs::create_dir(&dir).map_err(|e| LogError::io(&dir, e))?;
            sync_dir(log_dir)?;
        }
        let mut leftovers = 0;
        for entry in fs::read_dir(&dir).map_err(|e| LogError::io(&dir, e))? {
            let entry = entry.map_err(|e| LogError::io(&dir, e))?;
            remove(&entry.path());
            leftovers += 1;
        }
        if leftovers > 0 {
            tracing::info!(
                entries = leftovers,
                "removed deleted partitions left in the trash"
            );
        }
        let (tx, rx) = mpsc::channel::<PathBuf>();
        let handle = std::thread::Builder::new()
            .name("log-trash".into())
            .spawn(move || {
                for path in rx {
                    remove(&path);
                }
            })
            .map_err(|e| LogError::io(&dir, e))?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Ok((
            Trash {
                dir,
                tx,
                seq: 0,
                stamp,
            },
            handle,
        ))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A fresh path in the trash for a partition's directory.
    pub fn entry_for(&mut self, partition_id: &str) -> PathBuf {
        self.seq += 1;
        self.dir
            .join(format!("{partition_id}.{}-{}", self.stamp, self.seq))
    }

    /// Hands a renamed directory to the background thread.
    pub fn remove_later(&self, path: PathBuf) {
        if let Err(mpsc::SendError(path)) = self.tx.send(path) {
            // The thread is gone (it only ends with the writer): remove inline.
            remove(&path);
        }
    }
}

fn remove(path: &Path) {
    let r = if path.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    if let Err(e) = r {
        warn!(path = %path.display(), error = %e, "cannot remove a deleted partition from the trash; the next start retries");
    }
}
