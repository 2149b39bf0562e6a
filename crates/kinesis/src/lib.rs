//! The Kinesis Data Streams service, free of any wire protocol.
//!
//! [`Service`] implements each operation on typed inputs and outputs
//! ([`types`]) and returns [`Error`]s whose variants are the AWS error types.
//! It owns the stream catalog (durable in [`ripstream_meta`]), routes records
//! by hash key to shards, and keeps each shard's records in a partition of the
//! shard log ([`ripstream_log`]). The HTTP server decodes requests into these
//! types and encodes the results; nothing here knows about HTTP.
//!
//! ```
//! # #[tokio::main] async fn main() {
//! use ripstream_kinesis::{Service, ServiceConfig, types::*};
//! let dir = tempfile::tempdir().unwrap();
//! let svc = Service::open(ServiceConfig::new(dir.path())).await.unwrap();
//! svc.create_stream(CreateStreamInput { stream_name: "orders".into(), shard_count: Some(2), ..Default::default() }).await.unwrap();
//! let put = svc.put_record(PutRecordInput {
//!     stream_name: Some("orders".into()),
//!     partition_key: Some("customer-1".into()),
//!     data: Blob(b"hello".to_vec().into()),
//!     ..Default::default()
//! }).await.unwrap();
//! assert_eq!(put.sequence_number.len(), 56);
//! # }
//! ```

mod access;
pub mod api;
pub mod arn;
pub mod authz;
mod capacity;
pub mod consumers;
pub mod error;
mod fastjson;
pub mod hash;
pub mod iterator;
pub mod kms;
mod metrics;
pub mod quota;
mod records;
mod reshard;
mod scaler;
pub mod seq;
mod streams;
mod tags;
pub mod types;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use prometheus_client::registry::Registry;
use ripstream_log::{Log, Partition};
use ripstream_meta::{Catalog, StreamRecord, StreamStatus};
use ripstream_runtime::{ContextConfig, ServiceContext};
use tracing::{info, warn};

pub use error::{Error, Result};
pub use metrics::StreamMetrics;
pub use ripstream_log::metrics::LogMetrics;
pub use ripstream_log::{Clock, FsyncPolicy, SystemClock};

/// The shard log's process-wide counters.
pub fn log_metrics() -> LogMetrics {
    ripstream_log::metrics::snapshot()
}

use iterator::IteratorCodec;

/// Settings of the service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub data_dir: PathBuf,
    pub region: String,
    pub account_id: String,
    pub fsync: FsyncPolicy,
    /// How long a new stream stays CREATING.
    pub create_delay: Duration,
    /// How long a deleted stream stays DELETING.
    pub delete_delay: Duration,
    /// How long an updated stream stays UPDATING.
    pub update_delay: Duration,
    /// Most open shards across all streams.
    pub shard_limit: u32,
    /// Most streams in on-demand mode.
    pub on_demand_stream_limit: u32,
    /// Size at which log segments are sealed.
    pub segment_max_bytes: u64,
    /// Size of the log's shared commit log; 0 syncs shard files directly.
    pub commit_log_bytes: u64,
    /// Largest group commit, in bytes, made durable through the commit log.
    pub commit_log_max_window: usize,
    /// How often expired segments are deleted.
    pub retention_check_interval: Duration,
    /// Per-shard throughput quotas: AWS's, or none.
    pub quotas: quota::QuotaMode,
    /// How often on-demand streams are checked for hot and cold shards.
    pub on_demand_scale_interval: Duration,
    /// How long two adjacent on-demand shards must be cold before they merge.
    pub on_demand_merge_after: Duration,
    /// How long a SubscribeToShard subscription lasts.
    pub subscription_lifetime: Duration,
    /// Longest wait for a subscriber to take the next event before its
    /// subscription is ended.
    pub subscription_send_deadline: Duration,
    /// The keyring file standing in for KMS (created with a key for
    /// `alias/aws/kinesis` if missing); default `<data_dir>/keyring.toml`.
    pub keyring: Option<PathBuf>,
    pub clock: Arc<dyn Clock>,
}

impl ServiceConfig {
    /// Defaults: us-east-1, account 000000000000, fsync always, no status delays.
    pub fn new(data_dir: impl Into<PathBuf>) -> ServiceConfig {
        ServiceConfig {
            data_dir: data_dir.into(),
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
            fsync: FsyncPolicy::Always,
            create_delay: Duration::ZERO,
            delete_delay: Duration::ZERO,
            update_delay: Duration::ZERO,
            shard_limit: 500,
            on_demand_stream_limit: 50,
            segment_max_bytes: 64 * 1024 * 1024,
            commit_log_bytes: ripstream_log::DEFAULT_COMMIT_LOG_BYTES,
            commit_log_max_window: ripstream_log::DEFAULT_COMMIT_LOG_MAX_WINDOW,
            retention_check_interval: Duration::from_secs(60),
            quotas: quota::QuotaMode::Aws,
            on_demand_scale_interval: Duration::from_secs(10),
            on_demand_merge_after: Duration::from_secs(600),
            subscription_lifetime: Duration::from_secs(300),
            subscription_send_deadline: Duration::from_secs(30),
            keyring: None,
            clock: Arc::new(SystemClock),
        }
    }

    /// The shared context these settings describe (data directory, region,
    /// account, clock, the shard log's settings), for [`ServiceContext::open`].
    pub fn context(&self) -> ContextConfig {
        ContextConfig {
            data_dir: self.data_dir.clone(),
            region: self.region.clone(),
            account_id: self.account_id.clone(),
            clock: self.clock.clone(),
            fsync: self.fsync,
            segment_max_bytes: self.segment_max_bytes,
            commit_log_bytes: self.commit_log_bytes,
            commit_log_max_window: self.commit_log_max_window,
        }
    }
}

/// An open shard and where its records go.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub start: u128,
    pub end: u128,
    pub index: u32,
    pub created_ms: i64,
    pub part: Arc<Partition>,
}

/// An immutable snapshot of a stream; mutations replace it whole.
#[derive(Debug)]
pub(crate) struct StreamState {
    pub rec: StreamRecord,
    /// Open shards ordered by starting hash key.
    pub routes: Vec<Route>,
    /// The partition of every shard, open or closed.
    pub parts: HashMap<u32, Arc<Partition>>,
    /// Round-robin position for streams that distribute records themselves.
    pub spread: std::sync::atomic::AtomicU64,
    /// Throughput quotas and meters per shard, kept across snapshots.
    pub quotas: HashMap<u32, Arc<quota::ShardQuota>>,
    /// The resource policies of the stream and its consumers, parsed once
    /// per snapshot rather than on every request they authorize.
    pub policies: access::ParsedPolicies,
}

impl StreamState {
    /// The status now, `None` once a deletion has completed.
    pub fn status(&self, now_ms: i64) -> Option<StreamStatus> {
        effective_status(&self.rec, now_ms)
    }

    /// Position in `routes` of the open shard whose range holds `hash`.
    pub fn route_slot(&self, hash: u128) -> Option<usize> {
        let i = self
            .routes
            .partition_point(|r| r.start <= hash)
            .checked_sub(1)?;
        (hash <= self.routes[i].end).then_some(i)
    }
}

pub(crate) fn effective_status(rec: &StreamRecord, now_ms: i64) -> Option<StreamStatus> {
    match rec.status {
        StreamStatus::Creating | StreamStatus::Updating if now_ms >= rec.status_until_ms => {
            Some(StreamStatus::Active)
        }
        StreamStatus::Deleting if now_ms >= rec.status_until_ms => None,
        s => Some(s),
    }
}

pub(crate) fn partition_id(uid: u64, shard_index: u32) -> String {
    format!("stream{uid}-shard{shard_index}")
}

/// Whether a log partition is one of Data Streams' (`stream<uid>-shard<n>`).
/// The shard log is shared with other services (Firehose keeps
/// `firehose-<uid>`), whose partitions are theirs to reconcile: the orphan
/// sweep at start-up must never take them for its own.
pub(crate) fn is_stream_partition(id: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    id.strip_prefix("stream")
        .and_then(|rest| rest.split_once("-shard"))
        .is_some_and(|(uid, shard)| digits(uid) && digits(shard))
}

pub(crate) fn shard_id(index: u32) -> String {
    format!("shardId-{index:012}")
}

pub(crate) fn retention_ms(hours: u32) -> i64 {
    i64::from(hours) * 3_600_000
}

/// Runs blocking work (redb commits, partition creation, cold reads) on
/// tokio's blocking pool, so that a slow disk never holds an async worker and
/// the requests queued behind it (PutRecords above all).
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::failed(format!("blocking task failed: {e}"), e))?
}

/// The Kinesis Data Streams service. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Service {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub cfg: ServiceConfig,
    pub catalog: Arc<Catalog>,
    /// Shared with the blocking threads that create partitions.
    pub log: Arc<Log>,
    pub streams: RwLock<BTreeMap<String, Arc<StreamState>>>,
    /// Serializes changes to the catalog.
    pub control: tokio::sync::Mutex<()>,
    pub iterators: IteratorCodec,
    pub epoch: u64,
    pub metrics: StreamMetrics,
    /// Since when each on-demand shard, by (stream uid, shard index), has been cold.
    pub cold_since: parking_lot::Mutex<HashMap<(u64, u32), i64>>,
    /// Live SubscribeToShard subscriptions by (consumer ARN, shard index).
    pub subscriptions: parking_lot::Mutex<HashMap<(String, u32), consumers::SubscriptionEntry>>,
    pub keyring: Arc<kms::Keyring>,
    pub next_subscription: std::sync::atomic::AtomicU64,
    /// Streams refused since start-up because data of theirs is missing, by
    /// name, with the error their operations answer.
    pub damaged: RwLock<BTreeMap<String, String>>,
}

impl Service {
    /// Opens the data directory on its own (a context of its own, from
    /// `cfg`): for tests and embedders that serve Data Streams alone.
    pub async fn open(cfg: ServiceConfig) -> Result<Service> {
        let ctx =
            ServiceContext::open(cfg.context()).map_err(|e| Error::failed(e.to_string(), e))?;
        Self::open_in(&ctx, cfg, &mut Registry::default()).await
    }

    /// Opens the service in the server's shared context (its catalog, shard
    /// log and epoch) and reconciles the two, registering the per-stream
    /// metrics in `registry`. The context's data directory, region, account
    /// and clock replace `cfg`'s; the log is the context's, opened with the
    /// settings [`ServiceConfig::context`] gives it.
    pub async fn open_in(
        ctx: &ServiceContext,
        mut cfg: ServiceConfig,
        registry: &mut Registry,
    ) -> Result<Service> {
        cfg.data_dir = ctx.data_dir.clone();
        cfg.region = ctx.region.clone();
        cfg.account_id = ctx.account_id.clone();
        cfg.clock = ctx.clock.clone();
        let catalog = ctx.catalog.clone();
        let epoch = ctx.epoch;
        let key = catalog.setting_or_init("iterator-key", || {
            let mut k = vec![0u8; 32];
            rand::fill(&mut k[..]);
            k
        })?;
        let mut key_bytes = [0u8; 32];
        if key.len() == 32 {
            key_bytes.copy_from_slice(&key);
        }
        let log = ctx.log.clone();
        let keyring_path = cfg
            .keyring
            .clone()
            .unwrap_or_else(|| cfg.data_dir.join("keyring.toml"));
        let keyring = Arc::new(kms::Keyring::open(
            &keyring_path,
            &cfg.region,
            &cfg.account_id,
        )?);
        log.set_cipher(keyring.clone());
        let inner = Inner {
            metrics: StreamMetrics::register(registry),
            cfg,
            catalog,
            log,
            streams: RwLock::new(BTreeMap::new()),
            control: tokio::sync::Mutex::new(()),
            iterators: IteratorCodec::new(key_bytes),
            epoch,
            cold_since: Default::default(),
            subscriptions: Default::default(),
            keyring,
            next_subscription: Default::default(),
            damaged: Default::default(),
        };
        inner.reconcile().await?;
        info!(
            epoch,
            streams = inner.streams.read().len(),
            "service opened"
        );
        Ok(Service {
            inner: Arc::new(inner),
        })
    }

    /// The leader epoch of this process.
    pub fn epoch(&self) -> u64 {
        self.inner.epoch
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.inner.cfg
    }

    /// The background chores (retention and pruning, completing delayed
    /// deletions, on-demand scaling): a loop that runs until it is dropped.
    /// The front door runs it while it serves ([`ripstream_api::Service::start`]).
    pub fn background(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let svc = self.clone();
        async move {
            let mut retention = tokio::time::interval(svc.inner.cfg.retention_check_interval);
            let mut reaper = tokio::time::interval(Duration::from_millis(100));
            let mut scaler = tokio::time::interval(svc.inner.cfg.on_demand_scale_interval);
            loop {
                tokio::select! {
                    _ = retention.tick() => {
                        let s = svc.clone();
                        let deleted = tokio::task::spawn_blocking(move || s.inner.log.enforce_retention()).await.unwrap_or(0);
                        if deleted > 0 {
                            info!(segments = deleted, "retention deleted expired segments");
                        }
                        let pruned = svc.prune_closed_shards().await;
                        if pruned > 0 {
                            info!(shards = pruned, "retention pruned expired closed shards");
                        }
                    }
                    _ = reaper.tick() => {
                        svc.finish_deletions().await;
                    }
                    _ = scaler.tick() => {
                        svc.scale_on_demand().await;
                    }
                }
            }
        }
    }

    /// Forces all appended records to disk and stops the log writer: for a
    /// service opened alone ([`Service::open`]); a served one's log is closed
    /// with the server's context, after every service stopped.
    pub async fn shutdown(&self) {
        if let Err(e) = self.inner.log.sync().await {
            warn!(error = %e, "final sync failed");
        }
        self.inner.log.shutdown();
    }

    /// Streams the service refuses because data the catalog lists for them
    /// is missing from the data directory (found at start-up; each one's
    /// operations answer an error naming what is missing).
    pub fn damaged_streams(&self) -> Vec<String> {
        self.inner.damaged.read().keys().cloned().collect()
    }

    /// Deletes the data of streams whose DELETING period is over.
    pub async fn finish_deletions(&self) {
        let now = self.inner.now_ms();
        let due: Vec<Arc<StreamState>> = self
            .inner
            .streams
            .read()
            .values()
            .filter(|s| s.rec.status == StreamStatus::Deleting && s.status(now).is_none())
            .cloned()
            .collect();
        for s in due {
            let _guard = self.inner.control.lock().await;
            if let Err(e) = self.inner.purge_stream(&s).await {
                warn!(stream = %s.rec.name, error = %ripstream_api::Chain(&e), "could not finish deleting stream");
            }
        }
    }

    /// Where the data lives.
    pub fn data_dir(&self) -> &Path {
        &self.inner.cfg.data_dir
    }
}

impl Inner {
    pub fn now_ms(&self) -> i64 {
        self.cfg.clock.now_ms()
    }

    pub fn stream_arn(&self, name: &str) -> String {
        self.arn_scope().stream_arn(name)
    }

    /// This server's partition, region and account, for ARNs.
    pub fn arn_scope(&self) -> arn::ArnScope<'_> {
        arn::ArnScope {
            region: &self.cfg.region,
            account: &self.cfg.account_id,
        }
    }

    pub fn not_found(&self, name: &str) -> Error {
        if let Some(e) = self.damaged_error(name) {
            return e;
        }
        Error::ResourceNotFound(format!(
            "Stream {name} under account {} not found.",
            self.cfg.account_id
        ))
    }

    /// Builds the in-memory state of a stream from its record, opening or
    /// creating the partitions of its shards.
    /// `prev` is the snapshot being replaced, whose quota buckets and
    /// partitions carry over: only shards new to the record cost a lookup, and
    /// only partitions new to the log are created (mkdir and directory fsyncs,
    /// on a blocking thread).
    pub async fn build_state(
        &self,
        rec: StreamRecord,
        prev: Option<&StreamState>,
    ) -> Result<Arc<StreamState>> {
        let now = self.now_ms();
        let retention = retention_ms(rec.retention_hours);
        let mut parts = HashMap::with_capacity(rec.shards.len());
        let mut missing = Vec::new();
        for shard in &rec.shards {
            let id = partition_id(rec.uid, shard.index);
            match prev
                .and_then(|p| p.parts.get(&shard.index).cloned())
                .or_else(|| self.log.partition(&id))
            {
                Some(part) => {
                    part.set_retention_ms(retention);
                    parts.insert(shard.index, part);
                }
                None => missing.push((shard.index, id)),
            }
        }
        if !missing.is_empty() {
            let log = self.log.clone();
            let created = blocking(move || {
                missing
                    .into_iter()
                    .map(|(index, id)| Ok((index, log.create_partition(&id, retention)?)))
                    .collect::<Result<Vec<_>>>()
            })
            .await?;
            parts.extend(created);
        }
        let mut routes = Vec::new();
        let mut quotas = HashMap::new();
        for shard in &rec.shards {
            let part = parts
                .get(&shard.index)
                .cloned()
                .ok_or_else(|| Error::Internal("shard without partition".into()))?;
            part.set_sealed(shard.end.is_some());
            let q = prev
                .and_then(|p| p.quotas.get(&shard.index).cloned())
                .unwrap_or_else(|| Arc::new(quota::ShardQuota::new(now)));
            quotas.insert(shard.index, q);
            if shard.end.is_none() {
                routes.push(Route {
                    start: shard.starting_hash_key,
                    end: shard.ending_hash_key,
                    index: shard.index,
                    created_ms: shard.created_ms,
                    part: part.clone(),
                });
            }
        }
        routes.sort_by_key(|r| r.start);
        Ok(Arc::new(StreamState {
            routes,
            parts,
            spread: Default::default(),
            quotas,
            policies: access::ParsedPolicies::of(&rec),
            rec,
        }))
    }

    /// Commits a stream's record (one fsynced redb transaction) off the async workers.
    pub async fn commit_stream(&self, rec: &StreamRecord) -> Result<()> {
        let (catalog, rec) = (self.catalog.clone(), rec.clone());
        blocking(move || Ok(catalog.put_stream(&rec)?)).await
    }

    /// Removes a stream's record from the catalog off the async workers.
    pub async fn commit_removal(&self, name: &str) -> Result<()> {
        let (catalog, name) = (self.catalog.clone(), name.to_string());
        blocking(move || Ok(catalog.remove_stream(&name)?)).await
    }

    /// Loads the catalog, finishes interrupted deletions and removes partitions
    /// no stream owns (left by a crash between creating them and committing).
    async fn reconcile(&self) -> Result<()> {
        let mut owned = std::collections::HashSet::new();
        let mut pending_delete = Vec::new();
        for rec in self.catalog.streams()? {
            if rec.status == StreamStatus::Deleting {
                pending_delete.push(rec);
                continue;
            }
            for s in &rec.shards {
                owned.insert(partition_id(rec.uid, s.index));
            }
            // A shard whose partition is gone must not be recreated empty
            // (its records would silently vanish and its offsets restart):
            // the stream is refused until the data is restored.
            let missing: Vec<String> = rec
                .shards
                .iter()
                .filter(|s| {
                    self.log
                        .partition(&partition_id(rec.uid, s.index))
                        .is_none_or(|p| p.found_without_segments())
                })
                .map(|s| {
                    format!(
                        "{} (log partition {})",
                        shard_id(s.index),
                        partition_id(rec.uid, s.index)
                    )
                })
                .collect();
            if !missing.is_empty() {
                let msg = format!(
                    "Stream {} under account {} is unavailable: the data of {} is missing from the data directory; the server refuses the stream until it is restored.",
                    rec.name,
                    self.cfg.account_id,
                    missing.join(", ")
                );
                tracing::error!(stream = %rec.name, missing = %missing.join(", "), log_dir = %self.log.config().dir.display(), "stream refused: its data is missing from the data directory");
                self.damaged.write().insert(rec.name.clone(), msg);
                continue;
            }
            let state = self.build_state(rec, None).await?;
            self.streams.write().insert(state.rec.name.clone(), state);
        }
        for rec in pending_delete {
            info!(stream = %rec.name, "finishing deletion interrupted by a restart");
            self.commit_removal(&rec.name).await?;
        }
        let orphans: Vec<String> = self
            .log
            .partition_ids()
            .into_iter()
            .filter(|id| is_stream_partition(id) && !owned.contains(id))
            .collect();
        for id in &orphans {
            warn!(partition = %id, "removing log partition that no stream owns");
        }
        self.log.delete_partitions(&orphans).await?;
        Ok(())
    }

    /// The error a stream refused at start-up answers with, if it is one.
    pub fn damaged_error(&self, name: &str) -> Option<Error> {
        self.damaged
            .read()
            .get(name)
            .map(|msg| Error::ResourceNotFound(msg.clone()))
    }

    /// Deletes a stream's partitions and its catalog entry. Caller holds `control`.
    pub async fn purge_stream(&self, s: &Arc<StreamState>) -> Result<()> {
        // The catalog entry goes first: a crash afterwards leaves only orphan
        // partitions, which the next start removes.
        self.commit_removal(&s.rec.name).await?;
        {
            let mut map = self.streams.write();
            if map.get(&s.rec.name).is_some_and(|cur| Arc::ptr_eq(cur, s)) {
                map.remove(&s.rec.name);
            }
        }
        // One call, so the log checkpoints once for the whole stream rather
        // than once per shard with every stream's ingest waiting behind it.
        let ids: Vec<String> = s
            .rec
            .shards
            .iter()
            .map(|shard| partition_id(s.rec.uid, shard.index))
            .collect();
        self.log.delete_partitions(&ids).await?;
        self.metrics.forget(&s.rec.name);
        Ok(())
    }
}

#[cfg(test)]
mod log_tests;
#[cfg(test)]
mod tests;
