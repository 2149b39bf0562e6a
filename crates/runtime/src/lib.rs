//! What every service of one server shares, opened once by the binary.
//!
//! A [`ServiceContext`] holds the data directory, the region and account the
//! server answers for, the clock, the durable catalog (`meta.redb`, where
//! each service keeps its metadata) and the shard log. The binary opens it
//! before any service and hands it to each service's constructor, so two
//! services never open the same redb file twice (redb refuses that) and a
//! new service needs no access to another service's internals to reach the
//! storage they share.
//!
//! This is its own crate because `ripstream-api`, the contract the front
//! door speaks, must not depend on storage: the context names storage types
//! (`Catalog`, `Log`), and only the services and the binary see it. The front
//! door never does.
//!
//! ```
//! # #[tokio::main] async fn main() {
//! use ripstream_runtime::{ContextConfig, ServiceContext};
//! let dir = tempfile::tempdir().unwrap();
//! let ctx = ServiceContext::open(ContextConfig::new(dir.path())).unwrap();
//! assert!(ctx.epoch >= 1);
//! assert!(ctx.catalog.streams().unwrap().is_empty());
//! ctx.close().await;
//! # }
//! ```

pub mod metrics;
pub mod quota;

use std::path::PathBuf;
use std::sync::Arc;

use ripstream_log::{Clock, FsyncPolicy, Log, LogConfig, LogError, SystemClock};
use ripstream_meta::{Catalog, MetaError};

/// How to open a context.
#[derive(Debug, Clone)]
pub struct ContextConfig {
    pub data_dir: PathBuf,
    pub region: String,
    pub account_id: String,
    pub clock: Arc<dyn Clock>,
    /// When the shard log's appends are forced to disk.
    pub fsync: FsyncPolicy,
    /// Size at which the shard log's segments are sealed.
    pub segment_max_bytes: u64,
    /// Size of the log's shared commit log; 0 syncs shard files directly.
    pub commit_log_bytes: u64,
    /// Largest group commit, in bytes, made durable through the commit log.
    pub commit_log_max_window: usize,
}

impl ContextConfig {
    /// Defaults: us-east-1, account 000000000000, the system clock, fsync always.
    pub fn new(data_dir: impl Into<PathBuf>) -> ContextConfig {
        ContextConfig {
            data_dir: data_dir.into(),
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
            clock: Arc::new(SystemClock),
            fsync: FsyncPolicy::Always,
            segment_max_bytes: 64 * 1024 * 1024,
            commit_log_bytes: ripstream_log::DEFAULT_COMMIT_LOG_BYTES,
            commit_log_max_window: ripstream_log::DEFAULT_COMMIT_LOG_MAX_WINDOW,
        }
    }
}

/// Why a context could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("cannot create data directory {}", path.display())]
    DataDir {
        path: PathBuf,
        #[source]
        source: LogError,
    },
    #[error("cannot open the catalog")]
    Catalog(#[source] MetaError),
    #[error("cannot open the shard log")]
    Log(#[source] LogError),
}

/// The storage and identity every service of the server shares. Cheap to
/// clone (handles only).
#[derive(Debug, Clone)]
pub struct ServiceContext {
    pub data_dir: PathBuf,
    pub region: String,
    pub account_id: String,
    pub clock: Arc<dyn Clock>,
    /// The durable catalog in `<data_dir>/meta.redb`.
    pub catalog: Arc<Catalog>,
    /// The shard log in `<data_dir>/log`, stamping this process's epoch.
    pub log: Arc<Log>,
    /// This process's leader epoch: one more than the last start's, so
    /// everything written from now on sorts after anything written before.
    pub epoch: u64,
}

impl ServiceContext {
    /// Opens (creating if need be) the data directory, the catalog, a new
    /// leader epoch, and the shard log under that epoch.
    pub fn open(cfg: ContextConfig) -> Result<ServiceContext, ContextError> {
        // Durably: a catalog synced into a directory whose own entry was not
        // could vanish with it.
        ripstream_log::create_dir_all_durable(&cfg.data_dir).map_err(|source| {
            ContextError::DataDir {
                path: cfg.data_dir.clone(),
                source,
            }
        })?;
        let catalog = Arc::new(
            Catalog::open(&cfg.data_dir.join("meta.redb")).map_err(ContextError::Catalog)?,
        );
        let epoch = catalog.begin_epoch().map_err(ContextError::Catalog)?;
        let mut log_cfg = LogConfig::new(cfg.data_dir.join("log"), epoch);
        log_cfg.fsync = cfg.fsync;
        log_cfg.segment_max_bytes = cfg.segment_max_bytes;
        log_cfg.commit_log_bytes = cfg.commit_log_bytes;
        log_cfg.commit_log_max_window = cfg.commit_log_max_window;
        log_cfg.clock = cfg.clock.clone();
        let log = Arc::new(Log::open(log_cfg).map_err(ContextError::Log)?);
        Ok(ServiceContext {
            data_dir: cfg.data_dir,
            region: cfg.region,
            account_id: cfg.account_id,
            clock: cfg.clock,
            catalog,
            log,
            epoch,
        })
    }

    /// Forces everything appended to the shard log to disk and stops its
    /// writer: the last step of a shutdown, after every service stopped.
    /// (The catalog needs nothing: each of its changes is committed when made.)
    pub async fn close(&self) {
        if let Err(e) = self.log.sync().await {
            tracing::warn!(error = %e, "final sync failed");
        }
        self.log.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_open_is_a_new_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let first = ServiceContext::open(ContextConfig::new(dir.path())).unwrap();
        let epoch = first.epoch;
        first.close().await;
        drop(first);
        let second = ServiceContext::open(ContextConfig::new(dir.path())).unwrap();
        assert!(second.epoch > epoch);
        assert_eq!(second.log.config().epoch, second.epoch);
        assert_eq!(second.log.config().dir, dir.path().join("log"));
    }

    #[test]
    fn a_data_dir_that_cannot_be_created_is_an_error_with_its_cause() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"").unwrap();
        let e = ServiceContext::open(ContextConfig::new(file.join("data"))).unwrap_err();
        assert!(matches!(e, ContextError::DataDir { .. }), "{e}");
        assert!(std::error::Error::source(&e).is_some());
    }
}
