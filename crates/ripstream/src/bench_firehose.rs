//! `ripstream bench firehose`: PutRecordBatch into a GZIP S3 delivery
//! stream, every object read back through the S3 API to check each
//! acknowledged record arrived intact, and how fresh it was: from its send
//! to the moment a listing first showed the object holding it (listed
//! every 200 ms, so figures are that coarse). With `--destination-down S`
//! the bucket appears only S seconds into the run: records wait on disk
//! meanwhile, and the server's peak RSS shows what waiting costs in memory.

use std::collections::HashSet;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aws_sdk_firehose::primitives::Blob;
use aws_sdk_firehose::types::{
    BufferingHints, CompressionFormat, ExtendedS3DestinationConfiguration, Record,
};
use hdrhistogram::Histogram;
use parking_lot::Mutex;

use crate::bench::{BenchArgs, HEADER, RecordId, Seen, ServerProbe, Stats, decode, encode};
use crate::cli::sdk_error;

async fn firehose_client(ep: &crate::cli::Endpoint) -> aws_sdk_firehose::Client {
    let conf = crate::cli::sdk_config(ep).await;
    let mut b = aws_sdk_firehose::config::Builder::from(&conf);
    if conf.region().is_none() {
        b = b.region(aws_config::Region::new("us-east-1"));
    }
    aws_sdk_firehose::Client::from_conf(b.build())
}

async fn s3_client(ep: &crate::cli::Endpoint) -> aws_sdk_s3::Client {
    let conf = crate::cli::sdk_config(ep).await;
    let mut b = aws_sdk_s3::config::Builder::from(&conf).force_path_style(true);
    if conf.region().is_none() {
        b = b.region(aws_config::Region::new("us-east-1"));
    }
    aws_sdk_s3::Client::from_conf(b.build())
}

#[allow(clippy::too_many_arguments)]
async fn produce(
    c: aws_sdk_firehose::Client,
    args: Arc<BenchArgs>,
    stream: String,
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
        let mut records = Vec::with_capacity(n);
        for _ in 0..n {
            seq += 1;
            let id = RecordId { run, producer, seq };
            let data = encode(&id, stats.now_ns(), args.record_size);
            if let Ok(r) = Record::builder().data(Blob::new(data)).build() {
                records.push(r);
                ids.push(seq);
            }
        }
        match c
            .put_record_batch()
            .delivery_stream_name(&stream)
            .set_records(Some(records))
            .send()
            .await
        {
            Ok(out) => {
                stats.latency(started.elapsed());
                for (r, seq) in out.request_responses().iter().zip(&ids) {
                    match r.error_code() {
                        None => {
                            stats.records.fetch_add(1, Ordering::Relaxed);
                            stats
                                .bytes
                                .fetch_add(args.record_size as u64, Ordering::Relaxed);
                            mine.push((run, producer, *seq));
                        }
                        Some("ServiceUnavailableException") => {
                            stats.throttled.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(_) => {
                            stats.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            Err(e) => {
                let throttled = e
                    .as_service_error()
                    .is_some_and(|s| s.is_service_unavailable_exception());
                if throttled {
                    stats.throttled.fetch_add(n as u64, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                } else {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    acked.lock().extend(mine);
}

/// What the watcher saw: records by id, and freshness per record.
struct Watch {
    seen: Seen,
    freshness_us: Histogram<u64>,
    objects: u64,
    object_bytes: u64,
}

/// Lists the bucket every 200 ms, reading each new object once, until
/// `done` and `want` records were seen (or the deadline).
#[allow(clippy::too_many_arguments)]
async fn watch(
    s3: aws_sdk_s3::Client,
    bucket: String,
    record_size: usize,
    stats: Arc<Stats>,
    watch: Arc<Mutex<Watch>>,
    done: Arc<AtomicBool>,
    want: Arc<AtomicU64>,
    deadline_after_done: Duration,
) -> Result<()> {
    let mut read: HashSet<String> = HashSet::new();
    let mut done_at: Option<Instant> = None;
    loop {
        let mut token = None;
        let mut keys = Vec::new();
        loop {
            let page = match s3
                .list_objects_v2()
                .bucket(&bucket)
                .set_continuation_token(token.take())
                .send()
                .await
            {
                Ok(p) => p,
                // The bucket may not exist yet (--destination-down).
                Err(_) => break,
            };
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(String::from)),
            );
            match page.next_continuation_token() {
                Some(t) => token = Some(t.to_string()),
                None => break,
            }
        }
        let seen_ns = stats.now_ns();
        for key in keys {
            if read.contains(&key) {
                continue;
            }
            let body = s3
                .get_object()
                .bucket(&bucket)
                .key(&key)
                .send()
                .await
                .map_err(sdk_error)?
                .body
                .collect()
                .await
                .context("reading an object")?
                .into_bytes();
            let mut plain = Vec::new();
            flate2::read::MultiGzDecoder::new(&body[..])
                .read_to_end(&mut plain)
                .with_context(|| format!("{key} is not GZIP"))?;
            let mut w = watch.lock();
            w.objects += 1;
            w.object_bytes += body.len() as u64;
            for chunk in plain.chunks(record_size) {
                match decode(chunk) {
                    Ok((id, sent_ns)) => {
                        w.seen.add(&id);
                        let us = seen_ns.saturating_sub(sent_ns) / 1000;
                        let _ = w.freshness_us.record(us.max(1));
                    }
                    Err(()) => w.seen.corrupted += 1,
                }
            }
            read.insert(key);
        }
        if done.load(Ordering::Relaxed) {
            let at = *done_at.get_or_insert_with(Instant::now);
            let have = watch.lock().seen.distinct_and_duplicated().0;
            if have >= want.load(Ordering::Relaxed) || at.elapsed() > deadline_after_done {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn run(args: BenchArgs) -> Result<()> {
    if args.record_size < HEADER {
        bail!("--record-size must be at least {HEADER} bytes");
    }
    if args.destination_down >= args.duration && args.destination_down > 0 {
        bail!("--destination-down must be shorter than --duration");
    }
    let args = Arc::new(args);
    let fh = firehose_client(&args.endpoint).await;
    let s3 = s3_client(&args.endpoint).await;
    let run = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0) as u32)
        | 1;
    // Fresh names per run: nothing of an earlier run is counted.
    let stream = format!("{}-{run:08x}", args.delivery_stream);
    let bucket = format!("{}-{run:08x}", args.bucket);
    if args.destination_down == 0 {
        s3.create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .map_err(sdk_error)?;
    }
    fh.create_delivery_stream()
        .delivery_stream_name(&stream)
        .extended_s3_destination_configuration(
            ExtendedS3DestinationConfiguration::builder()
                .role_arn("arn:aws:iam::000000000000:role/ripstream-bench")
                .bucket_arn(format!("arn:aws:s3:::{bucket}"))
                .compression_format(CompressionFormat::Gzip)
                .buffering_hints(
                    BufferingHints::builder()
                        .size_in_mbs(args.buffer_size)
                        .interval_in_seconds(args.buffer_interval)
                        .build(),
                )
                .build()?,
        )
        .send()
        .await
        .map_err(sdk_error)?;
    let probe = ServerProbe::find(&args.endpoint.endpoint, args.server_pid);
    let stats = Arc::new(Stats::new());
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let want = Arc::new(AtomicU64::new(u64::MAX));
    let watched = Arc::new(Mutex::new(Watch {
        seen: Seen::default(),
        freshness_us: Histogram::new_with_bounds(1, 3_600_000_000, 3)
            .expect("valid histogram bounds"),
        objects: 0,
        object_bytes: 0,
    }));
    let watcher = tokio::spawn(watch(
        s3.clone(),
        bucket.clone(),
        args.record_size,
        stats.clone(),
        watched.clone(),
        done.clone(),
        want.clone(),
        Duration::from_secs(u64::from(args.buffer_interval.max(0) as u32) + 60),
    ));
    let producers: Vec<_> = (0..args.concurrency as u32)
        .map(|p| {
            tokio::spawn(produce(
                fh.clone(),
                args.clone(),
                stream.clone(),
                stats.clone(),
                run,
                p,
                stop.clone(),
                acked.clone(),
            ))
        })
        .collect();
    let rss_down = Arc::new(AtomicU64::new(0));
    let phase = {
        let (args, s3, bucket, stop, probe_pid) = (
            args.clone(),
            s3.clone(),
            bucket.clone(),
            stop.clone(),
            probe.as_ref().map(|p| p.pid),
        );
        let rss_down = rss_down.clone();
        async move {
            if args.destination_down > 0 {
                let until = Instant::now() + Duration::from_secs(args.destination_down);
                while Instant::now() < until {
                    if let Some(r) = probe_pid.and_then(crate::bench::rss_kib) {
                        rss_down.fetch_max(r, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                s3.create_bucket()
                    .bucket(&bucket)
                    .send()
                    .await
                    .map_err(sdk_error)?;
                tokio::time::sleep(Duration::from_secs(args.duration - args.destination_down))
                    .await;
            } else {
                tokio::time::sleep(Duration::from_secs(args.duration)).await;
            }
            stop.store(true, Ordering::Relaxed);
            anyhow::Ok(())
        }
    };
    crate::bench::with_progress(&stats, "firehose", probe.as_ref(), phase).await?;
    for p in producers {
        let _ = p.await;
    }
    let elapsed = stats.started.elapsed();
    let acked = acked.lock().clone();
    want.store(acked.len() as u64, Ordering::Relaxed);
    done.store(true, Ordering::Relaxed);
    let drain_started = Instant::now();
    watcher.await.context("watcher")??;
    let drain = drain_started.elapsed();
    let w = watched.lock();
    let (mut lost, mut duplicated) = (0u64, 0u64);
    for id in &acked {
        match w.seen.count(*id) {
            0 => lost += 1,
            1 => {}
            _ => duplicated += 1,
        }
    }
    let secs = elapsed.as_secs_f64().max(0.001);
    let records = stats.records.load(Ordering::Relaxed);
    let q = |p: f64| w.freshness_us.value_at_quantile(p) as f64 / 1e6;
    let put_p99 = stats.latency_us.lock().value_at_quantile(0.99) as f64 / 1000.0;
    let rss = probe.as_ref().map(|p| {
        p.sample();
        p.peak_rss_kib.load(Ordering::Relaxed) as f64 / 1024.0
    });
    let result = serde_json::json!({
        "workload": "firehose",
        "records": records,
        "duration_secs": secs,
        "records_per_sec": records as f64 / secs,
        "mib_per_sec": stats.bytes.load(Ordering::Relaxed) as f64 / 1_048_576.0 / secs,
        "put_p99_ms": put_p99,
        "freshness_p50_s": q(0.5),
        "freshness_p99_s": q(0.99),
        "freshness_max_s": w.freshness_us.max() as f64 / 1e6,
        "objects": w.objects,
        "object_bytes": w.object_bytes,
        "buffer_interval_s": args.buffer_interval,
        "buffer_size_mb": args.buffer_size,
        "destination_down_s": args.destination_down,
        "server_rss_mib_peak_while_down": (rss_down.load(Ordering::Relaxed) as f64 / 1024.0),
        "server_rss_mib_peak": rss,
        "drain_secs": drain.as_secs_f64(),
        "throttled": stats.throttled.load(Ordering::Relaxed),
        "errors": stats.errors.load(Ordering::Relaxed),
        "lost": lost,
        "duplicated": duplicated,
        "corrupted": w.seen.corrupted,
        "record_size": args.record_size,
        "batch": args.batch,
        "concurrency": args.concurrency,
    });
    println!(
        "Firehose: {records} records in {secs:.1} s = {:.0} records/s; put p99 {put_p99:.2} ms; freshness (send to object listed) p50 {:.2} s p99 {:.2} s max {:.2} s; {} objects",
        records as f64 / secs,
        q(0.5),
        q(0.99),
        w.freshness_us.max() as f64 / 1e6,
        w.objects
    );
    println!(
        "verification: {} acknowledged, {lost} lost, {duplicated} delivered more than once, {} corrupted",
        acked.len(),
        w.seen.corrupted
    );
    if let Some(r) = rss {
        if args.destination_down > 0 {
            println!(
                "server: peak RSS {r:.1} MiB; {:.1} MiB while the destination was down; every record delivered {:.1} s after the producers stopped",
                rss_down.load(Ordering::Relaxed) as f64 / 1024.0,
                drain.as_secs_f64()
            );
        } else {
            println!("server: peak RSS {r:.1} MiB");
        }
    }
    if args.json {
        println!("{result}");
    }
    if lost > 0 || w.seen.corrupted > 0 {
        bail!(
            "verification failed: {lost} lost, {} corrupted",
            w.seen.corrupted
        );
    }
    Ok(())
}
