//! Amazon Data Firehose: delivery streams and their delivery engine.
//!
//! A delivery stream's configuration lives in the shared catalog (documents
//! space [`STREAMS_SPACE`]); its records live in a shard-log partition of its
//! own (`firehose-<uid>`), appended with the log's group commit before
//! PutRecord/PutRecordBatch answer, so an acknowledged record survives
//! `kill -9`. One delivery task per stream (the `engine` module) reads the partition
//! from a durable checkpoint, buffers per BufferingHints and writes one
//! object per flush through an [`sink::ObjectSink`]; the checkpoint moves
//! only after the object is durable, so delivery is at least once.
//!
//! This increment serves DirectPut and KinesisStreamAsSource streams (module
//! [`source`]) with an S3 / ExtendedS3 destination, record format conversion
//! to Parquet included (module [`conversion`], schemas read through its
//! `SchemaSource`), the push destinations HTTP endpoint, Splunk,
//! OpenSearch and Elasticsearch (module [`endpoints`], over
//! `ripstream-delivery`), and Redshift loaded through a
//! [`redshift::TableLoader`] (module [`redshift`], its COPY options
//! translated by [`copy`]). Everything else the API can express (other
//! destinations, processors other than RecordDeAggregation and
//! AppendDelimiterToRecord (module `processing`), ORC output, S3 backup) is
//! refused with an InvalidArgumentException saying it is not supported
//! yet, never accepted and ignored.

pub mod api;
mod budget;
pub mod conversion;
pub mod copy;
pub mod cwlogs;
pub mod endpoints;
mod engine;
pub mod error;
pub mod iceberg;
pub mod jq;
pub mod lambda;
mod metrics;
mod ops;
pub mod partition;
mod pending;
pub mod prefix;
pub mod processing;
pub mod quota;
pub mod record;
pub mod redshift;
pub mod sink;
pub mod source;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use prometheus_client::registry::Registry;
use ripstream_log::{Clock, Log, Partition};
use ripstream_meta::Catalog;
use ripstream_runtime::ServiceContext;
use tracing::{info, warn};

pub use error::{Error, Result};
pub use record::StreamRecord;
/// The outbound settings' types, for the binary and the loaders (which
/// link no HTTP client of their own).
pub use ripstream_delivery::{ClientBuilder, ClientError, Networks, NetworksError};
pub use sink::{LocalObjects, ObjectSink, SinkError};

/// Where delivery streams are stored in the catalog, by name.
pub const STREAMS_SPACE: &str = "firehose/streams";
/// Where each stream's delivery checkpoint (the next log offset to deliver)
/// is stored, by uid.
pub const CHECKPOINTS_SPACE: &str = "firehose/checkpoints";

/// How long undelivered records are kept: AWS retries a failing destination
/// for 24 hours, then drops the data.
pub const RETENTION_MS: i64 = 24 * 3_600_000;

/// Settings of the Firehose service.
#[derive(Debug, Clone)]
pub struct FirehoseConfig {
    /// How long a new delivery stream stays CREATING.
    pub create_delay: Duration,
    /// How long a deleted delivery stream stays DELETING.
    pub delete_delay: Duration,
    /// Most delivery streams in the account (AWS's default quota: 5,000).
    pub stream_limit: usize,
    /// First wait after a failed delivery, doubled up to `retry_max`.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// The keyring file standing in for KMS (the server's, shared with Data
    /// Streams); `None`: `<data-dir>/keyring.toml`.
    pub keyring: Option<PathBuf>,
    /// The transformation functions Lambda processors' ARNs name.
    pub functions: lambda::Functions,
    /// AWS's DirectPut quotas per delivery stream (`--quotas aws`), or none.
    pub quotas: ripstream_runtime::quota::QuotaMode,
    /// Where a KinesisStreamAsSource delivery stream starts reading a
    /// shard it has never read.
    pub kinesis_start: source::SourceStart,
    /// Most bytes all delivery streams together hold buffered in memory
    /// (records read from their logs, not yet delivered). A stream that
    /// finds the budget spent flushes early or waits: its records are
    /// durable in its log meanwhile.
    pub buffer_memory_bytes: usize,
    /// Most partitions a dynamically partitioned stream's flush holds
    /// (AWS's quota: 500, raised on request up to 5,000); records of
    /// partitions past it go to the error output.
    pub active_partition_limit: usize,
    /// Whether push destinations may have http:// URLs (AWS admits only
    /// https; `firehose_allow_http_destinations`).
    pub allow_http_destinations: bool,
    /// The longest a push destination has to answer one request (and
    /// Splunk to acknowledge one): AWS's 3 minutes by default.
    pub endpoint_timeout: Duration,
    /// The networks connections to hosts that API callers name (push
    /// destinations, Redshift databases) may go to, checked on the
    /// resolved addresses; `None`: any (`firehose_destination_networks`).
    pub destination_networks: Option<ripstream_delivery::Networks>,
    /// A PEM file of roots push destinations' certificates may chain to,
    /// besides the platform's (`firehose_destination_ca_file`).
    pub destination_ca_file: Option<PathBuf>,
}

/// The default of [`FirehoseConfig::buffer_memory_bytes`]: four buffers of
/// the largest BufferingHints size (128 MiB).
pub const DEFAULT_BUFFER_MEMORY_BYTES: usize = 512 << 20;

/// AWS's HTTP endpoint response timeout.
pub const DEFAULT_ENDPOINT_TIMEOUT: Duration = Duration::from_secs(180);

impl Default for FirehoseConfig {
    fn default() -> FirehoseConfig {
        FirehoseConfig {
            create_delay: Duration::ZERO,
            delete_delay: Duration::ZERO,
            stream_limit: 5000,
            retry_initial: Duration::from_millis(500),
            retry_max: Duration::from_secs(5),
            keyring: None,
            functions: Default::default(),
            quotas: ripstream_runtime::quota::QuotaMode::Off,
            buffer_memory_bytes: DEFAULT_BUFFER_MEMORY_BYTES,
            kinesis_start: source::SourceStart::TrimHorizon,
            active_partition_limit: partition::DEFAULT_ACTIVE_PARTITIONS,
            allow_http_destinations: false,
            endpoint_timeout: DEFAULT_ENDPOINT_TIMEOUT,
            destination_networks: None,
            destination_ca_file: None,
        }
    }
}

/// What the service reaches outside itself through, each bridged by the
/// binary so that this crate depends on no other service.
#[derive(Debug, Clone)]
pub struct Connections {
    /// Where delivered objects are written.
    pub objects: Arc<dyn ObjectSink>,
    /// The Data Streams streams a KinesisStreamAsSource delivery stream
    /// reads; `None`: such streams are refused.
    pub kinesis: Option<Arc<dyn source::KinesisSource>>,
    /// Where record format conversion reads its Glue tables; `None`:
    /// conversions fail at delivery and are retried.
    pub schemas: Option<Arc<dyn conversion::SchemaSource>>,
    /// The Iceberg tables Iceberg destinations append to; `None`: such
    /// destinations are refused.
    pub iceberg: Option<Arc<dyn iceberg::IcebergTables>>,
    /// The database Redshift destinations load into; `None`: their loads
    /// wait (retried) until a server with one delivers them.
    pub tables: Option<Arc<dyn redshift::TableLoader>>,
}

impl Connections {
    /// Objects only, no Kinesis source.
    pub fn objects(objects: Arc<dyn ObjectSink>) -> Connections {
        Connections {
            objects,
            kinesis: None,
            schemas: None,
            iceberg: None,
            tables: None,
        }
    }
}

/// A delivery stream: its record and its partition.
#[derive(Debug)]
pub(crate) struct Stream {
    pub rec: StreamRecord,
    pub part: Arc<Partition>,
}

/// The Firehose service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Firehose {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub cfg: FirehoseConfig,
    pub region: String,
    pub account: String,
    pub clock: Arc<dyn Clock>,
    pub catalog: Arc<Catalog>,
    pub log: Arc<Log>,
    pub streams: RwLock<BTreeMap<String, Arc<Stream>>>,
    /// Serializes changes to the catalog's delivery streams.
    pub control: tokio::sync::Mutex<()>,
    pub sink: Arc<dyn ObjectSink>,
    /// The Data Streams streams KinesisStreamAsSource delivery streams read.
    pub kinesis: Option<Arc<dyn source::KinesisSource>>,
    /// Where record format conversion reads its schemas.
    pub schemas: Option<Arc<dyn conversion::SchemaSource>>,
    pub iceberg: Option<Arc<dyn iceberg::IcebergTables>>,
    /// Where Redshift destinations load their staged files.
    pub tables: Option<Arc<dyn redshift::TableLoader>>,
    pub keyring: ripstream_keyring::Keyring,
    pub metrics: metrics::FirehoseMetrics,
    /// Wakes the engine's supervisor when streams come or go.
    pub changed: tokio::sync::Notify,
    pub quotas: quota::StreamQuotas,
    /// The memory every delivery stream's buffer comes out of.
    pub budget: Arc<budget::Budget>,
    /// The HTTP client of push destinations.
    pub client: ripstream_delivery::Client,
}

/// Runs blocking work (redb commits, partition creation, log reads) off the
/// async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(Error::internal)?
}

impl Firehose {
    /// Opens the service in the server's shared context, delivering
    /// through `connections`, and reconciles the catalog with the log: interrupted
    /// deletions are finished and `firehose-*` partitions no stream owns
    /// (a crash between creating one and committing its stream) removed.
    pub async fn open_in(
        ctx: &ServiceContext,
        cfg: FirehoseConfig,
        connections: Connections,
        registry: &mut Registry,
    ) -> Result<Firehose> {
        let keyring_path = cfg
            .keyring
            .clone()
            .unwrap_or_else(|| ctx.data_dir.join("keyring.toml"));
        let keyring = ripstream_keyring::Keyring::open(&keyring_path, &ctx.region, &ctx.account_id)
            .map_err(Error::internal)?;
        let quotas = quota::StreamQuotas::new(cfg.quotas, quota::Rates::for_region(&ctx.region));
        let budget = budget::Budget::new(cfg.buffer_memory_bytes);
        let mut client =
            ripstream_delivery::ClientBuilder::new().networks(cfg.destination_networks.clone());
        if let Some(ca) = &cfg.destination_ca_file {
            client = client.ca_file(ca).map_err(Error::internal)?;
        }
        let client = client.build().map_err(Error::internal)?;
        let inner = Inner {
            client,
            budget,
            cfg,
            region: ctx.region.clone(),
            account: ctx.account_id.clone(),
            clock: ctx.clock.clone(),
            catalog: ctx.catalog.clone(),
            log: ctx.log.clone(),
            streams: RwLock::new(BTreeMap::new()),
            control: tokio::sync::Mutex::new(()),
            sink: connections.objects,
            kinesis: connections.kinesis,
            schemas: connections.schemas,
            iceberg: connections.iceberg,
            tables: connections.tables,
            keyring,
            metrics: metrics::FirehoseMetrics::register(registry),
            changed: tokio::sync::Notify::new(),
            quotas,
        };
        inner.reconcile().await?;
        info!(streams = inner.streams.read().len(), "firehose opened");
        Ok(Firehose {
            inner: Arc::new(inner),
        })
    }

    /// The delivery engine: a supervisor that runs one delivery task per
    /// delivery stream and finishes delayed deletions, until dropped.
    pub fn background(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        engine::supervise(self.inner.clone())
    }

    /// Bytes the delivery streams hold buffered now (within
    /// [`FirehoseConfig::buffer_memory_bytes`]).
    pub fn buffered_bytes(&self) -> usize {
        self.inner.budget.used()
    }

    /// Names of the delivery streams, for tests and tools.
    pub fn stream_names(&self) -> Vec<String> {
        self.inner.streams.read().keys().cloned().collect()
    }
}

impl Inner {
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub fn stream_arn(&self, name: &str) -> String {
        format!(
            "arn:{}:firehose:{}:{}:deliverystream/{name}",
            ripstream_iam::partition(&self.region),
            self.region,
            self.account
        )
    }

    pub fn not_found(&self, name: &str) -> Error {
        Error::ResourceNotFound(format!(
            "Firehose {name} under account {} not found.",
            self.account
        ))
    }

    /// The stream by name if it exists now (not past its deletion).
    pub fn stream(&self, name: &str) -> Result<Arc<Stream>> {
        let now = self.now_ms();
        match self.streams.read().get(name) {
            Some(s) if s.rec.status_at(now).is_some() => Ok(s.clone()),
            _ => Err(self.not_found(name)),
        }
    }

    /// Appends records (log key, value) to a stream's partition, sealed
    /// under its key while encryption is on; durable when it returns.
    pub async fn append<'a>(
        &self,
        s: &Stream,
        records: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Result<ripstream_log::Appended> {
        let mut builder = ripstream_log::BatchBuilder::with_capacity(64 * 1024);
        for (k, v) in records {
            builder.push(k, v);
        }
        let Some(mut batch) = builder.finish() else {
            return Err(Error::InvalidArgument(
                "The batch is too large for one append.".into(),
            ));
        };
        if let Some(e) = &s.rec.encryption {
            batch = batch
                .encrypt(&self.keyring, &e.key_id)
                .map_err(|c| Error::InvalidKmsResource(c.to_string()))?;
        }
        Ok(self.log.append(&s.part, batch).await?)
    }

    pub async fn commit(&self, rec: &StreamRecord) -> Result<()> {
        let raw = serde_json::to_vec(rec).map_err(Error::internal)?;
        let (catalog, name) = (self.catalog.clone(), rec.name.clone());
        blocking(move || {
            Ok(catalog.write_documents(STREAMS_SPACE, &[(name.as_bytes(), Some(&raw))])?)
        })
        .await
    }

    /// Replaces a stream's record (commit first, then the in-memory view).
    /// Caller holds `control`.
    pub async fn replace(&self, cur: &Stream, rec: StreamRecord) -> Result<()> {
        self.commit(&rec).await?;
        let next = Arc::new(Stream {
            rec,
            part: cur.part.clone(),
        });
        self.streams.write().insert(next.rec.name.clone(), next);
        Ok(())
    }

    /// Removes a stream whose deletion is due: its catalog entry and
    /// checkpoint first (a crash afterwards leaves an orphan partition,
    /// which the next start removes), then its partition.
    pub async fn purge(&self, s: &Arc<Stream>) -> Result<()> {
        let (catalog, name, uid) = (self.catalog.clone(), s.rec.name.clone(), s.rec.uid);
        blocking(move || {
            catalog.write_documents(STREAMS_SPACE, &[(name.as_bytes(), None)])?;
            catalog.write_documents(CHECKPOINTS_SPACE, &[(uid.to_string().as_bytes(), None)])?;
            catalog.write_documents(
                source::SOURCE_CHECKPOINTS_SPACE,
                &[(uid.to_string().as_bytes(), None)],
            )?;
            catalog.write_documents(
                pending::PENDING_SPACE,
                &[(uid.to_string().as_bytes(), None)],
            )?;
            Ok(())
        })
        .await?;
        {
            let mut map = self.streams.write();
            if map.get(&s.rec.name).is_some_and(|cur| Arc::ptr_eq(cur, s)) {
                map.remove(&s.rec.name);
            }
        }
        self.log.delete_partition(&s.rec.partition_id()).await?;
        self.metrics.forget(&s.rec.name);
        self.quotas.forget(uid);
        self.changed.notify_one();
        Ok(())
    }

    /// The next log offset to deliver of a stream (0 before its first flush).
    pub fn checkpoint(&self, uid: u64) -> Result<u64> {
        let key = uid.to_string();
        Ok(self
            .catalog
            .documents(CHECKPOINTS_SPACE)?
            .into_iter()
            .find(|(k, _)| k == key.as_bytes())
            .and_then(|(_, v)| v.try_into().ok().map(u64::from_le_bytes))
            .unwrap_or(0))
    }

    pub fn save_checkpoint(&self, uid: u64, next: u64) -> Result<()> {
        self.catalog.write_documents(
            CHECKPOINTS_SPACE,
            &[(uid.to_string().as_bytes(), Some(&next.to_le_bytes()))],
        )?;
        Ok(())
    }

    async fn reconcile(&self) -> Result<()> {
        let mut owned = std::collections::HashSet::new();
        for (key, raw) in self.catalog.documents(STREAMS_SPACE)? {
            let rec: StreamRecord = match serde_json::from_slice(&raw) {
                Ok(r) => r,
                Err(e) => {
                    warn!(stream = %String::from_utf8_lossy(&key), error = %e, "unreadable delivery stream record skipped");
                    continue;
                }
            };
            owned.insert(rec.partition_id());
            let (log, id) = (self.log.clone(), rec.partition_id());
            // A stream whose partition is missing gets an empty one: its
            // undelivered records are lost either way, and AWS's behaviour
            // for lost data is to go on delivering new records.
            let part = match self.log.partition(&id) {
                Some(p) => {
                    p.set_retention_ms(RETENTION_MS);
                    p
                }
                None => {
                    warn!(stream = %rec.name, partition = %id, "delivery stream's log partition is missing; starting it empty");
                    blocking(move || Ok(log.create_partition(&id, RETENTION_MS)?)).await?
                }
            };
            self.streams
                .write()
                .insert(rec.name.clone(), Arc::new(Stream { rec, part }));
        }
        let orphans: Vec<String> = self
            .log
            .partition_ids()
            .into_iter()
            .filter(|id| record::partition_uid(id).is_some() && !owned.contains(id))
            .collect();
        for id in &orphans {
            warn!(partition = %id, "removing log partition that no delivery stream owns");
        }
        self.log.delete_partitions(&orphans).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
