//! A KPL-style producer.
//!
//! `put` hands a record to a background task and returns a future of its
//! sequence number. The task batches records into PutRecords requests (at
//! most 500 records and 5 MiB each, after a linger time), optionally packs
//! records bound for one shard into KPL aggregated records, keeps each
//! shard under its write quota with token buckets, and retries only the
//! records of a batch that failed, with exponential backoff and jitter. The
//! buffer is bounded: when it is full, `put` waits (backpressure).
//!
//! ```no_run
//! # async fn example(client: aws_sdk_kinesis::Client) -> Result<(), ripstream_client::producer::ProduceError> {
//! use ripstream_client::producer::{Producer, ProducerConfig};
//!
//! let producer = Producer::new(client, ProducerConfig::new("orders"));
//! let ack = producer.put("customer-42", b"{\"total\": 12}".to_vec()).await?;
//! producer.flush().await;
//! let result = ack.await?;
//! println!("stored in {} at {}", result.shard_id, result.sequence_number);
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::error::ProvideErrorMetadata;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tracing::{debug, warn};

use crate::aggregation::{Aggregator, UserRecord};

/// Kinesis limits of one PutRecords request.
const MAX_REQUEST_RECORDS: usize = 500;
const MAX_REQUEST_BYTES: usize = 5 * 1024 * 1024;
/// Kinesis per-shard write quota.
const SHARD_RECORDS_PER_SEC: f64 = 1000.0;
const SHARD_BYTES_PER_SEC: f64 = 1024.0 * 1024.0;

/// Settings of a producer.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub stream_name: String,
    /// How long a record may wait for others to fill a batch (KPL
    /// `RecordMaxBufferedTime`, default 100 ms).
    pub linger: Duration,
    /// Records per PutRecords request (at most 500).
    pub max_batch_records: usize,
    /// Bytes per PutRecords request (at most 5 MiB).
    pub max_batch_bytes: usize,
    /// Pack records bound for one shard into KPL aggregated records.
    pub aggregation: bool,
    /// Largest aggregated record (KPL `AggregationMaxSize`, default 50 KiB).
    pub aggregation_max_bytes: usize,
    /// Records buffered or in flight before `put` waits.
    pub max_buffered_records: usize,
    /// PutRecords requests in flight at once.
    pub max_in_flight_requests: usize,
    /// How long a record may be retried before it fails (KPL `RecordTtl`).
    pub record_ttl: Duration,
    /// Per-shard write rate, as a percentage of the Kinesis quota (KPL
    /// `RateLimit`; 100 keeps the producer from provoking throttling).
    pub rate_limit_percent: f64,
}

impl ProducerConfig {
    pub fn new(stream_name: impl Into<String>) -> ProducerConfig {
        ProducerConfig {
            stream_name: stream_name.into(),
            linger: Duration::from_millis(100),
            max_batch_records: MAX_REQUEST_RECORDS,
            max_batch_bytes: MAX_REQUEST_BYTES,
            aggregation: false,
            aggregation_max_bytes: 50 * 1024,
            max_buffered_records: 10_000,
            max_in_flight_requests: 8,
            record_ttl: Duration::from_secs(30),
            rate_limit_percent: 100.0,
        }
    }
}

/// Where a record was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutResult {
    pub shard_id: String,
    pub sequence_number: String,
    /// Position inside an aggregated record, when aggregation is on.
    pub sub_sequence_number: Option<u64>,
    /// Attempts it took (1 if the first succeeded).
    pub attempts: u32,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProduceError {
    #[error("record not stored after {attempts} attempts: {code}: {message}")]
    Failed {
        code: String,
        message: String,
        attempts: u32,
    },
    #[error("the record is too large: {0} bytes of data and partition key")]
    TooLarge(usize),
    #[error("invalid record: {0}")]
    Invalid(String),
    #[error("the producer was shut down")]
    Closed,
}

/// Counters of a producer.
#[derive(Debug, Default)]
pub struct Metrics {
    pub user_records_put: AtomicU64,
    pub user_records_sent: AtomicU64,
    pub user_records_failed: AtomicU64,
    pub kinesis_records_sent: AtomicU64,
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub throttles: AtomicU64,
    latency_ms_sum: AtomicU64,
    latency_ms_max: AtomicU64,
}

/// A point-in-time copy of [`Metrics`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricsSnapshot {
    pub user_records_put: u64,
    pub user_records_sent: u64,
    pub user_records_failed: u64,
    pub kinesis_records_sent: u64,
    pub requests: u64,
    pub retries: u64,
    pub throttles: u64,
    /// Mean put-to-acknowledgement time of sent records.
    pub mean_latency_ms: f64,
    pub max_latency_ms: u64,
}

impl Metrics {
    fn snapshot(&self) -> MetricsSnapshot {
        let sent = self.user_records_sent.load(Ordering::Relaxed);
        MetricsSnapshot {
            user_records_put: self.user_records_put.load(Ordering::Relaxed),
            user_records_sent: sent,
            user_records_failed: self.user_records_failed.load(Ordering::Relaxed),
            kinesis_records_sent: self.kinesis_records_sent.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            throttles: self.throttles.load(Ordering::Relaxed),
            mean_latency_ms: if sent == 0 {
                0.0
            } else {
                self.latency_ms_sum.load(Ordering::Relaxed) as f64 / sent as f64
            },
            max_latency_ms: self.latency_ms_max.load(Ordering::Relaxed),
        }
    }
}

/// The eventual result of one `put`.
pub struct PutFuture {
    rx: oneshot::Receiver<Result<PutResult, ProduceError>>,
}

impl Future for PutFuture {
    type Output = Result<PutResult, ProduceError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(ProduceError::Closed)))
    }
}

struct Pending {
    /// Order of arrival at the background task, for `flush`.
    id: u64,
    record: UserRecord,
    reply: oneshot::Sender<Result<PutResult, ProduceError>>,
    put_at: Instant,
    attempts: u32,
    /// Not before this instant (backoff after a failure).
    not_before: Instant,
    _permit: OwnedSemaphorePermit,
}

impl Pending {
    fn size(&self) -> usize {
        self.record.data.len() + self.record.partition_key.len()
    }
}

enum Command {
    Put(Pending),
    Flush(oneshot::Sender<()>),
}

/// A KPL-style producer. Cheap to clone; the background task stops when the
/// last clone is dropped, after sending what is buffered.
#[derive(Clone)]
pub struct Producer {
    tx: mpsc::UnboundedSender<Command>,
    permits: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    max_record_bytes: usize,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer").finish_non_exhaustive()
    }
}

impl Producer {
    /// Starts a producer on the current tokio runtime.
    pub fn new(client: Client, cfg: ProducerConfig) -> Producer {
        let (tx, rx) = mpsc::unbounded_channel();
        let metrics = Arc::new(Metrics::default());
        let permits = Arc::new(Semaphore::new(cfg.max_buffered_records.max(1)));
        let worker = Worker::new(client, cfg, metrics.clone());
        tokio::spawn(worker.run(rx));
        Producer {
            tx,
            permits,
            metrics,
            max_record_bytes: 1024 * 1024,
        }
    }

    /// Queues a record; waits while the buffer is full. The returned future
    /// resolves when the record is stored (or has failed for good).
    pub async fn put(
        &self,
        partition_key: impl Into<String>,
        data: Vec<u8>,
    ) -> Result<PutFuture, ProduceError> {
        self.put_record(UserRecord::new(partition_key, data)).await
    }

    /// Like [`Producer::put`], for a record with an explicit hash key.
    pub async fn put_record(&self, record: UserRecord) -> Result<PutFuture, ProduceError> {
        let size = record.data.len() + record.partition_key.len();
        if size > self.max_record_bytes {
            return Err(ProduceError::TooLarge(size));
        }
        // Refused here, one record at a time, rather than failing a whole batch.
        let key_chars = record.partition_key.chars().count();
        if !(1..=256).contains(&key_chars) {
            return Err(ProduceError::Invalid(format!(
                "a partition key has 1 to 256 characters, not {key_chars}"
            )));
        }
        if let Some(h) = &record.explicit_hash_key
            && h.parse::<u128>().is_err()
        {
            return Err(ProduceError::Invalid(format!(
                "the explicit hash key {h:?} is not a number from 0 to 2^128-1"
            )));
        }
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ProduceError::Closed)?;
        let (reply, rx) = oneshot::channel();
        let now = Instant::now();
        self.metrics
            .user_records_put
            .fetch_add(1, Ordering::Relaxed);
        self.tx
            .send(Command::Put(Pending {
                id: 0,
                record,
                reply,
                put_at: now,
                attempts: 0,
                not_before: now,
                _permit: permit,
            }))
            .map_err(|_| ProduceError::Closed)?;
        Ok(PutFuture { rx })
    }

    /// Sends everything buffered now and waits until each of those records
    /// is stored or has failed.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Records put and not yet stored or failed.
    pub fn outstanding(&self) -> u64 {
        let put = self.metrics.user_records_put.load(Ordering::Relaxed);
        let done = self.metrics.user_records_sent.load(Ordering::Relaxed)
            + self.metrics.user_records_failed.load(Ordering::Relaxed);
        put.saturating_sub(done)
    }

    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }
}

/// A token bucket holding up to one second of a shard's quota.
#[derive(Debug)]
struct Bucket {
    records: f64,
    bytes: f64,
    at: Instant,
}

impl Bucket {
    fn refill(&mut self, scale: f64) {
        let now = Instant::now();
        let secs = now.duration_since(self.at).as_secs_f64();
        self.at = now;
        self.records = (self.records + secs * SHARD_RECORDS_PER_SEC * scale)
            .min(SHARD_RECORDS_PER_SEC * scale);
        self.bytes =
            (self.bytes + secs * SHARD_BYTES_PER_SEC * scale).min(SHARD_BYTES_PER_SEC * scale);
    }

    /// Whether one more record of `bytes` fits; a record larger than the
    /// whole bucket goes when the bucket is full.
    fn allows(&self, bytes: usize, scale: f64) -> bool {
        let cap = SHARD_BYTES_PER_SEC * scale;
        self.records >= 1.0 && (self.bytes >= bytes as f64 || self.bytes >= cap)
    }

    fn take(&mut self, bytes: usize) {
        self.records -= 1.0;
        self.bytes -= bytes as f64;
    }
}

/// The open shards' hash ranges, to predict where a record goes.
#[derive(Debug, Default)]
struct ShardMap {
    /// (starting hash key, ending hash key, shard id), by starting key.
    ranges: Vec<(u128, u128, String)>,
    fetched: Option<Instant>,
}

impl ShardMap {
    fn shard_of(&self, hash: u128) -> Option<&str> {
        let i = self.ranges.partition_point(|r| r.0 <= hash);
        let r = self.ranges.get(i.checked_sub(1)?)?;
        (hash <= r.1).then_some(r.2.as_str())
    }
}

/// One entry of a request: a plain record or an aggregate of several.
struct Entry {
    /// For an aggregate: the shard it must land in, since its records were
    /// grouped by that shard's hash range.
    shard: Option<String>,
    partition_key: String,
    explicit_hash_key: Option<String>,
    data: Vec<u8>,
    records: Vec<Pending>,
}

struct Outcome {
    entries: Vec<(Vec<Pending>, EntryResult)>,
    map_stale: bool,
}

enum EntryResult {
    Stored {
        shard_id: String,
        sequence_number: String,
        aggregated: bool,
    },
    Failed {
        code: String,
        message: String,
    },
}

struct Worker {
    client: Client,
    cfg: ProducerConfig,
    metrics: Arc<Metrics>,
    /// Waiting records by predicted shard ("" when unknown).
    queues: BTreeMap<String, VecDeque<Pending>>,
    buckets: HashMap<String, Bucket>,
    shards: ShardMap,
    in_flight: usize,
    /// Flushes waiting for every record that arrived before them.
    flushes: Vec<(u64, oneshot::Sender<()>)>,
    /// Ids of records put and not yet stored or failed.
    outstanding: std::collections::BTreeSet<u64>,
    next_id: u64,
    /// The shard map needs refreshing (an aggregate landed elsewhere).
    map_stale: bool,
    done_tx: mpsc::UnboundedSender<Outcome>,
    done_rx: mpsc::UnboundedReceiver<Outcome>,
}

fn retryable(code: &str) -> bool {
    matches!(
        code,
        "ProvisionedThroughputExceededException"
            | "WrongShard"
            | "InternalFailure"
            | "ServiceUnavailable"
            | "ServiceUnavailableException"
            | "ThrottlingException"
            | "LimitExceededException"
            | "KMSThrottlingException"
            | "ResourceInUseException"
            | "Unknown"
    )
}

impl Worker {
    fn new(client: Client, cfg: ProducerConfig, metrics: Arc<Metrics>) -> Worker {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Worker {
            client,
            cfg,
            metrics,
            queues: BTreeMap::new(),
            buckets: HashMap::new(),
            shards: ShardMap::default(),
            in_flight: 0,
            flushes: Vec::new(),
            outstanding: std::collections::BTreeSet::new(),
            next_id: 0,
            map_stale: false,
            done_tx,
            done_rx,
        }
    }

    async fn refresh_shards(&mut self) {
        let mut ranges = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut req = self.client.list_shards();
            req = match &token {
                Some(t) => req.next_token(t),
                None => req.stream_name(&self.cfg.stream_name),
            };
            let out = match req.send().await {
                Ok(o) => o,
                Err(e) => {
                    debug!(error = %e.message().unwrap_or("ListShards failed"), "cannot list shards; not predicting shards");
                    self.shards = ShardMap {
                        ranges: Vec::new(),
                        fetched: Some(Instant::now()),
                    };
                    self.map_stale = false;
                    return;
                }
            };
            for s in out.shards() {
                let open = s
                    .sequence_number_range()
                    .is_none_or(|r| r.ending_sequence_number().is_none());
                let range = s.hash_key_range();
                if let (true, Some(r)) = (open, range)
                    && let (Ok(a), Ok(b)) = (
                        r.starting_hash_key().parse::<u128>(),
                        r.ending_hash_key().parse::<u128>(),
                    )
                {
                    ranges.push((a, b, s.shard_id().to_string()));
                }
            }
            token = out.next_token().map(String::from);
            if token.is_none() {
                break;
            }
        }
        ranges.sort();
        self.shards = ShardMap {
            ranges,
            fetched: Some(Instant::now()),
        };
        self.map_stale = false;
        // Re-sort waiting records under the new prediction.
        let all: Vec<Pending> = std::mem::take(&mut self.queues)
            .into_values()
            .flatten()
            .collect();
        for p in all {
            self.enqueue(p);
        }
    }

    fn enqueue(&mut self, p: Pending) {
        let shard = self
            .shards
            .shard_of(p.record.hash_key())
            .unwrap_or("")
            .to_string();
        self.queues.entry(shard).or_default().push_back(p);
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        self.refresh_shards().await;
        let tick = (self.cfg.linger / 4).clamp(Duration::from_millis(1), Duration::from_millis(25));
        let mut timer = tokio::time::interval(tick);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut open = true;
        loop {
            tokio::select! {
                cmd = rx.recv(), if open => match cmd {
                    Some(Command::Put(mut p)) => {
                        p.id = self.next_id;
                        self.next_id += 1;
                        self.outstanding.insert(p.id);
                        self.enqueue(p);
                    }
                    Some(Command::Flush(done)) => self.flushes.push((self.next_id, done)),
                    // Every handle is gone: send what is left, then stop.
                    None => open = false,
                },
                Some(outcome) = self.done_rx.recv() => self.complete(outcome),
                _ = timer.tick() => {}
            }
            let age = self.shards.fetched.map(|t| t.elapsed());
            // A stale map is refreshed at most once a second, else every 30 s.
            if age.is_none_or(|a| {
                a > Duration::from_secs(30) || (self.map_stale && a > Duration::from_secs(1))
            }) {
                self.refresh_shards().await;
            }
            self.expire_queued();
            self.send_ready(!open);
            let oldest = self.outstanding.first().copied().unwrap_or(u64::MAX);
            let mut i = 0;
            while i < self.flushes.len() {
                if self.flushes[i].0 <= oldest {
                    let (_, done) = self.flushes.swap_remove(i);
                    let _ = done.send(());
                } else {
                    i += 1;
                }
            }
            if !open && self.outstanding.is_empty() {
                return;
            }
        }
    }

    /// Fails records that waited in the queue past their time to live.
    fn expire_queued(&mut self) {
        let ttl = self.cfg.record_ttl;
        let mut expired = Vec::new();
        for q in self.queues.values_mut() {
            if q.iter().any(|p| p.put_at.elapsed() > ttl) {
                let (old, keep): (VecDeque<Pending>, VecDeque<Pending>) =
                    q.drain(..).partition(|p| p.put_at.elapsed() > ttl);
                *q = keep;
                expired.extend(old);
            }
        }
        self.queues.retain(|_, q| !q.is_empty());
        for p in expired {
            self.fail(
                p,
                "RecordExpired",
                "the record was not sent within its time to live",
            );
        }
    }

    fn fail(&mut self, p: Pending, code: &str, message: &str) {
        self.metrics
            .user_records_failed
            .fetch_add(1, Ordering::Relaxed);
        self.outstanding.remove(&p.id);
        let attempts = p.attempts;
        let _ = p.reply.send(Err(ProduceError::Failed {
            code: code.to_string(),
            message: message.to_string(),
            attempts,
        }));
    }

    fn complete(&mut self, outcome: Outcome) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.map_stale |= outcome.map_stale;
        for (records, result) in outcome.entries {
            match result {
                EntryResult::Stored {
                    shard_id,
                    sequence_number,
                    aggregated,
                } => {
                    for (i, p) in records.into_iter().enumerate() {
                        let ms = p.put_at.elapsed().as_millis() as u64;
                        self.metrics.latency_ms_sum.fetch_add(ms, Ordering::Relaxed);
                        self.metrics.latency_ms_max.fetch_max(ms, Ordering::Relaxed);
                        self.metrics
                            .user_records_sent
                            .fetch_add(1, Ordering::Relaxed);
                        self.outstanding.remove(&p.id);
                        let _ = p.reply.send(Ok(PutResult {
                            shard_id: shard_id.clone(),
                            sequence_number: sequence_number.clone(),
                            sub_sequence_number: aggregated.then_some(i as u64),
                            attempts: p.attempts,
                        }));
                    }
                }
                EntryResult::Failed { code, message } => {
                    if code == "ProvisionedThroughputExceededException" {
                        self.metrics.throttles.fetch_add(1, Ordering::Relaxed);
                    }
                    for mut p in records {
                        if retryable(&code) && p.put_at.elapsed() < self.cfg.record_ttl {
                            self.metrics.retries.fetch_add(1, Ordering::Relaxed);
                            // Exponential backoff with full jitter, from 100 ms up to 5 s.
                            let cap = 100u64 << p.attempts.min(6);
                            let wait = rand::random_range(cap / 2..=cap).min(5000);
                            p.not_before = Instant::now() + Duration::from_millis(wait);
                            self.enqueue(p);
                        } else {
                            self.fail(p, &code, &message);
                        }
                    }
                }
            }
        }
    }

    /// Whether the waiting records should go out now: when a flush waits for
    /// them, when the producer is closing, when a batch is full, or when the
    /// oldest has lingered long enough.
    fn due(&self, closing: bool) -> bool {
        if closing || !self.flushes.is_empty() {
            return true;
        }
        let (count, bytes) = self
            .queues
            .values()
            .flatten()
            .fold((0, 0), |(c, b), p| (c + 1, b + p.size()));
        if count >= self.cfg.max_batch_records || bytes >= self.cfg.max_batch_bytes {
            return true;
        }
        self.queues
            .values()
            .filter_map(|q| q.front())
            .any(|p| p.put_at.elapsed() >= self.cfg.linger || p.attempts > 0)
    }

    fn send_ready(&mut self, closing: bool) {
        while self.in_flight < self.cfg.max_in_flight_requests && self.due(closing) {
            let entries = self.build_request();
            if entries.is_empty() {
                return;
            }
            self.in_flight += 1;
            let client = self.client.clone();
            let stream = self.cfg.stream_name.clone();
            let metrics = self.metrics.clone();
            let done = self.done_tx.clone();
            tokio::spawn(async move {
                let outcome = send(client, stream, entries, metrics).await;
                let _ = done.send(outcome);
            });
        }
    }

    /// Takes records for one request, shard by shard, within each shard's
    /// token bucket and the request limits.
    fn build_request(&mut self) -> Vec<Entry> {
        let scale = (self.cfg.rate_limit_percent / 100.0).max(0.01);
        let max_records = self.cfg.max_batch_records.min(MAX_REQUEST_RECORDS);
        let max_bytes = self.cfg.max_batch_bytes.min(MAX_REQUEST_BYTES);
        let now = Instant::now();
        let mut entries = Vec::new();
        let mut bytes = 0;
        let shard_ids: Vec<String> = self.queues.keys().cloned().collect();
        for shard in shard_ids {
            let Some(queue) = self.queues.get_mut(&shard) else {
                continue;
            };
            let bucket = self.buckets.entry(shard.clone()).or_insert_with(|| Bucket {
                records: SHARD_RECORDS_PER_SEC * scale,
                bytes: SHARD_BYTES_PER_SEC * scale,
                at: now,
            });
            bucket.refill(scale);
            // Records in backoff stay queued; the rest keep their order.
            let mut waiting = VecDeque::new();
            while entries.len() < max_records {
                let Some(first) = queue.front() else { break };
                if first.not_before > now {
                    if let Some(p) = queue.pop_front() {
                        waiting.push_back(p);
                    }
                    continue;
                }
                let size = first.size();
                if bytes + size > max_bytes || (!shard.is_empty() && !bucket.allows(size, scale)) {
                    break;
                }
                let agg_limit = self
                    .cfg
                    .aggregation_max_bytes
                    .min(crate::aggregation::MAX_AGGREGATE_BYTES);
                // A record too large to aggregate goes on its own, as the KPL sends it.
                let fits = Aggregator::new().size_with(&first.record) <= agg_limit;
                if self.cfg.aggregation && !shard.is_empty() && fits {
                    let mut agg = Aggregator::new();
                    let mut records = Vec::new();
                    while let Some(p) = queue.front() {
                        if p.not_before > now
                            || (!agg.is_empty() && agg.size_with(&p.record) > agg_limit)
                            || bytes + agg.size_with(&p.record) > max_bytes
                        {
                            break;
                        }
                        let Some(p) = queue.pop_front() else { break };
                        agg.add(p.record.clone());
                        records.push(p);
                    }
                    let Some(a) = agg.finish() else { break };
                    bytes += a.data.len() + a.partition_key.len();
                    bucket.take(a.data.len());
                    entries.push(Entry {
                        shard: Some(shard.clone()),
                        partition_key: a.partition_key,
                        explicit_hash_key: Some(a.explicit_hash_key),
                        data: a.data,
                        records,
                    });
                } else {
                    let Some(p) = queue.pop_front() else { break };
                    bytes += size;
                    if !shard.is_empty() {
                        bucket.take(size);
                    }
                    entries.push(Entry {
                        shard: None,
                        partition_key: p.record.partition_key.clone(),
                        explicit_hash_key: p.record.explicit_hash_key.clone(),
                        data: p.record.data.clone(),
                        records: vec![p],
                    });
                }
            }
            while let Some(p) = waiting.pop_back() {
                queue.push_front(p);
            }
            if queue.is_empty() {
                self.queues.remove(&shard);
            }
            if entries.len() >= max_records {
                break;
            }
        }
        entries
    }
}

async fn send(
    client: Client,
    stream: String,
    entries: Vec<Entry>,
    metrics: Arc<Metrics>,
) -> Outcome {
    let mut req = client.put_records().stream_name(stream);
    for e in &entries {
        let entry = PutRecordsRequestEntry::builder()
            .partition_key(&e.partition_key)
            .set_explicit_hash_key(e.explicit_hash_key.clone())
            .data(Blob::new(e.data.clone()))
            .build();
        match entry {
            Ok(entry) => req = req.records(entry),
            Err(e) => warn!(error = %e, "cannot build a PutRecords entry"),
        }
    }
    metrics.requests.fetch_add(1, Ordering::Relaxed);
    let mut entries = entries;
    for e in &mut entries {
        for p in &mut e.records {
            p.attempts += 1;
        }
    }
    match req.send().await {
        Ok(out) => {
            let mut map_stale = false;
            let results = out.records();
            let outcome: Vec<(Vec<Pending>, EntryResult)> = entries
                .into_iter()
                .enumerate()
                .map(|(i, e)| {
                    let aggregated =
                        e.records.len() > 1 || e.data.starts_with(&crate::aggregation::MAGIC);
                    let r = results.get(i);
                    let result = match r {
                        // The shards changed under the aggregate: some of its
                        // records may not belong to the shard it landed in, and
                        // consumers drop such an aggregate (as the KCL does),
                        // so its records are sent again under a fresh map.
                        Some(r)
                            if r.error_code().is_none()
                                && e.shard.as_deref().is_some_and(|s| Some(s) != r.shard_id()) =>
                        {
                            map_stale = true;
                            EntryResult::Failed {
                                code: "WrongShard".into(),
                                message: format!(
                                    "the aggregate landed in {} instead of {}",
                                    r.shard_id().unwrap_or_default(),
                                    e.shard.as_deref().unwrap_or_default()
                                ),
                            }
                        }
                        Some(r) if r.error_code().is_none() => {
                            metrics.kinesis_records_sent.fetch_add(1, Ordering::Relaxed);
                            EntryResult::Stored {
                                shard_id: r.shard_id().unwrap_or_default().to_string(),
                                sequence_number: r
                                    .sequence_number()
                                    .unwrap_or_default()
                                    .to_string(),
                                aggregated,
                            }
                        }
                        Some(r) => EntryResult::Failed {
                            code: r.error_code().unwrap_or("Unknown").to_string(),
                            message: r.error_message().unwrap_or_default().to_string(),
                        },
                        None => EntryResult::Failed {
                            code: "Unknown".into(),
                            message: "no result for the record".into(),
                        },
                    };
                    (e.records, result)
                })
                .collect();
            Outcome {
                entries: outcome,
                map_stale,
            }
        }
        Err(err) => {
            let code = err.code().unwrap_or("Unknown").to_string();
            let message = err
                .message()
                .map(String::from)
                .unwrap_or_else(|| err.to_string());
            // A refused request (bad input, missing stream) fails every record;
            // a transport error or a fault of the service is retried.
            let service_refusal = err.as_service_error().is_some() && !retryable(&code);
            let code = if service_refusal || err.as_service_error().is_some() {
                code
            } else {
                "Unknown".to_string()
            };
            Outcome {
                entries: entries
                    .into_iter()
                    .map(|e| {
                        (
                            e.records,
                            EntryResult::Failed {
                                code: code.clone(),
                                message: message.clone(),
                            },
                        )
                    })
                    .collect(),
                map_stale: false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_map_finds_ranges() {
        let m = ShardMap {
            ranges: vec![(0, 99, "a".into()), (100, u128::MAX, "b".into())],
            fetched: None,
        };
        assert_eq!(m.shard_of(0), Some("a"));
        assert_eq!(m.shard_of(99), Some("a"));
        assert_eq!(m.shard_of(100), Some("b"));
        assert_eq!(m.shard_of(u128::MAX), Some("b"));
        assert_eq!(ShardMap::default().shard_of(5), None);
    }

    #[test]
    fn buckets_hold_a_second_of_quota() {
        let mut b = Bucket {
            records: 1000.0,
            bytes: SHARD_BYTES_PER_SEC,
            at: Instant::now(),
        };
        for _ in 0..1000 {
            assert!(b.allows(10, 1.0));
            b.take(10);
        }
        assert!(!b.allows(10, 1.0));
        // A record larger than a half-rate bucket still goes once it is full.
        let full = Bucket {
            records: 500.0,
            bytes: SHARD_BYTES_PER_SEC * 0.5,
            at: Instant::now(),
        };
        assert!(full.allows(600 * 1024, 0.5));
    }
}
