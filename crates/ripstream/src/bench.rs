//! `ripstream bench`: load generator and verifier for any Kinesis endpoint.
//!
//! It talks through the official AWS SDK (SigV4-signed requests, like any
//! client). Every record it writes carries its run, producer and sequence
//! number, the time it was sent and a checksum of its filler, so the reader
//! can tell lost, duplicated and corrupted records apart and measure
//! put-to-read latency without any shared clock but its own.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{
    PutRecordsRequestEntry, Shard, ShardIteratorType, StartingPosition, SubscribeToShardEventStream,
};
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use parking_lot::Mutex;

use crate::cli::{Endpoint, client, sdk_error};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// Write for --duration, then read everything back to verify it
    Produce,
    /// Read every record of the stream, as fast as possible
    Consume,
    /// Write and read at once (GetRecords), measuring put-to-read latency
    E2e,
    /// Write and read at once over enhanced fan-out (SubscribeToShard), measuring put-to-push latency
    E2eEfo,
    /// PutRecordBatch into a GZIP S3 delivery stream; every object read back
    /// through S3, measuring freshness (send to object listed)
    Firehose,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to run
    #[arg(value_enum)]
    pub(crate) workload: Workload,
    /// Stream to use (created if missing)
    #[arg(long, default_value = "ripstream-bench", value_parser = crate::cli::stream_name)]
    stream: String,
    /// Shards of the stream when it is created
    #[arg(long, default_value_t = 4)]
    shards: i32,
    /// Bytes of data per record (at least 32)
    #[arg(long, default_value_t = 1024)]
    pub(crate) record_size: usize,
    /// Records per request: 1 uses PutRecord, more uses PutRecords (at most 500)
    #[arg(long, default_value_t = 500)]
    pub(crate) batch: usize,
    /// Concurrent producer tasks
    #[arg(long, default_value_t = 8)]
    pub(crate) concurrency: usize,
    /// Seconds to write for
    #[arg(long, default_value_t = 10)]
    pub(crate) duration: u64,
    /// Pid of the server, for its CPU and memory [default: found from the endpoint's port]
    #[arg(long)]
    pub(crate) server_pid: Option<u32>,
    /// firehose: delivery stream name prefix (the run's id is appended)
    #[arg(long, default_value = "ripstream-bench")]
    pub(crate) delivery_stream: String,
    /// firehose: bucket name prefix (the run's id is appended)
    #[arg(long, default_value = "ripstream-bench")]
    pub(crate) bucket: String,
    /// firehose: BufferingHints.IntervalInSeconds
    #[arg(long, default_value_t = 10)]
    pub(crate) buffer_interval: i32,
    /// firehose: BufferingHints.SizeInMBs
    #[arg(long, default_value_t = 5)]
    pub(crate) buffer_size: i32,
    /// firehose: seconds at the start during which the bucket does not
    /// exist (records wait on disk); 0: it exists from the start
    #[arg(long, default_value_t = 0)]
    pub(crate) destination_down: u64,
    /// Print a final JSON line with the results
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) endpoint: Endpoint,
}

pub(crate) const HEADER: usize = 32;

/// A record's identity and send time, recovered from its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct RecordId {
    pub(crate) run: u32,
    pub(crate) producer: u32,
    pub(crate) seq: u64,
}

fn filler_byte(id: &RecordId, i: usize) -> u8 {
    (id.seq
        .wrapping_mul(31)
        .wrapping_add(i as u64)
        .wrapping_add(u64::from(id.producer) * 7)) as u8
}

pub(crate) fn encode(id: &RecordId, sent_ns: u64, size: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(size);
    v.extend_from_slice(&id.run.to_le_bytes());
    v.extend_from_slice(&id.producer.to_le_bytes());
    v.extend_from_slice(&id.seq.to_le_bytes());
    v.extend_from_slice(&sent_ns.to_le_bytes());
    v.extend_from_slice(&[0u8; 8]);
    for i in HEADER..size {
        v.push(filler_byte(id, i));
    }
    let crc = crc32c::crc32c(&v[HEADER..]) ^ crc32c::crc32c(&v[..24]);
    v[24..28].copy_from_slice(&crc.to_le_bytes());
    v[28..32].copy_from_slice(&(size as u32).to_le_bytes());
    v
}

/// The id and send time of a record, or `Err` if its bytes are not what was written.
pub(crate) fn decode(data: &[u8]) -> Result<(RecordId, u64), ()> {
    if data.len() < HEADER {
        return Err(());
    }
    let u32_at = |i: usize| u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&data[i..i + 8]);
        u64::from_le_bytes(b)
    };
    let id = RecordId {
        run: u32_at(0),
        producer: u32_at(4),
        seq: u64_at(8),
    };
    let crc = crc32c::crc32c(&data[HEADER..]) ^ crc32c::crc32c(&data[..24]);
    if u32_at(24) != crc || u32_at(28) as usize != data.len() {
        return Err(());
    }
    Ok((id, u64_at(16)))
}

/// Shared counters of a run.
pub(crate) struct Stats {
    pub(crate) started: Instant,
    pub(crate) records: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) throttled: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) latency_us: Mutex<Histogram<u64>>,
}

impl Stats {
    pub(crate) fn new() -> Stats {
        Stats {
            started: Instant::now(),
            records: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency_us: Mutex::new(
                Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds"),
            ),
        }
    }

    pub(crate) fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    pub(crate) fn latency(&self, d: Duration) {
        let _ = self.latency_us.lock().record((d.as_micros() as u64).max(1));
    }
}

/// What the reader saw of this run's records: how often each was read.
/// Producers number their records 1, 2, 3..., so the counts are kept densely
/// per (run, producer): a hash map entry per record cost the reading side
/// about a sixth of its CPU, which the consume figures then measured.
#[derive(Default)]
pub(crate) struct Seen {
    dense: HashMap<(u32, u32), Vec<u8>>,
    /// Sequence numbers too large to index densely.
    sparse: HashMap<(u32, u32, u64), u32>,
    pub(crate) corrupted: u64,
}

/// Sequence numbers below this are counted densely.
const DENSE_SEQ_LIMIT: u64 = 1 << 26;

impl Seen {
    pub(crate) fn add(&mut self, id: &RecordId) {
        if id.seq >= DENSE_SEQ_LIMIT {
            *self
                .sparse
                .entry((id.run, id.producer, id.seq))
                .or_default() += 1;
            return;
        }
        let counts = self.dense.entry((id.run, id.producer)).or_default();
        let i = id.seq as usize;
        if counts.len() <= i {
            counts.resize((i + 1).max(counts.len() * 2), 0);
        }
        counts[i] = counts[i].saturating_add(1);
    }

    /// How often the record was read.
    pub(crate) fn count(&self, (run, producer, seq): (u32, u32, u64)) -> u32 {
        if seq >= DENSE_SEQ_LIMIT {
            return self.sparse.get(&(run, producer, seq)).copied().unwrap_or(0);
        }
        self.dense
            .get(&(run, producer))
            .and_then(|c| c.get(seq as usize))
            .map_or(0, |&n| u32::from(n))
    }

    /// Distinct records read, and how many of them more than once.
    pub(crate) fn distinct_and_duplicated(&self) -> (u64, u64) {
        let mut distinct = self.sparse.len() as u64;
        let mut duplicated = self.sparse.values().filter(|&&n| n > 1).count() as u64;
        for counts in self.dense.values() {
            for &n in counts {
                distinct += u64::from(n > 0);
                duplicated += u64::from(n > 1);
            }
        }
        (distinct, duplicated)
    }
}

/// CPU and memory of the server process, from /proc.
pub(crate) struct ServerProbe {
    pub(crate) pid: u32,
    cpu_start: f64,
    pub(crate) peak_rss_kib: AtomicU64,
}

fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The pid of the local process listening on `port`, from /proc/net/tcp and the fd tables.
fn pid_listening_on(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = f
                .get(1)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) && f.get(3) == Some(&"0A") {
                inodes.push(format!("socket:[{}]", f.get(9)?));
            }
        }
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path())
                && inodes.iter().any(|i| target.to_string_lossy() == *i)
            {
                return Some(pid);
            }
        }
    }
    None
}

impl ServerProbe {
    pub(crate) fn find(endpoint: &str, pid: Option<u32>) -> Option<ServerProbe> {
        let pid = pid.or_else(|| {
            let rest = endpoint.split("://").nth(1)?;
            let host_port = rest.split('/').next()?;
            let (host, port) = host_port.rsplit_once(':')?;
            if !(host == "127.0.0.1" || host == "localhost" || host == "[::1]") {
                return None;
            }
            pid_listening_on(port.parse().ok()?)
        })?;
        Some(ServerProbe {
            pid,
            cpu_start: cpu_seconds(pid)?,
            peak_rss_kib: AtomicU64::new(rss_kib(pid).unwrap_or(0)),
        })
    }

    pub(crate) fn sample(&self) {
        if let Some(r) = rss_kib(self.pid) {
            self.peak_rss_kib.fetch_max(r, Ordering::Relaxed);
        }
    }
}

async fn ensure_stream(c: &Client, name: &str, shards: i32) -> Result<()> {
    match c.describe_stream_summary().stream_name(name).send().await {
        Ok(_) => {}
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) =>
        {
            c.create_stream()
                .stream_name(name)
                .shard_count(shards)
                .send()
                .await
                .map_err(sdk_error)?;
        }
        Err(e) => return Err(sdk_error(e)),
    }
    for _ in 0..600 {
        let d = c
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await
            .map_err(sdk_error)?;
        if d.stream_description_summary()
            .is_some_and(|s| s.stream_status().as_str() == "ACTIVE")
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("stream {name} did not become ACTIVE")
}

async fn all_shards(c: &Client, stream: &str) -> Result<Vec<Shard>> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let req = match &token {
            Some(t) => c.list_shards().next_token(t),
            None => c.list_shards().stream_name(stream),
        };
        let page = req.send().await.map_err(sdk_error)?;
        out.extend(page.shards().iter().cloned());
        match page.next_token() {
            Some(t) => token = Some(t.to_string()),
            None => return Ok(out),
        }
    }
}

fn is_throttle<E: aws_sdk_kinesis::error::ProvideErrorMetadata>(e: &E) -> bool {
    e.code() == Some("ProvisionedThroughputExceededException")
}

async fn produce(
    c: Client,
    args: Arc<BenchArgs>,
    stats: Arc<Stats>,
    run: u32,
    producer: u32,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(u32, u32, u64)>>>,
) {
    let mut seq = 0u64;
    let mut mine = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let n = args.batch.clamp(1, 500);
        let started = Instant::now();
        let mut ids = Vec::with_capacity(n);
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            seq += 1;
            let id = RecordId { run, producer, seq };
            let data = encode(&id, stats.now_ns(), args.record_size);
            entries.push((format!("p{producer}-{}", seq % 1024), data));
            ids.push(seq);
        }
        if n == 1 {
            let (key, data) = entries.pop().expect("one entry");
            match c
                .put_record()
                .stream_name(&args.stream)
                .partition_key(key)
                .data(Blob::new(data))
                .send()
                .await
            {
                Ok(_) => {
                    stats.latency(started.elapsed());
                    stats.records.fetch_add(1, Ordering::Relaxed);
                    stats
                        .bytes
                        .fetch_add(args.record_size as u64, Ordering::Relaxed);
                    mine.push((run, producer, ids[0]));
                }
                Err(e) => {
                    if e.as_service_error().is_some_and(is_throttle) {
                        stats.throttled.fetch_add(1, Ordering::Relaxed);
                    } else {
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            continue;
        }
        let records: Vec<PutRecordsRequestEntry> = entries
            .into_iter()
            .filter_map(|(k, d)| {
                PutRecordsRequestEntry::builder()
                    .partition_key(k)
                    .data(Blob::new(d))
                    .build()
                    .ok()
            })
            .collect();
        match c
            .put_records()
            .stream_name(&args.stream)
            .set_records(Some(records))
            .send()
            .await
        {
            Ok(out) => {
                stats.latency(started.elapsed());
                for (r, seq) in out.records().iter().zip(&ids) {
                    match r.error_code() {
                        None => {
                            stats.records.fetch_add(1, Ordering::Relaxed);
                            stats
                                .bytes
                                .fetch_add(args.record_size as u64, Ordering::Relaxed);
                            mine.push((run, producer, *seq));
                        }
                        Some("ProvisionedThroughputExceededException") => {
                            stats.throttled.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(_) => {
                            stats.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            Err(_) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    acked.lock().extend(mine);
}

/// Reads every shard (parents before children) until all are caught up, or
/// until `stop` when following a live stream.
async fn read_all(
    c: Client,
    stream: String,
    run: u32,
    stats: Arc<Stats>,
    seen: Arc<Mutex<Seen>>,
    follow: Option<Arc<AtomicBool>>,
    from_latest: bool,
) -> Result<()> {
    let shards = all_shards(&c, &stream).await?;
    let mut tasks = Vec::new();
    for sh in shards.iter().filter(|s| {
        s.sequence_number_range()
            .and_then(|r| r.ending_sequence_number())
            .is_none()
            || !from_latest
    }) {
        let c = c.clone();
        let stream = stream.clone();
        let id = sh.shard_id().to_string();
        let (stats, seen, follow) = (stats.clone(), seen.clone(), follow.clone());
        tasks.push(tokio::spawn(async move {
            let ty = if from_latest {
                ShardIteratorType::Latest
            } else {
                ShardIteratorType::TrimHorizon
            };
            let mut it = c
                .get_shard_iterator()
                .stream_name(&stream)
                .shard_id(&id)
                .shard_iterator_type(ty)
                .send()
                .await
                .map_err(sdk_error)?
                .shard_iterator
                .context("no iterator")?;
            let mut idle_after_stop = 0;
            loop {
                let out = match c
                    .get_records()
                    .shard_iterator(&it)
                    .limit(10_000)
                    .send()
                    .await
                {
                    Ok(o) => o,
                    Err(e) => {
                        if e.as_service_error().is_some_and(is_throttle) {
                            stats.throttled.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                        return Err(sdk_error(e));
                    }
                };
                let now = stats.now_ns();
                {
                    let mut s = seen.lock();
                    for r in out.records() {
                        match decode(r.data().as_ref()) {
                            // run 0: count every bench record (the consume workload).
                            Ok((rid, sent)) if rid.run == run || run == 0 => {
                                s.add(&rid);
                                if rid.run == run {
                                    stats.latency(Duration::from_nanos(now.saturating_sub(sent)));
                                }
                                stats.records.fetch_add(1, Ordering::Relaxed);
                                stats
                                    .bytes
                                    .fetch_add(r.data().as_ref().len() as u64, Ordering::Relaxed);
                            }
                            Ok(_) => {}
                            Err(()) => s.corrupted += 1,
                        }
                    }
                }
                let Some(next) = out.next_shard_iterator() else {
                    break;
                };
                it = next.to_string();
                let caught_up = out.records().is_empty() && out.millis_behind_latest() == Some(0);
                match &follow {
                    None if caught_up => break,
                    Some(stop) if caught_up => {
                        if stop.load(Ordering::Relaxed) {
                            idle_after_stop += 1;
                            if idle_after_stop > 3 {
                                break;
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    _ => {}
                }
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await.context("reader task")??;
    }
    Ok(())
}

/// Subscribes to every open shard and records put-to-push latency until `stop`.
async fn read_efo(
    c: Client,
    stream: String,
    run: u32,
    stats: Arc<Stats>,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let summary = c
        .describe_stream_summary()
        .stream_name(&stream)
        .send()
        .await
        .map_err(sdk_error)?;
    let arn = summary
        .stream_description_summary()
        .context("no summary")?
        .stream_arn()
        .to_string();
    let name = format!("bench-{run}");
    let consumer = c
        .register_stream_consumer()
        .stream_arn(&arn)
        .consumer_name(&name)
        .send()
        .await
        .map_err(sdk_error)?;
    let consumer_arn = consumer
        .consumer()
        .context("no consumer")?
        .consumer_arn()
        .to_string();
    for _ in 0..300 {
        let d = c
            .describe_stream_consumer()
            .consumer_arn(&consumer_arn)
            .send()
            .await
            .map_err(sdk_error)?;
        if d.consumer_description()
            .is_some_and(|d| d.consumer_status().as_str() == "ACTIVE")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let shards = all_shards(&c, &stream).await?;
    let mut tasks = Vec::new();
    for sh in shards.iter().filter(|s| {
        s.sequence_number_range()
            .and_then(|r| r.ending_sequence_number())
            .is_none()
    }) {
        let (c, consumer_arn, id) = (c.clone(), consumer_arn.clone(), sh.shard_id().to_string());
        let (stats, seen, stop) = (stats.clone(), seen.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut sub = c
                .subscribe_to_shard()
                .consumer_arn(&consumer_arn)
                .shard_id(&id)
                .starting_position(
                    StartingPosition::builder()
                        .r#type(ShardIteratorType::Latest)
                        .build()?,
                )
                .send()
                .await
                .map_err(sdk_error)?;
            let mut quiet = 0;
            loop {
                let ev =
                    match tokio::time::timeout(Duration::from_millis(500), sub.event_stream.recv())
                        .await
                    {
                        Err(_) => {
                            if stop.load(Ordering::Relaxed) {
                                quiet += 1;
                                if quiet > 2 {
                                    break;
                                }
                            }
                            continue;
                        }
                        Ok(Ok(Some(SubscribeToShardEventStream::SubscribeToShardEvent(ev)))) => ev,
                        Ok(_) => break,
                    };
                let now = stats.now_ns();
                let mut s = seen.lock();
                for r in ev.records() {
                    match decode(r.data().as_ref()) {
                        Ok((rid, sent)) if rid.run == run => {
                            s.add(&rid);
                            stats.latency(Duration::from_nanos(now.saturating_sub(sent)));
                            stats.records.fetch_add(1, Ordering::Relaxed);
                            stats
                                .bytes
                                .fetch_add(r.data().as_ref().len() as u64, Ordering::Relaxed);
                        }
                        Ok(_) => {}
                        Err(()) => s.corrupted += 1,
                    }
                }
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await.context("subscriber task")??;
    }
    let _ = c
        .deregister_stream_consumer()
        .consumer_arn(&consumer_arn)
        .send()
        .await;
    Ok(())
}

fn progress(stats: &Stats, label: &str, probe: Option<&ServerProbe>) -> String {
    let secs = stats.started.elapsed().as_secs_f64().max(0.001);
    let n = stats.records.load(Ordering::Relaxed);
    let mib = stats.bytes.load(Ordering::Relaxed) as f64 / 1_048_576.0;
    let p99 = stats.latency_us.lock().value_at_quantile(0.99) as f64 / 1000.0;
    let rss = probe
        .map(|p| p.peak_rss_kib.load(Ordering::Relaxed) / 1024)
        .unwrap_or(0);
    format!(
        "{label}: {n} records ({:.0}/s, {:.1} MiB/s), p99 {p99:.2} ms, throttled {}, errors {}, server RSS {rss} MiB",
        n as f64 / secs,
        mib / secs,
        stats.throttled.load(Ordering::Relaxed),
        stats.errors.load(Ordering::Relaxed)
    )
}

/// Runs a phase with a live progress line.
pub(crate) async fn with_progress<F: std::future::Future<Output = R>, R>(
    stats: &Stats,
    label: &str,
    probe: Option<&ServerProbe>,
    f: F,
) -> R {
    let bar = indicatif::ProgressBar::new_spinner();
    let mut f = std::pin::pin!(f);
    let mut tick = tokio::time::interval(Duration::from_millis(1000));
    loop {
        tokio::select! {
            r = &mut f => {
                bar.finish_and_clear();
                return r;
            }
            _ = tick.tick() => {
                if let Some(p) = probe {
                    p.sample();
                }
                bar.set_message(progress(stats, label, probe));
                bar.tick();
            }
        }
    }
}

pub async fn run(args: BenchArgs) -> Result<()> {
    if args.workload == Workload::Firehose {
        return crate::bench_firehose::run(args).await;
    }
    if args.record_size < HEADER {
        bail!("--record-size must be at least {HEADER} bytes");
    }
    let args = Arc::new(args);
    let c = client(&args.endpoint).await;
    ensure_stream(&c, &args.stream, args.shards).await?;
    let probe = ServerProbe::find(&args.endpoint.endpoint, args.server_pid);
    let run = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0) as u32)
        | 1;
    let write_stats = Arc::new(Stats::new());
    let read_stats = Arc::new(Stats::new());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));

    let produce_phase = |stats: Arc<Stats>| {
        let (c, args, stop, acked) = (c.clone(), args.clone(), stop.clone(), acked.clone());
        async move {
            let tasks: Vec<_> = (0..args.concurrency as u32)
                .map(|p| {
                    tokio::spawn(produce(
                        c.clone(),
                        args.clone(),
                        stats.clone(),
                        run,
                        p,
                        stop.clone(),
                        acked.clone(),
                    ))
                })
                .collect();
            tokio::time::sleep(Duration::from_secs(args.duration)).await;
            stop.store(true, Ordering::Relaxed);
            for t in tasks {
                let _ = t.await;
            }
        }
    };

    let (write_elapsed, read_elapsed) = match args.workload {
        Workload::Produce => {
            with_progress(
                &write_stats,
                "produce",
                probe.as_ref(),
                produce_phase(write_stats.clone()),
            )
            .await;
            let w = write_stats.started.elapsed();
            let read_stats_now = Arc::new(Stats::new());
            with_progress(
                &read_stats_now,
                "verify",
                probe.as_ref(),
                read_all(
                    c.clone(),
                    args.stream.clone(),
                    run,
                    read_stats_now.clone(),
                    seen.clone(),
                    None,
                    false,
                ),
            )
            .await?;
            (w, read_stats_now.started.elapsed())
        }
        Workload::Consume => {
            with_progress(
                &read_stats,
                "consume",
                probe.as_ref(),
                read_all(
                    c.clone(),
                    args.stream.clone(),
                    0,
                    read_stats.clone(),
                    seen.clone(),
                    None,
                    false,
                ),
            )
            .await?;
            (Duration::ZERO, read_stats.started.elapsed())
        }
        Workload::Firehose => bail!("the firehose workload runs on its own"),
        Workload::E2e | Workload::E2eEfo => {
            let reader = if args.workload == Workload::E2e {
                tokio::spawn(read_all(
                    c.clone(),
                    args.stream.clone(),
                    run,
                    read_stats.clone(),
                    seen.clone(),
                    Some(stop.clone()),
                    true,
                ))
            } else {
                tokio::spawn(read_efo(
                    c.clone(),
                    args.stream.clone(),
                    run,
                    read_stats.clone(),
                    seen.clone(),
                    stop.clone(),
                ))
            };
            // Readers start at LATEST: give them a moment to be in place.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            with_progress(
                &write_stats,
                "e2e",
                probe.as_ref(),
                produce_phase(write_stats.clone()),
            )
            .await;
            let w = write_stats.started.elapsed();
            reader.await.context("reader")??;
            (w, read_stats.started.elapsed())
        }
    };

    // Verification: every acknowledged record read exactly once and intact.
    let acked = acked.lock().clone();
    let seen = seen.lock();
    let mut lost = 0u64;
    let mut duplicated = 0u64;
    if args.workload != Workload::Consume {
        for id in &acked {
            match seen.count(*id) {
                0 => lost += 1,
                1 => {}
                _ => duplicated += 1,
            }
        }
    } else {
        duplicated = seen.distinct_and_duplicated().1;
    }
    let (stats, elapsed) = match args.workload {
        Workload::Consume => (&read_stats, read_elapsed),
        _ => (&write_stats, write_elapsed),
    };
    let latency = if matches!(args.workload, Workload::E2e | Workload::E2eEfo) {
        read_stats.latency_us.lock().clone()
    } else {
        stats.latency_us.lock().clone()
    };
    let secs = elapsed.as_secs_f64().max(0.001);
    let records = stats.records.load(Ordering::Relaxed);
    let q = |p: f64| latency.value_at_quantile(p) as f64 / 1000.0;
    let cpu = probe.as_ref().and_then(|p| {
        cpu_seconds(p.pid)
            .map(|c| (c - p.cpu_start) / (write_elapsed + read_elapsed).as_secs_f64().max(0.001))
    });
    let rss = probe.as_ref().map(|p| {
        p.sample();
        p.peak_rss_kib.load(Ordering::Relaxed) as f64 / 1024.0
    });
    let result = serde_json::json!({
        "workload": format!("{:?}", args.workload).to_lowercase(),
        "records": records,
        "duration_secs": secs,
        "records_per_sec": records as f64 / secs,
        "mib_per_sec": stats.bytes.load(Ordering::Relaxed) as f64 / 1_048_576.0 / secs,
        "p50_ms": q(0.5),
        "p90_ms": q(0.9),
        "p99_ms": q(0.99),
        "p999_ms": q(0.999),
        "max_ms": latency.max() as f64 / 1000.0,
        "throttled": write_stats.throttled.load(Ordering::Relaxed) + read_stats.throttled.load(Ordering::Relaxed),
        "errors": write_stats.errors.load(Ordering::Relaxed) + read_stats.errors.load(Ordering::Relaxed),
        "lost": lost,
        "duplicated": duplicated,
        "corrupted": seen.corrupted,
        "read_records_per_sec": if read_elapsed > Duration::ZERO { seen.distinct_and_duplicated().0 as f64 / read_elapsed.as_secs_f64() } else { 0.0 },
        "server_cpu_cores": cpu,
        "server_rss_mib_peak": rss,
        "record_size": args.record_size,
        "batch": args.batch,
        "concurrency": args.concurrency,
    });
    println!(
        "{:?}: {} records in {:.1} s = {:.0} records/s, {:.2} MiB/s; latency ms p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}",
        args.workload,
        records,
        secs,
        records as f64 / secs,
        result["mib_per_sec"].as_f64().unwrap_or(0.0),
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        latency.max() as f64 / 1000.0
    );
    println!(
        "verification: {} acknowledged, {} lost, {} duplicated, {} corrupted; throttled {}, errors {}",
        acked.len(),
        lost,
        duplicated,
        seen.corrupted,
        result["throttled"],
        result["errors"]
    );
    if let (Some(c), Some(r)) = (cpu, rss) {
        println!("server: {c:.2} cores busy on average, peak RSS {r:.1} MiB");
    }
    if args.json {
        println!("{result}");
    }
    if lost > 0 || duplicated > 0 || seen.corrupted > 0 {
        bail!(
            "verification failed: {lost} lost, {duplicated} duplicated, {} corrupted",
            seen.corrupted
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_counts_each_record_dense_or_sparse() {
        let mut seen = Seen::default();
        let id = |run, producer, seq| RecordId { run, producer, seq };
        for seq in 1..=1000 {
            seen.add(&id(1, 0, seq));
        }
        seen.add(&id(1, 0, 7));
        seen.add(&id(2, 3, 5));
        seen.add(&id(1, 0, DENSE_SEQ_LIMIT + 9));
        seen.add(&id(1, 0, DENSE_SEQ_LIMIT + 9));
        assert_eq!(seen.count((1, 0, 1)), 1);
        assert_eq!(seen.count((1, 0, 7)), 2);
        assert_eq!(seen.count((1, 0, 1001)), 0);
        assert_eq!(seen.count((1, 1, 1)), 0);
        assert_eq!(seen.count((2, 3, 5)), 1);
        assert_eq!(seen.count((1, 0, DENSE_SEQ_LIMIT + 9)), 2);
        assert_eq!(seen.distinct_and_duplicated(), (1002, 2));
    }

    #[test]
    fn payloads_round_trip_and_detect_damage() {
        let id = RecordId {
            run: 7,
            producer: 3,
            seq: 99,
        };
        let mut data = encode(&id, 12345, 100);
        assert_eq!(decode(&data), Ok((id, 12345)));
        data[60] ^= 1;
        assert_eq!(decode(&data), Err(()));
        assert_eq!(decode(&data[..20]), Err(()));
    }
}
